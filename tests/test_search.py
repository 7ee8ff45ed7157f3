"""Words for features without an LLM (issue 26): the offline explainer on the embedded default, the explanations
stored with the index, feature search (BM25), search by example and display names."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import embedded
from qscope_lab.explain import offline
from qscope_lab.explain.names import display_name, display_names
from qscope_lab.index.explanations import COLUMNS, add_explanations, explained, location, read_explanations

NAMED = embedded.known_features()  # {"han": (layer, feature), "digit": ..., "code": ..., "chinese": ...}


def test_offline_patterns_reach_precision_on_named_features(elab):
    for name, (layer, feature) in NAMED.items():
        row = offline.explain(elab.index, layer, [feature])[0]
        scores = row["scores"]
        assert scores["held_out"] > 0, name
        assert scores["precision"] is not None and scores["precision"] >= 0.8, (name, row)
        assert row["explanation"] and "; " in row["explanation"]
    han = offline.explain(elab.index, *NAMED["han"] and (NAMED["han"][0], [NAMED["han"][1]]))[0]
    assert "Chinese characters" in han["explanation"] and "zh " in han["explanation"]


def test_explain_stores_resumes_and_never_writes_the_shipped_index(elab, home):
    layer, feature = NAMED["chinese"]
    before = sorted(p.name for p in embedded.INDEX_DIR.iterdir())
    assert "explanations.parquet" in before  # the default ships an offline explanation of every feature
    mine = location(elab.index.path) / "explanations.parquet"
    shipped = elab.explain(layer, [feature, 7])  # served from the shipped table: nothing computed or written
    assert not mine.exists() and shipped.explanation.str.len().gt(0).all()
    out = elab.explain(layer, [feature, 7], overwrite=True)  # redone: stored in the user's home, not the package
    assert list(out.columns[:5]) == ["layer", "feature", "explanation", "score", "explainer"]
    assert out.feature.tolist() == [feature, 7] and (out.explainer == "offline").all()
    assert out.explanation.tolist() == shipped.explanation.tolist()  # the same explainer on the same index
    assert sorted(p.name for p in embedded.INDEX_DIR.iterdir()) == before  # the shipped index stays untouched
    assert location(elab.index.path).is_relative_to(home) and mine.is_file()
    stamp = mine.stat().st_mtime_ns
    again = elab.explain(layer, [feature, 7])  # resumed: nothing redone, nothing written
    assert (location(elab.index.path) / "explanations.parquet").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(out.drop(columns="scores"), again.drop(columns="scores"))
    assert {feature, 7} <= explained(elab.index.path, "offline", offline.MODEL, offline.PROMPT_VERSION, layer)


def test_explanations_table_merges_atomically_and_concurrently(tmp_path):
    index = tmp_path / "idx"
    index.mkdir()
    (index / "manifest.json").write_text(json.dumps({"format": "qscope-feature-index", "model": "m",
                                                     "corpus": {"fingerprint": "f"}}))
    assert location(index) == index and read_explanations(index).empty

    def add(worker):
        for i in range(5):
            add_explanations(index, pd.DataFrame([{"explainer": "x", "model": f"w{worker}", "prompt_version": "1",
                                                   "layer": 0, "feature": i, "explanation": f"e{i}",
                                                   "score": 0.5, "scores": {"a": 1}}]))

    threads = [threading.Thread(target=add, args=(w,)) for w in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    table = read_explanations(index)
    assert list(table.columns) == list(COLUMNS) and len(table) == 20
    add_explanations(index, pd.DataFrame([{"explainer": "x", "model": "w0", "prompt_version": "1", "layer": 0,
                                           "feature": 0, "explanation": "better"}]))
    table = read_explanations(index)
    assert len(table) == 20 and table[(table.model == "w0") & (table.feature == 0)].explanation.item() == "better"
    assert not [p for p in index.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(ValueError, match="lack columns"):
        add_explanations(index, pd.DataFrame([{"layer": 0}]))


def test_offline_explainer_whole_layer_and_search(elab):
    layer = NAMED["han"][0]
    out = elab.explain(layer)
    assert len(out) == elab.index.d_sae and out.explanation.notna().all()
    hits = elab.search("Chinese characters", layers=[layer], top=5)
    assert len(hits) == 5 and hits.explanation.str.contains("Chinese characters").all()
    assert list(hits.columns[:5]) == ["layer", "feature", "name", "explanation", "score"]
    assert hits.match.is_monotonic_decreasing
    digits = elab.search("digits", top=5)
    assert digits.explanation.str.contains("digit").sum() + digits.name.str.contains("[0-9０-９]").sum() >= 3
    dense = elab.search("Chinese", layers=[layer], max_density=0.01, min_score=0.5)
    assert (dense.density <= 0.01).all() and (dense.score >= 0.5).all()
    assert elab.search("zzzqqq xyzzyx", top=5).empty


def _rank(hits, name):
    where = hits.index[(hits.layer == NAMED[name][0]) & (hits.feature == NAMED[name][1])]
    return int(where[0]) + 1 if len(where) else None


def test_plain_queries_find_named_features_in_top_5(elab):
    for layer in sorted({layer for layer, _ in NAMED.values()}):
        elab.explain(layer)
    for query, name in (("Chinese", "han"), ("numbers", "digit")):
        hits = elab.search(query, top=5)
        assert _rank(hits, name), (query, hits[["layer", "feature", "name", "facet", "precision", "recall"]])
        assert hits.precision.notna().all() and (hits.precision > 0.5).all()  # measured on the reference, not read


def _code_share(elab, layer, feature, docs):
    """The share of a feature's firings on the Python documents of ``docs`` (measured here, apart from search)."""
    acts = elab.encode([d["text"] for d in docs], int(layer), max_length=256)
    code = np.concatenate([[d["lang"] == "code"] * len(ids) for d, ids in zip(docs, acts.token_ids)])
    fired = ((acts.indices == int(feature)) & (acts.values > 0)).any(1).numpy() & acts.mask.numpy()
    return fired.sum(), code[fired].mean()


