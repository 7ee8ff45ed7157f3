"""Widget state and messages, Python side, on the embedded default (the browser tests check the rendering)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import anywidget
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
import torch
import traitlets
from hypothesis import given, settings
from test_classify import EN_SEEDS, EN_TEST, ZH_SEEDS, ZH_TEST

from qscope_lab import Lab, SeedClassifier
from qscope_lab.analysis.features import compare_texts, logit_table
from qscope_lab.analysis.labels import FeatureLabels, label_namespace
from qscope_lab.analysis.reference import Reference
from qscope_lab.embedded import known_features
from qscope_lab.viz import charts
from qscope_lab.widgets import ClassifierPanel, Compare, FeatureCard, Heatmap, SteeringPanel, Workbench, _charts
from qscope_lab.widgets._base import ArrayTrait, assets_dir
from qscope_lab.widgets.attribution import AttributionPanel
from qscope_lab.widgets.steerbench import SteerBenchView

TEXTS = ["The 3 cats sat on the mat in 1999.", "今天的天气很好，我们去公园散步。", "def add(a, b):\n    return a + b\n"]
PROMPT = "The weather today is"
ZH_LAYER, ZH_FEATURE = known_features()["chinese"]  # the model card's steering feature (contrast(zh, en))
WIDGETS = Path(__file__).resolve().parents[1] / "widgets"
COMPONENTS = sorted(p.name for p in (WIDGETS / "src").glob("*.js"))
LAB_WIDGETS = {"attribution.js": AttributionPanel, "card.js": FeatureCard, "classifier.js": ClassifierPanel,
               "compare.js": Compare, "heatmap.js": Heatmap, "steering.js": SteeringPanel,
               "steerbench.js": SteerBenchView}


@pytest.fixture(scope="module")
def lab():
    return Lab.load()


@pytest.fixture(scope="module")
def reference(lab):
    return Reference(lab, Reference.of(lab).texts[::6])  # 38 documents: quick, still all three languages


@pytest.fixture(autouse=True)
def labels_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QSCOPE_LAB_HOME", str(tmp_path))
    return tmp_path


def message(widget, **content):
    widget._handle_custom_msg(content, [])


def test_heatmap_sends_the_selected_feature_as_float32(lab):
    hm = Heatmap(lab, TEXTS, layer=2)
    acts = lab.encode(TEXTS, 2, skip_first=True)
    assert hm.error == "" and hm.tokens == acts.tokens
    assert hm.feature == hm.grid_features[0]
    n = acts.n_tokens
    assert (hm.values.dtype, hm.top_values.dtype, hm.top_indices.dtype, hm.counted.dtype, hm.grid.dtype) == (
        np.float32, np.float32, np.int32, np.uint8, np.float32)
    assert (hm.values.shape, hm.top_values.shape, hm.top_indices.shape, hm.counted.shape, hm.grid.shape) == (
        (n,), (n, hm.n_top), (n, hm.n_top), (n,), (len(hm.grid_features), n))
    np.testing.assert_allclose(hm.values, torch.cat(acts.feature(hm.feature)).numpy(), atol=1e-6)
    assert hm.vmax == pytest.approx(float(hm.values.max()))
    top = hm.top_values
    assert (top >= 0).all() and (top[:, 0] > 0).any()  # hover order: activation x rarity (test_first_hour.py)
    assert hm.counted[0] == 0 and (top[hm.counted == 0] == 0).all()  # skipped tokens carry nothing
    assert hm.grid.max(1).min() > 0
    # the front-end gets each array as its little-endian bytes (a DataView in JS)
    state = hm.get_state()
    assert state["values"] == hm.values.astype("<f4").tobytes()
    assert state["top_indices"] == hm.top_indices.astype("<i4").tobytes() and state["counted"] == hm.counted.tobytes()
    # the hover of a token lists its nonzero top features, strongest first
    row = int(np.argmax(top[:, 0] > 0))
    text = next(t for t in range(len(TEXTS)) if acts.rows(t).start <= row < acts.rows(t).stop)
    listed = hm.token_hover(text, row - acts.rows(text).start)
    assert listed and listed == [(int(f), float(v)) for f, v in zip(hm.top_indices[row], top[row]) if v > 0]

    hm.feature = 7
    np.testing.assert_allclose(hm.values, torch.cat(acts.feature(7)).numpy(), atol=1e-6)
    hm.skip_first = False
    assert hm.counted[0] == 1


def test_heatmap_bad_input_shows_an_error_and_keeps_the_view(lab):
    hm = Heatmap(lab, TEXTS, layer=1)
    before = (hm.tokens, hm.values, hm.layer)
    hm.layer = 9
    assert "layer must be an int in 0..3, got 9" in hm.error and hm.layer == 1
    assert (hm.tokens, hm.layer) == (before[0], before[2]) and hm.values is before[1]
    hm.feature = 10**6
    assert "does not exist" in hm.error and hm.values is before[1]
    hm.feature = 3
    assert hm.error == ""
    hm.texts = ["  "]
    assert "non-empty" in hm.error and hm.tokens == before[0]


def test_feature_card_shows_contexts_logits_and_histogram(lab, reference):
    card = FeatureCard(lab, layer=ZH_LAYER, feature=ZH_FEATURE, reference=reference)
    assert card.error == ""
    acts = [c["activation"] for c in card.contexts]
    assert acts == sorted(acts, reverse=True) and len(acts) >= 1
    assert acts[0] == pytest.approx(card.stats["max_activation"])
    assert card.stats["firing_rate"] == pytest.approx(card.stats["firing_count"] / card.stats["tokens"])
    assert card.stats["decoder_norm"] == pytest.approx(float(lab.sae(ZH_LAYER).W_dec[:, ZH_FEATURE].norm()), rel=1e-4)
    expected = logit_table(lab, ZH_LAYER, ZH_FEATURE, n=8)
    assert [r["token"] for r in card.logits] == expected.token.tolist()
    assert card.histogram_svg.startswith("<svg")
    card.feature = 99999
    assert "out of range" in card.error and card.contexts and card.stats["feature"] == ZH_FEATURE


def test_labels_persist_across_kernels(lab, reference, labels_home):
    card = FeatureCard(lab, layer=ZH_LAYER, feature=ZH_FEATURE, reference=reference)
    card.label, card.note = "Chinese text", "found by contrast(zh, en)"
    card.feature = 5
    assert card.label == ""
    card.feature = ZH_FEATURE
    assert card.label == "Chinese text"
    # a new interpreter (a restarted kernel) reads the same file
    code = ("from qscope_lab.analysis.labels import FeatureLabels; import json; "
            f"print(json.dumps(FeatureLabels({label_namespace(lab)!r}).get({ZH_LAYER}, {ZH_FEATURE})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"QSCOPE_LAB_HOME": str(labels_home), "PATH": ""})
    assert json.loads(out.stdout) == {"label": "Chinese text", "note": "found by contrast(zh, en)"}
    assert FeatureLabels(label_namespace(lab)).to_frame().feature.tolist() == [ZH_FEATURE]
    (labels_home / "labels.json").write_text("{not json")
    card.label = "again"
    assert "not a labels file" in card.error
    assert (labels_home / "labels.json").read_text() == "{not json"  # nothing overwritten


def test_feature_card_steer_button_calls_back(lab, reference):
    card = FeatureCard(lab, layer=1, feature=11, reference=reference)
    got = []
    card.on_steer(lambda layer, feature: got.append((layer, feature)))
    message(card, event="steer")
    assert got == [(1, 11)]


def test_steering_panel_matches_lab_generate(lab):
    panel = SteeringPanel(lab, PROMPT, layer=ZH_LAYER, features=[ZH_FEATURE])
    assert panel.error == "" and panel.steered_tokens == panel.baseline_tokens and not any(panel.differs)
    panel.features = [dict(panel.features[0], alpha=24.0)]
    expected = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 24.0}, max_new_tokens=32)
    assert panel.steered_tokens == lab.token_strings(expected.steered_ids[0])
    assert panel.baseline_tokens == lab.token_strings(expected.baseline_ids[0])
    assert any(panel.differs) and panel.generations == 2
    assert panel.steer() == {(ZH_LAYER, ZH_FEATURE): 24.0}
    panel.positions = "generated"
    gen_only = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 24.0}, positions="generated",
                           baseline=False)
    assert panel.steered_tokens == lab.token_strings(gen_only.steered_ids[0])
    assert panel.next_tokens == []  # the first generated token never sees the edit in this mode
    panel.positions = "all"
    table = lab.next_tokens(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 24.0}, top=5).round(4)
    assert panel.next_tokens == table.to_dict("records")


def test_steering_panel_passes_generate_options_to_every_generation(lab):
    """The panel's repetition penalty (given as generate_kwargs, or set on its control) reaches baseline, steered
    text and sweep alike; its default is the library's."""
    from qscope_lab.methods import generation
    from qscope_lab.widgets.steering import default_repetition_penalty

    default = getattr(generation, "DEFAULT_REPETITION_PENALTY", 1.0)
    options = {"repetition_penalty": 1.0 if default != 1.0 else 1.3}  # not the default: it must change the text
    panel = SteeringPanel(lab, PROMPT, layer=ZH_LAYER, features=[(ZH_FEATURE, 24.0)], max_new_tokens=16,
                          generate_kwargs=options)
    assert panel.repetition_penalty == options["repetition_penalty"]
    assert panel.default_repetition_penalty == default_repetition_penalty() == default
    expected = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 24.0}, max_new_tokens=16, **options)
    plain = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 24.0}, max_new_tokens=16)
    assert panel.baseline_tokens == lab.token_strings(expected.baseline_ids[0])
    assert panel.steered_tokens == lab.token_strings(expected.steered_ids[0])
    assert expected.steered_ids != plain.steered_ids  # the option changed what was generated
    table = panel.sweep(alphas=[0, 24.0])
    assert table.text.tolist() == [expected.baseline[0], expected.steered[0]]
    panel.repetition_penalty = default  # the control: back to the library's default, what lab.generate does
    assert panel.error == "" and panel.steered_tokens == lab.token_strings(plain.steered_ids[0])


