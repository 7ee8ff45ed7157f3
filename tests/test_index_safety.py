"""Issue 29: the feature index loses nothing and never answers wrong in silence. Overwrite deletes only an index;
writers are serialised by a cross-process lock; an add killed (SIGKILL, a failed write) and rerun equals an
uninterrupted one; an open index follows other processes' writes one generation at a time; a flipped bit in any
file, a damaged manifest and a costly option are each refused naming the file and the field. Real processes
(forked from this one, the embedded default Lab already loaded), real SIGKILL, real files."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import FeatureIndex, Lab
from qscope_lab.embedded import reference_documents
from qscope_lab.index import schema
from qscope_lab.index.schema import CorruptIndexError, sealed

LAYERS = [1, 2]
FORMAT_1 = Path(__file__).parent / "data" / "index_format1"  # written by an earlier version (make_index_format1.py)
OPTIONS = {"n_top": 4, "context_length": 48, "batch_size": 8, "window": 3, "shard_documents": 4}
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def elab() -> Lab:
    return Lab.load(index=False)


@pytest.fixture(scope="module")
def texts() -> list[dict]:
    """Short distinct documents of the reference corpus, with their sources."""
    rows = reference_documents()
    out, seen = [], set()
    for r in rows:
        text = r["text"][:40]
        if text.strip() and text not in seen:
            seen.add(text)
            out.append({"text": text, "source": r["source"]})
    assert len(out) >= 150
    return out


@pytest.fixture(scope="module")
def base(elab, texts, tmp_path_factory) -> Path:
    """A small finished index (8 documents, layers 1 and 2) to copy."""
    path = tmp_path_factory.mktemp("base") / "index"
    FeatureIndex.build(elab, texts[:8], LAYERS, path, **OPTIONS)
    return path


def assert_same_index(a: FeatureIndex, b: FeatureIndex) -> None:
    """Every table of the two states equal, and their sources, counted tokens, documents and chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for layer in a.layers:
        one, two = (x.path / "state" / f"layer{layer}" for x in (a, b))
        assert pa.ipc.open_file(str(one / "contexts.arrow")).read_all().equals(
            pa.ipc.open_file(str(two / "contexts.arrow")).read_all()), layer
        for name in ("stats", "histogram", "sources"):
            assert pq.read_table(one / f"{name}.parquet").equals(pq.read_table(two / f"{name}.parquet")), name
    keys = ("sources", "tokens_by_source", "documents", "chunks")
    assert {k: a.meta[k] for k in keys} == {k: b.meta[k] for k in keys}


def copy_of(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def run_forked(target, *args) -> multiprocessing.Process:
    proc = FORK.Process(target=target, args=args)
    proc.start()
    return proc


def _add(lab, path, docs, options=None):
    FeatureIndex.open(path).add(lab, docs, **(options or {}))


# ---------------------------------------------------------------------- 1. overwrite deletes only an index
def test_overwrite_refuses_a_folder_that_is_not_an_index(elab, texts, base, tmp_path):
    from qscope_lab.cli.main import main

    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "my app", "start_url": "/"}))
    (app / "src" / "app.js").write_text("console.log(1)")
    before = sorted(p.relative_to(app) for p in app.rglob("*"))
    with pytest.raises(FileExistsError, match="not a feature index.*format"):
        FeatureIndex.build(elab, texts[:4], [1], app, overwrite=True, **OPTIONS)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in texts[:4]), encoding="utf-8")
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(app), "--layers", "1", "--overwrite",
                 "--context-length", "48"]) == 2
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before  # nothing deleted, nothing added
    assert (app / "src" / "app.js").read_text() == "console.log(1)"

    mixed = copy_of(base, tmp_path / "mixed")  # an index, and a file no index writes
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        FeatureIndex.build(elab, texts[:4], LAYERS, mixed, overwrite=True, **OPTIONS)
    assert (mixed / "notes.txt").read_text() == "mine" and (mixed / "state").is_dir()

    replaced = FeatureIndex.build(elab, texts[:4], LAYERS, copy_of(base, tmp_path / "again"), overwrite=True,
                                  **OPTIONS)
    assert replaced.documents == 4  # an index is replaced