def test_python_code_finds_the_code_feature_in_top_5(elab):
    """'Python code' names the Python documents, not their indentation: the named code-context feature (on the
    shipped reference: 72% of its firings on Python, recall 10%, the most of any feature firing there at over
    70%) is in the top 5, every hit there fires mostly on Python, and 'indentation' still finds indentation."""
    for layer in sorted({layer for layer, _ in NAMED.values()}):
        elab.explain(layer)
    hits = elab.search("Python code", top=5)
    assert _rank(hits, "code"), hits[["layer", "feature", "name", "facet", "precision", "recall"]]
    assert (hits.facet == "lang:code").all()
    docs = embedded.reference_documents()[1::3]  # a third of the reference, measured apart from the search
    for layer, feature in zip(hits.layer, hits.feature):
        fired, share = _code_share(elab, layer, feature, docs)
        assert fired >= 3 and share >= 0.6, (layer, feature, fired, share)
    indent = elab.search("indentation", top=5)
    assert (indent.facet == "class:indent").all() and (indent.precision >= 0.7).all()


def test_a_query_names_a_facet_by_all_of_one_name():
    from qscope_lab.explain.words import CONCEPT_WORDS, naming, words

    assert naming(words("Python code"), CONCEPT_WORDS["lang:code"]) == 1.0
    assert naming(words("Python code"), CONCEPT_WORDS["class:indent"]) == 0.0
    assert naming(words("Python code"), CONCEPT_WORDS["class:keyword"]) == 0.25
    assert naming(words("numbers"), CONCEPT_WORDS["class:digit"]) == 1.0  # plurals cut
    assert naming(words("hanzi"), CONCEPT_WORDS["class:han"]) == 1.0
    assert naming([], CONCEPT_WORDS["lang:zh"]) == 0.0 and naming(["x"], ()) == 0.0


