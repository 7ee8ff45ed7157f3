"""Feature index on the embedded default: exact against brute force, resumable after SIGKILL, Ray == local (also
by layer groups under a memory budget), extendable, refused for another model / suite, corrupt files named,
exported in Neuronpedia's layout."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import start_ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import FeatureIndex, Lab
from qscope_lab.embedded import reference_documents
from qscope_lab.index.schema import CorruptIndexError, sealed
from qscope_lab.index.source import STAT_COLUMNS, FeatureSource, top_tokens

LAYERS = [1, 2]
OPTIONS = {"n_top": 5, "context_length": 96, "batch_size": 8, "window": 4}


@pytest.fixture(scope="module")
def elab() -> Lab:
    return Lab.load(index=False)


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    """24 short held-out documents (8 per language), each under the context length, with their sources."""
    rows = reference_documents()
    picked = [r for lang in ("en", "zh", "code") for r in [x for x in rows if x["lang"] == lang][:8]]
    return [{"text": r["text"][:60], "source": r["source"]} for r in picked]


@pytest.fixture(scope="module")
def built(elab, docs, tmp_path_factory) -> FeatureIndex:
    return FeatureIndex.build(elab, docs, LAYERS, tmp_path_factory.mktemp("idx") / "one", shard_documents=100,
                              **OPTIONS)


def state_tables(index: FeatureIndex) -> dict:
    """Every table of the index's state, read whole (what two builds must agree on exactly)."""
    out = {}
    for layer in index.layers:
        folder = index.path / "state" / f"layer{layer}"
        out[layer, "contexts"] = pa.ipc.open_file(str(folder / "contexts.arrow")).read_all()
        for name in ("stats", "histogram", "sources"):
            out[layer, name] = pq.read_table(folder / f"{name}.parquet")
    meta = json.loads((index.path / "state" / "partial.json").read_text())
    out["meta"] = {k: meta[k] for k in ("sources", "tokens_by_source", "documents", "chunks")}
    return out


def assert_same_index(a: FeatureIndex, b: FeatureIndex) -> None:
    ta, tb = state_tables(a), state_tables(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key] == tb[key] if key == "meta" else ta[key].equals(tb[key]), key


def brute_force(elab, docs, layer) -> pd.DataFrame:
    acts = elab.encode([d["text"] for d in docs], layer, batch_size=OPTIONS["batch_size"], skip_first=True)
    assert max(len(ids) for ids in acts.token_ids) <= OPTIONS["context_length"]  # one chunk per document
    return acts.to_frame()


def test_top_contexts_and_counts_equal_brute_force(elab, docs, built):
    for layer in LAYERS:
        frame = brute_force(elab, docs, layer)
        stats = built.stats(layer)
        counts = frame.groupby("feature").size()
        assert stats.firing_count.sum() == len(frame) and (stats.firing_count[counts.index] == counts.values).all()
        np.testing.assert_allclose(stats.max_activation[counts.index], frame.groupby("feature").activation.max(),
                                   rtol=1e-6)
        assert built.tokens == int(elab.encode([d["text"] for d in docs], layer, skip_first=True).mask.sum())
        for feature in counts.sort_values().index[-40:].tolist() + counts.index[:20].tolist():
            want = frame[frame.feature == feature].sort_values(["activation", "text", "position"],
                                                              ascending=[False, True, True]).head(5)
            got = built.top_contexts(layer, feature)
            assert got.document.tolist() == want.text.tolist() and got.position.tolist() == want.position.tolist()
            np.testing.assert_allclose(got.activation, want.activation, rtol=1e-6)
            row = got.iloc[0]  # the window's own value at its centre is the activation
            assert row["values"][row["center"]] == pytest.approx(row["activation"])
            hist = built.histogram(layer, feature)
            assert hist["count"].sum() == counts[feature]
            rates = built.source_rates(layer, feature)
            assert rates.firing_count.sum() == counts[feature]
            samples = built.quantile_samples(layer, feature)
            assert ((samples.activation >= samples.lower - 1e-6) & (samples.activation < samples.upper)).all()