def test_steering_panel_sampling_seed_and_chat_controls(lab):
    """temperature > 0 samples from the seed (the same seed, the same text; the sliders' difference is the
    steer's); chat wraps the prompt in the chat template, as lab.generate(chat=True) does."""
    panel = SteeringPanel(lab, PROMPT, layer=ZH_LAYER, features=[(ZH_FEATURE, 8.0)], max_new_tokens=12)
    greedy = list(panel.steered_tokens)
    panel.temperature, panel.seed = 1.0, 7
    assert panel.error == ""
    sampled = list(panel.steered_tokens)
    expected = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 8.0}, max_new_tokens=12, temperature=1.0,
                            top_p=1.0, seed=7, repetition_penalty=panel.repetition_penalty)
    assert sampled == lab.token_strings(expected.steered_ids[0]) and sampled != greedy
    panel.seed = 8
    assert panel.steered_tokens != sampled
    panel.seed = 7
    assert panel.steered_tokens == sampled  # a seed reproduces its text
    panel.temperature = 0.0
    assert panel.steered_tokens == greedy
    panel.chat = True
    chat = lab.generate(PROMPT, layer=ZH_LAYER, steer={ZH_FEATURE: 8.0}, max_new_tokens=12, chat=True,
                        repetition_penalty=panel.repetition_penalty)
    assert panel.error == "" and panel.steered_tokens == lab.token_strings(chat.steered_ids[0])
    for name, value, shown in [("temperature", -1.0, "temperature must be at least 0"),
                               ("top_p", 0.0, "top_p must be above 0"), ("seed", -3, "seed must be"),
                               ("repetition_penalty", 0.0, "repetition_penalty must be above 0")]:
        front_end_sets(panel, **{name: value})
        assert shown in panel.error, (name, panel.error)