def test_indexes_written_before_the_format_marker_fields_still_open(elab):
    """An index of format 1 (no generation, no checksums, tokens beside the manifest, no distinct_contexts: it
    kept every firing) opens, fully verified, and reads, with the Lab too."""
    index = FeatureIndex.open(FORMAT_1, verify="full")
    assert index.manifest["format_version"] == 1 and index.generation == 0
    assert index.params["distinct_contexts"] is False
    assert 0 < index.stats(1).firing_count.sum() <= index.tokens * elab.saes[1].k
    feature = int(index.stats(1).firing_count.idxmax())
    assert len(index.top_contexts(1, feature)) == 2
    elab.use_index(index)
    try:
        assert elab.index.documents == 6
    finally:
        elab.use_index(None)


# ---------------------------------------------------------------------- 2. one writer at a time
def test_concurrent_adds_from_four_processes_lose_nothing(elab, texts, base, tmp_path):
    path = copy_of(base, tmp_path / "shared")
    parts = [texts[8 + 30 * i:8 + 30 * (i + 1)] for i in range(4)]
    procs = [run_forked(_add, elab, path, part) for part in parts]
    for proc in procs:
        proc.join(240)
    assert [proc.exitcode for proc in procs] == [0] * 4
    index = FeatureIndex.open(path, verify="full")
    assert index.documents == 8 + 120 and len(index.manifest["adds"]) == 4
    whole = FeatureIndex.build(elab, texts[:128], LAYERS, tmp_path / "whole", **OPTIONS)
    assert index.tokens == whole.tokens
    for layer in LAYERS:  # counts do not depend on the order the adds ran in
        assert (index.stats(layer).firing_count == whole.stats(layer).firing_count).all()


def test_a_second_writer_waits_or_times_out_clearly(elab, texts, base, tmp_path):
    from filelock import FileLock

    path = copy_of(base, tmp_path / "locked")
    with FileLock(str(path / schema.LOCK)):  # another process's writer, as far as the add can tell
        started = time.perf_counter()
        with pytest.raises(TimeoutError, match="another process is writing the index"):
            FeatureIndex.open(path).add(elab, texts[8:12], lock_timeout=0.5)
        assert time.perf_counter() - started >= 0.5
    assert FeatureIndex.open(path).add(elab, texts[8:12]).documents == 12


