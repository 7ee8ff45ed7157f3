"""The SteerBench widget in a real JupyterLab, in headless Chromium: an autopilot recipe for "write Chinese" on the
embedded default shown as the seven conditions with their intervals, the verdict and gates, the alpha chart and the
before / after completions (switching the "after" column through the kernel)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from .harness import assert_no_errors
from .test_cleanup import RENDER_AND_CLEAN_UP

SETUP = """
import os, tempfile
os.environ["QSCOPE_LAB_HOME"] = tempfile.mkdtemp()
from qscope_lab import Lab, embedded
from qscope_lab.widgets import SteerBenchView
lab = Lab.load()
docs = embedded.reference_documents()
zh = [d["text"][:200] for d in docs if d["lang"] == "zh"][:12]
en = [d["text"][:200] for d in docs if d["lang"] == "en"][:12]
prompts = ["The weather today is", "Once upon a time", "My favourite food is", "The meeting starts at",
           "In the morning I", "The book was", "He opened the door and", "Science tells us that"]
recipe = lab.autopilot(zh, en, prompts, max_new_tokens=10, candidates=4, seed=0, name="write-chinese")
"""

CONDITIONS = ["unsteered", "prompt-only", "steering-only", "prompt + steering", "zero strength", "random feature",
              "negative strength"]


def test_steerbench_shows_conditions_verdict_chart_and_examples(notebook_page, screenshots_dir):
    page = notebook_page("steerbench.ipynb", [
        SETUP, "view = SteerBenchView(recipe, lab=lab)\nview",
        "print(f'VERDICT={view.verdict} STEERED={view.rows[2][\"concept\"]:.3f}')"], timeout=240)
    widget = page.locator(".qs-steerbench")
    expect(widget).to_be_visible()
    rows = widget.locator(".qs-sb-table tr.qs-sb-row")
    expect(rows).to_have_count(7)
    assert [rows.nth(i).get_attribute("data-condition") for i in range(7)] == CONDITIONS
    text = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    verdict = re.search(r"VERDICT=(\w+) STEERED=([\d.]+)", text)
    assert verdict, text
    expect(widget.locator(".qs-verdict")).to_have_text(verdict.group(1))
    assert verdict.group(1) in ("validated", "benchmarked", "failed")
    # each cell: the mean over its 95% interval; the steered row's concept is what the kernel holds
    concept = rows.nth(2).locator("td[data-metric='concept']")
    expect(concept).to_contain_text(verdict.group(2))
    lo, mean, hi = (float(concept.get_attribute(k)) for k in ("data-lo", "data-mean", "data-hi"))
    assert lo <= mean <= hi
    expect(concept.locator(".qs-sb-ci")).to_have_text(re.compile(r"^\[\d+\.\d{3}, \d+\.\d{3}\]$"))
    expect(widget.locator(".qs-sb-gates tr.qs-sb-gate")).to_have_count(4)
    expect(widget.locator(".qs-sb-gate[data-gate='prompt-only beside the steer']")).to_contain_text("prompt-only")
    expect(widget.locator(".qs-sb-controls")).to_contain_text(re.compile(r"random-feature control: L\d+ f\d+ "
                                                                         r"\(firing density [\d.e-]+\) against f\d+"))
    expect(widget.locator(".qs-sb-settings")).to_contain_text(re.compile(r"\d+ completions in [\d.]+ s"))
    expect(widget.locator(".qs-sb-chart svg")).to_be_visible()
    assert widget.locator(".qs-sb-chart svg").bounding_box()["width"] > 200
    examples = widget.locator(".qs-sb-examples tr.qs-sb-example")
    expect(examples).to_have_count(3)
    steered = examples.first.locator(".qs-sb-after").inner_text()
    widget.locator("select.qs-sb-after").select_option("zero strength")  # through the kernel and back
    expect(widget.locator(".qs-sb-after-head")).to_have_text("zero strength")
    expect(examples.first.locator(".qs-sb-after")).to_have_text(examples.first.locator(".qs-sb-before").inner_text())
    assert steered != examples.first.locator(".qs-sb-after").inner_text()
    widget.locator("select.qs-sb-after").select_option("steering-only")
    expect(examples.first.locator(".qs-sb-after")).to_have_text(steered)
    assert_no_errors(page)
    widget.screenshot(path=str(screenshots_dir / "steerbench.png"))
    # render the built module by hand on the real model: its cleanup takes every listener it added off the model
    (result,) = page.evaluate(RENDER_AND_CLEAN_UP, "steerbench.ipynb")
    assert "qs-steerbench" in result["widget"].split() and result["kind"] == "function"
    assert result["during"] > result["before"] and result["live"] > 0
    assert result["same"] and result["detached"] == 0, result
