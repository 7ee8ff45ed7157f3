"""The on-disk format of a feature index, defined once: file names, columns and their dtypes, manifest and partial
fields, the format version, and what a histogram bin means. The writer (``partial``), the merge (``build``) and
the reader (``store``) all take them from here. No torch: opening an index needs none.

Layout of an index folder::

    manifest.json            MANIFEST_FIELDS: the format marker (``"format": "qscope-feature-index"``), model,
                             SAE suite and per-layer SAE fingerprints, layers, corpus fingerprint, build
                             parameters, qscope-lab version, shards done, the generation (+1 per committed
                             write), an unfinished build / add (``pending``), the adds done, and a checksum of
                             all of it (format 2; format 1, written before, has none and is still read)
    index.lock               the cross-process lock every writer holds (``filelock``); readers take no lock
    state/tokens.parquet     TOKEN_COLUMNS: id -> string (and bytes, for a fragment of a character) of every token
                             in a window (format 1: ``tokens.parquet`` beside the manifest)
    state/partial.json       PARTIAL_FIELDS: sources, counted tokens per source, files with their sizes and sha256;
                             in ``state/`` also the generation and the manifest's fixed fields; a checksum
    state/layer{L}/contexts.arrow    Arrow IPC (zstd), one record batch per BLOCK features, sorted by feature:
                             STORED_CONTEXT_COLUMNS, top-N rows (kind TOP) and quantile-sample rows (kind
                             SAMPLE), each with a token window and the feature's values over it
    state/layer{L}/stats.parquet     STATS_COLUMNS, one row per feature: count, sum, max, where its rows are
    state/layer{L}/histogram.parquet (feature, bin, count), log-spaced bins (``bin_edges``), nonzero only
    state/layer{L}/sources.parquet   (feature, source, count), nonzero only
    shards/NNNNN/            partial statistics of shards not yet folded into state/ (same layout as state/)
    work/                    a build / add by layer groups under a memory budget, while it runs: plan.json, per
                             group its state and shards (group{G}/), the documents of each shard (docs/), the block
                             outputs at a group's last layer (boundary{G}/NNNNN/BBBBB.pt); deleted when it ends
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .hashes import file_digest

FORMAT = "qscope-feature-index"  # the manifest's marker: only a folder whose manifest says so is an index
FORMAT_VERSION = 2  # 2: generation, pending, adds, checksums, tokens in state/; 1 (still read): none of them

# ---------------------------------------------------------------------- files
MANIFEST = "manifest.json"
TOKENS = "tokens.parquet"
STATE = "state"
SHARDS = "shards"
PARTIAL = "partial.json"
LOCK = "index.lock"
CONTEXTS, STATS, HISTOGRAM, SOURCES = "contexts.arrow", "stats.parquet", "histogram.parquet", "sources.parquet"


def layer_folder(partial: Path, layer: int) -> Path:
    """Where one layer's tables are inside a partial (``state/`` or a shard)."""
    return Path(partial) / f"layer{layer}"


def shard_folder(index: Path, shard: int) -> Path:
    return Path(index) / SHARDS / f"{shard:05d}"


# ---------------------------------------------------------------------- columns
TOP, SAMPLE = 0, 1  # the ``kind`` of a context row
ROW_COLUMNS = {"feature": np.int32, "kind": np.int8, "bin": np.int16, "priority": np.uint64,
               "activation": np.float32, "document": np.int64, "position": np.int32, "source": np.int16,
               "center": np.int16, "window_key": np.uint64}
# a context row; ``priority`` (a hash of the rest) and ``window_key`` (of its window) are not stored
STORED_ROW_COLUMNS = tuple(name for name in ROW_COLUMNS if name not in ("priority", "window_key"))
WINDOW_COLUMNS = {"window": np.int32, "values": np.float32}  # fixed-size lists of 2 * window + 1 per row
STORED_CONTEXT_COLUMNS = STORED_ROW_COLUMNS + tuple(WINDOW_COLUMNS)  # contexts.arrow
STATS_COLUMNS = {"feature": np.int32, "count": np.int64, "total": np.float64, "peak": np.float32,
                 "batch": np.int32, "offset": np.int64, "length": np.int32}  # batch / offset / length: its rows
