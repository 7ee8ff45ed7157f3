"""Bad input never gives a silent wrong answer: every public entry point returns a valid result or raises a
ValueError / TypeError / IndexError / FileNotFoundError that names the argument, no output holds NaN, nothing
runs unbounded, and the Lab works on the next valid call (property-based, with hypothesis)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import D_SAE, N_LAYERS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import SASFTLoss, SeedClassifier, Steer
from qscope_lab.core.steering import parse_steer
from qscope_lab.widgets import Compare, SteeringPanel

ACCEPTED = (ValueError, TypeError, IndexError, FileNotFoundError)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

# values a hostile user (or a notebook slider gone wrong) passes where ints, floats and texts are expected
weird = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.binary(max_size=4), st.lists(st.integers(-3, 3), max_size=3),
    st.just(float("nan")), st.just(math.inf), st.just(2.7), st.just("2"), st.just([]), st.just([True]),
    st.just(10**9), st.just(-1), st.just(np.int64(1)), st.just(np.float32(np.nan)),
)


def check_refusal(call, *names: str):
    """Either a valid result (returned) or an accepted error whose message names one of ``names``."""
    try:
        return call()
    except ACCEPTED as err:
        assert any(name in str(err) for name in names), f"{type(err).__name__}: {err} (names none of {names})"
        return None


def still_works(lab):
    out = lab.generate("The cat", layer=1, steer={3: 2.0}, max_new_tokens=2)
    assert len(out.steered_ids[0]) == 2 and out.baseline is not None


# ---------------------------------------------------------------------------------------------- Lab calls
@SETTINGS
@given(layer=weird)
def test_encode_layer(lab, layer):
    acts = check_refusal(lambda: lab.encode("hello", layer=layer), "layer")
    if acts is not None:
        assert isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 0 <= layer < N_LAYERS
        assert torch.isfinite(acts.values).all()


@SETTINGS
@given(texts=st.one_of(weird, st.lists(st.one_of(st.text(max_size=8), st.none(), st.integers()), max_size=3),
                       st.just("\ud800"), st.just(b"bytes")))
def test_encode_texts(lab, texts):
    acts = check_refusal(lambda: lab.encode(texts, layer=1), "text")
    if acts is not None:
        assert torch.isfinite(acts.values).all() and len(acts) >= 1


@SETTINGS
@given(alpha=weird, feature=weird, layer=weird)
def test_generate_steer(lab, alpha, feature, layer):
    try:
        spec = {feature: alpha}
    except TypeError:  # an unhashable key: no dict to pass
        return
    out = check_refusal(lambda: lab.generate("The cat", layer=layer, steer=spec, max_new_tokens=2),
                        "alpha", "feature", "layer", "steer")
    if out is not None:
        assert math.isfinite(float(alpha)) and not isinstance(alpha, bool) and abs(alpha) <= 1e4
        assert isinstance(feature, (int, np.integer)) and 0 <= feature < D_SAE
        assert out.steered[0] != "" or len(out.steered_ids[0]) == 2
    still_works(lab)


@SETTINGS
@given(max_new_tokens=weird, positions=st.one_of(weird, st.sampled_from(["all", "prompt", "generated", "x"])))
def test_generate_lengths_and_positions(lab, max_new_tokens, positions):
    out = check_refusal(lambda: lab.generate("The cat", layer=1, steer={3: 1.0}, positions=positions,
                                             max_new_tokens=max_new_tokens), "max_new_tokens", "positions")
    if out is not None:  # only an exact int that fits the context, and a real position spec
        assert isinstance(max_new_tokens, (int, np.integer)) and not isinstance(max_new_tokens, bool)
        assert 1 <= max_new_tokens <= lab.max_positions
        assert len(out.steered_ids[0]) <= max_new_tokens


def test_generation_length_is_bounded_by_the_context(lab):
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000 .* 512 positions"):
        lab.generate("The cat", max_new_tokens=10**9)
    with pytest.raises(ValueError, match=r"the prompt has \d{3,} tokens; .* reads at most 512 positions"):
        lab.generate("word " * 600, max_new_tokens=2)


def test_over_long_input_is_truncated_with_a_warning_that_says_how_long(lab):
    text = "word " * 2000
    with pytest.warns(UserWarning, match=r"text 0 has \d{4} tokens; .* reads at most 512 positions: truncated"):
        acts = lab.encode(text, layer=1)
    assert acts.n_tokens == 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit max_length is the user's choice: no warning
        assert lab.encode(text, layer=1, max_length=16).n_tokens == 16


@SETTINGS
@given(layer=st.one_of(weird, st.lists(weird, max_size=2)))
def test_reconstruct_layers(lab, layer):
    frame = check_refusal(lambda: lab.reconstruct(["The cat sat on the mat."], layer=layer), "layer")
    if frame is not None:
        assert len(frame) >= 1 and np.isfinite(frame[["fvu", "cosine", "ce_spliced"]].to_numpy()).all()


@SETTINGS
@given(alphas=st.one_of(weird, st.lists(weird, min_size=1, max_size=3)), top=weird)
def test_sweep_and_next_tokens(lab, alphas, top):
    table = check_refusal(lambda: lab.sweep("The cat", 1, 3, alphas=alphas, max_new_tokens=2), "alpha")
    if table is not None:
        assert len(table) >= 1
    table = check_refusal(lambda: lab.next_tokens("The cat", layer=1, steer={3: 4.0}, top=top), "top")
    if table is not None:
        assert np.isfinite(table[["baseline_p", "steered_p"]].to_numpy()).all()


def test_named_refusals(lab):
    """The coercions the issue found, each refused with the argument named."""
    cases = [
        (lambda: lab.generate("hi", layer="2", steer={5: 1.0}), TypeError, "layer"),
        (lambda: lab.generate("hi", layer=2.7, steer={5: 1.0}), TypeError, "layer"),
        (lambda: lab.generate("hi", layer=1, steer={3.9: 1.0}), TypeError, "feature"),
        (lambda: lab.generate("hi", layer=1, steer={5: float("nan")}), ValueError, "alpha"),
        (lambda: lab.generate("hi", layer=1, steer={5: 1e9}), ValueError, "alpha"),
        (lambda: lab.generate("hi", max_new_tokens=2.5), TypeError, "max_new_tokens"),
        (lambda: lab.generate("hi", layer=1, steer={5: 1.0}, positions=[]), ValueError, "positions"),
        (lambda: lab.generate("hi", layer=1, steer={5: 1.0}, positions=[True]), TypeError, "positions[0]"),
        (lambda: lab.reconstruct("hi", layer=[]), ValueError, "layer"),
        (lambda: lab.encode(None, layer=1), TypeError, "texts"),
        (lambda: lab.encode(b"hi", layer=1), TypeError, "texts"),
        (lambda: lab.encode("a\ud800b", layer=1), ValueError, "texts"),
        (lambda: lab.next_tokens("hi", layer=1, steer={5: math.inf}), ValueError, "alpha"),
        (lambda: Steer(1, 5, float("nan")), ValueError, "alpha"),
        (lambda: parse_steer("5=1"), TypeError, "steer"),
    ]
    for call, kind, name in cases:
        with pytest.raises(kind, match=name.replace("[", r"\[").replace("]", r"\]")):
            call()
    still_works(lab)


def test_device_errors_name_the_device():
    from qscope_lab import Lab

    with pytest.raises(ValueError, match=r"device='cuda:7'"):
        Lab.load(device="cuda:7")
    with pytest.raises(ValueError, match="is not a device"):
        Lab.load(device="gpu-please")


def test_sasft_loss_refuses_nan_alphas(lab):
    with pytest.raises(ValueError, match="alphas of layer 3 must be finite"):
        SASFTLoss(lab, {3: [1, 2]}, alphas=float("nan"))
    with pytest.raises(IndexError, match=r"features\[3\]"):
        SASFTLoss(lab, {3: [D_SAE]}, alphas=0.0)


# ---------------------------------------------------------------------------------------------- workflows
@SETTINGS
@given(labels=st.one_of(weird, st.lists(st.one_of(st.booleans(), st.sampled_from([0, 1, 2, "yes", None])),
                                        min_size=4, max_size=4)),
       top_k=st.one_of(st.integers(-2, 12), st.floats(allow_nan=True)))
def test_classifier_fit_and_predict(lab, labels, top_k):
    texts = ["The cat sat.", "A dog ran.", "猫坐在垫子上。", "今天天气很好。"]
    clf = SeedClassifier(lab, layers=[1, 2], top_k=top_k, progress=False)
    fitted = check_refusal(lambda: clf.fit(texts, labels), "labels", "top_k", "classes", "texts", "feature fires")
    if fitted is not None:
        scores = clf.decision_function(texts)
        assert np.isfinite(scores).all() and clf.predict(texts).dtype == bool


# ---------------------------------------------------------------------------------------------- widgets
@SETTINGS
@given(top=weird)
def test_compare_top(lab, top):
    widget = check_refusal(lambda: Compare(lab, "The cat sat.", "The dog sat.", layers=[1], top=top), "top")
    if widget is not None:
        assert widget.error == "" and 1 <= len(widget.rows) <= top


def test_widgets_show_bad_values_and_recover(lab, tmp_path):
    from qscope_lab.analysis.labels import FeatureLabels

    panel = SteeringPanel(lab, "The cat", layer=1, features=[3], labels=FeatureLabels.for_lab(lab, tmp_path / "l.json"))
    panel._on_message(panel, {"event": "remove", "index": 7}, [])
    assert "index 7 is out of range" in panel.error and len(panel.features) == 1
    panel._on_message(panel, {"event": "remove", "index": "x"}, [])
    assert "index must be an int" in panel.error
    panel.features = [{**panel.features[0], "alpha": float("nan")}]
    assert "alpha" in panel.error
    panel.features = [{**panel.features[0], "alpha": 4.0}]
    assert panel.error == "" and panel.steered_tokens  # the next valid value works


# ---------------------------------------------------------------------------------------------- CLI
@SETTINGS
@given(layer=st.one_of(st.integers(-5, 9), st.sampled_from(["x", "1.5", "nan", ""])),
       top=st.one_of(st.integers(-3, 9), st.sampled_from(["two", "1e9"])),
       alpha=st.sampled_from(["4", "-8.5", "nan", "inf", "1e30", "x", ""]))
def test_cli_subcommands_refuse_in_one_line(lab, monkeypatch, capsys, layer, top, alpha):
    from qscope_lab.cli import encode as encode_command
    from qscope_lab.cli import main
    from qscope_lab.cli import steer as steer_command

    monkeypatch.setattr(encode_command, "lab_from_args", lambda args: lab)  # the session's model, loaded once
    monkeypatch.setattr(steer_command, "lab_from_args", lambda args: lab)
    for argv in (["encode", "--layer", str(layer), "--top", str(top), "The cat sat."],
                 ["steer", "--layer", str(layer), "--steer", f"3={alpha}", "--max-new-tokens", "2", "The cat"]):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own refusal of a non-int: usage + one error line, exit 2
            code = exit_.code
        out = capsys.readouterr()
        if code == 0:
            assert "nan" not in out.out.lower().split("prompt:")[0]
        else:
            assert code == 2 and "Traceback" not in out.err
            assert out.err.strip().splitlines()[-1].count("error:") == 1


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer=st.integers(-3, 9), feature=st.integers(-5, 3 * D_SAE))
def test_card_and_heatmap_traits_show_errors_and_recover(lab, tmp_path_factory, layer, feature):
    from qscope_lab.analysis.labels import FeatureLabels
    from qscope_lab.widgets import FeatureCard, Heatmap

    labels = FeatureLabels.for_lab(lab, tmp_path_factory.mktemp("labels") / "labels.json")
    card = FeatureCard(lab, layer=1, feature=3, labels=labels)
    heatmap = Heatmap(lab, ["The cat sat on the mat."], layer=1)
    card.feature, card.layer = feature, layer
    heatmap.layer = layer
    valid = 0 <= layer < N_LAYERS and 0 <= feature < D_SAE
    assert (card.error == "") == valid, card.error
    if not valid:
        assert "layer" in card.error or "feature" in card.error
        card.label = "typo label"  # never stored for a feature that does not exist
        assert labels.to_frame().empty or (labels.to_frame().feature < D_SAE).all()
    assert (heatmap.error == "") == (0 <= layer < N_LAYERS)
    card.layer, card.feature = 1, 5  # the next valid values work
    heatmap.layer = 2
    assert card.error == "" and card.contexts and heatmap.error == "" and heatmap.layer == 2
