"""A removed view leaves nothing behind: every widget's ``render`` returns a cleanup that takes its listeners off
the model and clears its timers (widgets/src/lib/common.js ``viewModel``).

Two checks in a real JupyterLab, on the real widget models a kernel made:

* each built module rendered by hand on the real model: its listeners are on the model while the view lives and
  a change event redraws it; after its cleanup the model has exactly the listeners it had before, and the same
  change events leave the detached view's DOM untouched;
* anywidget's own lifecycle: a search typed in the steering panel is debounced (250 ms); when the view is
  removed within that time (its output cleared) the search is never sent, which another view of the same panel
  shows. anywidget takes a removed view's model listeners off by itself, but only the cleanup clears timers.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from .harness import assert_no_errors

SETUP = """
import os, tempfile
os.environ["QSCOPE_LAB_HOME"] = tempfile.mkdtemp()  # labels of this test only
from qscope_lab import Lab
from qscope_lab.embedded import reference_documents
from qscope_lab.widgets import ClassifierPanel, Compare, FeatureCard, Heatmap, SteeringPanel
from qscope_lab.widgets.attribution import AttributionPanel
lab = Lab.load()
"""

WIDGETS = {
    "qs-heatmap": "Heatmap(lab, ['The cat sat on the mat.', '今天的天气很好。'], layer=2)",
    "qs-card": "FeatureCard(lab, layer=2, feature=11, reference=[d['text'] for d in reference_documents()[::16]])",
    "qs-steer": "SteeringPanel(lab, 'The weather today is', layer=2, features=[11], max_new_tokens=4)",
    "qs-compare": "Compare(lab, 'The cat sat on the mat.', '今天的天气很好。', top=3)",
    "qs-classifier": "ClassifierPanel(lab, ['今天很好'], ['a fine day'], fit=False)",
    "qs-attr": "AttributionPanel(lab, 'The weather today is', layer=2)",
}

# Render each widget's built module (its `_esm`, as anywidget loads it) on the real Backbone model of every widget
# output in the notebook, count the model's listeners, fire the change events the view listens to, run the cleanup.
RENDER_AND_CLEAN_UP = """async (name) => {
  const panel = window.__qscopeFind(name);
  const outputs = [];
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') continue;
    cell.outputArea.widgets.forEach((area, i) => {
      const data = cell.model.outputs.get(i).data['application/vnd.jupyter.widget-view+json'];
      const renderer = (area.widgets || []).find((w) => w._manager);
      if (data && renderer) outputs.push({ id: data.model_id, renderer });
    });
  }
  const listeners = (model) => Object.fromEntries(Object.entries(model._events || {}).map(([k, v]) => [k, v.length]));
  const total = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);
  const results = [];
  for (const { id, renderer } of outputs) {
    const manager = await renderer._manager.promise;
    const model = await manager.get_model(id);
    const url = URL.createObjectURL(new Blob([model.get('_esm')], { type: 'text/javascript' }));
    const widget = (await import(url)).default;
    URL.revokeObjectURL(url);
    const el = document.createElement('div');
    document.body.append(el);
    const before = listeners(model);
    const cleanup = widget.render({ model, el });
    const during = listeners(model);
    const events = Object.keys(during).filter((k) => (during[k] || 0) > (before[k] || 0));
    const mutations = () => new Promise((resolve) => {
      let seen = 0;
      const observer = new MutationObserver((records) => { seen += records.length; });
      observer.observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
      for (const event of events) {
        const trait = event.replace(/^change:/, '');
        model.trigger(event, model, model.get(trait));
      }
      setTimeout(() => { resolve(seen + observer.takeRecords().length); observer.disconnect(); }, 0);
    });
    const live = await mutations();
    const kind = typeof cleanup;
    if (kind === 'function') cleanup();
    const after = listeners(model);
    const detached = await mutations();
    el.remove();
    results.push({ widget: el.firstElementChild ? el.firstElementChild.className : '', kind, events,
                   before: total(before), during: total(during), after: total(after), same: JSON.stringify(before) ===
                   JSON.stringify(after), live, detached });
  }
  return results;
}"""


def test_every_widgets_cleanup_takes_its_listeners_off_the_model(notebook_page):
    cells = [SETUP] + [f"w_{i} = {code}\nw_{i}" for i, code in enumerate(WIDGETS.values())]
    page = notebook_page("cleanup_listeners.ipynb", cells, timeout=240)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    for css_class in WIDGETS:
        expect(page.locator(f".{css_class}")).to_have_count(1)
    results = page.evaluate(RENDER_AND_CLEAN_UP, "cleanup_listeners.ipynb")
    shown = {next(c for c in WIDGETS if c in r["widget"].split()): r for r in results}
    assert sorted(shown) == sorted(WIDGETS), results
    for css_class, r in shown.items():
        assert r["kind"] == "function", f"{css_class}: render returned {r['kind']}, not its cleanup"
        assert r["during"] > r["before"] and len(r["events"]) >= 3, (css_class, r)  # the view listens ...
        assert r["live"] > 0, (css_class, r)  # ... and a change event redraws it
        assert r["same"] and r["after"] == r["before"], (css_class, r)  # every listener it added is gone
        assert r["detached"] == 0, (css_class, r)  # the same events no longer touch its DOM
    assert not errors, errors
    assert_no_errors(page)


REMOVE_WHILE_SEARCH_PENDING = """(name) => {
  const panel = window.__qscopeFind(name);
  const cell = panel.content.widgets.find((c) => c.node.querySelector('.qs-steer'));
  const search = cell.node.querySelector('.qs-search');
  search.value = '11';
  search.dispatchEvent(new Event('input'));  // the panel sends the search 250 ms from now ...
  cell.model.outputs.clear();                 // ... unless its view is removed first
  return document.querySelectorAll('.qs-steer').length;
}"""


def test_a_removed_view_sends_no_debounced_search(notebook_page):
    name = "cleanup_timers.ipynb"
    page = notebook_page(name, [SETUP, "panel = SteeringPanel(lab, 'The weather today is', layer=2, max_new_tokens=4)"
                                       "\npanel", "panel  # a second view of the same widget"], timeout=180)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    views = page.locator(".qs-steer")
    expect(views).to_have_count(2)
    cells = page.locator(".jp-CodeCell")
    first, second = cells.nth(1).locator(".qs-steer"), cells.nth(2).locator(".qs-steer")
    # a search typed in one view reaches the kernel, and both views show its results
    first.locator(".qs-search").fill("的")
    results = second.locator(".qs-search-results .qs-result")
    expect(results.first).to_be_visible(timeout=30_000)
    shown = results.evaluate_all("els => els.map(e => e.dataset.feature + ' ' + e.title)")
    assert shown and not shown[0].startswith("11 id:")  # (a result's title: how it matched, then its top tokens)
    # typed, and the view removed at once: the timer goes with the view, no search is sent
    assert page.evaluate(REMOVE_WHILE_SEARCH_PENDING, name) == 1
    expect(first).to_have_count(0)
    expect(second).to_have_count(1)
    page.wait_for_timeout(2_000)  # 8x the debounce, and time for the kernel to answer a search
    assert results.evaluate_all("els => els.map(e => e.dataset.feature + ' ' + e.title)") == shown
    # the same search from a live view does change the results
    second.locator(".qs-search").fill("11")
    expect(results.first).to_have_attribute("title", re.compile(r"^id: "), timeout=30_000)
    assert results.first.get_attribute("data-feature") == "11"
    assert not errors, errors
    assert_no_errors(page)