def test_steering_panel_messages_add_search_sweep_remove(lab):
    panel = SteeringPanel(lab, PROMPT, layer=2, max_new_tokens=8)
    message(panel, event="add", feature=11)
    assert [(r["layer"], r["feature"], r["alpha"]) for r in panel.features] == [(2, 11, 0.0)]
    message(panel, event="add", feature=10**6)
    assert "out of range" in panel.error and len(panel.features) == 1
    panel.add_feature(ZH_FEATURE, 8.0, layer=1)
    assert panel.features[-1]["layer"] == 1 and panel.error == ""
    message(panel, event="sweep", index=0)
    assert [r["alpha"] for r in panel.sweep_rows] == [-32, -16, -8, 0, 8, 16, 32]
    assert panel.sweep_rows[3]["same"]
    message(panel, event="search", query="的")
    assert panel.search_results and all(
        any("的" in t for t in r["top_tokens"]) or r["match"] != "top token" for r in panel.search_results)
    message(panel, event="search", query="11")
    assert panel.search_results[0] == {**panel.search_results[0], "feature": 11, "match": "id"}
    message(panel, event="remove", index=0)
    assert [r["feature"] for r in panel.features] == [ZH_FEATURE]
    panel.prompt = " "
    assert panel.error == "generate: type a prompt"


def test_compare_ranks_by_firing_rate_difference(lab):
    a, b = "The cat sat on the mat.", "The cat sat on the 我们 today."
    cmp = Compare(lab, a, b, skip_shared_prefix=True, top=5)
    assert cmp.error == ""
    table = compare_texts(lab, a, b, top=5, skip_shared_prefix=True)
    assert [(r["layer"], r["feature"]) for r in cmp.rows] == list(zip(table.layer, table.feature))
    assert [r["name"] for r in cmp.rows] == list(table.name)  # the table's name column reaches the rows as text
    for _, group in table.groupby("layer"):
        assert (group["diff"].abs().diff().dropna() <= 1e-6).all()
    ids_a, ids_b = lab.tokenizer(a).input_ids, lab.tokenizer(b).input_ids
    assert cmp.shared == next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y) >= 5
    row = cmp.rows[-1]
    cmp.selected = {"layer": row["layer"], "feature": row["feature"]}
    acts = lab.encode([a, b], row["layer"], skip_first=True)
    assert cmp.values.dtype == np.float32
    np.testing.assert_allclose(cmp.values, torch.cat(acts.feature(row["feature"])).numpy(), atol=1e-6)


def test_classifier_panel_fits_reports_and_round_trips(lab, tmp_path):
    heldout = pd.DataFrame({"text": ZH_TEST[:10] + EN_TEST[:10], "label": [1] * 10 + [0] * 10})
    panel = ClassifierPanel(lab, ZH_SEEDS[:12], EN_SEEDS[:12], heldout=heldout, path=str(tmp_path / "clf.json"))
    assert panel.error == ""
    scores = {row["method"]: row["f1"] for row in panel.metrics}
    assert scores["calibrated_rule"] >= 0.9 and scores["report_rule"] >= 0.9
    assert len(panel.predictions) == 20 and len(panel.chosen) == len(panel.classifier.features_) >= 1
    assert all(row["statistic"] == "mean" and row["direction"] in (-1, 1) for row in panel.chosen)
    # each prediction names the three features with the largest part in it, as explain() ranks them
    first = panel.classifier.explain(panel.predictions[0]["text"], n=3)
    assert panel.predictions[0]["why"] == "  ".join(f"L{r.layer} f{r.feature} {r.margin:+.2f}"
                                                    for r in first.itertuples())
    assert panel.chart_svg.startswith("<svg")
    message(panel, event="export")
    assert (tmp_path / "clf.json").exists() and "saved" in panel.message
    features = panel.classifier.features_
    message(panel, event="load")
    assert panel.classifier.features_ == features
    assert panel.metrics[0]["method"] == "loaded"
    assert panel.metrics[0]["f1"] == pytest.approx(scores["calibrated_rule"])
    panel.heldout = "no sign here"
    message(panel, event="fit")
    assert "must start with + or -" in panel.error and panel.classifier.features_ == features
    # a dense rule (top_k="all", fitted in code) loads whole and is listed by its first 32 features
    dense = SeedClassifier(lab, top_k="all", progress=False).fit(ZH_SEEDS[:12] + EN_SEEDS[:12], [1] * 12 + [0] * 12)
    panel.heldout = ""
    panel.load(str(dense.save(tmp_path / "dense.json")))
    assert len(panel.classifier.features_) > 32 and len(panel.chosen) == 32
    assert [(r["layer"], r["feature"]) for r in panel.chosen] == dense.features_[:32]
    assert f"{len(dense.features_)} feature(s) (the first 32 listed)" in panel.message


def test_workbench_links_heatmap_card_and_steering(lab, reference):
    wb = Workbench(lab, TEXTS, prompt=PROMPT, layer=2, reference=reference)
    feature = wb.heatmap.grid_features[2]
    wb.heatmap.feature = feature
    assert (wb.card.layer, wb.card.feature) == (2, feature)
    shown = []
    show = wb.card._show
    wb.card._show = lambda: (shown.append((wb.card.layer, wb.card.feature)), show())[1]
    wb.heatmap.layer = 1
    assert wb.card.layer == 1 and wb.steering.layer == 1
    # one render per layer switch, of the new layer's selected feature (never f<old> of the new layer first)
    assert shown == [(1, wb.heatmap.feature)] and wb.card.feature == wb.heatmap.feature
    wb.card.select(2, feature)  # the card's own choice reaches the heatmap, rendered once more
    assert (wb.heatmap.layer, wb.heatmap.feature) == (2, feature) and shown[1:] == [(2, feature)]
    wb.heatmap.layer = 1
    message(wb.card, event="steer")
    assert wb.steering.features[-1] == {**wb.steering.features[-1], "layer": 1, "feature": wb.card.feature,
                                         "alpha": 8.0}
    wb.card.label = "my label"  # reaches every part at once (analysis.labels announces it)
    key = f"1/{wb.card.feature}"
    assert wb.heatmap.names[key] == wb.card.names[key] == "my label"
    message(wb.card, event="steer")
    assert wb.steering.names[key] == "my label"


