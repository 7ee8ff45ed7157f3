"""A newcomer's first hour, offline: every request outside loopback is blocked (Playwright routing) and must
not even be attempted; notebooks run and draw their charts in JupyterLab and in Notebook 7; Chinese renders
with real glyphs; the Workbench fits 1,000 and 1,400 px windows.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from .harness import (
    _JS_READY,
    JupyterLabServer,
    _ensure_helpers,
    assert_no_errors,
    open_notebook,
    run_all,
    write_notebook,
)

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
TEXTS = ["The 3 cats sat on the mat in 1999.", "今天的天气很好，我们去公园散步。猫坐在垫子上。",
         "def add(a, b):\n    return a + b\n"]

# A CJK glyph is drawn (ink, a width) and differs from what a codepoint no font has (the missing-glyph box).
JS_CJK = """(selector) => {
  const el = document.querySelector(selector);
  const font = getComputedStyle(el).font;
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d');
  const draw = (ch) => { ctx.clearRect(0, 0, 64, 64); ctx.font = font.replace(/\\d+(\\.\\d+)?px/, '40px');
    ctx.fillText(ch, 4, 48);
    return {w: ctx.measureText(ch).width, px: Array.from(ctx.getImageData(0, 0, 64, 64).data)}; };
  const han = draw('你'), tofu = draw('\\u{F0000}');
  let ink = 0, diff = 0;
  for (let i = 3; i < han.px.length; i += 4) { ink += han.px[i] > 0; diff += han.px[i] !== tofu.px[i]; }
  return {font, hanWidth: han.w, tofuWidth: tofu.w, ink, diff};
}"""


def block_outside_loopback(context) -> list[str]:
    """Abort every request to a host other than loopback; the returned list collects their URLs."""
    left: list[str] = []

    def handle(route):
        url = route.request.url
        if urlparse(url).hostname in LOOPBACK or not url.startswith("http"):
            route.continue_()
        else:
            left.append(url)
            route.abort()

    context.route("**/*", handle)
    return left


@pytest.fixture(scope="module")
def notebook7_server(tmp_path_factory):
    with JupyterLabServer(root_dir=tmp_path_factory.mktemp("nb7-root"), app="notebook") as server:
        yield server


def offline_context(browser, width: int = 1400):
    context = browser.new_context(viewport={"width": width, "height": 900})
    return context, block_outside_loopback(context)


def assert_charts_drawn(page, at_least: int) -> None:
    """Every altair output is an SVG drawn in the kernel (vl-convert), none a CDN loader that failed."""
    charts = page.locator(".jp-RenderedSVG svg, .jp-RenderedSVG img, .jp-RenderedImage img")
    assert charts.count() >= at_least, f"{charts.count()} charts drawn, expected {at_least}"
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 30, box
        if chart.evaluate("e => e.tagName") == "IMG":  # JupyterLab shows SVG outputs as an <img> of the SVG
            expect(chart).to_have_js_property("complete", True)
            assert chart.evaluate("e => e.naturalWidth") > 50
    assert "Error loading script" not in page.content()
    assert page.locator("[data-mime-type^='application/vnd.vegalite']").count() == 0


@pytest.mark.parametrize("name, charts", [("steering.ipynb", 1), ("seed_classifier.ipynb", 1)])
def test_notebook_runs_offline_in_jupyterlab_with_its_charts(browser, jupyter_server, name, charts):
    shutil.copy(REPO / "notebooks" / name, jupyter_server.root_dir / name)
    context, left = offline_context(browser)
    try:
        page = context.new_page()
        open_notebook(page, jupyter_server, name)
        run_all(page, timeout=420, name=name)
        assert_charts_drawn(page, charts)
        assert_no_errors(page, name)
        assert left == [], f"requests left the machine: {left[:5]}"
    finally:
        context.close()
        jupyter_server.shutdown_sessions(name)


def test_quickstart_runs_offline_in_notebook7(browser, notebook7_server, screenshots_dir):
    name = "quickstart.ipynb"
    shutil.copy(REPO / "notebooks" / name, notebook7_server.root_dir / name)
    context, left = offline_context(browser)
    try:
        page = context.new_page()
        page.goto(notebook7_server.url(f"notebooks/{name}"), wait_until="domcontentloaded")
        page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)", timeout=60_000)
        _ensure_helpers(page)
        page.wait_for_function(_JS_READY, arg=name, timeout=60_000)
        run_all(page, timeout=420, name=name)
        steered = page.locator(".qs-steer .qs-steered").first
        expect(steered.locator(".qs-gen-tok").first).to_be_attached(timeout=30_000)  # never an empty box
        expect(page.locator(".qs-heatmap .qs-tok").first).to_be_visible()
        cjk = page.evaluate(JS_CJK, ".qs-heatmap .qs-text")
        assert cjk["hanWidth"] > 0 and cjk["ink"] > 20 and cjk["diff"] > 20, cjk
        assert_no_errors(page, name)
        assert left == [], f"requests left the machine: {left[:5]}"
        page.screenshot(path=str(screenshots_dir / "notebook7_quickstart.png"), full_page=True)
    finally:
        context.close()
        notebook7_server.shutdown_sessions(name)


def test_workbench_fits_1000_and_1400_px_and_chinese_renders(browser, jupyter_server, screenshots_dir):
    name = "offline_workbench.ipynb"
    write_notebook(jupyter_server.root_dir / name, [
        "import os, tempfile\nos.environ['QSCOPE_LAB_HOME'] = tempfile.mkdtemp()\nfrom qscope_lab import Lab\n"
        "from qscope_lab.widgets import Workbench\nlab = Lab.load()",
        f"wb = Workbench(lab, {TEXTS!r}, prompt='The weather today is', layer=2)\nwb",
        "wb.steering.add_feature(wb.heatmap.feature, 8.0)\nwb.card.note = 'a long note ' * 40"])
    context, left = offline_context(browser, width=1400)
    try:
        page = context.new_page()
        open_notebook(page, jupyter_server, name)
        run_all(page, timeout=240, name=name)
        expect(page.locator(".qs-card .qs-context-row").first).to_be_visible()
        expect(page.locator(".qs-steer .qs-next tr").first).to_be_attached()
        for width in (1400, 1000):
            page.set_viewport_size({"width": width, "height": 900})
            time.sleep(0.5)
            over = page.evaluate("""() => {
              const out = document.querySelector('.jp-OutputArea-output .qs-workbench, .qs-workbench');
              const right = out.getBoundingClientRect().right + 1;
              const bad = [];
              const clipped = (e) => {  // inside a box that scrolls or clips: it cannot widen the page
                for (let a = e.parentElement; a && a !== out; a = a.parentElement) {
                  if (getComputedStyle(a).overflowX !== 'visible') return true;
                }
                return false;
              };
              for (const e of out.querySelectorAll('.qs-widget, .qs-widget *')) {
                const r = e.getBoundingClientRect();
                if (r.width > 0 && r.right > right && !clipped(e)) {
                  bad.push((e.getAttribute('class') || e.tagName) + ' ' + Math.round(r.right - right));
                }
              }
              return {scroll: out.scrollWidth - out.clientWidth, bad: bad.slice(0, 8)};
            }""")
            assert over["scroll"] <= 1 and not over["bad"], (width, over)
            page.screenshot(path=str(screenshots_dir / f"workbench_{width}.png"), full_page=True)
        for selector in (".qs-heatmap .qs-text", ".qs-card .qs-context", ".qs-steer .qs-output"):
            cjk = page.evaluate(JS_CJK, selector)
            assert cjk["hanWidth"] > 0 and cjk["ink"] > 20 and cjk["diff"] > 20, (selector, cjk)
        # a character split over byte tokens is whole, its boundaries on hover
        split = page.locator(".qs-heatmap .qs-tok[title^='byte token 1 of']").first
        expect(split).to_have_text("猫")
        assert "\ufffd" not in page.locator(".qs-heatmap .qs-texts").inner_text()
        assert_no_errors(page, name)
        assert left == [], f"requests left the machine: {left[:5]}"
        print(json.dumps(cjk))
    finally:
        context.close()
        jupyter_server.shutdown_sessions(name)
