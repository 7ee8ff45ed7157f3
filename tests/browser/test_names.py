"""Display names in a real JupyterLab (issue 26 item 6): every widget shows a feature's name beside its id, and a
label typed in one widget shows in every other open widget at once, without re-running a cell."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from qscope_lab.embedded import known_features

from .harness import assert_no_errors
from .test_widgets import SETUP, TEXTS, output_value

PROMPT = "The weather today is"


def printed_json(page, key: str):
    """A JSON value a cell printed as ``KEY=<json>`` on one line."""
    for block in page.locator(".jp-OutputArea-output").all_inner_texts():
        for line in block.splitlines():
            if line.startswith(f"{key}="):
                return json.loads(line[len(key) + 1:])
    raise AssertionError(f"no {key}= in the outputs")


def test_a_label_typed_in_one_widget_appears_in_the_others(notebook_page, screenshots_dir):
    page = notebook_page("names_label.ipynb", [
        SETUP + "from qscope_lab.widgets import AttributionPanel\nfrom IPython.display import display\nimport json",
        f"attr = AttributionPanel(lab, {PROMPT!r}, layer=2, n_features=6)\n"
        "f = attr.features[0]['feature']\n"
        f"hm = Heatmap(lab, [{PROMPT!r}], layer=2, feature=f)\n"
        "card = FeatureCard(lab, layer=2, feature=f)\n"
        f"panel = SteeringPanel(lab, {PROMPT!r}, layer=2, features=[f], max_new_tokens=4)\n"
        "twin = FeatureCard(lab, layer=2, feature=f)\n"
        "print(f'FEATURE={f}')\nprint('BEFORE=' + json.dumps(card.name_of(2, f), ensure_ascii=False))\n"
        "for w in (card, hm, panel, attr, twin): display(w)",
    ], timeout=180)
    feature = output_value(page, "FEATURE")
    before = printed_json(page, "BEFORE")
    card, twin = page.locator(".qs-card").nth(0), page.locator(".qs-card").nth(1)
    legend = page.locator(".qs-heatmap .qs-legend-name .qs-name")
    slider = page.locator(f".qs-steer .qs-slider-row[data-feature='{feature}'] .qs-name")
    attr = page.locator(f".qs-attr .qs-attr-row[data-feature='{feature}'] .qs-name")
    for where in (card.locator(".qs-card-name .qs-name"), legend, slider, attr):
        expect(where).to_have_text(before)  # the top tokens (no label, no stored explanation yet)
    runs = page.locator(".qs-attr").get_attribute("data-runs")
    generations = page.locator(".qs-steer").get_attribute("data-generations")
    card.locator(".qs-label").fill("weather words")
    card.locator(".qs-label").press("Enter")
    for where in (card.locator(".qs-card-name .qs-name"), legend, slider, attr,
                  twin.locator(".qs-card-name .qs-name")):
        expect(where).to_have_text("weather words", timeout=15_000)
    expect(twin.locator(".qs-label")).to_have_value("weather words")  # the other card's box follows
    # names changed; nothing was recomputed for it
    assert page.locator(".qs-attr").get_attribute("data-runs") == runs
    assert page.locator(".qs-steer").get_attribute("data-generations") == generations
    page.screenshot(path=str(screenshots_dir / "names_label.png"), full_page=True)
    # a label typed in the second card's box (cleared) reaches the first card's box, and the names go back
    twin.locator(".qs-label").fill("")
    twin.locator(".qs-label").press("Enter")
    expect(card.locator(".qs-label")).to_have_value("")
    expect(slider).to_have_text(before, timeout=15_000)
    expect(legend).to_have_text(before)
    assert_no_errors(page)


def test_names_appear_in_every_widget(notebook_page, screenshots_dir):
    from test_classify import EN_SEEDS, EN_TEST, ZH_SEEDS, ZH_TEST

    classifier = (f"clf = ClassifierPanel(lab, positives={ZH_SEEDS[:8]!r}, negatives={EN_SEEDS[:8]!r}, "
                  f"heldout=pd.DataFrame({{'text': {ZH_TEST[:3] + EN_TEST[:3]!r}, 'label': [1] * 3 + [0] * 3}}))")
    page = notebook_page("names_all.ipynb", [
        SETUP + "from qscope_lab.widgets import AttributionPanel\nfrom IPython.display import display\n"
        "import pandas as pd, json",
        "layer, zh = known_features()['chinese']\n"
        f"hm = Heatmap(lab, {TEXTS!r}, layer=2)\n"
        "card = FeatureCard(lab, layer=layer, feature=zh)\n"
        f"panel = SteeringPanel(lab, {PROMPT!r}, layer=layer, features=[zh], max_new_tokens=4)\n"
        f"attr = AttributionPanel(lab, {PROMPT!r}, layer=2, n_features=5)\n"
        "cmp = Compare(lab, 'The cat sat on the mat.', '今天的天气很好。', layers=[2], top=4)\n" + classifier + "\n"
        "for key, w in [('HM', hm), ('CARD', card), ('STEER', panel), ('ATTR', attr), ('CMP', cmp), ('CLF', clf)]:\n"
        "    assert w.error == '', (key, w.error)\n"
        "    print(f'{key}=' + json.dumps(w.names, ensure_ascii=False))\n"
        "print('EXPLANATION=' + json.dumps(card.explanation, ensure_ascii=False))\n"
        "for w in (hm, card, panel, attr, cmp, clf): display(w)",
    ], timeout=240)

    def shown(locator, names: dict, layer=None):
        """Each element's data-feature and its .qs-name text agree with the kernel's names."""
        items = locator.evaluate_all("els => els.map(e => [e.closest('[data-feature]').dataset.feature, "
                                     "e.closest('[data-layer]') ? e.closest('[data-layer]').dataset.layer : null, "
                                     "e.textContent])")
        assert items, locator
        for feature, at, text in items:
            assert text == names[f"{layer if layer is not None else at}/{feature}"], (feature, text)
        return len(items)

    hm_names = printed_json(page, "HM")
    heatmap = page.locator(".qs-heatmap")
    expect(heatmap.locator(".qs-grid-label .qs-name").first).to_be_visible()
    assert shown(heatmap.locator(".qs-grid-label .qs-name"), hm_names, layer=2) >= 5  # grid rows
    shown(heatmap.locator(".qs-legend-name .qs-name"), hm_names, layer=2)  # the legend
    heatmap.locator(".qs-tok").nth(4).hover()
    expect(heatmap.locator(".qs-tooltip .qs-tip-row").first).to_be_visible()
    shown(heatmap.locator(".qs-tooltip .qs-tip-row .qs-name"), hm_names, layer=2)  # the hover

    card_names, explanation = printed_json(page, "CARD"), printed_json(page, "EXPLANATION")
    card = page.locator(".qs-card")
    layer, zh = known_features()["chinese"]
    expect(card.locator(".qs-card-name .qs-name")).to_have_text(card_names[f"{layer}/{zh}"])
    expect(card.locator(".qs-explanation-text")).to_have_text(explanation["text"])  # explanation and its score
    expect(card.locator(".qs-explanation-score")).to_contain_text(f"score {explanation['score']:.2f}")
    assert shown(card.locator(".qs-similar-row .qs-name"), card_names) == 8  # similar features
    # every context token is shaded by its activation, not only the peak
    lit = card.locator(".qs-ctx-tok").evaluate_all("els => els.filter(e => Number(e.dataset.act) > 0 && "
                                                   "getComputedStyle(e).backgroundColor !== 'rgba(0, 0, 0, 0)').length")
    assert lit >= 3
    # test your own text: typed, Enter, each token shaded by the feature
    card.locator(".qs-test-input").fill("我有１２３只猫")
    card.locator(".qs-test-input").press("Enter")
    expect(card.locator(".qs-test-tok")).to_have_count(8, timeout=20_000)
    acts = card.locator(".qs-test-tok").evaluate_all("els => els.map(e => Number(e.dataset.act))")
    assert max(acts) > 1 and acts[0] == 0  # full-width digits fire it; '我' does not

    steer_names = printed_json(page, "STEER")
    steer = page.locator(".qs-steer")
    expect(steer.locator(f".qs-slider-row[data-feature='{zh}'] .qs-fid")).to_have_text(f"L{layer} f{zh}")
    shown(steer.locator(".qs-slider-row .qs-name"), steer_names)  # beside "L2 f1588"
    shown(page.locator(".qs-attr .qs-attr-row .qs-name"), printed_json(page, "ATTR"))
    shown(page.locator(".qs-compare .qs-compare-row .qs-name"), printed_json(page, "CMP"))
    clf_names = printed_json(page, "CLF")
    classifier = page.locator(".qs-classifier")
    expect(classifier.locator(".qs-chosen-row").first).to_be_visible()
    shown(classifier.locator(".qs-chosen-row .qs-name"), clf_names)  # the rules
    shown(classifier.locator(".qs-why-item .qs-name"), clf_names)  # the "why" of each prediction
    assert re.fullmatch(r"L\d+ f\d+", classifier.locator(".qs-why-item .qs-fid").first.inner_text())
    page.screenshot(path=str(screenshots_dir / "names_all.png"), full_page=True)
    assert_no_errors(page)
