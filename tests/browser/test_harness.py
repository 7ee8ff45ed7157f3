"""Smoke tests of the real-browser harness: ipywidgets and anywidget render, and comms round-trip."""

from __future__ import annotations

import sys

import pytest
from playwright.sync_api import expect

from .harness import NotebookError, assert_no_errors

SMOKE_WIDGET = '''
import anywidget
import traitlets

class Smoke(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const div = document.createElement("div");
      div.className = "qs-smoke";
      div.style.cssText = "padding:8px;border:1px solid #888;cursor:pointer;width:fit-content";
      const label = document.createElement("span");
      label.className = "qs-smoke-label";
      const echo = document.createElement("span");
      echo.className = "qs-smoke-echo";
      echo.style.marginLeft = "1em";
      div.append(label, echo);
      const update = () => {
        label.textContent = model.get("label");
        echo.textContent = model.get("echo");
      };
      model.on("change:label", update);
      model.on("change:echo", update);
      update();
      div.addEventListener("click", () => {
        model.set("clicks", model.get("clicks") + 1);
        model.save_changes();
      });
      el.appendChild(div);
    }
    export default { render };
    """
    label = traitlets.Unicode("hello from python").tag(sync=True)
    clicks = traitlets.Int(0).tag(sync=True)
    echo = traitlets.Unicode("no clicks yet").tag(sync=True)

    @traitlets.observe("clicks")
    def _on_clicks(self, change):
        self.echo = f"python saw {change['new']} click(s)"
'''


def test_widgets_render_and_round_trip(notebook_page, screenshots_dir):
    page = notebook_page("smoke.ipynb", [
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable  # kernel runs in this venv",
        "import ipywidgets as widgets\nslider = widgets.IntSlider(value=7, description='demo')\nslider",
        SMOKE_WIDGET,
        "smoke = Smoke()\nsmoke",
    ])

    slider = page.locator(".widget-slider")
    expect(slider).to_have_count(1)
    expect(slider.locator(".widget-label")).to_have_text("demo")
    expect(slider.locator(".widget-readout")).to_have_text("7")
    expect(page.locator(".jupyter-widgets.widget-slider")).to_be_visible()

    smoke = page.locator(".qs-smoke")
    expect(smoke.locator(".qs-smoke-label")).to_have_text("hello from python")
    expect(smoke.locator(".qs-smoke-echo")).to_have_text("no clicks yet")

    # browser -> kernel (clicks) -> Python observer -> kernel -> browser (echo)
    smoke.click()
    expect(smoke.locator(".qs-smoke-echo")).to_have_text("python saw 1 click(s)", timeout=15_000)
    smoke.click()
    expect(smoke.locator(".qs-smoke-echo")).to_have_text("python saw 2 click(s)", timeout=15_000)

    assert_no_errors(page)
    page.screenshot(path=str(screenshots_dir / "harness_smoke.png"))


def test_run_all_reports_cell_errors(notebook_page):
    with pytest.raises(NotebookError, match="ValueError: boom-from-harness-test") as info:
        notebook_page("failing.ipynb", ["x = 1", "raise ValueError('boom-from-harness-test')", "y = 2"],
                      timeout=60)
    message = str(info.value)
    assert "cell 1" in message and "Traceback" in message