LONG_TABLES = {HISTOGRAM: "bin", SOURCES: "source"}  # (feature, <column>, count), nonzero counts only
LONG_COLUMNS = {"feature": np.int32, "x": np.int16, "count": np.int64}  # "x": the table's own column
TOKEN_COLUMNS = ("id", "string", "bytes")  # int64, string, binary (None unless a fragment of a character)
BLOCK = 256  # features per record batch of contexts.arrow: reading one feature decompresses one block

# ---------------------------------------------------------------------- json
MANIFEST_FIELDS = ("format", "format_version", "model", "architecture", "sae_suite", "sae_fingerprints", "d_sae",
                   "k", "layers", "params", "qscope_lab_version", "corpus", "shards", "created", "generation",
                   "pending", "adds")
MANIFEST_V1 = MANIFEST_FIELDS[:-3]  # what format 1 has
MANIFEST_LATER = ("updated",)  # written by the first checkpoint
MATCHING_FIELDS = ("model", "sae_suite", "sae_fingerprints", "layers", "d_sae", "params")  # a resume must agree
FIXED_FIELDS = ("model", "architecture", "sae_suite", "sae_fingerprints", "d_sae", "k", "layers", "params")
PARTIAL_FIELDS = ("layers", "sources", "tokens_by_source", "documents", "chunks", "shards", "files")
STATE_FIELDS = ("generation", "index")  # state/partial.json only: its generation, the manifest's FIXED_FIELDS
CHECKSUM = "checksum"  # sha256 of the rest of a manifest / partial.json (format 2)
SMALL_FILE = 8 << 20  # files up to this size are hashed by the default (cheap) check on open

# ---------------------------------------------------------------------- histogram bins
HISTOGRAM_BINS = {"bins_per_decade": 8, "min_exponent": -3, "n_bins": 64}  # the build's defaults

# ---------------------------------------------------------------------- build parameters and their caps
PARAMS = {"n_top": 20, "window": 10, "samples_per_bin": 2, **HISTOGRAM_BINS, "context_length": 256,
          "batch_size": 16, "shard_documents": 1024, "skip_first": True, "skip_special": True, "seed": 0,
          "distinct_contexts": True}
# parameters an index written before them lacks: their absence means the value given (how it was built)
LEGACY_PARAMS = {"distinct_contexts": False}
# (lowest, highest) of each integer parameter: what it costs per feature and layer bounds memory and time
PARAM_RANGES = {
    "n_top": (1, 1000),  # kept top rows per feature, each with its 2 * window + 1 token ids and values
    "window": (0, 256),  # tokens either side of a kept row
    "samples_per_bin": (1, 100),  # kept sample rows per feature and histogram bin
    "bins_per_decade": (1, 100),
    "min_exponent": (-30, 30),
    "n_bins": (1, 512),  # a d_sae x n_bins int64 table per layer, in every partial
    "context_length": (1, 131072),  # tokens per forward
    "batch_size": (1, 4096),  # chunks per forward
    "shard_documents": (1, 1_000_000),  # documents held in memory per shard
    "seed": (0, 2**63 - 1),
}
BOOL_PARAMS = ("skip_first", "skip_special", "distinct_contexts")
# distinct_contexts: a feature's top contexts are distinct windows of text (the strongest firing of each), so a
# repeated document, boilerplate or a phrase repeated in one text shows once