def test_card_from_index_shows_brute_force_contexts(elab, docs, built):
    from qscope_lab.widgets import FeatureCard

    layer = 2
    frame = brute_force(elab, docs, layer)
    feature = int(frame.groupby("feature").size().sort_values().index[-3])
    elab.use_index(built)
    try:
        card = FeatureCard(elab, layer, feature, n_contexts=5)
    finally:
        elab.use_index(None)
    want = frame[frame.feature == feature].sort_values(["activation", "text", "position"],
                                                      ascending=[False, True, True]).head(5)
    assert [c["text"] for c in card.contexts] == want.text.tolist()
    assert [c["token"] for c in card.contexts] == want.token.tolist()
    np.testing.assert_allclose([c["activation"] for c in card.contexts], want.activation, rtol=1e-6)
    assert card.stats["firing_count"] == (frame.feature == feature).sum() and "indexed tokens" in card.histogram_svg


def _repeats(index: FeatureIndex, layer: int) -> tuple[int, int]:
    """(features whose top contexts show one text twice, features that fired), the text read as a user sees it
    (whitespace collapsed)."""
    stats = index.stats(layer)
    repeated = 0
    fired = stats.index[stats.firing_count > 0].tolist()
    for feature in fired:
        shown = [" ".join("".join(c.tokens).split()) for c in index.top_contexts(layer, feature).itertuples()]
        repeated += len(shown) != len(set(shown))
    return repeated, len(fired)


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=12), pad=st.lists(st.sampled_from([" ", "\n", "\t", "\u3000"]), max_size=3))
def test_a_tokens_text_key_ignores_whitespace_and_is_stable(text, pad):
    from qscope_lab.core.tokens import SKIP, text_key

    spaced = "".join(pad) + text + "".join(reversed(pad))
    assert text_key(spaced, None) == text_key(text, None)  # " Th" and "Th" show the same
    if not text.split():
        assert text_key(text, None) == SKIP
    else:
        assert 0 <= text_key(text, None) < 2**63 and text_key(text + "x", None) != text_key(text, None)
    assert text_key("\ufffd", b"\xe7\x8c") != text_key("\ufffd", b"\xe7\x8d")  # fragments by their bytes
    assert text_key("Th", None) == 3202717564959016860  # blake2b: the same in every process and release


def test_a_text_repeated_shows_once_among_a_features_top_contexts(elab, docs, tmp_path):
    """The same review three times and a phrase a text repeats: by default each feature shows each window of text
    once (its strongest firing); with distinct_contexts=False the repeats are back, so the option is what does it."""
    review = {"text": "质量很好，物流也快，下次还会再来。谢谢！", "source": "reviews"}
    chant = {"text": "Thank you. Thank you. Thank you. Thank you. Thank you.", "source": "speech"}
    corpus = [review, chant, *docs[:6], review, review]
    options = {**OPTIONS, "n_top": 4}
    distinct = FeatureIndex.build(elab, corpus, [1], tmp_path / "distinct", **options)
    every = FeatureIndex.build(elab, corpus, [1], tmp_path / "every", distinct_contexts=False, **options)
    assert distinct.params["distinct_contexts"] and not every.params["distinct_contexts"]
    repeated, fired = _repeats(distinct, 1)
    assert repeated == 0 and fired > 500
    assert _repeats(every, 1)[0] > 50
    # what is kept is the strongest firing of each text, in order: the plain top rows with repeats dropped
    for feature in every.stats(1).sort_values("firing_count").index[-30:]:
        plain = every.top_contexts(1, int(feature))
        first = plain[~plain.context.duplicated()]
        got = distinct.top_contexts(1, int(feature))
        assert got.context.tolist()[:len(first)] == first.context.tolist()


