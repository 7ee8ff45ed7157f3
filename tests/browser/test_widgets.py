"""The widgets in a real JupyterLab, in headless Chromium: what a user sees and does.

Each test runs a notebook on the embedded default, checks the rendered DOM, acts with the mouse, and saves a
screenshot (build/screenshots, or $QSCOPE_SCREENSHOTS) that the README uses.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from .harness import assert_no_errors

SETUP = """
import os, tempfile
os.environ["QSCOPE_LAB_HOME"] = tempfile.mkdtemp()  # labels of this test only
from qscope_lab import Lab
from qscope_lab.embedded import known_features
from qscope_lab.widgets import Heatmap, FeatureCard, SteeringPanel, ClassifierPanel, Compare, Workbench
lab = Lab.load()
"""

TEXTS = ["The 3 cats sat on the mat in 1999, and the dog barked twice.",
         "今天的天气很好，我们去公园散步。",
         "def add(a, b):\n    return a + b\n"]


def output_value(page, key: str) -> str:
    """A value a cell printed as ``KEY=value``."""
    text = page.locator(".jp-OutputArea-output").all_inner_texts()
    for block in text:
        match = re.search(rf"{key}=(\S+)", block)
        if match:
            return match.group(1)
    raise AssertionError(f"no {key}= in the outputs: {text}")


def drag_slider(page, slider, value: float, lo: float, hi: float) -> None:
    """Drag a range input's thumb with the mouse and release it at ``value``."""
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    thumb = 8  # half the thumb: the track's ends are inset by it
    def x_of(v):
        return box["x"] + thumb + (v - lo) / (hi - lo) * (box["width"] - 2 * thumb)
    current = float(slider.input_value())
    page.mouse.move(x_of(current), y)
    page.mouse.down()
    page.mouse.move(x_of(value), y, steps=8)
    page.mouse.up()


def test_heatmap_colours_every_token_and_hover_lists_features(notebook_page, screenshots_dir):
    page = notebook_page("heatmap.ipynb", [SETUP, f"hm = Heatmap(lab, {TEXTS!r}, layer=2)\nhm",
                                           "print(f'TOKENS={sum(map(len, hm.tokens))} VMAX={hm.vmax:.4f} "
                                           "FEATURE={hm.feature}')"])
    widget = page.locator(".qs-heatmap")
    expect(widget).to_be_visible()
    n_tokens = int(output_value(page, "TOKENS"))
    vmax = float(output_value(page, "VMAX"))
    spans = widget.locator(".qs-tok")
    expect(spans).to_have_count(n_tokens)
    # every token's colour is its activation on the scale 0 -> transparent, vmax -> full orange
    colours = spans.evaluate_all("els => els.map(e => [Number(e.dataset.act), getComputedStyle(e).backgroundColor])")
    lit = 0
    for act, colour in colours:
        if act > 0:
            lit += 1
            alpha = float(re.findall(r"[\d.]+", colour)[3]) if colour.startswith("rgba") else 1.0
            assert colour.startswith("rgb") and "255, 102, 0" in colour
            assert abs(alpha - min(1.0, act / vmax)) < 0.01, (act, colour)
        else:
            assert colour in ("rgba(0, 0, 0, 0)", "transparent"), colour
    assert lit >= 1
    # the skipped first token of each text is greyed
    assert widget.locator(".qs-tok.qs-skipped").count() >= len(TEXTS)
    # hovering a token lists its top features with values
    spans.nth(5).hover()
    rows = widget.locator(".qs-tooltip .qs-tip-row")
    expect(rows.first).to_be_visible()
    assert re.fullmatch(r"f\d+.*\d+\.\d\d", rows.first.inner_text().replace("\n", " ").strip())
    page.screenshot(path=str(screenshots_dir / "heatmap.png"), full_page=False)
    # clicking a feature in the tooltip selects it
    chosen = rows.nth(1).get_attribute("data-feature")
    rows.nth(1).click()
    expect(widget.locator(".qs-legend-name")).to_contain_text(f"f{chosen}")
    widget.locator(".qs-feature-input").fill("99999")
    widget.locator(".qs-feature-input").press("Enter")
    expect(widget.locator(".qs-status")).to_contain_text("does not exist")
    assert_no_errors(page)


def test_workbench_click_feature_updates_card_and_steering(notebook_page, screenshots_dir):
    page = notebook_page("workbench.ipynb", [SETUP, f"wb = Workbench(lab, {TEXTS!r}, prompt='The weather today is', "
                                                     "layer=2)\nwb"], timeout=180)
    heatmap, card, steer = page.locator(".qs-heatmap"), page.locator(".qs-card"), page.locator(".qs-steer")
    expect(card.locator(".qs-context-row").first).to_be_visible()
    label = heatmap.locator(".qs-grid-label").nth(2)
    feature = label.get_attribute("data-feature")
    label.click()
    expect(card.locator(".qs-card-title")).to_have_text(f"L2 · f{feature}", timeout=30_000)
    expect(card.locator(".qs-histogram svg")).to_be_visible()
    card.locator(".qs-label").fill("my feature")
    card.locator(".qs-label").press("Enter")
    expect(heatmap.locator(f".qs-grid-label[data-feature='{feature}']")).to_contain_text("my feature")
    card.locator(".qs-send-steer").click()
    expect(steer.locator(f".qs-slider-row[data-feature='{feature}']")).to_be_visible()
    expect(steer.locator(".qs-alpha-value")).to_have_text("8.0")
    # the README's picture shows the workbench from its top: once the new slider's light is out (while it is lit
    # a redraw keeps the slider in view), scroll back up to the cell
    expect(steer.locator(".qs-new")).to_have_count(0, timeout=10_000)
    page.locator(".jp-Cell").nth(1).evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshots_dir / "workbench.png"), full_page=True)
    assert_no_errors(page)


