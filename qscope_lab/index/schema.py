"""The on-disk format of a feature index, defined once: file names, columns and their dtypes, manifest and partial
fields, the format version, and what a histogram bin means. The writer (``partial``), the merge (``build``) and
the reader (``store``) all take them from here. No torch: opening an index needs none.

Layout of an index folder::

    manifest.json            MANIFEST_FIELDS: model, SAE suite and per-layer SAE fingerprints, layers, corpus
                             fingerprint, build parameters, qscope-lab version, shards done
    tokens.parquet           TOKEN_COLUMNS: id -> string (and bytes, for a fragment of a character) of every token
                             in a window
    state/partial.json       PARTIAL_FIELDS: sources, counted tokens per source, files with their sizes and sha256
    state/layer{L}/contexts.arrow    Arrow IPC (zstd), one record batch per BLOCK features, sorted by feature:
                             STORED_CONTEXT_COLUMNS, top-N rows (kind TOP) and quantile-sample rows (kind
                             SAMPLE), each with a token window and the feature's values over it
    state/layer{L}/stats.parquet     STATS_COLUMNS, one row per feature: count, sum, max, where its rows are
    state/layer{L}/histogram.parquet (feature, bin, count), log-spaced bins (``bin_edges``), nonzero only
    state/layer{L}/sources.parquet   (feature, source, count), nonzero only
    shards/NNNNN/            partial statistics of shards not yet folded into state/ (same layout as state/)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .hashes import file_digest

FORMAT = "qscope-feature-index"
FORMAT_VERSION = 1

# ---------------------------------------------------------------------- files
MANIFEST = "manifest.json"
TOKENS = "tokens.parquet"
STATE = "state"
SHARDS = "shards"
PARTIAL = "partial.json"
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
               "center": np.int16}  # a context row; ``priority`` (a hash of the rest) is not stored
STORED_ROW_COLUMNS = tuple(name for name in ROW_COLUMNS if name != "priority")
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
                   "k", "layers", "params", "qscope_lab_version", "corpus", "shards", "created")
MANIFEST_LATER = ("updated",)  # written by the first checkpoint
MATCHING_FIELDS = ("model", "sae_suite", "sae_fingerprints", "layers", "d_sae", "params")  # a resume must agree
PARTIAL_FIELDS = ("layers", "sources", "tokens_by_source", "documents", "chunks", "shards", "files")

# ---------------------------------------------------------------------- histogram bins
HISTOGRAM_BINS = {"bins_per_decade": 8, "min_exponent": -3, "n_bins": 64}  # the build's defaults


class CorruptIndexError(ValueError):
    """A file of an index is damaged or missing; the message names it."""


def manifest(**fields) -> dict:
    """A new manifest: exactly ``MANIFEST_FIELDS`` (format and version filled in)."""
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}
    missing, unknown = set(MANIFEST_FIELDS) - set(out), set(out) - set(MANIFEST_FIELDS) - set(MANIFEST_LATER)
    if missing or unknown:
        raise TypeError(f"manifest fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return out


def read_manifest(folder: Path) -> dict:
    """The manifest of the index at ``folder``, checked to be one this version reads."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no feature index at {folder} (no {MANIFEST})")
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CorruptIndexError(f"{path} is damaged ({err})") from None
    if not isinstance(out, dict) or out.get("format") != FORMAT:
        raise CorruptIndexError(f"{path} is not a qscope-lab feature index manifest")
    if out.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{folder} was written by a newer qscope-lab (format {out['format_version']}); "
                         f"upgrade to read it")
    return out


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


def check_partial(folder: Path, verify: bool = False) -> dict:
    """A partial's ``partial.json`` with every file it lists present at its recorded size (and sha256 if
    ``verify``); CorruptIndexError naming the file otherwise."""
    meta_path = folder / PARTIAL
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptIndexError(f"{meta_path} is missing: {folder} is not a complete partial") from None
    except (OSError, ValueError) as err:
        raise CorruptIndexError(f"{meta_path} is damaged ({err})") from None
    for name, (size, digest) in meta["files"].items():
        path = folder / name
        if not path.is_file():
            raise CorruptIndexError(f"{path} is missing")
        if path.stat().st_size != size or (verify and file_digest(path) != digest):
            raise CorruptIndexError(f"{path} is corrupt: its size or checksum differs from {meta_path}")
    return meta


def read_table(path: Path, columns=None):
    """A Parquet file as an Arrow table; a damaged file raises CorruptIndexError naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read(columns=columns)  # not read_table: it imports pyarrow.dataset (seconds)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise CorruptIndexError(f"{path} is corrupt ({type(err).__name__}: {err})") from None


def open_contexts(path: Path):
    """A memory-mapped Arrow IPC reader of a contexts file; CorruptIndexError naming it when damaged."""
    import pyarrow as pa

    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
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
                             "count": counts[feature, x].astype(LONG_COLUMNS["count"])}), folder / name)


def write_stats(folder: Path, **columns: np.ndarray) -> None:
    """stats.parquet from exactly ``STATS_COLUMNS``, cast to their dtypes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if set(columns) != set(STATS_COLUMNS):
        raise TypeError(f"stats columns are {list(STATS_COLUMNS)}, got {sorted(columns)}")
    pq.write_table(pa.table({name: np.asarray(columns[name]).astype(dtype) for name, dtype in STATS_COLUMNS.items()}),
                   folder / STATS)


def write_tokens(path: Path, ids: np.ndarray, strings: list[str], raw: list[bytes | None]) -> None:
    """tokens.parquet (``TOKEN_COLUMNS``), written beside and renamed into place."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path / (TOKENS + ".tmp")
    pq.write_table(pa.table({"id": np.asarray(ids).astype(np.int64), "string": strings,
                             "bytes": pa.array(raw, pa.binary())}), tmp)
    os.replace(tmp, path / TOKENS)


def read_tokens(path: Path) -> tuple[dict[int, str], dict[int, bytes]]:
    """Token id -> string, and -> bytes for the fragments of characters (none in an index built before)."""
    table = read_table(path / TOKENS)
    ids = table.column("id").to_pylist()
    raw = table.column("bytes").to_pylist() if "bytes" in table.column_names else []
    return (dict(zip(ids, table.column("string").to_pylist())),
            {i: b for i, b in zip(ids, raw) if b is not None})