def test_characters_split_over_byte_tokens_show_whole(elab, tmp_path):
    """猫, ï, é and the emoji are 2-4 byte tokens each: the index shows the whole character as the token, names the
    byte token that fired, and its contexts read as the text does (what lab.token_pieces shows),
    a character cut by the window's edge left out."""
    from qscope_lab.core import tokens

    texts = ["猫在桌子上睡觉，我喜欢🐱和🍣。猫猫🐱", "naïve café: 猫 🍣 🐱 plain words"]
    index = FeatureIndex.build(elab, texts, [2], tmp_path / "zh", **OPTIONS)
    ids = elab.token_ids(texts)
    assert any("\ufffd" in s for s in elab.token_strings(ids[0]))  # the premise: byte tokens alone decode to U+FFFD
    w, inside, edges = OPTIONS["window"], 0, 0
    for feature in index.stats(2).query("firing_count > 0").feature.tolist():
        for row in index.top_contexts(2, feature).itertuples():
            window = ids[row.document][max(0, row.position - w):row.position + w + 1]
            center = row.position - max(0, row.position - w)
            pieces, starts = tokens.groups(elab, window)
            assert row.token == tokens.whole(pieces, starts, center) and "\ufffd" not in row.token
            cut = {i for i, p in enumerate(pieces) if p == "\ufffd" and i != center}  # characters the edge cuts
            assert row.context.replace("[[", "").replace("]]", "") == "".join(
                p for i, p in enumerate(pieces) if i not in cut)
            assert "\ufffd" not in row.context
            edges += bool(cut)
            assert row.boundary == tokens.hover(pieces, starts, center) and len(row.tokens) == len(window)
            inside += row.boundary.startswith("byte token 2 of")
    assert inside  # some contexts fired on a character's second byte token, shown whole
    assert edges  # some windows cut a character at their edge: it is left out, not shown as U+FFFD
    assert not any("\ufffd" in t for labels in index.top_tokens(2).values() for t in labels)  # ⟨e7 8c⟩ instead