class CorruptIndexError(ValueError):
    """A file of an index is damaged or missing; the message names it."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _damaged(path, field: str, what: str, got) -> CorruptIndexError:
    shown = repr(got)
    return CorruptIndexError(f"{path}: field {field!r} {what}, got {shown[:80] + '...' if len(shown) > 80 else shown}")


def check_params(params, where: str = "params") -> dict:
    """``params`` checked: exactly ``PARAMS``'s names, each an int in its ``PARAM_RANGES`` (or a bool);
    ValueError / TypeError naming the parameter, its range and what it costs otherwise. A ``LEGACY_PARAMS`` name
    missing (an index written before it) is filled in, in place."""
    if not isinstance(params, dict):
        raise TypeError(f"{where} must be a dict of build parameters, got {type(params).__name__}")
    for name, value in LEGACY_PARAMS.items():
        params.setdefault(name, value)
    missing, unknown = set(PARAMS) - set(params), set(params) - set(PARAMS)
    if missing or unknown:
        raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)} (parameters: "
                         f"{list(PARAMS)})")
    for name, (lo, hi) in PARAM_RANGES.items():
        value = params[name]
        if not _is_int(value):
            raise TypeError(f"{where}: {name} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{where}: {name}={value} is out of range [{lo}, {hi}] (a cap on what the index costs)")
    for name in BOOL_PARAMS:
        if not isinstance(params[name], bool):
            raise TypeError(f"{where}: {name} must be True or False, got {params[name]!r}")
    return params


def checksum(data: dict) -> str:
    """sha256 of a JSON object without its ``checksum`` field (keys sorted, compact): what format 2 records."""
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(data: dict) -> dict:
    """``data`` with its ``checksum`` (recomputed)."""
    return {**{k: v for k, v in data.items() if k != CHECKSUM}, CHECKSUM: checksum(data)}


def manifest(**fields) -> dict:
    """A new manifest: exactly ``MANIFEST_FIELDS`` (format and version filled in; generation 0, no adds and nothing
    pending unless given)."""
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "pending": None, "adds": [],
           **fields}
    missing, unknown = set(MANIFEST_FIELDS) - set(out), set(out) - set(MANIFEST_FIELDS) - set(MANIFEST_LATER)
    if missing or unknown:
        raise TypeError(f"manifest fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return out


def upgraded(old: dict) -> dict:
    """A manifest as this version writes it (format 1's gets generation 0, nothing pending, no adds)."""
    out = {k: v for k, v in old.items() if k != CHECKSUM}
    out.update(format_version=FORMAT_VERSION, generation=old.get("generation", 0), pending=old.get("pending"),
               adds=old.get("adds", []))
    return out


def is_index_manifest(path: Path) -> bool:
    """Whether ``path`` (a manifest.json) carries the feature index's format marker (whatever else it holds)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def load_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; CorruptIndexError naming the file otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise CorruptIndexError(f"{path} is damaged: not a readable JSON {what} ({type(err).__name__}: {err})") \
            from None
    if not isinstance(data, dict):
        raise CorruptIndexError(f"{path} is damaged: a {what} is a JSON object, got a JSON {type(data).__name__}")
    return data


def read_manifest(folder: Path) -> dict:
    """The manifest of the index at ``folder``, checked field by field (``check_manifest``)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no feature index at {folder} (no {MANIFEST})")
    return check_manifest(load_json(path, "manifest"), path)


def check_manifest(m: dict, path) -> dict:
    """Every field of a manifest of the right type and in range (format 2: and its checksum right);
    CorruptIndexError naming the file and the field otherwise (ValueError for a newer format)."""
    if m.get("format") != FORMAT:
        raise CorruptIndexError(f"{path} is not a qscope-lab feature index manifest (field 'format' is "
                                f"{m.get('format')!r}, not {FORMAT!r})")
    version = m.get("format_version")
    if not _is_int(version) or version < 1:
        raise _damaged(path, "format_version", f"must be an integer 1..{FORMAT_VERSION}", version)
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer qscope-lab (field 'format_version' is {version}, this "
                         f"version reads 1..{FORMAT_VERSION}); upgrade to read it")
    names = MANIFEST_V1 if version == 1 else MANIFEST_FIELDS + (CHECKSUM,)
    missing = [n for n in names if n not in m]
    if missing:
        raise CorruptIndexError(f"{path}: field {missing[0]!r} is missing" +
                                (f" (and {missing[1:]})" if len(missing) > 1 else ""))
    unknown = sorted(set(m) - set(names) - set(MANIFEST_LATER))
    if unknown:
        raise CorruptIndexError(f"{path}: unknown field(s) {unknown}")
    if version > 1 and (not isinstance(m[CHECKSUM], str) or m[CHECKSUM] != checksum(m)):
        raise CorruptIndexError(f"{path} is damaged or was edited: its field 'checksum' does not match its "
                                f"content")
    for name in ("model", "sae_suite", "qscope_lab_version", "created", *(("updated",) if "updated" in m else ())):
        if not isinstance(m[name], str):
            raise _damaged(path, name, "must be a string", m[name])
    if m["architecture"] is not None and not isinstance(m["architecture"], str):
        raise _damaged(path, "architecture", "must be a string or null", m["architecture"])
    if not _is_int(m["d_sae"]) or not 1 <= m["d_sae"] < 2**31:
        raise _damaged(path, "d_sae", "must be a positive integer", m["d_sae"])
    if not _is_int(m["k"]) or not 1 <= m["k"] <= m["d_sae"]:
        raise _damaged(path, "k", f"must be an integer 1..d_sae ({m['d_sae']})", m["k"])
    layers = m["layers"]
    if (not isinstance(layers, list) or not layers or not all(_is_int(x) and 0 <= x < 100_000 for x in layers)
            or layers != sorted(set(layers))):
        raise _damaged(path, "layers", "must be a non-empty sorted list of distinct layer numbers", layers)
    fps = m["sae_fingerprints"]
    if (not isinstance(fps, dict) or set(fps) != {str(x) for x in layers}
            or not all(isinstance(v, str) for v in fps.values())):
        raise _damaged(path, "sae_fingerprints", "must map each layer (as a string) to a fingerprint", fps)
    try:
        check_params(m["params"], f"{path}: field 'params'")
    except (TypeError, ValueError) as err:
        raise CorruptIndexError(str(err)) from None
    if not isinstance(m["corpus"], dict):
        raise _damaged(path, "corpus", "must be a JSON object", m["corpus"])
    shards = m["shards"]
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and _is_int(s.get("id")) and s["id"] >= 0 and _is_int(s.get("first_document"))
            and s["first_document"] >= 0 and _is_int(s.get("documents")) and s["documents"] >= 0
            and isinstance(s.get("fingerprint"), str) for s in shards):
        raise _damaged(path, "shards", "must be a list of {id, first_document, documents, fingerprint, tokens}",
                       shards)
    if [s["id"] for s in shards] != sorted({s["id"] for s in shards}):
        raise _damaged(path, "shards", "must be in increasing shard order", [s["id"] for s in shards])
    if version > 1:
        if not _is_int(m["generation"]) or m["generation"] < 0:
            raise _damaged(path, "generation", "must be an integer >= 0", m["generation"])
        pending = m["pending"]
        if pending is not None and not (
                isinstance(pending, dict) and pending.get("kind") in ("build", "add")
                and _is_int(pending.get("first_shard")) and pending["first_shard"] >= 0
                and _is_int(pending.get("first_document")) and pending["first_document"] >= 0):
            raise _damaged(path, "pending", "must be null or {kind: build|add, first_shard, first_document}",
                           pending)
        if not isinstance(m["adds"], list) or not all(
                isinstance(a, dict) and _is_int(a.get("first_shard")) for a in m["adds"]):
            raise _damaged(path, "adds", "must be a list of {first_shard, first_document, documents}", m["adds"])
    return m


