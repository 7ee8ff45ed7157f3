"""A feature index on disk and its lazy reader: every feature's top contexts, quantile samples, firing statistics,
activation histogram and per-source firing counts over a corpus, computed once (``qscope_lab.index`` builds it).

Layout of an index folder::

    manifest.json            model, SAE suite and per-layer SAE fingerprints, layers, corpus fingerprint, token
                             count, build parameters, qscope-lab version, shards done
    tokens.parquet           id -> string (and bytes, for a fragment of a character) of every token in a window
    state/partial.json       sources, counted tokens per source, files with their sizes and sha256
    state/layer{L}/contexts.arrow    Arrow IPC (zstd), one record batch per block of features, sorted by feature:
                             top-N rows (kind 0) and quantile-sample rows (kind 1), each with a token window
    state/layer{L}/stats.parquet     one row per feature: count, sum, max, where its rows are in contexts.arrow
    state/layer{L}/histogram.parquet (feature, bin, count), log-spaced bins, nonzero only
    state/layer{L}/sources.parquet   (feature, source, count), nonzero only
    shards/NNNNN/            partial statistics of shards not yet folded into state/ (same layout as state/)

A partial (``state/`` or a shard) is the mergeable statistics of some documents; the index is the merge of all of
them, so a killed build resumes from its last complete shard and documents can be added later. Reading a feature
decompresses one record batch: a card opens without loading the layer.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..base import validate
from ..core.tokens import byte_label, readable
from .hashes import file_digest, priority, sae_fingerprint

FORMAT = "qscope-feature-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens.parquet"
STATE = "state"
SHARDS = "shards"
PARTIAL = "partial.json"
CONTEXTS, STATS, HISTOGRAM, SOURCES = "contexts.arrow", "stats.parquet", "histogram.parquet", "sources.parquet"
TOP, SAMPLE = 0, 1  # the ``kind`` of a context row


class CorruptIndexError(ValueError):
    """A file of an index is damaged or missing; the message names it."""


def bin_edges(params: dict) -> np.ndarray:
    """Edges of the log-spaced activation histogram: ``n_bins + 1`` values, the first 0 and the last inf."""
    bpd, lo, n = params["bins_per_decade"], params["min_exponent"] * params["bins_per_decade"], params["n_bins"]
    edges = 10.0 ** ((lo + np.arange(n + 1)) / bpd)
    edges[0], edges[-1] = 0.0, math.inf
    return edges


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


def context_string(window: list[str], center: int) -> str:
    return "".join(window[:center]) + f"[[{window[center]}]]" + "".join(window[center + 1:])


class FeatureIndex:
    """A feature index opened for reading (``FeatureIndex.open(path)``); nothing is loaded until asked, and a
    feature's rows are read without loading its layer. ``qscope_lab.FeatureIndex`` adds ``build`` / ``add``."""

    def __init__(self, path, verify: bool = False):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no feature index at {self.path} (no {MANIFEST})")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise CorruptIndexError(f"{manifest_path} is damaged ({err})") from None
        if self.manifest.get("format") != FORMAT:
            raise CorruptIndexError(f"{manifest_path} is not a qscope-lab feature index manifest")
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{self.path} was written by a newer qscope-lab (format "
                             f"{self.manifest['format_version']}); upgrade to read it")
        self.params = self.manifest["params"]
        self.meta = check_partial(self.path / STATE, verify) if (self.path / STATE).is_dir() else None
        if self.meta is None:
            raise CorruptIndexError(f"{self.path / STATE} is missing: the build has not finished a shard yet")
        self._cache: dict = {}

    @classmethod
    def open(cls, path, verify: bool = False) -> FeatureIndex:
        """Open an index folder lazily; ``verify`` also checks every file's sha256 (reads them all once)."""
        return cls(path, verify=verify)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"FeatureIndex({str(self.path)!r}, model={m['model']!r}, saes={m['sae_suite']!r}, "
                f"layers={self.layers}, documents={self.documents:,}, tokens={self.tokens:,})")

    # ------------------------------------------------------------------ facts
    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def d_sae(self) -> int:
        return int(self.manifest["d_sae"])

    @property
    def sources(self) -> list[str]:
        return list(self.meta["sources"])

    @property
    def tokens(self) -> int:
        """Counted tokens (sink and special tokens skipped) in the index."""
        return int(sum(self.meta["tokens_by_source"]))

    @property
    def documents(self) -> int:
        return int(self.meta["documents"])

    def info(self) -> pd.DataFrame:
        """Manifest facts as a two-column table."""
        m = self.manifest
        facts = {"path": str(self.path), "model": m["model"], "sae_suite": m["sae_suite"], "layers": self.layers,
                 "d_sae": self.d_sae, "documents": self.documents, "chunks": self.meta["chunks"],
                 "tokens": self.tokens, "sources": ", ".join(self.sources), "shards": len(m["shards"]),
                 "corpus_fingerprint": m["corpus"]["fingerprint"], "qscope_lab_version": m["qscope_lab_version"],
                 **{f"param.{k}": v for k, v in self.params.items()},
                 "disk_bytes": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())}
        return pd.DataFrame({"field": list(facts), "value": [str(v) for v in facts.values()]})

    def check(self, lab) -> None:
        """Refuse an index built for another model or SAE suite, naming both (and a layer whose SAE weights
        differ when that layer is already loaded)."""
        m = self.manifest
        suite = lab.saes.name if lab.saes is not None else None
        if m["model"] != lab.name or m["sae_suite"] != suite:
            raise ValueError(f"the index at {self.path} was built for model {m['model']!r} with SAEs "
                             f"{m['sae_suite']!r}, but this Lab is model {lab.name!r} with SAEs {suite!r}")
        if lab.saes.d_sae not in (None, self.d_sae):
            raise ValueError(f"the index at {self.path} has d_sae={self.d_sae} but {suite!r} has {lab.saes.d_sae}")
        for layer, digest in m.get("sae_fingerprints", {}).items():
            if int(layer) in lab.saes.cached_layers and sae_fingerprint(lab.sae(int(layer))) != digest:
                raise ValueError(f"the index at {self.path} was built with other weights for layer {layer} of "
                                 f"{suite!r} (fingerprint {digest} differs): rebuild it")

    # ------------------------------------------------------------------ files
    def _layer(self, layer) -> int:
        if not validate._is_int(layer) or int(layer) not in self.layers:
            raise ValueError(f"layer {layer!r} is not in this index (layers: {self.layers})")
        return int(layer)

    def _feature(self, feature) -> int:
        return validate.feature(feature, self.d_sae)

    def _file(self, layer: int, name: str) -> Path:
        return self.path / STATE / f"layer{layer}" / name

    def _stats_arrays(self, layer: int) -> dict:
        key = ("stats", layer)
        if key not in self._cache:
            table = read_table(self._file(layer, STATS))
            self._cache[key] = {c: table.column(c).to_numpy() for c in table.column_names}
        return self._cache[key]

    def _long(self, layer: int, name: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(feature-sorted start offsets, column values, counts) of a long (feature, x, count) table."""
        key = (name, layer)
        if key not in self._cache:
            table = read_table(self._file(layer, name))
            feature = table.column("feature").to_numpy()
            starts = np.searchsorted(feature, np.arange(self.d_sae + 1))
            self._cache[key] = (starts, table.column(column).to_numpy(), table.column("count").to_numpy())
        return self._cache[key]

    def _block(self, layer: int, block: int) -> pd.DataFrame:
        """The stored rows of one block of features (one record batch decompressed), window and values as
        arrays."""
        reader = self._cache.get(("contexts", layer))
        if reader is None:
            reader = self._cache[("contexts", layer)] = open_contexts(self._file(layer, CONTEXTS))
        try:
            batch = reader.get_batch(block)
        except Exception as err:
            raise CorruptIndexError(f"{self._file(layer, CONTEXTS)} is corrupt ({type(err).__name__}: {err})") \
                from None
        frame = batch.drop_columns(["window", "values"]).to_pandas()
        frame["priority"] = priority(frame.document.to_numpy(), frame.position.to_numpy(), frame.feature.to_numpy(),
                                     self.params["seed"])  # the quantile samples' hash, not stored
        width = batch.column("window").type.list_size
        frame["window"] = list(batch.column("window").flatten().to_numpy().reshape(-1, width))
        frame["values"] = list(batch.column("values").flatten().to_numpy().reshape(-1, width))
        return frame

    def blocks(self, layer: int):
        """Every stored row of a layer, one block of features at a time (for exports and bulk reads)."""
        layer = self._layer(layer)
        reader = self._cache.get(("contexts", layer)) or open_contexts(self._file(layer, CONTEXTS))
        for b in range(reader.num_record_batches):
            yield self._block(layer, b)

    def _rows(self, layer: int, feature: int) -> pd.DataFrame:
        """All stored context rows of one feature (its block decompressed, nothing else of the layer read)."""
        stats = self._stats_arrays(layer)
        start, length = int(stats["offset"][feature]), int(stats["length"][feature])
        if not length:
            return pd.DataFrame(columns=["feature", "kind", "bin", "priority", "activation", "document", "position",
                                         "source", "center", "window", "values"])
        return self._block(layer, int(stats["batch"][feature])).iloc[start:start + length]

    def _strings(self) -> tuple[dict[int, str], dict[int, bytes]]:
        """Token id -> string, and -> bytes for the fragments of characters (none in an index built before)."""
        if "tokens" not in self._cache:
            table = read_table(self.path / TOKENS)
            ids = table.column("id").to_pylist()
            raw = table.column("bytes").to_pylist() if "bytes" in table.column_names else []
            self._cache["tokens"] = (dict(zip(ids, table.column("string").to_pylist())),
                                     {i: b for i, b in zip(ids, raw) if b is not None})
        return self._cache["tokens"]

    def _records(self, rows: pd.DataFrame) -> list[dict]:
        """Stored rows as readers show them: the window's tokens as strings, a character split over byte tokens
        whole (``core.tokens.readable``; ``boundary`` says which byte token of it fired), its values, the context
        with the centre in [[ ]], the source's name."""
        (strings, raw), sources = self._strings(), self.sources
        out = []
        for activation, document, position, source, center, window, values in zip(
                rows.activation.tolist(), rows.document.tolist(), rows.position.tolist(), rows.source.tolist(),
                rows.center.tolist(), rows.window, rows["values"]):
            keep = window >= 0
            ids = window[keep].tolist()
            center -= int((~keep[:center]).sum())
            shown, token, boundary = readable([strings.get(t, "?") for t in ids], [raw.get(t) for t in ids], center)
            out.append({"activation": activation, "document": document, "position": position, "token": token,
                        "context": context_string(shown, center), "boundary": boundary, "source": sources[source],
                        "tokens": shown, "values": values[keep].tolist(), "center": center})
        return out

    def _present(self, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self._records(rows), columns=["activation", "document", "position", "token", "context",
                                                          "boundary", "source", "tokens", "values", "center"])

    # ------------------------------------------------------------------ readers
    def top_contexts(self, layer: int, feature: int, n: int | None = None) -> pd.DataFrame:
        """The feature's strongest activations over the corpus, strongest first: activation, document, position,
        token, context (the token in [[ ]]), boundary, source, and the window's tokens / values / center."""
        layer, feature = self._layer(layer), self._feature(feature)
        n = self.params["n_top"] if n is None else validate.integer(n, "n", minimum=0)
        rows = self._rows(layer, feature)
        return self._present(rows[rows.kind == TOP].head(n)).reset_index(drop=True)

    def histogram(self, layer: int, feature: int) -> pd.DataFrame:
        """The feature's activation histogram over log-spaced bins: lower, upper, count (nonzero bins)."""
        layer, feature = self._layer(layer), self._feature(feature)
        starts, bins, counts = self._long(layer, HISTOGRAM, "bin")
        part = slice(starts[feature], starts[feature + 1])
        edges = bin_edges(self.params)
        b = bins[part].astype(int)
        return pd.DataFrame({"bin": b, "lower": edges[b], "upper": edges[b + 1], "count": counts[part]})

    def quantile_samples(self, layer: int, feature: int, intervals: int = 5, per_interval: int | None = None):
        """Random firings from each of ``intervals`` activation quantile intervals (cut at histogram bins, so weak
        firings show too, not only the peaks): interval 0 is the weakest. ``per_interval`` at most the build's
        ``samples_per_bin``; the samples are uniform within an interval (bottom-k of a hash)."""
        layer, feature = self._layer(layer), self._feature(feature)
        intervals = validate.integer(intervals, "intervals", minimum=1)
        cap = self.params["samples_per_bin"]
        per = cap if per_interval is None else validate.integer(per_interval, "per_interval", minimum=0, maximum=cap)
        return self._quantiles(self.histogram(layer, feature), self._rows(layer, feature), intervals, per)

    def _quantile_records(self, hist: pd.DataFrame, rows: pd.DataFrame, intervals: int, per: int) -> list[dict]:
        rows = rows[rows.kind == SAMPLE]
        if hist.empty or rows.empty:
            return []
        counts, bins = hist["count"].to_numpy(), hist.bin.to_numpy()
        mid = (np.cumsum(counts) - counts / 2) / counts.sum()
        q_of_bin = np.minimum((mid * intervals).astype(int), intervals - 1)
        q = q_of_bin[np.searchsorted(bins, rows.bin.to_numpy())]
        order = np.lexsort((rows.priority.to_numpy(), q))
        ranks = np.arange(len(order)) - np.searchsorted(q[order], q[order])
        pick = order[ranks < per]
        lower, upper = hist.lower.to_numpy(), hist.upper.to_numpy()
        out = []
        for record, interval in zip(self._records(rows.iloc[pick]), q[pick].tolist()):
            inside = q_of_bin == interval
            out.append({"interval": interval, "lower": float(lower[inside].min()), "upper": float(upper[inside].max()),
                        **record})
        return sorted(out, key=lambda r: (r["interval"], -r["activation"]))

    def _quantiles(self, hist: pd.DataFrame, rows: pd.DataFrame, intervals: int, per: int) -> pd.DataFrame:
        columns = ["interval", "lower", "upper", "activation", "document", "position", "token", "context", "boundary",
                   "source", "tokens", "values", "center"]
        return pd.DataFrame(self._quantile_records(hist, rows, intervals, per), columns=columns)

    def stats(self, layer: int) -> pd.DataFrame:
        """One row per feature: firing_count, density (share of counted tokens), max, mean (when firing), and
        ``rate:<source>`` per corpus source."""
        layer = self._layer(layer)
        key = ("stats_frame", layer)
        if key not in self._cache:
            s = self._stats_arrays(layer)
            count = s["count"]
            frame = pd.DataFrame({"feature": np.arange(self.d_sae), "firing_count": count,
                                  "density": count / max(self.tokens, 1), "max": s["peak"],
                                  "mean": np.where(count > 0, s["total"] / np.maximum(count, 1), 0.0)})
            starts, source, counts = self._long(layer, SOURCES, "source")
            feature = np.repeat(np.arange(self.d_sae), np.diff(starts))
            for i, name in enumerate(self.sources):
                rate = np.zeros(self.d_sae)
                pick = source == i
                rate[feature[pick]] = counts[pick] / max(self.meta["tokens_by_source"][i], 1)
                frame[f"rate:{name}"] = rate
            self._cache[key] = frame
        return self._cache[key]

    def feature_stats(self, layer: int, feature: int) -> dict:
        """One feature's row of ``stats`` as a dict."""
        feature = self._feature(feature)
        return self.stats(layer).iloc[feature].to_dict()

    def source_rates(self, layer: int, feature: int) -> pd.DataFrame:
        """The feature's firing rate per corpus source (its language / genre profile): source, firing_count,
        tokens, rate."""
        layer, feature = self._layer(layer), self._feature(feature)
        starts, source, counts = self._long(layer, SOURCES, "source")
        part = slice(starts[feature], starts[feature + 1])
        fired = dict(zip(source[part].tolist(), counts[part].tolist()))
        tokens = self.meta["tokens_by_source"]
        return pd.DataFrame([{"source": name, "firing_count": fired.get(i, 0), "tokens": tokens[i],
                              "rate": fired.get(i, 0) / max(tokens[i], 1)} for i, name in enumerate(self.sources)])

    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]:
        """Per feature that fired, the ``n`` tokens carrying most of its top-context activation (feature search
        and hover labels read this)."""
        layer = self._layer(layer)
        key = ("top_tokens", layer, n)
        if key not in self._cache:
            self._cache[key] = _top_tokens(self, layer, n)
        return self._cache[key]