def test_slider_move_changes_the_steered_text(notebook_page, screenshots_dir):
    page = notebook_page("steering.ipynb", [SETUP, "layer, feature = known_features()['chinese']\n"
                                                    "panel = SteeringPanel(lab, 'The weather today is', "
                                                    "layer=layer, features=[feature])\npanel"])
    panel = page.locator(".qs-steer")
    expect(panel.locator(".qs-baseline .qs-gen-tok").first).to_be_attached()
    baseline = panel.locator(".qs-baseline").inner_text()
    assert panel.locator(".qs-steered").inner_text() == baseline
    slider = panel.locator(".qs-slider").first
    drag_slider(page, slider, 24, -32, 32)
    expect(panel.locator(".qs-diff").first).to_be_visible(timeout=30_000)
    assert panel.locator(".qs-steered").inner_text() != baseline
    assert float(panel.locator(".qs-alpha-value").inner_text()) > 16
    expect(panel.locator(".qs-next tr")).to_have_count(6)  # header + the 5 most likely next tokens
    panel.locator(".qs-sweep-button").click()
    expect(panel.locator(".qs-sweep tr")).to_have_count(8, timeout=60_000)
    page.screenshot(path=str(screenshots_dir / "steering.png"), full_page=True)
    assert_no_errors(page)


def test_compare_row_click_colours_both_texts(notebook_page, screenshots_dir):
    page = notebook_page("compare.ipynb", [SETUP, "cmp = Compare(lab, 'The cat sat on the mat.', "
                                                   "'今天的天气很好，我们去公园。')\ncmp"])
    widget = page.locator(".qs-compare")
    rows = widget.locator(".qs-compare-row")
    expect(rows.first).to_be_visible()
    row = rows.nth(3)
    layer, feature = row.get_attribute("data-layer"), row.get_attribute("data-feature")
    row.click()
    expect(widget.locator(".qs-compare-caption")).to_contain_text(f"L{layer} f{feature}")
    expect(widget.locator(".qs-compare-texts .qs-text")).to_have_count(2)
    page.screenshot(path=str(screenshots_dir / "compare.png"))
    assert_no_errors(page)


def test_classifier_shows_metrics_and_exports(notebook_page, screenshots_dir):
    from test_classify import EN_SEEDS, EN_TEST, ZH_SEEDS, ZH_TEST

    cell = (f"panel = ClassifierPanel(lab, positives={ZH_SEEDS[:12]!r}, negatives={EN_SEEDS[:12]!r}, "
            f"heldout=pd.DataFrame({{'text': {ZH_TEST[:10] + EN_TEST[:10]!r}, 'label': [1] * 10 + [0] * 10}}))\npanel")
    page = notebook_page("classifier.ipynb", [SETUP, "import pandas as pd", cell], timeout=180)
    widget = page.locator(".qs-classifier")
    f1 = widget.locator(".qs-metric-row[data-method='calibrated_rule'] .qs-f1")
    expect(f1).to_be_visible()
    fitted_f1 = f1.inner_text()
    assert float(fitted_f1) >= 0.9
    report_f1 = float(widget.locator(".qs-metric-row[data-method='report_rule'] .qs-f1").inner_text())
    assert report_f1 >= 0.9
    expect(widget.locator(".qs-chosen-row").first).to_be_visible()
    expect(widget.locator(".qs-chosen-row .qs-threshold").first).to_contain_text(".")
    expect(widget.locator(".qs-delta-chart svg")).to_be_visible()
    expect(widget.locator(".qs-pred")).to_have_count(20)
    why = widget.locator(".qs-pred").first.locator(".qs-why-item")  # what decided: three features, signed margins
    expect(why).to_have_count(3)
    expect(why.first.locator(".qs-fid")).to_have_text(re.compile(r"^L\d+ f\d+$"))
    expect(why.first.locator(".qs-num")).to_have_text(re.compile(r"^ [+−]\d+\.\d\d$"))
    page.screenshot(path=str(screenshots_dir / "classifier.png"), full_page=True)
    widget.locator(".qs-export").click()
    expect(widget.locator(".qs-message")).to_contain_text("saved to seed_classifier.json")
    widget.locator(".qs-load").click()
    expect(widget.locator(".qs-message")).to_contain_text("loaded seed_classifier.json")
    expect(widget.locator(".qs-metric-row[data-method='loaded'] .qs-f1")).to_have_text(fitted_f1)
    assert_no_errors(page)
