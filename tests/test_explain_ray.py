"""``lab.explain(..., engine="ray")`` on a REAL local Ray (num_cpus=2, started once for this module): a whole layer
of the embedded default explained by Ray tasks stores exactly the table the local engine stores; a run stopped
after some batches resumes with only the rest; the LLM explainer's chat travels to the workers when it pickles
(a plain function; Chat.openai against a real ``transformers serve``, test_explain's server; its cost comes back)
and is refused before any work when it does not; bad engine / workers values are refused."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
from conftest import start_ray
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab import Lab, embedded
from qscope_lab.explain import runner
from qscope_lab.explain.chat import Chat
from qscope_lab.index.explanations import explained, read_explanations

NAMED = embedded.known_features()


@pytest.fixture(scope="module")
def elab(tmp_path_factory):
    """The embedded default reading a copy of the shipped index without its stored explanations."""
    mp = pytest.MonkeyPatch()
    mp.setenv("QSCOPE_LAB_HOME", str(tmp_path_factory.mktemp("home")))
    copy = tmp_path_factory.mktemp("index") / "index"
    shutil.copytree(embedded.INDEX_DIR, copy)
    (copy / "explanations.parquet").unlink()
    lab = Lab.load()
    lab.use_index(copy)
    yield lab
    mp.undo()


@pytest.fixture(scope="module")
def ray_session(elab):
    ray = start_ray()
    yield ray
    ray.shutdown()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def test_whole_layer_on_ray_equals_local(elab, ray_session):
    local = elab.explain(2, overwrite=True)
    assert len(local) == 2048 and local.explanation.notna().all()
    time.sleep(1.1)  # dates have second resolution
    started = _now()
    remote = elab.explain(2, overwrite=True, engine="ray", workers=2)
    pd.testing.assert_frame_equal(remote, local)
    assert sorted(remote.attrs["computed"]) == list(range(2048))  # every feature came back from a worker
    stored = read_explanations(elab.index.path)
    stored = stored[(stored.layer == 2) & (stored.explainer == "offline")]
    assert len(stored) == 2048 and (stored.date >= started).all()  # and the driver stored every one again


class _Stop(Exception):
    pass


def test_interrupted_ray_run_resumes_with_the_rest(elab, ray_session, monkeypatch):
    features, batch = list(range(640)), 64  # 10 batches
    real_add, stores = runner.add_explanations, []

    def stop_after_three(path, frame):
        real_add(path, frame)
        stores.append(sorted(frame.feature))
        if len(stores) == 3:
            raise _Stop  # the driver dies after storing three batches

    monkeypatch.setattr(runner, "add_explanations", stop_after_three)
    with pytest.raises(_Stop):
        elab.explain(1, features, batch=batch, engine="ray", workers=2)
    monkeypatch.setattr(runner, "add_explanations", real_add)
    first = explained(elab.index.path, "offline", "patterns", "offline-1", 1)
    assert first == {f for fs in stores for f in fs} and len(first) == 3 * batch
    before = read_explanations(elab.index.path)
    before = before[(before.layer == 1)].set_index("feature").date
    time.sleep(1.1)
    out = elab.explain(1, features, batch=batch, engine="ray", workers=2)
    computed = out.attrs["computed"]
    assert len(computed) == len(set(computed)) == 640 - 3 * batch  # only the rest, each once
    assert set(computed) == set(features) - first
    after = read_explanations(elab.index.path)
    after = after[(after.layer == 1)].set_index("feature").date
    assert (after[sorted(first)] == before[sorted(first)]).all()  # the stored batches were not redone
    assert out.feature.tolist() == features and out.explanation.notna().all()
    again = elab.explain(1, features, batch=batch, engine="ray", workers=2)
    assert again.attrs["computed"] == [] and again.explanation.tolist() == out.explanation.tolist()


def _han_judge(messages):
    import json

    examples = re.findall(r"^Example \d+: (.*)$", messages[-1]["content"], flags=re.M)
    return json.dumps([int(bool(re.search(r"[\u4e00-\u9fff]", e))) for e in examples])


def test_llm_explainer_on_ray_with_a_function_chat(elab, ray_session):
    layer, han = NAMED["han"]
    feats = [han, NAMED["chinese"][1], 7, 8]

    def ask(messages):  # a plain function chat, defined here: pickled by value into the workers (a function
        import re  # of a module the workers cannot import would not be), names the first marked token

        found = re.search(r"<<(.+?)>>", messages[-1]["content"])
        return f"[EXPLANATION]: the token {found.group(1) if found else '?'}"

    judge = Chat.function(_han_judge, cache=False)
    options = dict(scorers=("detection",), judge=judge, n_examples=8, per_prompt=4, n_top=4, n_quantile=3)
    chat = Chat.function(ask, model="marked", cache=False)
    remote = elab.explain(layer, feats, explainer="llm", chat=chat, overwrite=True, engine="ray", workers=2,
                          batch=2, **options)
    asked = int(remote.explanation.notna().sum())
    assert chat.cost.requests == asked >= 2  # the workers' requests counted on the driver's chat
    assert all(r["scores"]["error"] == "no stored contexts" for r in remote.attrs["failures"])
    han_row = remote.set_index("feature").loc[han]
    assert han_row.explanation.startswith("the token ") and han_row.score > 0  # scored on the driver
    local = elab.explain(layer, feats, explainer="llm", chat=Chat.function(ask, model="marked", cache=False),
                         overwrite=True, batch=2, **options)
    pd.testing.assert_frame_equal(remote, local)


def test_openai_chat_on_ray_against_a_real_server(server, elab, ray_session, tmp_path):
    """Chat.openai travels to the workers (its client rebuilt there), asks the real server, its cost comes back;
    the workers' on-disk cache answers the rerun, on Ray and locally alike."""
    base, model = server
    layer, han = NAMED["han"]
    feats = [han, NAMED["chinese"][1]]
    chat = Chat.openai(base, model, cache=tmp_path / "cache.sqlite", max_tokens=12, backoff=0.01)
    options = dict(explainer="llm", chat=chat, scorers=(), overwrite=True, batch=1, n_top=4, n_quantile=3)
    out = elab.explain(layer, feats, engine="ray", workers=2, **options)
    assert out.attrs["failures"] == [], out.attrs["failures"]
    assert out.explanation.map(lambda s: isinstance(s, str) and s != "").all()
    assert chat.cost.requests >= 2 and chat.cost.completion_tokens > 0 and chat.cost.cache_hits == 0
    asked = chat.cost.requests
    again = elab.explain(layer, feats, engine="ray", workers=2, **options)
    assert chat.cost.requests == asked and chat.cost.cache_hits == 2  # the cache the workers wrote
    local = elab.explain(layer, feats, **options)
    assert chat.cost.requests == asked and chat.cost.cache_hits == 4
    assert again.explanation.tolist() == out.explanation.tolist() == local.explanation.tolist()