def fixed_fields(m: dict) -> dict:
    """The manifest fields no write changes (state/partial.json keeps a copy: a tampered one is named)."""
    return {name: m[name] for name in FIXED_FIELDS}


def bin_edges(params: dict) -> np.ndarray:
    """Edges of the log-spaced activation histogram: ``n_bins + 1`` values, the first 0 and the last inf."""
    bpd, lo, n = params["bins_per_decade"], params["min_exponent"] * params["bins_per_decade"], params["n_bins"]
    edges = 10.0 ** ((lo + np.arange(n + 1)) / bpd)
    edges[0], edges[-1] = 0.0, math.inf
    return edges


def bins_formula(act: np.ndarray, bpd: int, min_exponent: int, n: int) -> np.ndarray:
    """The histogram bin of each activation: ``floor(log10(act) * bpd) - min_exponent * bpd``, clipped to
    ``[0, n)`` (what the index's bins mean; ``rows.activation_bins`` computes the same faster)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(np.log10(np.asarray(act).astype(np.float64)) * bpd) - min_exponent * bpd
    return np.clip(b, 0, n - 1).astype(np.int16)


VERIFY = ("cheap", "full")


def verify_level(verify) -> str:
    """``"cheap"`` (also False / None) or ``"full"`` (also True)."""
    if verify is True:
        return "full"
    if verify is False or verify is None:
        return "cheap"
    if verify not in VERIFY:
        raise ValueError(f"verify must be 'cheap' or 'full', got {verify!r}")
    return verify


def check_partial(folder: Path, verify=False) -> dict:
    """A partial's ``partial.json``, every field of the right type (and its checksum right where it has one),
    with every file it lists present at its recorded size, its sha256 checked when ``verify`` is ``"full"``
    (or True) or the file is at most ``SMALL_FILE`` bytes; CorruptIndexError naming the file otherwise."""
    level = verify_level(verify)
    folder = Path(folder)
    meta_path = folder / PARTIAL
    try:
        meta = load_json(meta_path, "partial")
    except FileNotFoundError:
        raise CorruptIndexError(f"{meta_path} is missing: {folder} is not a complete partial") from None
    missing = [n for n in PARTIAL_FIELDS if n not in meta]
    if missing:
        raise CorruptIndexError(f"{meta_path}: field {missing[0]!r} is missing")
    if CHECKSUM in meta and meta[CHECKSUM] != checksum(meta):
        raise CorruptIndexError(f"{meta_path} is damaged or was edited: its field 'checksum' does not match its "
                                f"content")
    for name in ("layers", "shards", "tokens_by_source"):
        if not isinstance(meta[name], list) or not all(_is_int(x) and x >= 0 for x in meta[name]):
            raise _damaged(meta_path, name, "must be a list of integers >= 0", meta[name])
    if not isinstance(meta["sources"], list) or not all(isinstance(x, str) for x in meta["sources"]) \
            or len(meta["sources"]) != len(meta["tokens_by_source"]):
        raise _damaged(meta_path, "sources", "must be a list of names, one per tokens_by_source", meta["sources"])
    for name in ("documents", "chunks"):
        if not _is_int(meta[name]) or meta[name] < 0:
            raise _damaged(meta_path, name, "must be an integer >= 0", meta[name])
    files = meta["files"]
    if not isinstance(files, dict) or not all(
            isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and v[0] >= 0 and isinstance(v[1], str)
            for v in files.values()):
        raise _damaged(meta_path, "files", "must map each file to [size, sha256]", files)
    for name, (size, digest) in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise _damaged(meta_path, "files", "must name files inside the partial", name)
        path = folder / name
        if not path.is_file():
            raise CorruptIndexError(f"{path} is missing")
        actual = path.stat().st_size
        if actual != size:
            raise CorruptIndexError(f"{path} is damaged: {actual:,} bytes, {meta_path} records {size:,}")
        if (level == "full" or size <= SMALL_FILE) and file_digest(path) != digest:
            raise CorruptIndexError(f"{path} is damaged: its sha256 differs from the one {meta_path} records")
    return meta


def check_state(index: Path, m: dict, verify="cheap") -> dict:
    """The readable index's ``state/partial.json`` (``check_partial``) checked against the manifest ``m`` (format
    2: its generation, a copy of the manifest's fixed fields and its checksum; both: its layers, every table
    present with the columns and dtypes of this schema, d_sae rows of stats, the windows' width, the record
    batches of each contexts file). Reads only footers and files up to ``SMALL_FILE`` bytes unless ``verify``
    is ``"full"``. CorruptIndexError naming the file and what is wrong."""
    import pyarrow as pa

    index = Path(index)
    state, where = index / STATE, index / MANIFEST
    meta_path = state / PARTIAL
    meta = check_fixed(index, m, check_partial(state, verify))
    d_sae, width = m["d_sae"], 2 * m["params"]["window"] + 1
    for layer in m["layers"]:
        folder = layer_folder(state, layer)
        for name in (CONTEXTS, STATS, HISTOGRAM, SOURCES):
            if f"layer{layer}/{name}" not in meta["files"]:
                raise CorruptIndexError(f"{folder / name} is not listed in {meta_path}")
        stats = parquet_file(folder / STATS)
        check_columns(folder / STATS, stats.schema_arrow, STATS_COLUMNS)
        if stats.metadata.num_rows != d_sae:
            raise CorruptIndexError(f"{where}: field 'd_sae' is {d_sae} but {folder / STATS} has "
                                    f"{stats.metadata.num_rows} rows (one per feature)")
        for name, column in LONG_TABLES.items():
            check_columns(folder / name, parquet_file(folder / name).schema_arrow,
                          {"feature": LONG_COLUMNS["feature"], column: LONG_COLUMNS["x"],
                           "count": LONG_COLUMNS["count"]})
        reader = open_contexts(folder / CONTEXTS)
        want = {**{n: ROW_COLUMNS[n] for n in STORED_ROW_COLUMNS}, **WINDOW_COLUMNS}
        check_columns(folder / CONTEXTS, reader.schema, want, lists=width)
        if reader.num_record_batches != -(-d_sae // BLOCK):
            raise CorruptIndexError(f"{folder / CONTEXTS} is damaged: {reader.num_record_batches} record batches, "
                                    f"{-(-d_sae // BLOCK)} expected for d_sae={d_sae} ({where})")
    tokens = tokens_folder(index, meta)
    check_columns(tokens / TOKENS, parquet_file(tokens / TOKENS).schema_arrow,
                  {"id": pa.int64(), "string": pa.string()}, optional={"bytes": pa.binary()})
    return meta


def check_fixed(index: Path, m: dict, meta: dict) -> dict:
    """``state/partial.json``'s ``meta`` agrees with the manifest ``m``: its layers, and in format 2 its generation
    (not older) and its copy of the manifest's fixed fields (a tampered field is named)."""
    state, where = Path(index) / STATE, Path(index) / MANIFEST
    meta_path = state / PARTIAL
    if m["format_version"] > 1:
        missing = [n for n in (*STATE_FIELDS, CHECKSUM) if n not in meta]
        if missing:
            raise CorruptIndexError(f"{meta_path}: field {missing[0]!r} is missing")
        if not _is_int(meta["generation"]) or meta["generation"] < m["generation"]:
            raise _damaged(meta_path, "generation", f"must be an integer >= {where}'s generation "
                           f"({m['generation']})", meta["generation"])
        built = meta["index"]
        if not isinstance(built, dict):
            raise _damaged(meta_path, "index", "must be a JSON object", built)
        if isinstance(built.get("params"), dict):
            for name, value in LEGACY_PARAMS.items():
                built["params"].setdefault(name, value)
        for name in FIXED_FIELDS:
            mine, theirs = m.get(name), built.get(name)
            if mine != theirs:
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    name += "." + next(k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
                    mine, theirs = m, built
                    for part in name.split("."):
                        mine, theirs = mine.get(part), theirs.get(part)
                raise CorruptIndexError(f"{where}: field {name!r} is {mine!r} but the index was built with "
                                        f"{theirs!r} ({meta_path})")
    if meta["layers"] != m["layers"]:
        raise CorruptIndexError(f"{where}: field 'layers' is {m['layers']} but {meta_path} holds layers "
                                f"{meta['layers']}")
    return meta


def tokens_folder(index: Path, meta: dict) -> Path:
    """Where tokens.parquet is: in ``state/`` (format 2, listed there) or beside the manifest (format 1)."""
    return Path(index) / STATE if TOKENS in meta["files"] else Path(index)


def check_columns(path: Path, schema, want: dict, lists: int | None = None, optional: dict | None = None) -> None:
    """The Arrow ``schema`` of the file ``path`` has exactly the columns ``want`` (name -> numpy dtype or Arrow
    type; fixed-size lists of ``lists`` for ``WINDOW_COLUMNS``), plus any of ``optional``."""
    import pyarrow as pa

    optional = optional or {}
    names = list(schema.names)
    if [n for n in names if n not in optional] != list(want):
        raise CorruptIndexError(f"{path} is damaged: columns {names}, expected {list(want)}")
    for name in names:
        kind = {**want, **optional}[name]
        kind = kind if isinstance(kind, pa.DataType) else pa.from_numpy_dtype(kind)
        if lists is not None and name in WINDOW_COLUMNS:
            kind = pa.list_(kind, lists)
        got = schema.field(name).type
        if not got.equals(kind):
            raise CorruptIndexError(f"{path} is damaged: column {name!r} is {got}, expected {kind}")


def stamp(index: Path) -> tuple:
    """What changes whenever a writer commits: (inode, size, mtime) of the manifest and of state/partial.json
    (two ``stat`` calls; ``None`` for a missing file). A reader compares it before each read."""
    out = []
    for path in (Path(index) / MANIFEST, Path(index) / STATE / PARTIAL):
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


WORK = "work"  # a job by layer groups: each group's state, its shards, saved block outputs, the documents
INDEX_ENTRIES = (MANIFEST, TOKENS, STATE, SHARDS, LOCK, STATE + ".old", STATE + ".tmp", TOKENS + ".tmp",
                 MANIFEST + ".tmp", WORK, "explanations.parquet", "explanations.lock")  # index/explanations.py's
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".tmp"  # base.atomic's temporary files


def foreign_entries(folder: Path) -> list[str]:
    """What in ``folder`` no index writer puts there (an overwrite refuses to delete those)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in INDEX_ENTRIES and not (
        p.name.startswith(TEMP_PREFIX) and p.name.endswith(TEMP_SUFFIX)))


def parquet_file(path: Path):
    """An opened Parquet file (its footer read, page checksums verified as its pages are read);
    CorruptIndexError naming it when damaged."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise CorruptIndexError(f"{path} is missing") from None
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise CorruptIndexError(f"{path} is damaged ({type(err).__name__}: {err})") from None


def read_table(path: Path, columns=None):
    """A Parquet file as an Arrow table; a damaged file raises CorruptIndexError naming it."""
    file = parquet_file(path)
    try:
        return file.read(columns=columns)  # not pq.read_table: it imports pyarrow.dataset (seconds)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise CorruptIndexError(f"{path} is corrupt ({type(err).__name__}: {err})") from None


def open_contexts(path: Path):
    """A memory-mapped Arrow IPC reader of a contexts file; CorruptIndexError naming it when damaged."""
    import pyarrow as pa

    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except FileNotFoundError:
        raise CorruptIndexError(f"{path} is missing") from None
    except Exception as err:
        raise CorruptIndexError(f"{path} is corrupt ({type(err).__name__}: {err})") from None


def read_long(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, x, count) columns of a long table (``LONG_TABLES``), sorted by feature as written."""
    table = read_table(folder / name)
    return (table.column("feature").to_numpy(), table.column(LONG_TABLES[name]).to_numpy(),
            table.column("count").to_numpy())


def write_long(folder: Path, name: str, counts: np.ndarray) -> None:
    """A ``[d_sae, n]`` count table as its long table (nonzero counts only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    feature, x = np.nonzero(counts)
    pq.write_table(pa.table({"feature": feature.astype(LONG_COLUMNS["feature"]),
                             LONG_TABLES[name]: x.astype(LONG_COLUMNS["x"]),
                             "count": counts[feature, x].astype(LONG_COLUMNS["count"])}), folder / name,
                   write_page_checksum=True)


def write_stats(folder: Path, **columns: np.ndarray) -> None:
    """stats.parquet from exactly ``STATS_COLUMNS``, cast to their dtypes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if set(columns) != set(STATS_COLUMNS):
        raise TypeError(f"stats columns are {list(STATS_COLUMNS)}, got {sorted(columns)}")
    pq.write_table(pa.table({name: np.asarray(columns[name]).astype(dtype) for name, dtype in STATS_COLUMNS.items()}),
                   folder / STATS, write_page_checksum=True)


def write_tokens(path: Path, ids: np.ndarray, strings: list[str], raw: list[bytes | None]) -> None:
    """tokens.parquet (``TOKEN_COLUMNS``), written beside and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path / (TOKENS + ".tmp")
    pq.write_table(pa.table({"id": np.asarray(ids).astype(np.int64), "string": strings,
                             "bytes": pa.array(raw, pa.binary())}), tmp,
                   write_page_checksum=True)
    os.replace(tmp, path / TOKENS)


def read_tokens(path: Path) -> tuple[dict[int, str], dict[int, bytes]]:
    """Token id -> string, and -> bytes for the fragments of characters (none in an index built before), from
    ``path``/tokens.parquet."""
    table = read_table(path / TOKENS)
    ids = table.column("id").to_pylist()
    raw = table.column("bytes").to_pylist() if "bytes" in table.column_names else []
    return (dict(zip(ids, table.column("string").to_pylist())),
            {i: b for i, b in zip(ids, raw) if b is not None})
