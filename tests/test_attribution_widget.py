"""The Attribution widget, Python side, on the embedded default (tests/browser checks the rendering)."""

from __future__ import annotations

import numpy as np
import pytest

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
    w.panel.layer = 1
    w.panel.layer = 2
    assert any(r["label"] == "weather words" for r in w.panel.features)


def test_workbench_has_the_attribution_panel(lab):
    wb = Workbench(lab, ["The cat sat.", "今天"], prompt=PROMPT, layer=2)
    message(wb.attribution, event="select", layer=2, feature=11)
    assert (wb.card.layer, wb.card.feature, wb.heatmap.feature) == (2, 11, 11)
    wb.heatmap.layer = 1
    assert wb.attribution.layer == 1 and wb.attribution.error == ""
