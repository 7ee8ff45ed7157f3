"""The Attribution widget in a real JupyterLab: click a feature and its card opens; ablate it and the shown
probability of the target changes."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from .harness import assert_no_errors

SETUP = """
import os, tempfile
os.environ["QSCOPE_LAB_HOME"] = tempfile.mkdtemp()  # labels of this test only
from qscope_lab import Lab
from qscope_lab.widgets import Attribution
from qscope_lab.embedded import reference_documents
lab = Lab.load()
"""


def test_attribution_click_opens_card_and_ablation_changes_probability(notebook_page, screenshots_dir):
    # a small reference corpus is encoded at once: no background fill of the card's corpus runs while the test
    # clicks (a model call from a widget message while that fill traces fails inside nnsight; see the report)
    page = notebook_page("attribution.ipynb", [SETUP, "texts = [d['text'] for d in reference_documents()[::8]]\n"
                                                       "w = Attribution(lab, 'The weather today is', layer=2, "
                                                       "reference=texts)\nw"], timeout=180)
    widget = page.locator(".qs-attr")
    rows = widget.locator(".qs-attr-row")
    expect(rows).to_have_count(15)
    tokens = widget.locator(".qs-attr-tok")
    expect(tokens).to_have_count(7)
    coloured = tokens.evaluate_all("els => els.filter(e => getComputedStyle(e).backgroundColor !== "
                                   "'rgba(0, 0, 0, 0)').length")
    assert coloured >= 5
    before = widget.locator(".qs-attr-p").inner_text()
    # a click on a feature's name opens its card below the panel
    first = rows.first
    feature = first.get_attribute("data-feature")
    first.locator(".qs-attr-name").click()
    card = page.locator(".qs-card")
    expect(card.locator(".qs-card-title")).to_have_text(f"L2 · f{feature}", timeout=60_000)
    # ablating it re-runs the prompt: the new probability appears beside the old one, and differs
    first.locator(".qs-attr-ablate").click()
    new = widget.locator(".qs-attr-new-p")
    expect(new).to_be_visible(timeout=30_000)
    assert widget.locator(".qs-attr-p").inner_text() == before and new.inner_text() != before
    expect(widget.locator(".qs-attr-summary")).to_contain_text(re.compile(rf"L2 f{feature}( · .+)? ablated"))
    page.screenshot(path=str(screenshots_dir / "attribution.png"), full_page=True)
    assert_no_errors(page)
