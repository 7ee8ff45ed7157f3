"""The widgets' rough edges a new user hit (issue 28), each checked in a real JupyterLab as the user saw it:
ClassifierPanel headers and numbers on one line, signed weights, the statistic as a menu, chart titles and axis
labels inside their charts; Enter in the steering panel's fields acts at once; the heatmap grid's columns carry
their tokens, hover rows by activation, a layer switch selects that layer's feature; thousands separators
alike in card and chart; "steer with it" brings the new slider into view; text contrast >= 4.5:1 in the dark
theme, measured from the rendered colours."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from qscope_lab import FeatureIndex
from qscope_lab.embedded import INDEX_DIR, known_features

from .harness import assert_no_errors
from .test_names import printed_json
from .test_widgets import SETUP, TEXTS

PROMPT = "The weather today is"

# How many line boxes an element's text takes (a header broken mid-word takes 2).
JS_LINES = """els => els.map(e => { const r = document.createRange(); r.selectNodeContents(e);
  const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
  return [e.textContent, tops.size]; })"""

# Every <text> of each chart inside its SVG's box; x-axis labels of one axis apart from each other.
JS_CHART = """svg => { const box = svg.getBoundingClientRect(); const out = {outside: [], overlaps: []};
  for (const t of svg.querySelectorAll('text')) { const r = t.getBoundingClientRect();
    if (r.width && (r.left < box.left - 1 || r.right > box.right + 1
        || r.top < box.top - 1 || r.bottom > box.bottom + 1))
      out.outside.push(t.textContent); }
  for (const axis of svg.querySelectorAll('.role-axis')) {
    const labels = Array.from(axis.querySelectorAll('.role-axis-label text'))
      .filter(t => t.getAttribute('opacity') !== '0'
      && getComputedStyle(t).opacity !== '0').map(t => [t.textContent, t.getBoundingClientRect()]);
    for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
      const [a, ra] = labels[i], [b, rb] = labels[j];
      if (ra.left < rb.right && rb.left < ra.right && ra.top < rb.bottom && rb.top < ra.bottom)
        out.overlaps.push(a + '|' + b);
    } }
  return out; }"""

# WCAG contrast of every visible text in the widgets, from the rendered colours (backgrounds composited up the tree).
JS_CONTRAST = """root => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g) || ['0', '0', '0', '0'];
    return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
  const over = (top, under) => top.slice(0, 3).map((c, i) => top[3] * c + (1 - top[3]) * under[i]);
  const lum = (rgb) => { const ch = rgb.map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]; };
  const backOf = (el) => { const layers = []; for (let at = el; at; at = at.parentElement) {
      const c = parse(getComputedStyle(at).backgroundColor); if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let rgb = [255, 255, 255]; for (const c of layers.reverse()) rgb = over(c, rgb); return rgb; };
  const bad = []; let checked = 0;
  for (const el of root.querySelectorAll('*')) {
    if (el.closest('svg') || el.closest('.qs-stale')) continue;
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    const r = el.getBoundingClientRect();
    if (!own || !r.width || !r.height || getComputedStyle(el).visibility === 'hidden') continue;
    const bg = backOf(el); const fg = over(parse(getComputedStyle(el).color), bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x); const ratio = (a + 0.05) / (b + 0.05);
    checked += 1;
    if (ratio < 4.5) bad.push(`${el.tagName.toLowerCase()}.${el.className} `
      + `${JSON.stringify(el.textContent.slice(0, 20))} ` +
      `${ratio.toFixed(2)} (${fg.map(Math.round)} on ${bg.map(Math.round)})`);
  }
  return {checked, bad}; }"""


def test_classifier_headers_numbers_weights_menu_and_chart(notebook_page, screenshots_dir):
    from test_classify import EN_SEEDS, EN_TEST, ZH_SEEDS, ZH_TEST

    page = notebook_page("rough_classifier.ipynb", [
        SETUP + "import pandas as pd, json",
        f"clf = ClassifierPanel(lab, positives={ZH_SEEDS[:10]!r}, negatives={EN_SEEDS[:10]!r}, "
        f"heldout=pd.DataFrame({{'text': {ZH_TEST[:4] + EN_TEST[:4]!r}, 'label': [1] * 4 + [0] * 4}}))\n"
        "print('WEIGHTS=' + json.dumps([round(r['weight'], 2) for r in clf.chosen]))\nclf",
    ], timeout=180)
    widget = page.locator(".qs-classifier")
    expect(widget.locator(".qs-chosen-row").first).to_be_visible()
    # headers and numbers each on one line
    for selector in (".qs-chosen th", ".qs-metrics th", ".qs-chosen .qs-num", ".qs-predictions .qs-num",
                     ".qs-metrics .qs-num"):
        lines = widget.locator(selector).evaluate_all(JS_LINES)
        assert lines and all(n == 1 for _, n in lines), (selector, [x for x in lines if x[1] != 1])
    # weights signed, as rules_ has them
    weights = printed_json(page, "WEIGHTS")
    shown = widget.locator(".qs-chosen .qs-weight").all_inner_texts()
    assert [float(t.replace("−", "-")) for t in shown] == weights
    assert all(re.fullmatch(r"[+−]\d+\.\d\d|0\.00", t) for t in shown)
    # the chart's title and labels inside it, no two labels on top of each other
    chart = widget.locator(".qs-delta-chart svg").evaluate(JS_CHART)
    assert chart == {"outside": [], "overlaps": []}, chart
    # "layers combined" says what it is; the statistic is a menu of what the classifier takes
    assert widget.locator("label[title]", has_text="layers combined").count() == 1
    menu = widget.locator("select.qs-statistic")
    assert menu.locator("option").all_inner_texts() == ["mean", "rate", "any", "auto"]
    menu.select_option("rate")
    widget.locator(".qs-fit").click()
    expect(widget.locator(".qs-message")).to_contain_text(", rate,", timeout=60_000)
    widget.screenshot(path=str(screenshots_dir / "classifier_rough_edges.png"))
    assert_no_errors(page)


def test_steering_enter_acts_at_once_and_steer_with_it_shows_the_slider(notebook_page, screenshots_dir):
    layer, zh = known_features()["chinese"]
    page = notebook_page("rough_steer.ipynb", [
        SETUP, f"wb = Workbench(lab, {TEXTS!r}, prompt={PROMPT!r}, layer={layer})\nwb",
    ], timeout=180)
    steer = page.locator(".qs-steer")
    expect(steer.locator(".qs-baseline .qs-gen-tok").first).to_be_attached(timeout=30_000)
    host = page.locator(".qs-steer").locator("xpath=..")
    generations = int(host.get_attribute("data-generations"))
    # Enter in the tokens field regenerates without leaving the field
    tokens = steer.locator(".qs-max-tokens")
    tokens.fill("6")
    tokens.press("Enter")
    expect(host).to_have_attribute("data-generations", str(generations + 1), timeout=30_000)
    assert tokens.evaluate("e => document.activeElement === e")
    assert steer.locator(".qs-baseline .qs-gen-tok").count() <= 6
    # Enter in the prompt field too (Shift+Enter would add a line)
    prompt = steer.locator(".qs-prompt")
    prompt.fill("Today the weather")
    prompt.press("Enter")
    expect(host).to_have_attribute("data-generations", str(generations + 2), timeout=30_000)
    assert prompt.input_value() == "Today the weather"  # no newline typed into it
    # "steer with it" on the card: the new slider is scrolled into view and lit
    card = page.locator(".qs-card")
    page.locator(".qs-heatmap .qs-grid-label").first.scroll_into_view_if_needed()
    feature = card.locator("xpath=..").get_attribute("data-feature")
    card.locator(".qs-send-steer").click()
    row = steer.locator(f".qs-slider-row[data-feature='{feature}']")
    expect(row).to_have_class(re.compile(r"qs-new"))
    expect(row).to_be_in_viewport(timeout=5_000)
    page.screenshot(path=str(screenshots_dir / "steer_with_it.png"))
    assert_no_errors(page)


def test_heatmap_grid_tokens_hover_order_layer_switch_and_card_numbers(notebook_page, screenshots_dir):
    page = notebook_page("rough_heatmap.ipynb", [
        SETUP + "import json",
        f"hm = Heatmap(lab, {TEXTS!r}, layer=2)\nhm",
        "card = FeatureCard(lab, layer=2, feature=hm.grid_features[0])\ncard",
    ], timeout=180)
    heatmap = page.locator(".qs-heatmap")
    expect(heatmap.locator(".qs-grid-label").first).to_be_visible()
    # each grid column's token under it, at its column
    cell = float(heatmap.locator("canvas.qs-grid").get_attribute("data-cell"))
    labels = heatmap.locator(".qs-grid-token").evaluate_all(
        "els => els.map(e => [Number(e.dataset.i), e.textContent, e.offsetLeft])")
    tokens = heatmap.locator(".qs-tok").evaluate_all("els => els.map(e => e.textContent)")
    assert len(labels) >= len(tokens) / 3
    for i, text, left in labels:
        assert text == (tokens[i].strip() or "·") and abs(left - i * cell) <= 1, (i, text, left)
    # hover rows strongest first
    for i in (3, 8, 20, 40):
        heatmap.locator(".qs-tok").nth(i).hover()
        values = heatmap.locator(".qs-tooltip .qs-tip-row .qs-num").all_inner_texts()
        numbers = [float(v) for v in values]
        assert numbers == sorted(numbers, reverse=True), (i, values)
    # switching layer selects that layer's strongest feature, not the same id
    heatmap.locator(".qs-grid-label").nth(4).click()
    chosen = heatmap.locator(".qs-grid-label").nth(4).get_attribute("data-feature")
    expect(heatmap.locator(".qs-legend-name")).to_have_attribute("data-feature", chosen)
    heatmap.locator("select.qs-layer").select_option("1")
    first = heatmap.locator(".qs-grid-label").first
    expect(heatmap.locator(".qs-legend-name")).not_to_have_attribute("data-feature", chosen, timeout=30_000)
    expect(heatmap.locator(".qs-legend-name")).to_have_attribute("data-feature", first.get_attribute("data-feature"))
    # card: thousands separators alike in text and chart; the histogram's title and ticks fit
    card = page.locator(".qs-card")
    tokens = FeatureIndex.open(INDEX_DIR).tokens  # the shipped index's count, e.g. 130,424
    expect(card.locator(".qs-stats")).to_contain_text(f"{tokens:,}")
    assert str(tokens) not in card.locator(".qs-stats").inner_text()
    svg = card.locator(".qs-histogram svg")
    assert f"{tokens:,}" in "".join(svg.locator("text").all_text_contents())
    chart = svg.evaluate(JS_CHART)
    assert chart == {"outside": [], "overlaps": []}, chart
    heatmap.screenshot(path=str(screenshots_dir / "heatmap_grid_tokens.png"))
    assert_no_errors(page)


def test_dark_theme_text_contrast(notebook_page, screenshots_dir):
    layer, zh = known_features()["chinese"]
    page = notebook_page("rough_dark.ipynb", [
        SETUP,
        f"wb = Workbench(lab, {TEXTS!r}, prompt={PROMPT!r}, layer={layer})\n"
        f"wb.steering.add_feature({zh}, 24.0)\nwb.heatmap.feature = wb.heatmap.grid_features[1]\nwb",
        "cmp = Compare(lab, 'The cat sat on the mat.', '今天的天气很好。', layers=[2], top=4)\ncmp",
    ], timeout=240)
    expect(page.locator(".qs-steer .qs-diff").first).to_be_visible(timeout=60_000)
    expect(page.locator(".qs-grid-label.qs-selected")).to_have_count(1)
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    page.wait_for_timeout(1500)  # the theme's stylesheet applied, the shaded tokens re-inked
    results = {}
    for selector in (".qs-heatmap", ".qs-card", ".qs-steer", ".qs-attr", ".qs-compare"):
        results[selector] = page.locator(selector).first.evaluate(JS_CONTRAST)
    page.screenshot(path=str(screenshots_dir / "dark_theme.png"), full_page=True)
    for selector, found in results.items():
        assert found["checked"] > 5 and not found["bad"], (selector, json.dumps(found["bad"][:12], ensure_ascii=False))
    # the two named in the issue: steered text on pale green, the selected grid label on peach
    for selector in (".qs-steer .qs-diff", ".qs-grid-label.qs-selected"):
        found = page.locator(selector).first.evaluate(f"e => ({JS_CONTRAST})(e.parentElement)")
        assert not found["bad"], found
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    assert_no_errors(page)