def test_other_model_or_suite_is_refused_naming_both(built, lab, tmp_path):
    with pytest.raises(ValueError, match="qscope-embedded.*this Lab is model") as err:
        lab.use_index(built.path)
    assert repr(lab.name) in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    for p in built.path.rglob("*"):
        target = other / p.relative_to(built.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if p.is_file():
            target.write_bytes(p.read_bytes())
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["sae_suite"] = "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"
    (other / "manifest.json").write_text(json.dumps(sealed(manifest)))  # as if built with that suite:
    meta = json.loads((other / "state" / "partial.json").read_text())  # its checksums and the state's copy agree
    meta["index"]["sae_suite"] = manifest["sae_suite"]
    (other / "state" / "partial.json").write_text(json.dumps(sealed(meta)))
    with pytest.raises(ValueError, match="SAE-Res-Qwen3-8B.*qscope-embedded/saes"):
        Lab.load(index=other)


def test_killed_build_resumes_to_the_uninterrupted_index(elab, docs, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs * 2), encoding="utf-8")
    options = dict(OPTIONS, shard_documents=4)
    script = (f"from qscope_lab import Lab, FeatureIndex\n"
              f"FeatureIndex.build(Lab.load(index=False), {str(corpus)!r}, {LAYERS}, {str(tmp_path / 'killed')!r}, "
              f"checkpoint_every=3, **{options!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    shards = tmp_path / "killed" / "shards"
    while time.time() < deadline and proc.poll() is None:
        done = len(list(shards.glob("*/partial.json"))) if shards.is_dir() else 0
        if done >= 1 and (tmp_path / "killed" / "state").is_dir():  # a checkpoint and a shard after it
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = FeatureIndex.build(elab, corpus, LAYERS, tmp_path / "killed", **options)
    whole = FeatureIndex.build(elab, corpus, LAYERS, tmp_path / "whole", **options)
    assert resumed.documents == whole.documents == 48
    assert_same_index(resumed, whole)
    with pytest.raises(ValueError, match="differs from the one indexed"):  # resuming with another corpus
        FeatureIndex.build(elab, [{"text": "other " * 5}] * 48, LAYERS, tmp_path / "killed", **options)


def test_documents_added_later_equal_one_build(elab, docs, tmp_path):
    options = dict(OPTIONS, shard_documents=4)
    FeatureIndex.build(elab, docs[:12], LAYERS, tmp_path / "grown", **options)
    elab.use_index(tmp_path / "grown")  # the Lab's own index is the one class: it reads and it extends
    try:
        grown = elab.index.add(elab, docs[12:])
    finally:
        elab.use_index(None)
    assert_same_index(grown, FeatureIndex.build(elab, docs, LAYERS, tmp_path / "all", **options))
    assert grown.documents == 24 and len(grown.manifest["shards"]) == 6


def test_the_default_labs_shipped_index_is_the_one_store():
    index = Lab.load().index
    assert type(index) is FeatureIndex and callable(index.add) and callable(index.export_neuronpedia)
    assert isinstance(index, FeatureSource)


def test_index_and_reference_corpus_answer_in_one_vocabulary(elab, docs, built):
    """The reference corpus over the indexed documents says what the index says, in the same columns."""
    from qscope_lab.analysis.reference import Reference

    ref = Reference(elab, [d["text"] for d in docs], max_length=OPTIONS["context_length"],
                    batch_size=OPTIONS["batch_size"], window=OPTIONS["window"])
    assert isinstance(ref, FeatureSource)
    layer = 2
    stats, want = ref.stats(layer), built.stats(layer)
    assert tuple(stats.columns) == STAT_COLUMNS == tuple(want.columns[:len(STAT_COLUMNS)])
    assert ref.counted_tokens(layer) == built.counted_tokens(layer)
    assert (stats.firing_count == want.firing_count).all()
    np.testing.assert_allclose(stats.max_activation, want.max_activation, rtol=1e-5)
    np.testing.assert_allclose(stats.mean_activation, want.mean_activation, rtol=1e-5)
    fired = want[want.firing_count > 0].sort_values("firing_count").feature.tolist()
    for feature in fired[-10:] + fired[:5]:
        one, other = ref.feature_stats(layer, feature), built.feature_stats(layer, feature)
        assert {k: one[k] for k in STAT_COLUMNS} == pytest.approx({k: other[k] for k in STAT_COLUMNS}, rel=1e-5)
        got, top = ref.top_contexts(layer, feature, n=5), built.top_contexts(layer, feature)
        assert list(got.columns) == list(top.columns)
        assert got[["document", "position", "token", "context", "boundary", "center"]].equals(
            top[["document", "position", "token", "context", "boundary", "center"]])
        assert ref.histogram(layer, feature).equals(built.histogram(layer, feature))
        samples, stored = ref.quantile_samples(layer, feature), built.quantile_samples(layer, feature)
        assert list(samples.columns) == list(stored.columns)
        pd.testing.assert_frame_equal(samples[["interval", "lower", "upper", "document", "position"]],
                                      stored[["interval", "lower", "upper", "document", "position"]])


def test_top_tokens_rank_by_activation_mass():
    feature = np.array([3, 3, 3, 3, 7, 7])
    token = np.array([10, 11, 10, 12, 11, 12])
    activation = np.array([1.0, 1.5, 1.0, 0.5, 2.0, 2.0])
    assert top_tokens(feature, token, activation, 2) == {3: [10, 11], 7: [11, 12]}  # equal sums: id order
    assert top_tokens(feature[:0], token[:0], activation[:0], 3) == {}


class _Crash(Exception):
    pass


def test_corrupt_shard_is_named_not_skipped(elab, docs, tmp_path):
    def crashing():
        for i, doc in enumerate(docs):
            if i == 12:
                raise _Crash
            yield doc

    with pytest.raises(_Crash):
        FeatureIndex.build(elab, crashing(), LAYERS, tmp_path / "x", shard_documents=4, checkpoint_every=99,
                           **OPTIONS)
    shard = tmp_path / "x" / "shards" / "00001" / "layer2" / "stats.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the checksum can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="shards/00001/layer2/stats.parquet"):
        FeatureIndex.build(elab, docs, LAYERS, tmp_path / "x", shard_documents=4, **OPTIONS)


def test_opened_index_names_a_damaged_file(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built.path, copy)
    target = copy / "state" / "layer1" / "contexts.arrow"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(CorruptIndexError, match="layer1/contexts.arrow"):
        FeatureIndex.open(copy)


def test_ray_engine_equals_local(elab, docs, built, tmp_path):
    ray = start_ray()
    from qscope_lab.index.build import build_params, plan

    unlimited = plan(elab, LAYERS, build_params({**OPTIONS, "shard_documents": 100}), 10**15)
    one_layer = unlimited.fixed + unlimited.per_layer  # a budget for one layer at a time: (layer x shard) units
    try:
        remote = FeatureIndex.build(elab, docs, LAYERS, tmp_path / "ray", engine="ray", workers=2,
                                    shard_documents=100, **OPTIONS)
        grouped = FeatureIndex.build(elab, docs, LAYERS, tmp_path / "ray-groups", engine="ray", workers=2,
                                     shard_documents=100, memory_budget=one_layer, **OPTIONS)
    finally:
        ray.shutdown()
    assert_same_index(remote, built)
    assert_same_index(grouped, built)


def test_neuronpedia_export_layout(elab, built, tmp_path):
    folders = built.export_neuronpedia(tmp_path / "np", layers=[2], lab=elab)
    folder = folders[0]
    assert folder == tmp_path / "np" / "qscope-embedded" / "2-qscope-res"
    assert {p.name for p in folder.iterdir()} >= {"features", "activations", "source.jsonl", "model.jsonl"}
    features = [json.loads(x) for f in sorted((folder / "features").glob("*.jsonl.gz"))
                for x in gzip.open(f, "rt")]
    acts = [json.loads(x) for f in sorted((folder / "activations").glob("*.jsonl.gz")) for x in gzip.open(f, "rt")]
    fired = built.stats(2)
    assert len(features) == int((fired.firing_count > 0).sum())
    first = features[0]
    f = int(first["index"])
    assert first["maxActApprox"] == pytest.approx(float(fired.max_activation[f])) and len(first["pos_str"]) == 10
    top = [a for a in acts if a["index"] == str(f) and a.get("binMin") in (None, -1)]  # -1: a top row
    assert top[0]["maxValue"] == pytest.approx(built.top_contexts(2, f).activation.iloc[0])
    assert top[0]["tokens"][top[0]["qualifyingTokenIndex"]] == built.top_contexts(2, f).token.iloc[0]


def test_cli_index_build_info_export(docs, tmp_path, capsys):
    from qscope_lab.cli.main import main

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs[:8]), encoding="utf-8")
    out = tmp_path / "cli-index"
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(out), "--layers", "1",
                 "--n-top", "3", "--context-length", "48"]) == 0
    assert "indexed 8 documents" in capsys.readouterr().out
    assert main(["index", "info", str(out)]) == 0
    assert "qscope-embedded" in capsys.readouterr().out
    assert main(["index", "export", str(out), "--out", str(tmp_path / "np")]) == 0
    assert list((tmp_path / "np").rglob("activations/batch-0.jsonl.gz"))
    assert main(["index", "info", str(tmp_path / "nowhere")]) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.one_of(st.just(0), st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=3)))
def test_bad_options_and_lookups_are_refused(elab, built, tmp_path, bad):
    with pytest.raises((TypeError, ValueError)):
        FeatureIndex.build(elab, ["a text"], [1], tmp_path / "bad", n_top=bad)
    with pytest.raises((TypeError, ValueError, IndexError)):
        built.top_contexts(bad if not isinstance(bad, int) or bad in LAYERS else 0, 0)
    with pytest.raises((TypeError, ValueError, IndexError)):
        built.top_contexts(1, bad if not isinstance(bad, int) or isinstance(bad, bool) else 10**6)
