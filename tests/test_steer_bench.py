"""The steering bench (issue 27): seven conditions batched, its controls, gates, verdicts and the autopilot, on the
embedded default (a real Qwen3ForCausalLM with its own SAEs, where layer 2 feature "chinese" switches the language)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import embedded
from qscope_lab.core.steering import Steer
from qscope_lab.steering import engine
from qscope_lab.steering.bench import CONDITIONS, distinct_n, firing_rates, repetition
from qscope_lab.steering.concept import ExampleConcept, Judge, as_concept

PROMPTS = ["The weather today is", "Once upon a time", "My favourite food is", "The meeting starts at",
           "In the morning I", "The book was"]
HELD = ["He opened the door and", "Science tells us that", "The river flows", "Yesterday we went",
        "The king said", "Our company plans to", "At the market", "The teacher asked"]


@pytest.fixture(scope="module")
def examples():
    docs = embedded.reference_documents()
    zh = [d["text"][:200] for d in docs if d["lang"] == "zh"][:20]
    en = [d["text"][:200] for d in docs if d["lang"] == "en"][:20]
    return zh, en


@pytest.fixture(scope="module")
def chinese():
    return embedded.known_features()["chinese"]


@pytest.fixture(scope="module")
def bench(elab, examples, chinese):
    layer, feature = chinese
    return elab.bench_steer({feature: 32.0}, PROMPTS, examples, layer=layer, max_new_tokens=16, seed=3)


def test_one_row_per_condition_with_intervals(bench):
    frame = bench.to_frame()
    assert list(frame["condition"]) == list(CONDITIONS)
    for metric in ("concept", "fluency_ppl", "distinct_2", "repetition", "collateral", "latency_ms"):
        assert {metric, f"{metric}_lo", f"{metric}_hi"} <= set(frame.columns)
        ok = frame[[f"{metric}_lo", metric, f"{metric}_hi"]].dropna()
        assert (ok[f"{metric}_lo"] <= ok[metric] + 1e-9).all() and (ok[metric] <= ok[f"{metric}_hi"] + 1e-9).all()
    assert (frame["n"] == len(PROMPTS)).all()
    # no edit, no collateral; the steer at 32 costs perplexity on neutral text
    by = frame.set_index("condition")
    assert by.loc["unsteered", "collateral"] == 1.0 and by.loc["steering-only", "collateral"] > 1.5
    assert bench.cost["rows"] == 7 * len(PROMPTS)


def test_zero_strength_equals_unsteered_token_for_token(bench):
    rows = bench.rows.set_index(["condition", "prompt_index"])
    for i in range(len(PROMPTS)):
        assert rows.loc[("zero strength", i), "text"] == rows.loc[("unsteered", i), "text"]
        assert rows.loc[("zero strength", i), "tokens"] == rows.loc[("unsteered", i), "tokens"] > 0
    # and the steer itself changes them
    assert any(rows.loc[("steering-only", i), "text"] != rows.loc[("unsteered", i), "text"] for i in range(6))


def test_zero_strength_equals_unsteered_under_sampling(elab, chinese):
    """Rows sample from generators keyed by (seed, prompt, sample): the zero-strength twin draws what the
    unsteered row draws, whatever else is in the batch."""
    layer, feature = chinese
    groups = [[], [Steer(layer, feature, 0.0)], [Steer(layer, feature, 24.0)]]
    prompts = PROMPTS[:3]
    rows = engine.Rows(inputs=prompts * 3, group=[0] * 3 + [1] * 3 + [2] * 3, keys=[0, 1, 2] * 3, groups=groups)
    out = engine.generate_rows(elab, rows, max_new_tokens=12, do_sample=True, temperature=1.0, seed=11)
    assert out.ids[:3] == out.ids[3:6]
    assert out.ids[6:] != out.ids[:3]
    again = engine.generate_rows(elab, engine.Rows(prompts, [0] * 3, [0, 1, 2], [[]]), max_new_tokens=12,
                                 do_sample=True, seed=11)
    assert again.ids == out.ids[:3]  # a row's draws do not depend on its neighbours


def test_random_control_draws_features_of_matched_density(bench, elab, chinese):
    layer, feature = chinese
    controls = bench.controls
    assert len(controls) == 3 and set(controls["feature"]) == {feature}
    assert feature not in set(controls["control_feature"]) and controls["control_feature"].is_unique
    rates, source = firing_rates(elab, layer)
    assert source.startswith("index")
    target = rates[feature]
    distance = np.abs(np.log(rates + 1e-7) - np.log(target + 1e-7))
    distance[feature] = np.inf
    nearest = set(np.argsort(distance)[:32].tolist())
    for f, d in zip(controls["control_feature"], controls["control_density"]):
        assert f in nearest and d == pytest.approx(rates[f])
        assert 0.67 < d / target < 1.5
    # a random feature is not a random edit of the same size: rows in the random condition were steered
    assert (bench.rows[bench.rows.condition == "random feature"]["steers"] != "none").all()


def test_density_measured_on_reference_texts_without_an_index(elab, chinese):
    layer, feature = chinese
    index, elab.index = elab.index, None
    try:
        rates, source = firing_rates(elab, layer, ["The cat sat on the mat.", "今天天气很好。", "def f(x): return x"])
    finally:
        elab.index = index
    assert source.startswith("measured on 3 reference texts")
    assert rates.shape == (elab.sae(layer).d_sae,) and 0 < rates.max() <= 1 and rates.sum() > 0


def test_prompt_only_runs_with_no_hook(elab, examples, chinese, monkeypatch):
    """Every edit the hooks make is recorded with the rows it touches: none is a prompt-only or unsteered row."""
    layer, feature = chinese
    from qscope_lab.steering import bench as bench_module

    touched: list[set[int]] = []
    generating = []
    real, real_generate = engine._edit, bench_module.generate_rows

    def spy(editor, layer_, h, where, lab):
        if generating:  # the generation's edits (the fluency / collateral forward has its own rows)
            touched.append(set(where.any(-1).nonzero().flatten().tolist()))
        return real(editor, layer_, h, where, lab)

    def generate(*args, **kwargs):
        generating.append(1)
        try:
            return real_generate(*args, **kwargs)
        finally:
            generating.clear()

    monkeypatch.setattr(engine, "_edit", spy)
    monkeypatch.setattr(bench_module, "generate_rows", generate)
    result = elab.bench_steer({feature: 32.0}, PROMPTS[:3], examples, layer=layer, max_new_tokens=6)
    edited = set().union(*touched)
    order = [c for c in CONDITIONS for _ in range(3)]  # rows are condition-major
    hooked = {order[i] for i in edited}
    assert hooked == {"steering-only", "prompt + steering", "zero strength", "random feature", "negative strength"}
    # prompt-only is the instruction + prompt through the plain model: a plain HF generate of the same batch
    # (no hook anywhere) gives the same tokens on its rows, and on the unsteered ones
    instructed = [f"{result.settings['instruction']}\n{p}" for p in PROMPTS[:3]]
    inputs = [instructed if c in ("prompt-only", "prompt + steering") else PROMPTS[:3] for c in CONDITIONS]
    enc = elab.tokenize([p for part in inputs for p in part])
    with torch.no_grad():
        ids = elab.hf_model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=elab.tokenizer.pad_token_id)
    plain = elab.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    for c in ("prompt-only", "unsteered"):
        got = result.rows[result.rows.condition == c].sort_values("prompt_index")["text"].tolist()
        k = CONDITIONS.index(c)
        assert got == plain[3 * k:3 * k + 3], c


def test_bench_is_reproducible_from_its_seed(elab, examples, chinese):
    layer, feature = chinese
    options = dict(layer=layer, max_new_tokens=8, do_sample=True, temperature=0.9, samples=2, n_boot=200)
    a = elab.bench_steer({feature: 24.0}, PROMPTS[:3], examples, seed=5, **options)
    b = elab.bench_steer({feature: 24.0}, PROMPTS[:3], examples, seed=5, **options)
    c = elab.bench_steer({feature: 24.0}, PROMPTS[:3], examples, seed=6, **options)
    assert a.rows["text"].tolist() == b.rows["text"].tolist()
    assert a.controls["control_feature"].tolist() == b.controls["control_feature"].tolist()
    cols = [c_ for c_ in a.summary.columns if not c_.startswith("latency")]
    assert a.summary[cols].equals(b.summary[cols])
    assert a.rows["text"].tolist() != c.rows["text"].tolist()


def test_a_steer_that_works_beats_both_controls(bench):
    gates = bench.gates.set_index("gate")
    assert gates.loc["beats zero strength", "passed"] and gates.loc["beats random feature", "passed"]
    assert bench.verdict in ("benchmarked", "validated")
    assert gates.loc["prompt-only beside the steer", "outcome"] in (
        "prompt-only wins", "steering wins", "tie (intervals overlap)")
    assert "prompt-only" in gates.loc["prompt-only beside the steer", "value"]
    assert bench.verdict in bench._repr_html_()


def test_a_feature_that_does_nothing_for_the_concept_fails(elab, examples):
    layer, feature = embedded.known_features()["code"]  # it makes " name name name ...": English, not Chinese
    result = elab.bench_steer({feature: 32.0}, PROMPTS, examples, layer=layer, max_new_tokens=16)
    assert result.verdict == "failed", result.gates
    assert result.reason.startswith("does not beat its controls")
    tiny = elab.bench_steer({embedded.known_features()["chinese"][1]: 0.5}, PROMPTS, examples,
                            layer=embedded.known_features()["chinese"][0], max_new_tokens=16)
    assert tiny.verdict == "failed"  # a working feature at a strength too small to act


def test_concept_forms(elab, chinese):
    layer, feature = chinese
    han = lambda texts: [sum("\u4e00" <= ch <= "\u9fff" for ch in t) / max(len(t), 1) for t in texts]

    class Proba:  # duck-typed like a SeedClassifier / sklearn classifier
        def predict_proba(self, texts):
            s = np.asarray(han(texts))
            return np.stack([1 - s, s], axis=1)

    replies = []

    def chat(messages):  # a chat callable judge: the rating is whether the text has Han characters
        text = messages[-1]["content"].rsplit("Text:\n", 1)[1]
        replies.append(text)
        return "Rating: 2" if han([text])[0] > 0.3 else "0"

    for concept, judge in ((han, None), (Proba(), None), ("writes Chinese", chat)):
        result = elab.bench_steer({feature: 32.0}, PROMPTS[:4], concept, layer=layer, max_new_tokens=8,
                                  instruction="中文：", judge=judge, n_boot=200)
        by = result.to_frame().set_index("condition")
        assert by.loc["steering-only", "concept"] > by.loc["unsteered", "concept"]
    assert len(replies) == 7 * 4 and result.concept["kind"] == "judge"
    assert isinstance(as_concept(Proba()), type(as_concept(Proba())))
    with pytest.raises(ValueError, match="judge="):
        as_concept("writes Chinese")
    with pytest.raises(TypeError, match="concept must be"):
        as_concept(42)
    with pytest.raises(ValueError, match="2 scores for 3 texts"):
        as_concept(lambda texts: [0.0, 1.0])(["a", "b", "c"])
    with pytest.raises(ValueError, match="non-finite"):
        as_concept(lambda texts: [math.nan] * len(texts))(["a"])
    with pytest.raises(TypeError, match="chat"):
        Judge(42, "x")


def test_example_concept_scores_the_examples_language():
    concept = ExampleConcept(["今天天气很好。", "我们去公园散步吧。", "这本书很有意思。"],
                             ["The weather is nice.", "Let us walk in the park.", "This book is interesting."])
    zh, en = concept(["他们在学校学习中文。", "They study English at school."])
    assert zh > 0.9 > 0.1 > en and concept.accuracy == 1.0
    assert concept([""])[0] == 0.0


def test_text_metrics():
    assert distinct_n([1, 2, 1, 2, 1], 2) == 0.5 and math.isnan(distinct_n([1], 2))
    assert repetition([1, 2, 3, 1, 2, 3], 3) == pytest.approx(1 / 4) and repetition([1, 2, 3, 4], 3) == 0.0


def test_examples_table(bench):
    table = bench.examples(2)
    assert list(table.columns) == ["prompt", *CONDITIONS] and table["prompt"].tolist() == PROMPTS[:2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["samples", "n_boot", "random_features", "fluency_bound", "goal", "seed",
                             "neutral_tokens"]),
       value=st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.none()))
def test_bad_options_are_refused_naming_them_before_any_generation(elab, examples, chinese, name, value):
    layer, feature = chinese
    good = {"samples": 1, "n_boot": 100, "random_features": 1, "fluency_bound": 1.0, "goal": "increase", "seed": 0,
            "neutral_tokens": 2}
    if name == "seed" and isinstance(value, int):
        return  # any int is a seed
    if name == "fluency_bound" and isinstance(value, float) and value >= 1.0 and math.isfinite(value):
        return
    calls = []
    real = engine.generate_rows
    engine.generate_rows = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with pytest.raises((TypeError, ValueError), match=name):
            elab.bench_steer({feature: 8.0}, PROMPTS[:2], examples, layer=layer, max_new_tokens=2,
                             **{**good, name: value})
    finally:
        engine.generate_rows = real
    assert not calls


def test_bad_steer_prompts_and_instruction_are_refused(elab, examples, chinese):
    layer, feature = chinese
    with pytest.raises(IndexError, match="out of range"):
        elab.bench_steer({999_999: 8.0}, PROMPTS, examples, layer=layer)
    with pytest.raises(ValueError, match="prompts"):
        elab.bench_steer({feature: 8.0}, [], examples, layer=layer)
    with pytest.raises(ValueError, match="instruction="):
        elab.bench_steer({feature: 8.0}, PROMPTS, lambda t: [0.0] * len(t), layer=layer)
    with pytest.raises(ValueError, match="samples > 1 needs do_sample"):
        elab.bench_steer({feature: 8.0}, PROMPTS, examples, layer=layer, samples=2)
    with pytest.raises(ValueError, match="steer is empty"):
        elab.bench_steer({}, PROMPTS, examples, layer=layer)


def test_autopilot_finds_a_chinese_steer_that_beats_its_random_control_on_held_out_prompts(elab, examples):
    zh, en = examples
    recipe = elab.autopilot(zh, en, PROMPTS + HELD, max_new_tokens=16, seed=0)
    dev, held = recipe.settings["dev_prompts"], recipe.settings["held_out_prompts"]
    assert not set(dev) & set(held) and len(held) >= 2 and sorted(dev + held) == sorted(PROMPTS + HELD)
    bench = recipe.bench
    assert bench.settings["prompts"] == len(held)
    gates = bench.gates.set_index("gate")
    assert gates.loc["beats random feature", "passed"], bench.gates
    assert recipe.status == bench.verdict in ("benchmarked", "validated")
    assert "prompt-only" in gates.loc["prompt-only beside the steer", "value"]
    by = bench.to_frame().set_index("condition")
    assert by.loc["steering-only", "concept_lo"] > by.loc["random feature", "concept_hi"]
    sweep = recipe.sweep_frame()
    assert (sweep.candidate == -1).sum() == 1 and len(recipe.candidates) == 16
    assert {(r["layer"], r["feature"]) for r in recipe.steer_records} <= {
        (c["layer"], c["feature"]) for c in recipe.candidates}
    torch.manual_seed(0)  # leaves no global state behind that the other tests rely on
