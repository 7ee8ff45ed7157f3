"""A name wherever a feature appears (issue 26 item 6) in the tables, and whole characters in ``to_frame``
(issue 28): every DataFrame that lists features carries ``name`` = ``lab.feature_names``; a label typed by the
user shows up in all of them; the attribution chart draws negative bars and agrees with the widget's order."""

from __future__ import annotations

import json

import numpy as np

from qscope_lab import embedded
from qscope_lab.analysis.features import contrast, token_class_table
from qscope_lab.analysis.text_predicates import is_han
from qscope_lab.explain.names import display_names

NAMED = embedded.known_features()


def _label(elab, home, layer, feature, label):
    (home / "labels.json").write_text(json.dumps({f"{elab.name}|{elab.saes.name}/{layer}/{feature}":
                                                  {"label": label, "note": ""}}), encoding="utf-8")


def test_to_frame_shows_whole_characters_and_names(elab):
    acts = elab.encode(["我的猫在桌子上。", "The cat sat on the mat."], 2)
    frame = acts.to_frame(max_firing_rate=0.5, top=1)
    assert "\ufffd" not in "".join(frame.token)  # 猫 is two byte tokens: each row shows 猫
    cat = elab.token_ids(["我的猫"])[0]
    assert len(cat) == 3 and set(elab.token_strings(cat[1:])) == {"\ufffd"}  # the split the test is about
    assert set(frame[frame.text == 0].token) >= {"猫", "上"}
    assert frame.name.tolist() == [display_names(elab, 2, [f])[0] for f in frame.feature]
    top = acts.top_features(5)
    assert list(top.columns[:2]) == ["feature", "name"]
    assert top.name.tolist() == elab.feature_names(2, top.feature.tolist())


def test_a_label_reaches_every_table(elab, home):
    layer = 2
    acts = elab.encode(["这家酒店的服务很好。"], layer)
    feature = int(acts.top_features(1).feature.iloc[0])
    _label(elab, home, layer, feature, "hotel-review words")
    try:
        assert acts.top_features(3).set_index("feature").name[feature] == "hotel-review words"
        table = contrast(elab, ["这家酒店的服务很好。", "房间很干净。"], ["The room was clean."], layer, top=50)
        assert table.set_index("feature").name.get(feature) == "hotel-review words"
        han = token_class_table(acts, is_han, min_count=1)
        assert han.set_index("feature").name.get(feature) == "hotel-review words"
    finally:
        (home / "labels.json").unlink()


def test_attribution_frames_name_features_and_the_chart_draws_negative_bars(elab):
    result = elab.attribute("The cat sat on the", layers=[1, 2])
    frame = result.to_frame()
    assert list(frame.columns[:6]) == ["prompt", "position", "token", "layer", "feature", "name"]
    errors = frame[frame.feature < 0]
    assert len(errors) and (errors.name == "error term").all()
    real = frame[frame.feature >= 0].head(30)
    for layer, feature, name in zip(real.layer, real.feature, real.name):
        assert name == elab.feature_names(int(layer), [int(feature)])[0]
    top = result.top_features(len(frame))
    assert "name" in top.columns and (top.attribution < 0).any()  # there are negative features to draw
    chart = result.chart(n=10).to_dict()
    data = chart["datasets"][next(iter(chart["datasets"]))] if "datasets" in chart else chart["data"]["values"]
    drawn = np.array([row["attribution"] for row in data])
    by_size = top.reindex(top.attribution.abs().sort_values(ascending=False).index).head(10)
    assert len(drawn) == 10 and np.allclose(drawn, by_size.attribution.to_numpy())  # the widget's order
    assert (drawn < 0).any() == (by_size.attribution < 0).any()
    assert (data[0]["layer"], data[0]["feature"]) == (int(by_size.layer.iloc[0]), int(by_size.feature.iloc[0]))
    assert all(row["label"].startswith(f"L{row['layer']}/F{row['feature']}") for row in data)


def test_classifier_rules_and_explain_name_their_features(elab):
    from qscope_lab.workflows.classify import SeedClassifier

    pos = ["这家酒店的服务很好。", "房间很干净，下次还来。", "早餐不错，位置方便。", "服务员很热情。"]
    neg = ["The room was clean.", "Breakfast was fine.", "Staff were friendly.", "Good location."]
    clf = SeedClassifier(elab, layers=[2], statistic="any", top_k=1, select="delta", progress=False)
    clf.fit(pos + neg, [True] * 4 + [False] * 4)
    assert list(clf.rules_.columns[:3]) == ["layer", "feature", "name"]
    layer, feature = int(clf.rules_.layer.iloc[0]), int(clf.rules_.feature.iloc[0])
    assert clf.rules_.name.iloc[0] == elab.feature_names(layer, [feature])[0]
    why = clf.explain("酒店很好。")
    assert why.name.tolist() == [elab.feature_names(a, [b])[0] for a, b in zip(why.layer, why.feature)]


def test_synthesis_coverage_and_index_explanations(elab):
    from qscope_lab.workflows.synthesis import coverage

    han_layer, han = NAMED["han"]
    table = coverage(elab, ["这家酒店的服务很好。"], [han, 5], han_layer)
    assert table.name.tolist() == elab.feature_names(han_layer, [han, 5])
    assert elab.index.explanations().empty or "explanation" in elab.index.explanations().columns
    elab.explain(han_layer, [han])
    stored = elab.index.explanations()
    assert ((stored.layer == han_layer) & (stored.feature == han)).any()
    assert "Chinese characters" in elab.feature_names(han_layer, [han])[0]