# ---------------------------------------------------------------------------------------------- display names
def test_every_widget_names_its_features_as_explain_names_does(lab, reference):
    """Each widget's ``names`` are display_names of what it shows: a label, else an explanation, else top
    tokens (the embedded index has no stored explanations, so top tokens here)."""
    from qscope_lab.explain.names import display_names

    hm = Heatmap(lab, TEXTS, layer=2)
    card = FeatureCard(lab, layer=ZH_LAYER, feature=ZH_FEATURE)
    panel = SteeringPanel(lab, PROMPT, layer=ZH_LAYER, features=[ZH_FEATURE], max_new_tokens=4)
    attr = AttributionPanel(lab, PROMPT, layer=2, n_features=5)
    cmp = Compare(lab, "The cat sat on the mat.", "今天的天气很好。", layers=[2], top=4)
    for widget, pairs in [(hm, [(2, f) for f in hm.grid_features]), (card, [(ZH_LAYER, ZH_FEATURE)]),
                          (panel, [(ZH_LAYER, ZH_FEATURE)]),
                          (attr, [(r["layer"], r["feature"]) for r in attr.features]),
                          (cmp, [(r["layer"], r["feature"]) for r in cmp.rows])]:
        assert widget.error == "", widget.error
        for layer, feature in pairs:
            assert widget.name_of(layer, feature) == display_names(lab, layer, [feature])[0], (widget, feature)
    hover = {int(f) for f in hm.top_indices[hm.top_values > 0]}  # every feature a token's hover lists
    assert hover and all(hm.name_of(2, f) == display_names(lab, 2, [f])[0] for f in hover
                         if display_names(lab, 2, [f])[0] != f"L2/F{f}")


def test_a_label_saved_in_one_widget_renames_every_open_widget(lab):
    hm = Heatmap(lab, TEXTS, layer=2)
    feature = hm.grid_features[0]
    card = FeatureCard(lab, layer=2, feature=feature)
    panel = SteeringPanel(lab, PROMPT, layer=2, features=[feature], max_new_tokens=4)
    before = hm.name_of(2, feature)
    assert before and before == card.name_of(2, feature) == panel.name_of(2, feature)
    card.label = "my feature"
    assert hm.name_of(2, feature) == card.name_of(2, feature) == panel.name_of(2, feature) == "my feature"
    assert panel.generations == 1  # renaming regenerates nothing
    other = FeatureCard(lab, layer=2, feature=feature)  # a second card on the same feature shows the label ...
    assert other.label == "my feature"
    FeatureLabels.for_lab(lab).set(2, feature, label="renamed in code")  # ... and follows a label saved anywhere
    assert other.label == card.label == "renamed in code" and hm.name_of(2, feature) == "renamed in code"
    card.label = ""  # cleared: back to the top tokens
    assert hm.name_of(2, feature) == panel.name_of(2, feature) == before


def test_label_subscribers_are_held_weakly(lab):
    """A widget subscribes a weak reference to its method: the announcements keep no widget alive, and a
    subscriber that is gone is dropped instead of called."""
    import gc
    import weakref

    from qscope_lab.analysis import labels as label_store

    panel = SteeringPanel(lab, PROMPT, layer=2, features=[11], max_new_tokens=4)
    mine = [r for r in label_store._SUBSCRIBERS if getattr(r(), "__self__", None) is panel]
    assert len(mine) == 1 and isinstance(mine[0], weakref.WeakMethod)

    class Listener:
        def __init__(self):
            self.seen = []

        def heard(self, change):
            self.seen.append((change["layer"], change["feature"], change["label"]))

    listener = Listener()
    label_store.subscribe(listener.heard)
    FeatureLabels.for_lab(lab).set(2, 11, label="first")
    assert listener.seen == [(2, 11, "first")] and panel.name_of(2, 11) == "first"
    gone = weakref.ref(listener)
    del listener
    gc.collect()
    assert gone() is None  # subscribing kept nothing alive
    FeatureLabels.for_lab(lab).set(2, 11, label="second")  # the collected one is skipped, the panel still hears
    assert panel.name_of(2, 11) == "second"