# ---------------------------------------------------------------------- 3. a killed add resumes
def _fill_disk_then_add(lab, path, docs, limit):
    """The add with a file-size limit: a write past it fails (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    _add(lab, path, docs, {"checkpoint_every": 1})


def test_add_killed_at_random_moments_and_rerun_equals_an_uninterrupted_add(elab, texts, base, tmp_path):
    more = texts[8:24]  # 4 shards of 4 documents, a checkpoint after each
    whole = copy_of(base, tmp_path / "whole")
    started = time.perf_counter()
    FeatureIndex.open(whole).add(elab, more, checkpoint_every=1)
    took = time.perf_counter() - started
    want = FeatureIndex.open(whole)
    rng = random.Random(29)
    interrupted = 0
    for trial in range(10):
        path = copy_of(base, tmp_path / f"killed{trial}")
        proc = run_forked(_add, elab, path, more, {"checkpoint_every": 1})
        time.sleep(rng.uniform(0.0, 1.2 * took))
        if proc.exitcode is None:  # (exitcode reaps a finished child: kill only one still running)
            interrupted += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        try:
            FeatureIndex.open(path).add(elab, more, checkpoint_every=1)
        except ValueError as err:  # killed after it had finished: the rerun is refused, nothing added twice
            assert "already in the index" in str(err)
        got = FeatureIndex.open(path, verify="full")
        assert got.documents == 24 and not got.manifest["pending"]
        assert_same_index(got, want)
        for layer in LAYERS:
            assert got.stats(layer).equals(want.stats(layer))
            for feature in range(0, got.d_sae, 97):
                assert got.top_contexts(layer, feature).equals(want.top_contexts(layer, feature))
                assert got.histogram(layer, feature).equals(want.histogram(layer, feature))
    assert interrupted >= 3  # most kills land while it works

    failed = copy_of(base, tmp_path / "full-disk")  # a write fails part way (EFBIG, as ENOSPC would)
    proc = run_forked(_fill_disk_then_add, elab, failed, more, 60_000)
    proc.join(120)
    assert proc.exitcode != 0
    FeatureIndex.open(failed).add(elab, more, checkpoint_every=1)
    assert_same_index(FeatureIndex.open(failed), want)

    with pytest.raises(ValueError, match="already in the index"):  # the same documents twice, on purpose
        want.add(elab, more)
    with pytest.raises(ValueError, match="already in the index"):
        want.add(elab, texts[:8])  # the build's own
    assert FeatureIndex.open(whole).documents == 24


def test_an_interrupted_add_is_finished_before_another(elab, texts, base, tmp_path):
    path = copy_of(base, tmp_path / "one")
    proc = run_forked(_add, elab, path, texts[8:40], {"checkpoint_every": 1})
    deadline = time.time() + 60
    while time.time() < deadline and proc.exitcode is None:
        if len(schema.read_manifest(path)["shards"]) >= 4:  # some of its shards recorded
            break
        time.sleep(0.01)
    assert proc.exitcode is None, "the add finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with pytest.raises(ValueError, match="interrupted.*rerun that add"):
        FeatureIndex.open(path).add(elab, texts[60:70])
    assert FeatureIndex.open(path).add(elab, texts[8:40]).documents == 40


# ---------------------------------------------------------------------- 4. readers follow writers
def test_an_open_index_reads_what_another_process_added(elab, texts, base, tmp_path):
    path = copy_of(base, tmp_path / "read")
    reader = FeatureIndex.open(path)
    fired = reader.stats(2).query("firing_count > 0").feature.tolist()
    before = {f: reader.top_contexts(2, f) for f in fired[::3]}  # cached
    generation = reader.generation
    proc = run_forked(_add, elab, path, texts[8:40])
    proc.join(120)
    assert proc.exitcode == 0
    fresh = FeatureIndex.open(path)
    assert reader.generation == fresh.generation > generation and reader.documents == 40
    for layer in LAYERS:
        assert reader.stats(layer).equals(fresh.stats(layer))
    changed = 0
    for f in sorted(set(fired[::3]) | set(range(0, reader.d_sae, 61))):
        got = reader.top_contexts(2, f)
        assert got.equals(fresh.top_contexts(2, f)), f
        assert reader.histogram(2, f).equals(fresh.histogram(2, f))
        changed += f in before and not got.equals(before[f])
    assert changed  # the premise: the add changed what it read


def test_reads_during_writes_of_another_process_see_one_generation(elab, texts, base, tmp_path):
    path = copy_of(base, tmp_path / "busy")
    reader = FeatureIndex.open(path)
    proc = run_forked(_add, elab, path, texts[8:72], {"checkpoint_every": 1})  # 16 generations
    rng = np.random.default_rng(0)
    reads = generations = 0
    seen = set()
    while proc.exitcode is None:
        f = int(rng.integers(reader.d_sae))
        stats = reader.stats(1)
        rates = reader.source_rates(1, f)  # counts of one generation: they add up to its stats
        assert rates.firing_count.sum() == stats.firing_count.iat[f] or reader.generation not in seen
        samples = reader.quantile_samples(1, f)
        assert ((samples.activation >= samples.lower - 1e-6) & (samples.activation < samples.upper)).all()
        reader.top_contexts(1, f)
        reads += 1
        generations += reader.generation not in seen
        seen.add(reader.generation)
    proc.join()
    assert proc.exitcode == 0 and reads and generations >= 2
    fresh = FeatureIndex.open(path)
    assert reader.stats(1).equals(fresh.stats(1)) and reader.documents == fresh.documents == 72


# ---------------------------------------------------------------------- 5. damage is reported at open
FILES = ["manifest.json", "state/partial.json", "state/tokens.parquet", "state/layer1/contexts.arrow",
         "state/layer1/stats.parquet", "state/layer1/histogram.parquet", "state/layer1/sources.parquet"]


@pytest.fixture(scope="module")
def small(elab, texts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "index"
    FeatureIndex.build(elab, texts[:12], [1], path, **OPTIONS)
    return path


@pytest.mark.parametrize("name", FILES)
def test_a_flipped_bit_in_any_file_is_reported_at_open(small, tmp_path, name):
    files = sorted(p.relative_to(small).as_posix() for p in small.rglob("*") if p.is_file())
    assert files == sorted([*FILES, schema.LOCK])  # every file of the index is tried (the lock is empty)
    size = (small / name).stat().st_size
    rng = random.Random(name)
    for i, at in enumerate(sorted({0, size - 1, *rng.sample(range(size), min(size, 24))})):
        copy = copy_of(small, tmp_path / f"c{i}")
        data = bytearray((copy / name).read_bytes())
        data[at] ^= 1 << rng.randrange(8)
        (copy / name).write_bytes(bytes(data))
        with pytest.raises((CorruptIndexError, ValueError), match=name.split("/")[-1]):
            FeatureIndex.open(copy)  # the default, cheap checks: these files are small, so hashed
        shutil.rmtree(copy)


def test_large_files_are_checked_by_size_and_schema_and_in_full_on_request(small, tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "SMALL_FILE", 0)  # every file counts as large: no hash by default
    name = "state/layer1/contexts.arrow"
    flipped = copy_of(small, tmp_path / "flipped")
    data = bytearray((flipped / name).read_bytes())
    data[len(data) // 3] ^= 0x10
    (flipped / name).write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="contexts.arrow is damaged: its sha256"):
        FeatureIndex.open(flipped, verify="full")
    cut = copy_of(small, tmp_path / "cut")
    (cut / name).write_bytes((cut / name).read_bytes()[:-8])
    with pytest.raises(CorruptIndexError, match="contexts.arrow is damaged.*bytes"):
        FeatureIndex.open(cut)
    for table in ("stats.parquet", "histogram.parquet"):  # same size, another schema: the footer tells
        other = copy_of(small, tmp_path / table)
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = other / "state" / "layer1" / table
        old = pq.read_table(path)
        pq.write_table(pa.table({f"x{i}": c.cast(pa.float64()) for i, c in enumerate(old.columns)}), path)
        meta = json.loads((other / "state" / "partial.json").read_text())
        meta["files"][f"layer1/{table}"][0] = path.stat().st_size  # sizes agree: only the schema differs
        (other / "state" / "partial.json").write_text(json.dumps(sealed(meta)))
        with pytest.raises(CorruptIndexError, match=f"{table} is damaged: columns"):
            FeatureIndex.open(other)


def test_a_tampered_format_1_manifest_is_named(tmp_path):
    legacy = copy_of(FORMAT_1, tmp_path / "legacy")
    manifest = json.loads((legacy / "manifest.json").read_text())
    for field, value, message in (("d_sae", 4096, "'d_sae' is 4096.*stats.parquet has 2048 rows"),
                                  ("layers", [0, 1], "'sae_fingerprints' must map each layer"),
                                  ("k", 0, "'k' must be")):
        (legacy / "manifest.json").write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(CorruptIndexError, match=f"manifest.json.*{message}"):
            FeatureIndex.open(legacy)
    params = dict(manifest["params"], window=4)
    (legacy / "manifest.json").write_text(json.dumps({**manifest, "params": params}))
    with pytest.raises(CorruptIndexError, match="contexts.arrow is damaged: column 'window'"):
        FeatureIndex.open(legacy)


# ---------------------------------------------------------------------- 6. clear errors, capped costs
def _manifest_case(small: Path, tmp_path: Path, change, reseal: bool = True) -> Path:
    copy = copy_of(small, tmp_path / "case")
    manifest = json.loads((copy / "manifest.json").read_text())
    out = change(manifest)
    out = sealed(out) if reseal and isinstance(out, dict) else out
    (copy / "manifest.json").write_text(json.dumps(out))
    return copy


def _set(field, value):
    return lambda m: {**m, field: value}


def _without(field):
    return lambda m: {k: v for k, v in m.items() if k != field}


def _param(field, value):
    return lambda m: {**m, "params": {**m["params"], field: value}}


@pytest.mark.parametrize("change, reseal, message", [
    (lambda m: [m], True, "manifest.json is damaged: a manifest is a JSON object, got a JSON list"),
    (_set("format_version", "1"), True, "manifest.json: field 'format_version' must be an integer"),
    (_set("format_version", None), True, "manifest.json: field 'format_version' must be an integer"),
    (_set("format_version", 99), True, "manifest.json was written by a newer qscope-lab.*'format_version'"),
    (_without("params"), True, "manifest.json: field 'params' is missing"),
    (_set("d_sae", 4096), False, "manifest.json is damaged or was edited: its field 'checksum'"),
    (_set("d_sae", 4096), True, "manifest.json: field 'd_sae' is 4096 but the index was built with 2048"),
    (_set("d_sae", "2048"), True, "manifest.json: field 'd_sae' must be a positive integer"),
    (_param("bins_per_decade", 9), False, "manifest.json is damaged or was edited"),
    (_param("bins_per_decade", 9), True, "field 'params.bins_per_decade' is 9 but the index was built with 8"),
    (_param("seed", 1), True, "field 'params.seed' is 1 but the index was built with 0"),
    (_param("n_bins", 10**6), True, r"field 'params': n_bins=1000000 is out of range \[1, 512\]"),
    (_param("seed", None), True, "field 'params': seed must be an integer"),
    (_set("layers", "1"), True, "field 'layers' must be a non-empty sorted list"),
    (_set("shards", [{"id": 0}]), True, "field 'shards' must be a list"),
])
def test_a_damaged_manifest_is_named_with_its_field(small, tmp_path, change, reseal, message):
    with pytest.raises((CorruptIndexError, ValueError), match=message):
        FeatureIndex.open(_manifest_case(small, tmp_path, change, reseal))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                    | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from([*schema.MANIFEST_FIELDS, "params.n_top", "params.window", "params.skip_first",
                              "params.min_exponent", "sae_fingerprints.1", "corpus.documents"]),
       value=JSON, reseal=st.booleans())
def test_any_manifest_value_opens_or_is_named(small, tmp_path_factory, field, value, reseal):
    """Any JSON in any manifest field (checksum right or not): the index opens and reads, or the error is a
    CorruptIndexError / ValueError naming manifest.json and the field; never a raw AttributeError / KeyError."""
    tmp = tmp_path_factory.mktemp("prop")
    parent, _, key = field.rpartition(".")

    def change(m):
        if parent:
            return {**m, parent: {**m[parent], key: value}}
        return {**m, key: value}

    copy = _manifest_case(small, tmp, change, reseal)
    try:
        index = FeatureIndex.open(copy)
    except (CorruptIndexError, ValueError) as err:
        assert "manifest.json" in str(err) and (key in str(err) or "checksum" in str(err)
                                                or "format" in str(err) or "partial.json" in str(err)), err
        return
    assert index.stats(1).firing_count.sum() > 0 and len(index.top_contexts(1, 0)) >= 0


@pytest.mark.parametrize("option, value", [("n_bins", 10**6), ("n_top", 10**5), ("window", 10**4),
                                           ("samples_per_bin", 10**4), ("context_length", 10**7),
                                           ("batch_size", 10**6), ("shard_documents", 10**8),
                                           ("bins_per_decade", 10**4), ("min_exponent", -1000), ("seed", -1),
                                           ("seed", 2**64)])
def test_costly_options_are_capped_with_a_message(elab, tmp_path, option, value):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"{option} must be at (most|least).*cap on {option}"):
        FeatureIndex.build(elab, ["a text"], [1], tmp_path / "capped", **{option: value})
    assert time.perf_counter() - started < 5 and not (tmp_path / "capped").exists()
