"""The SteerBench widget and the SteeringPanel's recipes (issue 27 items 3 and 6), Python side, on the embedded
default: the state the front end draws (seven condition rows with intervals, gates, verdict, the chart, examples)
is the bench's own numbers; bad input is refused naming the argument; a panel opens and saves recipes
(tests/browser/test_steerbench.py checks the rendering)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import traitlets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import embedded
from qscope_lab.core.steering import Steer
from qscope_lab.steering.bench import CONDITIONS
from qscope_lab.steering.recipe import Recipe
from qscope_lab.widgets import SteerBenchView, SteeringPanel
from qscope_lab.widgets.steerbench import METRICS

PROMPTS = ["The weather today is", "Once upon a time", "My favourite food is", "The meeting starts at",
           "In the morning I", "The book was", "He opened the door and", "Science tells us that"]


@pytest.fixture(scope="module")
def examples():
    docs = embedded.reference_documents()
    zh = [d["text"][:200] for d in docs if d["lang"] == "zh"][:12]
    en = [d["text"][:200] for d in docs if d["lang"] == "en"][:12]
    return zh, en


@pytest.fixture(scope="module")
def recipe(elab, examples):
    zh, en = examples
    return elab.autopilot(zh, en, PROMPTS, max_new_tokens=12, candidates=6, seed=0, name="write-chinese")


@pytest.fixture(scope="module")
def view(recipe):
    return SteerBenchView(recipe)


@pytest.fixture(autouse=True)
def labels_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QSCOPE_LAB_HOME", str(tmp_path))


def test_rows_are_the_seven_conditions_with_the_benchs_intervals(view, recipe):
    summary = recipe.bench.to_frame().set_index("condition")
    assert [r["condition"] for r in view.rows] == list(CONDITIONS)
    assert [m["key"] for m in view.metrics] == [k for k, *_ in METRICS]
    for row in view.rows:
        bench_row = summary.loc[row["condition"]]
        assert row["n"] == bench_row["n"] == len(recipe.settings["held_out_prompts"])
        for key, *_ in METRICS:
            for suffix in ("", "_lo", "_hi"):
                assert row[key + suffix] == pytest.approx(float(bench_row[key + suffix]), nan_ok=True)
            if row[key] is not None:
                assert row[key + "_lo"] <= row[key] + 1e-9 <= row[key + "_hi"] + 2e-9
    frame = view.to_frame().set_index("condition")
    # zero strength is the unsteered run: the same completions, the same concept interval
    assert frame.loc["zero strength", "concept"] == frame.loc["unsteered", "concept"]
    json.dumps(view.rows)  # no NaN on the wire


def test_verdict_status_gates_and_steer(view, recipe):
    bench = recipe.bench
    assert view.verdict == bench.verdict == recipe.status and view.status == recipe.status
    assert view.reason == bench.reason and view.title == "write-chinese"
    assert [g["gate"] for g in view.gates] == list(bench.gates["gate"])
    assert [g["outcome"] for g in view.gates] == list(bench.gates["outcome"])
    by_gate = {g["gate"]: g for g in view.gates}
    assert by_gate["prompt-only beside the steer"]["passed"] is None  # reported, never a gate
    assert by_gate["beats random feature"]["passed"] is bool(bench.gates.set_index("gate").loc[
        "beats random feature", "passed"])
    (steer,) = recipe.steers()
    assert view.steers == bench.steers and view.steer_features == [{"layer": steer.layer, "feature": steer.feature}]
    assert f"prompts {bench.settings['prompts']}," in view.settings
    assert view.cost == f"{7 * bench.settings['prompts']} completions in {bench.cost['total_s']:.1f} s"
    # the random control named with its features and firing densities beside the steered one's
    controls = bench.controls
    assert view.controls.startswith(f"random-feature control: L{steer.layer} f{steer.feature} (firing density "
                                    f"{controls.density.iloc[0]:.3g}) against ")
    for f, d in zip(controls.control_feature, controls.control_density):
        assert f"f{int(f)} ({d:.3g})" in view.controls


def test_chart_is_concept_against_fluency_over_the_sweeps_alphas(view, recipe):
    (steer,) = recipe.steers()
    svg = view.chart_svg
    assert view.chart_kind == "sweep" and svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "concept against fluency over alpha" in svg and f"L{steer.layer} f{steer.feature} chosen" in svg
    assert "perplexity" in svg and "concept score" in svg
    sweep = recipe.sweep_frame()
    mine = sweep[(sweep.kind == "candidate") & (sweep.layer == steer.layer) & (sweep.feature == steer.feature)]
    drawn = [a for a in mine.alpha if f">{a:.3g}<" in svg]  # each of the chosen feature's points says its alpha
    finite = mine[mine.fluency_ppl.notna() & (mine.fluency_ppl > 0)]
    assert len(drawn) == len(finite) >= 2
    for series in ("chosen", "other candidates", "random controls", "unsteered"):
        assert f">{series}<" in svg  # the legend


def test_examples_are_the_benchs_completions(view, recipe):
    rows = recipe.bench.rows
    held = recipe.settings["held_out_prompts"]
    assert len(view.examples) == 3 and view.conditions == list(CONDITIONS)
    for i, ex in enumerate(view.examples):
        assert ex["prompt"] == held[i]
        for condition in CONDITIONS:
            expected = rows[(rows.condition == condition) & (rows.prompt_index == i) & (rows["sample"] == 0)]
            assert ex["texts"][condition] == expected["text"].item()
    assert view.before == "unsteered" and view.after == "steering-only"
    view.after = "prompt-only"
    assert view.after == "prompt-only"


def test_a_bench_alone_draws_its_conditions(elab, examples):
    layer, feature = embedded.known_features()["chinese"]
    bench = elab.bench_steer({feature: 32.0}, PROMPTS[:4], examples, layer=layer, max_new_tokens=8, n_boot=200)
    w = SteerBenchView(bench, examples=2, after="negative strength")
    assert w.chart_kind == "conditions" and w.status == "" and w.title == "steering bench"
    assert all(f">{c}<" in w.chart_svg for c in ("unsteered", "prompt-only", "steering-only", "random feature"))
    assert len(w.examples) == 2 and w.after == "negative strength" and w.names == {}
    assert [r["condition"] for r in w.rows] == list(CONDITIONS)
    # a sweep from elsewhere: the chart is over its alphas
    sweep = pd.DataFrame({"alpha": [0.0, 8.0, 16.0, 32.0], "concept": [0.0, 0.1, 0.5, 0.9],
                          "fluency_ppl": [10.0, 12.0, 40.0, 300.0]})
    w2 = SteerBenchView(bench, sweep=sweep)
    assert w2.chart_kind == "sweep" and ">sweep<" in w2.chart_svg and ">random controls<" not in w2.chart_svg


def test_a_recipe_file_and_a_lab_show_the_same(view, recipe, elab, tmp_path):
    path = recipe.save(tmp_path / "zh.json")
    again = SteerBenchView(str(path), lab=elab)
    assert again.rows == view.rows and again.gates == view.gates and again.verdict == view.verdict
    assert again.examples == view.examples and again.chart_svg == view.chart_svg
    (steer,) = recipe.steers()
    from qscope_lab.explain.names import display_names

    name = display_names(elab, steer.layer, [steer.feature])[0]
    if name != f"L{steer.layer}/F{steer.feature}":
        assert again.names == {f"{steer.layer}/{steer.feature}": name}


def test_bad_input_is_refused_naming_the_argument(recipe, elab, tmp_path):
    with pytest.raises(TypeError, match="source must be a SteerBench.*got int"):
        SteerBenchView(42)
    with pytest.raises(FileNotFoundError, match="no recipe file at"):
        SteerBenchView(tmp_path / "missing.json")
    draft = Recipe.create(elab, recipe.steers(), name="bare")
    with pytest.raises(ValueError, match="source: recipe 'bare' .*no bench"):
        SteerBenchView(draft)
    with pytest.raises(ValueError, match="examples must be >= 1|examples"):
        SteerBenchView(recipe, examples=0)
    with pytest.raises(ValueError, match="before"):
        SteerBenchView(recipe, before="baseline")
    with pytest.raises(ValueError, match=r"sweep.*lacks \['fluency_ppl'\]"):
        SteerBenchView(recipe, sweep=pd.DataFrame({"alpha": [1.0], "concept": [0.5]}))
    with pytest.raises(TypeError, match="'exampels'.*did you mean 'examples'"):
        SteerBenchView(recipe, exampels=2)
    other = Recipe.from_dict({**recipe.to_dict(), "model": "Qwen/Qwen3-1.7B-Base"})
    with pytest.raises(ValueError, match="made for model 'Qwen/Qwen3-1.7B-Base'.*this Lab is model"):
        SteerBenchView(other, lab=elab)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=20), st.integers(), st.none()))
def test_example_columns_take_only_conditions(view, value):
    view.before, view.after = "unsteered", "steering-only"
    if value in CONDITIONS:
        view.after = value
        assert view.after == value
        return
    with pytest.raises(traitlets.TraitError, match="after"):
        view.after = value
    assert view.after == "steering-only"


# ---------------------------------------------------------------------------------------------- the panel's recipes
def test_panel_opens_a_recipe_and_steers_as_lab_generate_does(elab, recipe):
    (steer,) = recipe.steers()
    panel = SteeringPanel(elab, PROMPTS[0], max_new_tokens=12)
    assert panel.open_recipe(recipe) is recipe
    assert panel.error == "" and panel.mode == steer.mode and panel.positions == recipe.positions
    assert panel.features == [{"layer": steer.layer, "feature": steer.feature, "alpha": steer.value}]
    assert panel.alpha_max >= abs(steer.value)
    expected = elab.generate(PROMPTS[0], steer=recipe, max_new_tokens=12)
    assert panel.steered_tokens == elab.token_pieces(expected.steered_ids[0])
    assert panel.steered_tokens != panel.baseline_tokens


def test_panel_saves_the_opened_recipe_with_its_evidence_and_a_changed_one_as_a_draft(elab, recipe, tmp_path):
    panel = SteeringPanel(elab, PROMPTS[1], max_new_tokens=8)
    panel.open_recipe(recipe.save(tmp_path / "opened.json"))
    kept = Recipe.load(panel.save_recipe(tmp_path / "kept", name="kept"))
    assert (tmp_path / "kept.json").is_file() and (tmp_path / "kept.md").is_file()
    assert kept.name == "kept" and kept.status == recipe.status and kept.bench is not None
    assert kept.bench.to_frame().equals(Recipe.load(tmp_path / "opened.json").bench.to_frame())
    assert kept.sweep == recipe.sweep
    row = dict(panel.features[0])
    panel.features = [dict(row, alpha=row["alpha"] / 2)]
    draft = Recipe.load(panel.save_recipe(tmp_path / "draft.json"))
    assert draft.status == "draft" and draft.bench is None and draft.name == "steering-panel"
    assert draft.alphas == [row["alpha"] / 2] and draft.settings["prompt"] == PROMPTS[1]
    assert draft.settings["generation"]["repetition_penalty"] == panel.repetition_penalty
    out = elab.generate(PROMPTS[1], steer=draft, max_new_tokens=8)
    assert panel.steered_tokens == elab.token_pieces(out.steered_ids[0])  # the file steers as the panel did


def test_panel_recipe_errors_name_the_file_and_change_nothing(elab, recipe, tmp_path):
    layer, feature = embedded.known_features()["chinese"]
    panel = SteeringPanel(elab, PROMPTS[2], layer=layer, features=[(feature, 4.0)], max_new_tokens=6)
    before = (list(panel.features), panel.mode, panel.positions, list(panel.steered_tokens))
    note = tmp_path / "notes.json"
    note.write_text('{"mine": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{re.escape(str(note))} exists and is not a steering recipe"):
        panel.save_recipe(note)
    assert note.read_text(encoding="utf-8") == '{"mine": 1}'
    with pytest.raises(TypeError, match="path must be a str or Path"):
        panel.save_recipe(3)
    other = Recipe.from_dict({**recipe.to_dict(), "sae_suite": "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"})
    with pytest.raises(ValueError, match="SAE-Res-Qwen3-1.7B.*but this Lab"):
        panel.open_recipe(other)
    conditional = Recipe.create(elab, [Steer(layer, feature, 8.0, when=(layer, feature, 0.5))], name="cond")
    with pytest.raises(ValueError, match="recipe 'cond'.*conditional steer.*sliders cannot hold"):
        panel.open_recipe(conditional)
    with pytest.raises(TypeError, match="recipe must be a Recipe or the path"):
        panel.open_recipe({"steers": []})
    with pytest.raises(FileNotFoundError, match="no recipe file"):
        panel.open_recipe(tmp_path / "none.json")
    assert (list(panel.features), panel.mode, panel.positions, list(panel.steered_tokens)) == before
    panel.features = [dict(panel.features[0], alpha=0.0)]
    with pytest.raises(ValueError, match="no non-zero slider"):
        panel.save_recipe(tmp_path / "empty.json")
    assert not (tmp_path / "empty.json").exists()
