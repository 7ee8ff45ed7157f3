"""The Attribution widget, Python side, on the embedded default (tests/browser checks the rendering)."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import traitlets
from hypothesis import HealthCheck, given, settings

from qscope_lab import Lab, Steer
from qscope_lab.embedded import known_features
from qscope_lab.widgets import Attribution, AttributionPanel, Workbench

PROMPT = "The weather today is"
ZH_LAYER, ZH_FEATURE = known_features()["chinese"]


@pytest.fixture(scope="module")
def lab():
    return Lab.load()


@pytest.fixture(autouse=True)
def labels_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QSCOPE_LAB_HOME", str(tmp_path))


def message(widget, **content):
    widget._handle_custom_msg(content, [])


def test_panel_shows_what_lab_attribute_computes(lab):
    panel = AttributionPanel(lab, PROMPT, layer=2)
    result = lab.attribute(PROMPT, layers=2)
    assert panel.error == "" and panel.tokens == result.tokens[0]
    assert panel.token_attr.dtype == np.float32 and panel.token_attr.shape == (len(panel.tokens),)
    np.testing.assert_allclose(panel.token_attr, result.by_position().attribution, atol=1e-5)
    assert panel.get_state("token_attr")["token_attr"] == panel.token_attr.astype("<f4").tobytes()  # on the wire
    attrs = [abs(r["attribution"]) for r in panel.features]
    assert attrs == sorted(attrs, reverse=True) and len(attrs) == 15
    assert panel.probability == pytest.approx(result.probability) and panel.target_token == "\n"
    assert 0 < panel.error_share < 0.15


def test_ablate_and_steer_show_the_new_probability(lab):
    panel = AttributionPanel(lab, PROMPT, target="年", layer=ZH_LAYER)
    before = panel.probability
    message(panel, event="steer", layer=ZH_LAYER, feature=ZH_FEATURE)
    assert panel.intervention["new_probability"] > 10 * before
    top = panel.features[0]
    message(panel, event="ablate", layer=top["layer"], feature=top["feature"])
    expected = lab.attribute(PROMPT, target="年", layers=ZH_LAYER).intervene(
        [Steer(top["layer"], top["feature"], 1.0, "ablate")]).new_probability[0]
    assert panel.intervention["new_probability"] == pytest.approx(expected) != pytest.approx(before)
    panel.target = "two words"
    assert "Continuation" in panel.error and panel.target_token == "年"  # the view is kept
    message(panel, event="ablate", layer=2, feature=10**6)
    assert "out of range" in panel.error


def test_click_opens_the_card_and_labels_show(lab):
    w = Attribution(lab, PROMPT, layer=2)
    assert w.card is None and len(w.children) == 1
    feature = w.panel.features[1]["feature"]
    message(w.panel, event="select", layer=2, feature=feature)
    assert (w.card.layer, w.card.feature) == (2, feature) and len(w.children) == 2 and w.card.error == ""
    w.card.label = "weather words"
    assert w.panel.name_of(2, feature) == "weather words"  # at once: no re-run needed
    w.panel.layer = 1
    w.panel.layer = 2
    assert w.panel.name_of(2, feature) == "weather words"


def test_workbench_has_the_attribution_panel(lab):
    wb = Workbench(lab, ["The cat sat.", "今天"], prompt=PROMPT, layer=2)
    message(wb.attribution, event="select", layer=2, feature=11)
    assert (wb.card.layer, wb.card.feature, wb.heatmap.feature) == (2, 11, 11)
    wb.heatmap.layer = 1
    assert wb.attribution.layer == 1 and wb.attribution.error == ""


# ------------------------------------------------------------------ issue 29: errors show in the widget
def front_end_sets(widget, **state):
    """What the front end sends when it sets traits (ipywidgets' comm 'update' message)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


@pytest.fixture(scope="module")
def panel(lab):
    return AttributionPanel(lab, PROMPT, layer=2, n_features=5)


@pytest.mark.parametrize("content, shown", [
    ({"event": "select"}, "select: the message has no 'layer'"),
    ({"event": "select", "layer": 2}, "the message has no 'feature'"),
    ({"event": "select", "layer": "2", "feature": 3}, "layer must be an int in 0..3, got '2' (str)"),
    ({"event": "select", "layer": 2, "feature": "3"}, "feature must be an int, got '3' (str)"),
    ({"event": "select", "layer": 2.0, "feature": 3}, "layer must be an int"),
    ({"event": "select", "layer": 9, "feature": 3}, "layer must be an int in 0..3, got 9"),
    ({"event": "select", "layer": 2, "feature": 10**7}, "feature 10000000 is out of range"),
    ({"event": "ablate", "layer": 2, "feature": None}, "ablate: feature must be an int, got None"),
    ({"event": "steer", "feature": 3}, "steer: the message has no 'layer'"),
    ({"event": "explode"}, "unknown event 'explode'"),
    ({"event": ["select"]}, "unknown event ['select']"),
])
def test_bad_messages_show_in_the_panel(panel, content, shown):
    panel.selected = {}
    panel._handle_custom_msg(content, [])  # the entry point of the front end's model.send
    assert shown in panel.error and panel.selected == {}
    message(panel, event="select", layer=2, feature=3)  # the panel still works, and the error line clears
    assert panel.error == "" and panel.selected == {"layer": 2, "feature": 3}


def _payloads():
    value = st.one_of(st.integers(-3, 3000), st.text(max_size=3), st.floats(allow_nan=True), st.none(),
                      st.booleans(), st.lists(st.integers(), max_size=2))
    return st.fixed_dictionaries({"event": st.sampled_from(["select", "ablate", "steer"])},
                                 optional={"layer": value, "feature": value, "extra": value})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_payloads())