@settings(max_examples=80, deadline=None)
@given(query=st.lists(st.sampled_from("python code chinese text digit han script word line break x".split()),
                      min_size=1, max_size=4),
       names=st.lists(st.text(alphabet="pythoncdeiagsrx ", max_size=20), max_size=4))
def test_naming_is_a_share_and_whole_only_for_an_exact_name(query, names):
    from qscope_lab.explain.words import naming, words

    value = naming(query, names)
    assert 0.0 <= value <= 1.0
    assert (value == 1.0) == any(set(words(n)) == set(query) for n in names)


def test_held_out_queries_find_what_they_name(elab):
    """Queries no code of the search was written for: the named features in the top 5 for paraphrases, and for
    queries naming other things the top hits fire on those things on the reference (measured here, apart from
    the search: the share of each hit's firings on the tokens the query names)."""
    import numpy as np

    from qscope_lab.explain import patterns

    for layer in sorted({layer for layer, _ in NAMED.values()}):
        elab.explain(layer)
    for query, name in (("Chinese characters", "han"), ("hanzi", "han"), ("numerals", "digit"), ("digits", "digit")):
        assert _rank(elab.search(query, top=5), name), query
    docs = embedded.reference_documents()[::3]
    for query, member, bar in (
            ("punctuation", lambda u, lang: bool(set(patterns.classes(u)) & {"punct", "cjk_punct"}), 0.6),
            ("line breaks", lambda u, lang: "\n" in u, 0.6),
            ("chinese text", lambda u, lang: lang == "zh", 0.9),
            ("return", lambda u, lang: u.strip() == "return", None)):
        hits = elab.search(query, top=3)
        assert len(hits) == 3, query
        for layer, feature in zip(hits.layer, hits.feature):
            acts = elab.encode([d["text"] for d in docs], int(layer), max_length=256)
            inside = np.array([member(u, d["lang"]) for d, ids in zip(docs, acts.token_ids)
                               for u in elab.token_pieces(ids)])
            fired = ((acts.indices == int(feature)) & (acts.values > 0)).any(1).numpy() & acts.mask.numpy()
            share = inside[fired].mean()
            limit = 20 * inside[acts.mask.numpy()].mean() if bar is None else bar  # a rare token: 20x its rate
            assert fired.sum() >= 3 and share >= limit, (query, layer, feature, share, limit)


def test_reference_relevance_is_measured_on_the_given_documents(elab):
    from qscope_lab.explain import concepts

    han_layer, han = NAMED["han"]
    docs = [{"text": d["text"], "source": d["source"]} for d in embedded.reference_documents()][::2]
    assert {concepts.guess_language(d["text"]) for d in docs} == {"zh", "en", "code"}
    mine = elab.search("Chinese characters", layers=[han_layer], top=10, reference=docs)
    assert (mine.facet.iloc[0].startswith(("class:han", "lang:zh"))) and mine.precision.iloc[0] > 0.6
    words_only = elab.search("Chinese characters", layers=[han_layer], top=10, reference=False)
    assert words_only.facet.eq("").all() and words_only.precision.isna().all()
    for bad in ("a text", [""], [{"source": "x"}], [], 5):
        with pytest.raises((TypeError, ValueError)):
            elab.search("Chinese", reference=bad)


def test_lab_feature_names_match_display_names(elab):
    layer, feature = NAMED["han"]
    assert elab.feature_names(layer, [feature, 3]) == display_names(elab, layer, [feature, 3])
    with pytest.raises((TypeError, ValueError, IndexError)):
        elab.feature_names(layer, [10**7])


def test_search_uses_user_labels_and_embeddings(elab, home):
    layer = 1
    (home / "labels.json").write_text(json.dumps({f"{elab.name}|{elab.saes.name}/{layer}/77":
                                                  {"label": "zebra stripes detector", "note": ""}}))
    try:
        hits = elab.search("zebra", top=3)
        assert (hits.layer.iloc[0], hits.feature.iloc[0], hits.name.iloc[0]) == (layer, 77, "zebra stripes detector")
        assert display_name(elab, layer, 77) == "zebra stripes detector"

        def embed(texts):  # a plain sentence-embedding callable: bag of two words
            import numpy as np
            return np.array([[t.lower().count("zebra") + 0.01, t.lower().count("chinese") + 0.01] for t in texts])

        mixed = elab.search("zebra", top=3, embed=embed)
        assert mixed.feature.iloc[0] == 77
    finally:
        (home / "labels.json").unlink()


