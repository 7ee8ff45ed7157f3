"""The LLM side of issue 26 against a REAL OpenAI-compatible server: ``transformers serve`` on the embedded model,
started here on a free localhost port (HF_HUB_OFFLINE=1) and stopped at the end. A tiny model's explanations are
poor: what is tested is the plumbing (prompts carry the contexts, replies parsed, scores computed, the cache, retries
and per-item failures). Also: a local transformers chat model, a plain function, Neuronpedia's export layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import SERVER_MAX_LEN as MAX_LEN  # the server refuses longer requests: a real per-item error
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab import Lab, embedded
from qscope_lab.explain import llm, scorers
from qscope_lab.explain.chat import Chat, Malformed
from qscope_lab.explain.neuronpedia import import_neuronpedia
from qscope_lab.explain.windows import feature_windows
from qscope_lab.index.explanations import read_explanations

NAMED = embedded.known_features()


@pytest.fixture(scope="module")
def elab(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("QSCOPE_LAB_HOME", str(tmp_path_factory.mktemp("home")))
    yield Lab.load()
    mp.undo()


def chat_for(server, tmp_path, **options):
    base, model = server
    options.setdefault("max_tokens", 12)
    options.setdefault("backoff", 0.01)
    return Chat.openai(base, model, cache=tmp_path / "cache.sqlite", **options)


def test_llm_explainer_prompts_parse_store_and_cache(server, elab, tmp_path):
    layer, han = NAMED["han"]
    feats = [han, NAMED["chinese"][1]]
    wins = feature_windows(elab.index, layer, feats)
    messages = llm.prompt(llm.pick(wins[han], 10, 10))
    top = wins[han][0]
    assert top.marked() in messages[1]["content"] and "<<" in messages[1]["content"]  # contexts, marked
    assert "Activations: (" in messages[1]["content"] and "[EXPLANATION]" in messages[0]["content"]
    chat = chat_for(server, tmp_path)
    out = elab.explain(layer, feats, explainer="llm", chat=chat, scorers=(), n_top=4, n_quantile=3)
    assert out.attrs["failures"] == [], out.attrs["failures"]
    assert out.explanation.map(lambda s: isinstance(s, str) and s != "").all()
    assert (out.explainer == "llm").all() and (out.model == chat.model).all()
    assert chat.cost.requests >= 2 and chat.cost.prompt_tokens > 0 and chat.cost.completion_tokens > 0
    stored = read_explanations(elab.index.path)
    assert set(stored[stored.explainer == "llm"].feature) >= set(feats)
    asked = chat.cost.requests
    again = elab.explain(layer, feats, explainer="llm", chat=chat, scorers=(), overwrite=True, n_top=4,
                         n_quantile=3)
    assert chat.cost.requests == asked and chat.cost.cache_hits == 2  # asked again: zero new requests
    assert again.explanation.tolist() == out.explanation.tolist()


def test_parse_explanation():
    assert llm.parse("Some thinking\n[EXPLANATION]: Chinese characters") == "Chinese characters"
    assert llm.parse("  digits in hex numbers\nmore") == "digits in hex numbers"
    for bad in ("", "   \n ... \n", "[EXPLANATION]: " + "x" * 400):
        with pytest.raises(Malformed):
            llm.parse(bad)


def test_scorers_against_the_server_report_what_the_judge_did(server, elab, tmp_path):
    layer, han = NAMED["han"]
    judge = chat_for(server, tmp_path, max_tokens=16, retries=1)
    table = scorers.score(elab.index, layer, {han: "Chinese characters"}, judge, n_examples=4, per_prompt=4)
    assert set(table.scorer) == {"detection", "fuzzing"}
    for row in table.itertuples():
        assert row.answered + 4 * row.failures >= row.n - 3 and row.answered <= row.n
        assert row.answered == 0 or 0 <= row.accuracy <= 1
    assert judge.cost.requests >= 2 and judge.cost.prompt_tokens > 0  # every prompt reached the server
    assert judge.cost.failures == int(table.failures.sum())


def test_scorers_compute_delphi_scores_with_a_function_judge(elab):
    """Detection with a judge that says 'fires' on Han text: high accuracy for the Han feature, low for digits."""
    import re

    def judge(messages):
        examples = re.findall(r"^Example \d+: (.*)$", messages[-1]["content"], flags=re.M)
        return json.dumps([int(bool(re.search(r"[\u4e00-\u9fff]", e))) for e in examples])

    chat = Chat.function(judge, cache=False)
    layer, han = NAMED["han"]
    table = scorers.score(elab.index, layer, {han: "Chinese characters"}, chat, scorers="detection",
                          n_examples=8, per_prompt=4, lab=elab)
    row = table.iloc[0]
    assert row.answered == row.n >= 12 and row.failures == 0
    assert row.accuracy >= 0.8 and row.recall == 1.0
    fuzz = scorers.score(elab.index, layer, {han: "Chinese characters"}, chat, scorers="fuzzing", n_examples=6)
    assert fuzz.iloc[0].answered == 6


def test_server_errors_timeouts_and_malformed_replies_are_retried_and_reported(server, elab, tmp_path):
    base, model = server
    chat = chat_for(server, tmp_path, retries=2)
    results = chat.batch(["Say hi", "word " * (2 * MAX_LEN), "Say bye"])  # the middle one: over the server's limit
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].attempts == 3 and "Error" in results[1].error
    assert chat.cost.failures == 1 and chat.cost.retries == 2
    before = chat.cost.requests
    again = chat.batch(["Say hi", "word " * (2 * MAX_LEN), "Say bye"])  # finished work kept: only the failure asked
    assert [r.cached for r in again] == [True, False, True] and chat.cost.requests == before + 3

    unknown = Chat.openai(base, "no-such/model", retries=1, backoff=0, cache=False, max_tokens=4)
    r = unknown.batch(["hi"])[0]
    assert not r.ok and r.attempts == 2 and unknown.cost.requests == 2

    slow = Chat.openai(base, model, timeout=0.001, retries=1, backoff=0, cache=tmp_path / "cache.sqlite",
                       max_tokens=12)
    r = slow.batch(["a new prompt, never cached"])[0]
    assert not r.ok and "Timeout" in r.error and r.attempts == 2
    # explain with the tiny timeout: features already cached are kept, the others reported as failures
    layer, han = NAMED["han"]
    few = {"scorers": (), "n_top": 4, "n_quantile": 3}
    done = elab.explain(layer, [han], explainer="llm", chat=chat_for(server, tmp_path), overwrite=True, **few)
    out = elab.explain(layer, [han, 3], explainer="llm", chat=slow, overwrite=True, **few)
    assert out.set_index("feature").explanation[han] == done.explanation.iloc[0]
    assert [f["feature"] for f in out.attrs["failures"]] == [3] and "Timeout" in out.attrs["failures"][0]["scores"][
        "error"]

    calls = []

    def flaky(messages):  # malformed JSON twice, then a good answer
        calls.append(1)
        return "[1, 0" if len(calls) < 3 else "[1, 0]"

    fixed = Chat.function(flaky, retries=3, backoff=0, cache=False).batch(["q"], parse=scorers.parser(2))[0]
    assert fixed.ok and fixed.value == [1, 0] and fixed.attempts == 3
    real = chat_for(server, tmp_path, retries=1, max_tokens=6).batch(
        ["Answer with a JSON list of 7 zeros and ones."], parse=scorers.parser(7))[0]
    assert real.ok or ("Malformed" in real.error and real.attempts == 2)


def test_local_transformers_chat_model(tmp_path):
    chat = Chat.transformers(embedded.MODEL_DIR, max_new_tokens=4, cache=tmp_path / "c.sqlite")
    reply = chat([{"role": "user", "content": "Hello"}])
    assert isinstance(reply, str) and chat.cost.completion_tokens >= 1
    chat("Hello")
    assert chat.cost.cache_hits == 1


def _write_export(folder: Path, rows: list[dict], name: str = "batch-0.jsonl.gz") -> None:
    (folder / "explanations").mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "explanations" / name, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def test_neuronpedia_import_into_the_same_store(elab, tmp_path):
    base = {"modelId": "qscope-embedded", "typeName": "oai_token-act-pair", "explanationModelName": "gpt-4o-mini"}
    _write_export(tmp_path, [
        {**base, "layer": "2-qwenscope-res-2k", "index": "40", "description": "Chinese characters",
         "scores": [{"value": 0.8}, {"value": 0.6}]},
        {**base, "layer": "1-qwenscope-res-2k", "index": 5, "description": " hexadecimal digits "},
        {**base, "layer": "9-qwenscope-res-2k", "index": 1, "description": "a layer the index lacks"},
        {**base, "layer": "0-qwenscope-res-2k", "index": 99999, "description": "past the width"},
    ])
    _write_export(tmp_path, [{**base, "modelId": "other", "layer": "0-x", "index": 1, "description": "other"}],
                  "batch-1.jsonl.gz")
    added = import_neuronpedia(tmp_path, elab.index, model_id="qscope-embedded")
    assert len(added) == 2 and added.attrs["skipped"] == 2
    table = read_explanations(elab.index.path)
    np_rows = table[table.explainer == "neuronpedia"].set_index(["layer", "feature"])
    assert np_rows.loc[(2, 40)].explanation == "Chinese characters" and np_rows.loc[(2, 40)].score == pytest.approx(0.7)
    assert np_rows.loc[(2, 40)].model == "gpt-4o-mini" and np_rows.loc[(1, 5)].explanation == "hexadecimal digits"
    assert pd.isna(np_rows.loc[(1, 5)].score)
    hits = elab.search("hexadecimal", top=3)
    assert (hits.layer.iloc[0], hits.feature.iloc[0]) == (1, 5)
    (tmp_path / "bad").mkdir()
    _write_export(tmp_path / "bad", [{"layer": "x-y", "index": 1, "description": "d"}])
    with pytest.raises(ValueError, match="not a Neuronpedia explanation"):
        import_neuronpedia(tmp_path / "bad", elab.index)
    with pytest.raises(FileNotFoundError):
        import_neuronpedia(tmp_path / "nothing-here", elab.index)


# ---------------------------------------------------------------------- input validation (hypothesis)
@settings(max_examples=40, deadline=None)
@given(url=st.one_of(st.none(), st.integers(), st.text(max_size=10).filter(lambda s: not s.startswith("http"))),
       timeout=st.one_of(st.floats(max_value=0), st.just(float("nan")), st.text(max_size=2)))
def test_bad_endpoints_are_refused(url, timeout):
    with pytest.raises((TypeError, ValueError)):
        Chat.openai(url, "m")
    with pytest.raises((TypeError, ValueError)):
        Chat.openai("http://127.0.0.1:9/v1", "m", timeout=timeout)


@settings(max_examples=40, deadline=None)
@given(prompts=st.one_of(st.text(), st.integers(), st.lists(st.one_of(st.integers(), st.just([]),
                                                                      st.just([{"role": 1}])), min_size=1)))
def test_bad_prompts_are_refused(prompts):
    chat = Chat.function(lambda m: "x", cache=False)
    with pytest.raises(TypeError):
        chat.batch(prompts)


@settings(max_examples=30, deadline=None)
@given(n=st.one_of(st.integers(max_value=0), st.integers(min_value=201), st.floats(), st.text(max_size=2)))
def test_bad_scorer_options_are_refused(elab, n):
    chat = Chat.function(lambda m: "[]", cache=False)
    with pytest.raises((TypeError, ValueError)):
        scorers.score(elab.index, 0, {1: "x"}, chat, n_examples=n)
    with pytest.raises((TypeError, ValueError)):
        Chat.function(lambda m: "x", concurrency=0 if isinstance(n, int) and n > 0 else n)