def test_card_explanation_contexts_similar_and_test_box(lab):
    from qscope_lab.explain import offline
    from qscope_lab.widgets.card import similar_features

    card = FeatureCard(lab, layer=ZH_LAYER, feature=ZH_FEATURE, n_contexts=5, window=6)
    assert card.error == ""
    # the explanation and its score: the offline explainer's, stored with the shipped index
    want = offline.explain(lab.index, ZH_LAYER, [ZH_FEATURE])[0]
    assert card.explanation == {**card.explanation, "text": want["explanation"], "stored": True}
    assert card.explanation["score"] == pytest.approx(want["score"]) and 0 < card.explanation["score"] <= 1
    lab.explain(ZH_LAYER, features=[ZH_FEATURE], overwrite=True)  # stored again, in the user's home: read back
    card.feature = 5
    card.feature = ZH_FEATURE
    assert card.explanation["stored"] and card.explanation["text"] == want["explanation"]
    # every context token carries the feature's value on it, read from the index's windows
    top = lab.index.top_contexts(ZH_LAYER, ZH_FEATURE, n=5)
    for shown, row in zip(card.contexts, top.itertuples()):
        lo = max(0, row.center - 6)
        assert shown["left_values"] == pytest.approx(list(row.values[lo:row.center]), abs=1e-4)
        assert shown["right_values"] == pytest.approx(list(row.values[row.center + 1:row.center + 7]), abs=1e-4)
        assert len(shown["left"]) == len(shown["left_values"]) and len(shown["right"]) == len(shown["right_values"])
    assert any(v > 0 for c in card.contexts for v in c["left_values"] + c["right_values"])  # not only the peak
    # similar features: the largest decoder cosines, computed here in numpy
    w = lab.sae(ZH_LAYER).W_dec.detach().float().numpy()
    cos = (w[:, ZH_FEATURE] @ w) / (np.linalg.norm(w, axis=0) * np.linalg.norm(w[:, ZH_FEATURE]))
    cos[ZH_FEATURE] = -np.inf
    assert [r["feature"] for r in card.similar] == np.argsort(-cos)[:len(card.similar)].tolist()
    assert [r["cosine"] for r in card.similar] == pytest.approx(np.sort(cos)[::-1][:len(card.similar)], abs=1e-3)
    assert card.similar == similar_features(lab, ZH_LAYER, ZH_FEATURE)
    assert all(card.name_of(r["layer"], r["feature"]) for r in card.similar)  # each by its name too
    # test your own text: the feature on each token of it, as lab.encode gives it
    text = "我有１２３只猫"
    pairs = card.test(text)
    acts = lab.encode([text], ZH_LAYER)
    assert [v for _, v in pairs] == pytest.approx(acts.feature(ZH_FEATURE)[0].tolist(), abs=1e-5)
    assert max(v for _, v in pairs) > 1  # full-width digits: it fires
    assert "".join(t for t, _ in pairs) == text
    card.feature = 5  # the box follows the selected feature
    assert card.test_values.tolist() == pytest.approx(acts.feature(5)[0].tolist(), abs=1e-5)


def test_heatmap_switching_layer_selects_that_layers_strongest_feature(lab):
    hm = Heatmap(lab, TEXTS, layer=2)
    hm.feature = hm.grid_features[3]
    hm.layer = 1  # the same id in layer 1 is an unrelated feature
    assert hm.error == "" and hm.feature == hm.grid_features[0]
    acts = lab.encode(TEXTS, 1)
    np.testing.assert_allclose(hm.values, torch.cat(acts.feature(hm.feature)).numpy(), atol=1e-6)
    assert all(k.startswith("1/") for k in hm.names)


# ---------------------------------------------------------------------------------------------- front-end build
def sources_hash() -> str:
    """What widgets/build.mjs writes into each built file's header (the same function as its sourcesHash)."""
    inputs = sorted([p.relative_to(WIDGETS).as_posix() for p in (WIDGETS / "src").rglob("*") if p.is_file()]
                    + ["build.mjs", "package.json"])
    digest = hashlib.sha256()
    for rel in inputs:
        text = (WIDGETS / rel).read_text(encoding="utf-8").replace("\r\n", "\n")
        digest.update((rel + "\0" + text + "\0").encode("utf-8"))
    return digest.hexdigest()


def built_files() -> list[str]:
    return COMPONENTS + ["qscope.css"]


def test_built_front_end_is_up_to_date_with_its_sources():
    """dist/ is committed: each built file names the hash of the sources it was built from (no node needed)."""
    assert set(COMPONENTS) == set(LAB_WIDGETS), "a component without a widget, or a widget without a component"
    expected = sources_hash()
    assert sorted(p.name for p in (WIDGETS / "dist").iterdir()) == sorted(built_files())
    for name in built_files():
        head = (WIDGETS / "dist" / name).read_text(encoding="utf-8")[:400]
        found = re.search(r"sources sha256:([0-9a-f]{64})", head)
        assert found, f"dist/{name} has no sources hash in its header"
        assert found.group(1) == expected, (f"widgets/dist/{name} is stale: run `npm run build` in widgets/ "
                                            f"(or `npm run watch` while editing)")


@pytest.mark.skipif(not (shutil.which("node") and (WIDGETS / "node_modules" / "esbuild").is_dir()),
                    reason="node and widgets/node_modules/esbuild (`npm ci` in widgets/) rebuild dist/")