def test_unpicklable_chat_refused_before_any_work(elab):
    lock = threading.Lock()

    def locked(messages):
        with lock:
            return "[EXPLANATION]: x"

    before = read_explanations(elab.index.path)
    with pytest.raises(TypeError, match=r"chat .*Ray workers.*plain function.*engine='local'"):
        elab.explain(3, [1, 2], explainer="llm", chat=locked, engine="ray")
    pd.testing.assert_frame_equal(read_explanations(elab.index.path), before)


def test_chat_the_workers_cannot_load_refused_before_any_work(elab, ray_session):
    """A function of this test module pickles by reference, and the workers cannot import the module."""
    before = read_explanations(elab.index.path)
    with pytest.raises(TypeError, match=r"chat .*cannot be loaded in the Ray workers.*test_explain_ray"):
        elab.explain(3, [1, 2], explainer="llm", chat=_han_judge, engine="ray", overwrite=True)
    pd.testing.assert_frame_equal(read_explanations(elab.index.path), before)


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.text(max_size=8).filter(lambda e: e not in ("local", "ray")), st.none(), st.integers(),
                 st.sampled_from(["Ray", "LOCAL", " ray", "dask"])))
def test_bad_engine_refused(elab, engine):
    with pytest.raises(ValueError, match="engine must be one of 'local', 'ray'"):
        elab.explain(2, [1], engine=engine)


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=4)))
def test_bad_workers_refused(elab, workers):
    with pytest.raises((TypeError, ValueError), match="workers must be"):
        elab.explain(2, [1], engine="ray", workers=workers)