def test_display_names_are_fast_and_fall_back(elab):
    import time

    layer, feature = NAMED["han"]
    elab.explain(layer, [feature])
    assert "Chinese characters" in display_name(elab, layer, feature)
    names = display_names(elab, 0, range(40))
    assert len(names) == 40 and all(isinstance(n, str) and n for n in names)
    t = time.perf_counter()
    for _ in range(20):
        display_names(elab, 0, range(64))
    assert time.perf_counter() - t < 0.5  # cached: a heatmap asks for dozens, many times


def test_search_by_example_finds_what_fires_more_than_on_the_corpus(elab):
    han_layer, han = NAMED["han"]
    out = elab.search_by_example("这家酒店的服务很好，房间也很干净，我们下次还会再来。", layers=[han_layer], top=200)
    assert list(out.columns[:3]) == ["layer", "feature", "name"]
    assert (out.lift.diff().dropna() <= 1e-12).all() and (out.fires >= 1).all()
    code = elab.search_by_example("def f(x):\n    if x:\n        return x + 1\n    return 0\n", layers=[3], top=10)
    assert (code.text_rate > code.corpus_rate).all()


# ---------------------------------------------------------------------- input validation (hypothesis)
BAD = st.one_of(st.none(), st.text(max_size=3), st.floats(), st.booleans(), st.lists(st.text(max_size=2), max_size=2),
                st.integers(max_value=-1), st.integers(min_value=10_000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.one_of(st.integers(min_value=4, max_value=10**6), st.integers(max_value=-1), st.floats(),
                       st.text(max_size=3), st.booleans()))
def test_bad_layers_are_refused(elab, layer):
    for call in (lambda: elab.explain(layer), lambda: elab.search("x", layers=[layer]),
                 lambda: elab.search_by_example("text", layers=layer), lambda: display_names(elab, layer, [1])):
        with pytest.raises((TypeError, ValueError)):
            call()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(features=st.one_of(st.integers(min_value=2048), st.integers(max_value=-1), st.just([]), st.text(min_size=1),
                          st.floats(), st.lists(st.integers(min_value=2048), min_size=1, max_size=3)))
def test_bad_features_are_refused(elab, features):
    with pytest.raises((TypeError, ValueError, IndexError)):
        elab.explain(0, features)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(st.none(), st.integers(), st.just(""), st.just("   "), st.lists(st.text())),
       top=st.one_of(st.integers(max_value=0), st.floats(), st.just("5")))
def test_bad_queries_and_tops_are_refused(elab, query, top):
    with pytest.raises((TypeError, ValueError)):
        elab.search(query)
    with pytest.raises((TypeError, ValueError)):
        elab.search("Chinese", top=top)
    with pytest.raises((TypeError, ValueError)):
        elab.search_by_example("text", top=top)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.floats(allow_nan=True), st.text(max_size=2), st.booleans(), st.floats(max_value=-1e-9)))
def test_bad_filters_are_refused(elab, value):
    import math

    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return
    with pytest.raises((TypeError, ValueError)):
        elab.search("Chinese", max_density=value)
    if not (isinstance(value, float) and math.isfinite(value)):
        with pytest.raises((TypeError, ValueError)):
            elab.search("Chinese", min_score=value)


def test_explainer_choice_is_checked(elab):
    with pytest.raises(ValueError):
        elab.explain(0, [1], explainer="magic")
    with pytest.raises(ValueError, match="needs chat"):
        elab.explain(0, [1], explainer="llm")
    with pytest.raises(ValueError, match="no chat"):
        elab.explain(0, [1], chat=lambda m: "x")