def _top_tokens(index: FeatureIndex, layer: int, n: int) -> dict[int, list[str]]:
    import pyarrow.compute as pc

    reader = open_contexts(index._file(layer, CONTEXTS))
    strings, raw = index._strings()
    parts = []
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        batch = batch.filter(pc.equal(batch.column("kind"), TOP))
        width = batch.column("window").type.list_size
        window = batch.column("window").flatten().to_numpy().reshape(-1, width)
        center = batch.column("center").to_numpy().astype(int)
        parts.append(pd.DataFrame({"feature": batch.column("feature").to_numpy(),
                                   "token": window[np.arange(len(center)), center],
                                   "activation": batch.column("activation").to_numpy()}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["feature", "token", "activation"])
    mass = frame.groupby(["feature", "token"], sort=False).activation.sum().reset_index()
    mass = mass.sort_values(["feature", "activation"], ascending=[True, False])
    out: dict[int, list[str]] = {}
    for feature, part in mass.groupby("feature", sort=False):
        out[int(feature)] = [byte_label(raw[t]) if t in raw else strings.get(t, "?")  # a fragment: its bytes
                             for t in map(int, part.token.head(n))]
    return out


@lru_cache(maxsize=8)
def _open_cached(path: str, mtime: float) -> FeatureIndex:
    return FeatureIndex(path)


def open_index(path) -> FeatureIndex:
    """An index folder opened once per process (reopened when its manifest changes)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no feature index at {path} (no {MANIFEST})")
    return _open_cached(str(Path(path).resolve()), manifest.stat().st_mtime)