def test_random_payloads_never_escape_and_bad_ones_are_named(panel, content):
    panel.error, panel.selected = "", {}
    panel._handle_custom_msg(content, [])
    layer, feature = content.get("layer"), content.get("feature")
    good = (type(layer) is int and 0 <= layer < panel.lab.n_layers
            and type(feature) is int and 0 <= feature < panel.lab.sae(layer).d_sae)
    if good:
        assert panel.error == ""
    else:
        assert panel.error.startswith(content["event"] + ": ") and panel.last_exception is not None
        assert panel.selected == {}


def test_bad_values_from_the_front_end_show_and_are_sent_back(panel):
    shown = len(panel.features)
    for state, why in [({"n_features": -5}, "n_features must be at least 1, got -5"),
                       ({"selected": {"layer": 2}}, "selected must be {} or {'layer': int, 'feature': int}"),
                       ({"selected": {"layer": 2, "feature": -1}}, "selected['feature'] -1 is out of range"),
                       ({"method": "magic"}, "method must be one of"),
                       ({"steer_alpha": "x"}, "steer_alpha")]:
        front_end_sets(panel, **state)
        assert why in panel.error, state
    assert (panel.n_features, panel.selected, panel.method, len(panel.features)) == (5, {}, "grad_x_act", shown)
    front_end_sets(panel, n_features=3)
    assert len(panel.features) == 3 and panel.error == ""


def test_constructor_and_traits_check_n_features_and_selected(lab, panel):
    shown = panel.n_features
    with pytest.raises(ValueError, match="n_features must be at least 1, got -5"):
        AttributionPanel(lab, PROMPT, layer=2, n_features=-5)
    with pytest.raises(TypeError, match="n_features must be an int"):
        AttributionPanel(lab, PROMPT, layer=2, n_features="3")
    with pytest.raises(ValueError, match="layer must be an int in 0..3, got 7"):
        AttributionPanel(lab, PROMPT, layer=7)
    with pytest.raises(ValueError, match="steer_alpha must be a finite number"):
        AttributionPanel(lab, PROMPT, layer=2, steer_alpha=float("nan"))
    with pytest.raises(traitlets.TraitError, match="n_features must be at least 1, got 0"):
        panel.n_features = 0
    with pytest.raises(traitlets.TraitError, match="got keys \\['layer'\\]"):
        panel.selected = {"layer": 2}
    assert panel.n_features == shown and panel.selected == {} and len(panel.features) == shown


def test_attribution_incomplete_selection_opens_no_card(lab):
    w = Attribution(lab, PROMPT, layer=2)
    front_end_sets(w.panel, selected={"layer": 2})
    assert "selected must be" in w.panel.error and w.card is None
    message(w.panel, event="select", layer=2, feature="11")
    assert "feature must be an int" in w.panel.error and w.card is None


def test_workbench_refuses_empty_texts(lab):
    with pytest.raises(ValueError, match="no texts given"):
        Workbench(lab, [], prompt="")
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        Workbench(lab, ["The cat.", ""], prompt=PROMPT)