def test_built_front_end_rebuilds_identically(tmp_path):
    subprocess.run(["node", "build.mjs", "--outdir", str(tmp_path)], cwd=WIDGETS, check=True, capture_output=True,
                   timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(built_files())
    for name in built_files():
        assert (tmp_path / name).read_bytes() == (WIDGETS / "dist" / name).read_bytes(), f"dist/{name} differs"


@pytest.mark.parametrize("name", COMPONENTS)
def test_components_share_the_controls_and_export_a_render(name):
    source = (WIDGETS / "src" / name).read_text(encoding="utf-8")
    assert re.search(r'^import .* from "\./lib/', source, re.M), f"{name} imports no shared module"
    assert re.search(r"^export default \{ render \};", source, re.M)
    for own in (r"\bqs-layer\b", r"change:n_layers", r"Array\.from\(\{ length",  # a layer picker of its own
                r"function (h|f32|i32|u8|heat|fmt|pct|featureName|setTrait|statusLine|layerPicker)\b"):
        assert not re.search(own, source), f"{name} has its own copy of a shared control or helper ({own})"
    built = (WIDGETS / "dist" / name).read_text(encoding="utf-8")
    assert re.search(r"export\s*\{\s*[\w$]+ as default\s*\};?\s*$|^export default ", built, re.M)
    assert not re.search(r"(^|[;}])import[\s{*]", built, re.M), "dist modules are self-contained (loaded as a string)"
    assert "function layerPicker(" in (WIDGETS / "src" / "lib" / "controls.js").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", COMPONENTS)
def test_every_render_returns_its_views_cleanup(name):
    """Listeners and timers go through the view's ``viewModel`` and ``render`` returns its ``dispose`` (anywidget
    calls it when the view is removed); tests/browser/test_cleanup.py runs the cleanups in a real JupyterLab."""
    source = (WIDGETS / "src" / name).read_text(encoding="utf-8")
    assert re.search(r"^function render\(\{ model: host, el \}\) \{\n  const model = viewModel\(host\);", source, re.M)
    assert len(re.findall(r"\bhost\b", source)) == 2, "only viewModel(host) touches the host model"
    assert re.search(r"^  return model\.dispose;\n\}\n\nexport default \{ render \};", source, re.M)
    for bare in (r"(?<![\w.])setTimeout\(", r"(?<![\w.])setInterval\(", r"\b(window|document)\.addEventListener\("):
        assert not re.search(bare, source), f"{name}: {bare} outlives the view (model.later, or an element)"
    controls = (WIDGETS / "src" / "lib" / "controls.js").read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w.])setTimeout\(", controls)


@pytest.mark.parametrize("name", COMPONENTS)
def test_widgets_load_the_built_files(name):
    """``_esm`` / ``_css`` are paths to dist/ (anywidget turns them into FileContents, watched under
    ANYWIDGET_HMR=1)."""
    widget = LAB_WIDGETS[name]
    assert type(widget._esm).__name__ == "FileContents" and type(widget._css).__name__ == "FileContents"
    assert str(widget._esm) == (assets_dir() / name).read_text(encoding="utf-8")
    assert str(widget._css) == (assets_dir() / "qscope.css").read_text(encoding="utf-8")
    assert assets_dir() in (WIDGETS / "dist", Path(sys.modules["qscope_lab"].__file__).parent / "_widgets" / "dist")


# ---------------------------------------------------------------------------------------------- Python plumbing
def test_unknown_constructor_keywords_are_refused(lab, reference):
    with pytest.raises(TypeError, match=r"^FeatureCard\(\) got unexpected keyword argument\(s\): 'featur' "
                                        r"\(did you mean 'feature'\?\)$"):
        FeatureCard(lab, featur=3, reference=reference)
    with pytest.raises(TypeError, match=r"^Heatmap\(\) got unexpected keyword argument\(s\): 'layr', 'zzz'"):
        Heatmap(lab, TEXTS, layr=2, zzz=1)
    with pytest.raises(TypeError, match=r"SteeringPanel\(\) .*'max_tokens'"):
        SteeringPanel(lab, PROMPT, max_tokens=4)
    with pytest.raises(TypeError, match=r"Compare\(\) .*'skip_shared'"):
        Compare(lab, "a b", "a c", skip_shared=True)
    with pytest.raises(TypeError, match=r"ClassifierPanel\(\) .*'heldout_texts'"):
        ClassifierPanel(lab, fit=False, heldout_texts=["x"])
    with pytest.raises(TypeError, match=r"Workbench\(\) .*'steer_alfa' \(did you mean 'steer_alpha'\?\)"):
        Workbench(lab, TEXTS, steer_alfa=4.0)
    # traits the widget declares are still keywords (here: no constructor parameter of their own)
    hm = Heatmap(lab, TEXTS, layer=2, n_top=3, layout={"width": "50%"})
    assert hm.error == "" and hm.n_top == 3 and hm.layout.width == "50%"
    assert hm.top_values.shape == (sum(map(len, hm.tokens)), 3)


def test_observers_are_quiet_during_construction_and_quietly(lab, monkeypatch):
    calls = []
    encode = Heatmap._encode
    monkeypatch.setattr(Heatmap, "_encode", lambda self, **kw: (calls.append(self.layer), encode(self, **kw))[1])
    hm = Heatmap(lab, TEXTS, layer=2, feature=5, skip_first=False)
    assert calls == [2] and hm.feature == 5 and hm.error == ""  # constructor values did not re-encode
    hm.layer = 1
    assert calls == [2, 1]
    tokens = hm.tokens
    with hm.quietly():
        hm.texts = ["another text"]
        with hm.quietly():  # nestable
            hm.skip_first = True
        hm.layer = 3
    assert calls == [2, 1] and hm.tokens == tokens and (hm.layer, hm.skip_first) == (3, True)
    assert hm._quiet == 0
    hm.layer = 2  # reacts again after the block
    assert calls == [2, 1, 2] and hm.tokens == lab.encode(["another text"], 2).tokens
    seen = []
    hm.observe(lambda change: seen.append(change["new"]), names="feature")
    with hm.quietly():  # other observers (links, the front-end sync) still see the value
        hm.feature = 9
    assert seen == [9] and hm.values.size


# ---------------------------------------------------------------------------------------------- array traits
class Arrays(traitlets.HasTraits):
    """Array traits as the widgets declare them."""

    values = ArrayTrait("float32", ndim=1).tag(sync=True)
    top = ArrayTrait("int32", ndim=2).tag(sync=True)
    counted = ArrayTrait("uint8").tag(sync=True)


ARRAY_TRAITS = {"values": (np.float32, 1), "top": (np.int32, 2), "counted": (np.uint8, None)}
NUMERIC = st.sampled_from(["bool", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "float16",
                           "float32", "float64"])


def holds_exactly(array: np.ndarray, dtype) -> bool:
    """Whether ``dtype`` holds every value of an integer array, compared as Python numbers (int == float is exact
    in Python: no wrap-around, no rounding)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cast = array.astype(dtype)
    return cast.ravel().tolist() == array.ravel().tolist()


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(ARRAY_TRAITS)), source=NUMERIC, shape=hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                         min_side=0, max_side=4),
       data=st.data())
def test_array_trait_keeps_its_dtype_and_dimensions_or_refuses_by_name(name, source, shape, data):
    dtype, ndim = ARRAY_TRAITS[name]
    value = data.draw(hnp.arrays(source, shape))
    widget = Arrays()
    wrong_ndim = value.ndim != ndim if ndim is not None else value.ndim == 0
    try:
        widget.set_trait(name, value)
    except traitlets.TraitError as err:
        assert f"The {name!r} trait of a Arrays instance expected" in str(err)
        assert str(np.dtype(dtype)) in str(err)
        # refused only for a wrong number of dimensions, or values the dtype would change
        assert wrong_ndim or not np.can_cast(value.dtype, dtype) and (
            value.dtype.kind == "f" or not holds_exactly(value, dtype))
        assert getattr(widget, name).size == 0  # the old value stays
        return
    assert not wrong_ndim
    stored = getattr(widget, name)
    assert stored.dtype == dtype and stored.shape == value.shape and stored.flags.c_contiguous
    if value.dtype.kind != "f":
        assert holds_exactly(value, dtype)  # no value changed
    np.testing.assert_array_equal(stored, value)
    assert not stored.flags.writeable  # in place it would never reach the front-end
    # the wire: little-endian bytes, row-major; and back to the same array
    trait = Arrays.class_traits()[name]
    wire = trait.metadata["to_json"](stored, widget)
    assert wire == stored.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    if stored.size:
        back = trait.metadata["from_json"](memoryview(wire), widget)
        assert back.dtype == dtype and back.shape == stored.shape
        assert np.array_equal(back, stored, equal_nan=stored.dtype.kind == "f")


def test_array_trait_casts_only_where_no_value_changes():
    w = Arrays()
    w.counted = np.array([True, False, True])  # bool -> uint8: safe
    w.top = [[1, 2**31 - 1], [-(2**31), 0]]  # Python ints (int64) that int32 holds
    w.values = np.arange(4, dtype=np.int16)  # int16 -> float32: safe
    assert (w.counted.dtype, w.top.dtype, w.values.dtype) == (np.uint8, np.int32, np.float32)
    w.values = np.zeros(0)  # empty float64: nothing to lose
    refused = {
        "float64 activations": ("values", np.array([0.1, 0.2])),
        "ids out of int32": ("top", np.array([[2**31]])),
        "a negative count": ("counted", [-1]),
        "floats for ints": ("top", np.ones((2, 2))),
        "bytes": ("values", np.float32([1, 2]).tobytes()),
        "strings": ("values", np.array(["1.0"])),
        "complex": ("values", np.ones(2, np.complex64)),
        "a 2-d array for 1-d": ("values", np.zeros((2, 2), np.float32)),
        "a 1-d array for 2-d": ("top", np.zeros(3, np.int32)),
        "a scalar": ("counted", np.uint8(3)),
        "a ragged list": ("top", [[1, 2], [3]]),
        "None": ("values", None),
    }
    for why, (name, value) in refused.items():
        with pytest.raises(traitlets.TraitError, match=rf"^The '{name}' trait of a Arrays instance expected"):
            w.set_trait(name, value)
            pytest.fail(f"{why} was accepted")
    with pytest.raises(traitlets.TraitError, match=r"cast on purpose with \.astype\('float32'\)"):
        w.values = np.array([0.1])
    with pytest.raises(traitlets.TraitError, match=r"int64 with values int32 cannot hold"):
        w.top = [[2**40]]


def test_array_trait_notifies_on_a_new_array_only():
    w = Arrays()
    seen = []
    w.observe(lambda change: seen.append(change["new"]), names="values")
    w.values = np.float32([1, 2, 3])
    w.values = np.float32([1, 2, 3])  # equal: no change, nothing sent
    w.values = np.float32([1, 2, 4])
    w.values = np.float32([1, 2, 4, 0])  # a different shape
    w.values = np.float32([np.nan])
    w.values = np.float32([np.nan])  # NaN equals NaN here
    assert [list(v) for v in seen[:3]] == [[1, 2, 3], [1, 2, 4], [1, 2, 4, 0]] and len(seen) == 4


def test_array_trait_round_trips_through_a_widget_comm():
    """Python array -> the bytes a widget sends -> the array the widget reads back (as from the front-end)."""
    hm_like = type("Grid", (anywidget.AnyWidget,), {"grid": ArrayTrait("float32", ndim=2).tag(sync=True),
                                                    "_esm": "export default { render() {} };"})
    widget = hm_like()
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    widget.grid = array
    sent = widget.get_state("grid")["grid"]
    assert isinstance(sent, bytes) and sent == array.astype("<f4").tobytes()
    # the front-end sends the buffer back (set_state is what a comm message calls)
    widget.set_state({"grid": memoryview(sent[:32])})
    assert widget.grid.shape == (2, 4) and np.array_equal(widget.grid, array[:2])
    with pytest.raises(traitlets.TraitError, match="do not make rows of shape"):
        widget.set_state({"grid": memoryview(sent[:20])})


# ------------------------------------------------------------------ issue 29: errors show in the widget
def front_end_sets(widget, **state):
    """What the front end sends when it sets traits (ipywidgets' comm 'update' message)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


@pytest.mark.parametrize("content, shown", [
    ({"event": "add"}, "add: the message has no 'feature'"),
    ({"event": "add", "feature": "11"}, "add: feature must be an int, got '11' (str)"),
    ({"event": "add", "feature": 11.5}, "feature must be an int, got 11.5"),
    ({"event": "add", "feature": 11, "alpha": "x"}, "alpha must be a number, got 'x'"),
    ({"event": "add", "feature": 11, "alpha": 1e9}, "alpha must be at most"),
    ({"event": "remove"}, "remove: the message has no 'index'"),
    ({"event": "sweep", "index": "0"}, "sweep: index must be an int"),
    ({"event": "sweep", "index": -1}, "index must be at least 0, got -1"),
    ({"event": "search", "query": None}, "search: query must be a str"),
    ({"event": "teleport"}, "unknown event 'teleport'"),
    ("add", "must be an object, got str"),
])
def test_steering_bad_messages_show_in_the_panel(lab, content, shown):
    panel = SteeringPanel(lab, PROMPT, layer=2, features=[11], max_new_tokens=2, top_next=0)
    panel._handle_custom_msg(content, [])
    assert shown in panel.error and [r["feature"] for r in panel.features] == [11]


def test_steering_bad_values_from_the_front_end_show_and_are_kept_out(lab):
    panel = SteeringPanel(lab, PROMPT, layer=2, features=[11], max_new_tokens=2, top_next=0)
    rows = panel.features
    for state, why in [({"features": [{"layer": 2, "feature": 11}]}, "features[0] has no 'alpha'"),
                       ({"features": [{"layer": 2, "feature": 11, "alpha": "big"}]}, "features[0]['alpha']"),
                       ({"features": [{"layer": 8, "feature": 11, "alpha": 1}]}, "features[0]['layer']"),
                       ({"positions": "everywhere"}, "positions must be one of"),
                       ({"max_new_tokens": 0}, "max_new_tokens must be at least 1")]:
        front_end_sets(panel, **state)
        assert why in panel.error, state
    assert panel.positions == "all" and panel.max_new_tokens == 2
    front_end_sets(panel, features=rows)  # the next good value works
    assert panel.error == "" and panel.steered_for == []
    with pytest.raises(ValueError, match="top_next must be at least 0"):
        SteeringPanel(lab, PROMPT, top_next=-1)
    with pytest.raises(traitlets.TraitError, match="alpha_max must be above 0"):
        panel.alpha_max = 0


def test_classifier_export_refuses_to_replace_a_file_that_is_not_a_classifier(lab, tmp_path):
    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text('{"cells": [], "nbformat": 4}')
    panel = ClassifierPanel(lab, ZH_SEEDS[:4], EN_SEEDS[:4], path=str(notebook))
    assert panel.error == "" and panel.classifier is not None
    message(panel, event="export")
    assert "not replaced" in panel.error and "export:" in panel.error
    assert notebook.read_text() == '{"cells": [], "nbformat": 4}'  # untouched
    saved = tmp_path / "clf.json"
    panel.path = str(saved)
    message(panel, event="export")
    assert panel.error == "" and SeedClassifier.load(saved, lab).features_ == panel.classifier.features_
    message(panel, event="export")  # a classifier file may be replaced
    assert panel.error == "" and "saved" in panel.message
    message(panel, event="unknown")
    assert "unknown event 'unknown'" in panel.error
    with pytest.raises(traitlets.TraitError, match="top_k must be at least 1"):
        panel.top_k = -5


def test_other_widgets_check_their_counts(lab):
    with pytest.raises(traitlets.TraitError, match="n_top must be at least 1"):
        Heatmap(lab, TEXTS[0], n_top=-5)
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        Heatmap(lab, TEXTS[0], max_length=0)
    cmp = Compare(lab, "The cat sat.", "The dog sat.", layers=[2], top=2)
    front_end_sets(cmp, top=-5)
    assert "top must be at least 1, got -5" in cmp.error and cmp.top == 2


def test_card_messages_go_through_the_error_line(lab):
    """FeatureCard's one front-end message (send to steering) runs like every widget's: a bad message shows in the
    error line instead of raising out of the handler, and a steer reaches its callbacks."""
    from qscope_lab.widgets import FeatureCard

    card = FeatureCard(lab, layer=1, feature=3)
    got = []
    card.on_steer(lambda layer, feature: got.append((layer, feature)))
    card._on_message(card, ["steer"], [])
    assert "must be an object" in card.error
    card._on_message(card, {"event": "steer"}, [])
    assert got == [(1, 3)]


def test_widget_chart_titles_wrap_to_the_drawn_width_and_log_axes_label_every_tick():
    """The widgets' charts fit their SVG (tests/browser/test_rough_edges.py measures them rendered): a title, or
    a title and subtitle, wider than the chart is wrapped to the width vega drew, losing no word; a log axis has
    no blank labels (vega's own log ticks draw most labels as empty text)."""
    scores = pd.DataFrame({"layer": [0, 1, 2, 3], "feature": [5, 6, 7, 8], "top1_delta": [.2, .5, .9, .4],
                           "topk_delta": [.1, .2, .3, .4]})
    narrow = charts.classifier_layers(scores, [2]).properties(width=90)
    long = "P(fires | positive) - P(fires | negative), best feature per layer"
    subtitled = narrow.properties(title=charts.alt.TitleParams("the top-1 delta of each layer's best feature",
                                                                subtitle="the chosen layer in the accent colour"))
    for chart, words in ((narrow, long), (subtitled, "the top-1 delta of each layer's best feature "
                                                     "the chosen layer in the accent colour")):
        svg = _charts.widget_svg(chart)
        chars = int((_charts.svg_width(svg) - 2 * _charts.TITLE_MARGIN_PX) / _charts.TITLE_CHAR_PX)
        title = re.search(r'role-title".*', svg).group(0)
        lines = re.findall(r"<tspan[^>]*>([^<]*)</tspan>", title)
        assert len(lines) >= 3 and all(len(line) <= max(chars, _charts.MIN_TITLE_CHARS) for line in lines), lines
        assert " ".join(lines) == words
    short = charts.classifier_layers(scores, [2]).properties(title="layers")
    assert "<tspan" not in _charts.widget_svg(short)  # a title that fits stays one line
    # log ticks: 1-2-5 where a decade has room, powers of ten where it has not, nothing for no positive values
    assert charts.log_ticks([0.5, 8.0], 280) == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
    assert charts.log_ticks([1, 20_000], 120) == [1, 10, 100, 1_000, 10_000, 100_000]
    assert charts.log_ticks([0, -1, float("nan")], 280) == []
    edges = np.geomspace(0.5, 8, 12)
    histogram = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": np.arange(1, 12) * 3})
    svg = _charts.widget_svg(charts.binned_histogram(histogram, title="f1: fires on 1.00% of 148,767 tokens"))
    labels = [re.findall(r"<text[^>]*?(?:/>|>([^<]*)</text>)", group)
              for group in re.findall(r'role-axis-label".*?</g>', svg)]
    assert len(labels) == 2 and all(labels) and all(text for axis in labels for text in axis), labels
    assert "148,767" in svg
