"""Mergeable partial statistics of a feature index: what one shard of documents (or the whole index) says.

Everything merges exactly and in any grouping: counts, sums (float64, added in shard order), maxima, histogram
and per-source counts add; the top-N contexts are the first N of each feature under one total order (activation
descending, then document, then position), and the quantile samples are the bottom-S of a hash of (document,
position, feature) per histogram bin. A batch only proposes rows that beat the current N-th (or S-th) of their
feature, so memory is the index's size whatever the corpus's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core import feature_index as fmt
from ..core.feature_index import priority
from .rows import ROW_FIELDS, activation_bins, choose, concat, cut_windows, empty_rows, join_table, rank, select

_MAX = np.iinfo(np.uint64).max
BLOCK = 256  # features per record batch of contexts.arrow: reading one feature decompresses one block


class LayerPartial:
    """One layer's statistics; ``update`` folds in a batch, ``merge`` another partial."""

    def __init__(self, d_sae: int, params: dict, n_sources: int = 0):
        self.d_sae, self.params = d_sae, params
        n_bins = params["n_bins"]
        self.count = np.zeros(d_sae, np.int64)
        self.total = np.zeros(d_sae, np.float64)
        self.peak = np.zeros(d_sae, np.float32)
        self.hist = np.zeros((d_sae, n_bins), np.int64)
        self.by_source = np.zeros((d_sae, n_sources), np.int64)
        self.keys: list[tuple[np.ndarray, np.ndarray]] = []  # (hist, by_source) flat keys not yet counted
        self.n_keys = 0
        self.rows = empty_rows(2 * params["window"] + 1)
        self.pending: list[dict] = []  # rows proposed by batches since the last flush, their windows not cut yet
        self.tables: list[tuple] = []  # per such batch, what cutting them needs (``rows.join_table``)
        self.n_pending = self.n_table = 0
        self._thresholds()

    def _thresholds(self) -> None:
        """The N-th best activation per feature and the S-th smallest priority per (feature, bin) of the kept
        rows: a new row must reach them to matter."""
        self.top_thr = np.full(self.d_sae, -np.inf, np.float32)
        self.sample_thr = np.full(self.d_sae * self.params["n_bins"], _MAX, np.uint64)
        rows, top = self.rows, self.rows["kind"] == fmt.TOP
        group = rows["feature"][~top].astype(np.int64) * self.params["n_bins"] + rows["bin"][~top]
        self._tighten(rows["feature"][top], rows["activation"][top], group, rows["priority"][~top])

    def _tighten(self, top_feature, top_activation, sample_group, sample_priority) -> None:
        """Raise the thresholds to those of some rows (top rows sorted by feature, then activation descending;
        samples by (feature, bin), then priority). Safe for any subset of what was seen: its N-th best is a lower
        bound of the final N-th best, its S-th smallest priority an upper bound of the final one."""
        last = rank(top_feature) == self.params["n_top"] - 1
        f = top_feature[last]
        self.top_thr[f] = np.maximum(self.top_thr[f], top_activation[last])
        last = rank(sample_group) == self.params["samples_per_bin"] - 1
        g = sample_group[last]
        self.sample_thr[g] = np.minimum(self.sample_thr[g], sample_priority[last])

    def flush(self) -> None:
        """Count the buffered firings, and fold the rows proposed since the last flush into the kept rows (exact
        ``select`` over both); the windows are cut for the proposed rows that stay, from their batch's table."""
        self._count()
        if not self.pending:
            return
        p = self.params
        new = concat(*self.pending)
        kept = {name: self.rows[name] for name in ROW_FIELDS}
        kept["origin"] = np.arange(len(kept["feature"]))  # >= 0: a kept row; < 0: a proposed one
        fresh = {name: new[name] for name in ROW_FIELDS}
        fresh["origin"] = -1 - np.arange(len(new["feature"]))
        rows = select(concat(kept, fresh), p["n_top"], p["samples_per_bin"], p["n_bins"])
        origin = rows.pop("origin")
        old = origin >= 0
        from_kept = np.where(old, origin, 0)
        width = 2 * p["window"] + 1
        if len(self.rows["feature"]):
            rows["window"] = self.rows["window"].take(from_kept, axis=0)
            rows["values"] = self.rows["values"].take(from_kept, axis=0)
        else:
            rows["window"] = np.empty((len(origin), width), np.int32)
            rows["values"] = np.empty((len(origin), width), np.float32)
        at = np.flatnonzero(~old)
        j = -1 - origin[at]
        batch = new["batch"][j]
        for b in np.unique(batch):
            part = batch == b
            rows["window"][at[part]], rows["values"][at[part]] = cut_windows(
                self.tables[b], new["tok"][j[part]], new["feature"][j[part]], p["window"])
        self.rows = rows
        self.pending, self.tables, self.n_pending, self.n_table = [], [], 0, 0
        self._thresholds()

    def _count(self) -> None:
        """Add the buffered (feature, bin) and (feature, source) keys to the histogram and per-source counts: one
        bincount per table for many batches, so a batch costs its firings, not the d_sae x n_bins table."""
        if not self.keys:
            return
        for table, keys in zip((self.hist, self.by_source), zip(*self.keys)):
            keys = np.concatenate(keys)
            if table.size <= 1 << 22 or 8 * len(keys) >= table.size:
                table.reshape(-1)[:] += np.bincount(keys, minlength=table.size)
            else:
                keys, counts = np.unique(keys, return_counts=True)
                table.reshape(-1)[keys] += counts
        self.keys, self.n_keys = [], 0

    def grow_sources(self, n: int) -> None:
        if n > self.by_source.shape[1]:
            self._count()  # the buffered keys use the old number of sources
            extra = np.zeros((self.d_sae, n - self.by_source.shape[1]), np.int64)
            self.by_source = np.concatenate([self.by_source, extra], axis=1)

    def update(self, ctx: dict, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold in one batch: ``values`` / ``indices`` ``[n, k]`` of the counted tokens ``ctx["tok_row"]`` /
        ``ctx["tok_col"]`` (see ``shard.compute_shard`` for the rest of ``ctx``)."""
        p, d = self.params, self.d_sae
        n_bins = p["n_bins"]
        values_np, indices_np = values.numpy(), indices.numpy()
        fired = values_np > 0
        e_tok = np.repeat(np.arange(len(fired)), fired.sum(axis=1))  # each firing's counted token
        feat, act = indices_np[fired].astype(np.int64, copy=False), values_np[fired]
        doc, pos, src = ctx["tok_doc"][e_tok], ctx["tok_pos"][e_tok], ctx["tok_src"][e_tok]
        self.grow_sources(ctx["n_sources"])
        self.count += np.bincount(feat, minlength=d)
        self.total += np.bincount(feat, weights=act.astype(np.float64), minlength=d)
        peak = torch.zeros(d).scatter_reduce_(0, torch.from_numpy(feat), torch.from_numpy(act), "amax").numpy()
        np.maximum(self.peak, peak, out=self.peak)
        b = activation_bins(act, p)
        group = feat * n_bins + b
        self.keys.append((group, feat * self.by_source.shape[1] + src))
        self.n_keys += len(feat)
        if 8 * self.n_keys >= self.hist.size:
            self._count()
        # only what beats its feature's current N-th best (or S-th smallest priority) is a candidate, and only
        # what stays in this batch's own top N (bottom S) is proposed: windows are cut for those alone
        prio = priority(doc, pos, feat, p["seed"])
        entries = {"feature": feat, "activation": act, "bin": b, "priority": prio, "document": doc, "position": pos}
        top, sample, sample_group = choose(entries, np.flatnonzero(act >= self.top_thr[feat]),
                                           np.flatnonzero(prio <= self.sample_thr[group]), p["n_top"],
                                           p["samples_per_bin"], n_bins)
        if not len(top) + len(sample):
            return
        self._tighten(feat[top], act[top], sample_group, prio[sample])
        entry = np.concatenate([top, sample])
        kind = np.zeros(len(entry), np.int8)
        kind[len(top):] = fmt.SAMPLE
        tok = e_tok[entry]
        f = feat[entry]
        self.pending.append({
            "feature": f.astype(np.int32), "kind": kind, "bin": b[entry], "priority": prio[entry],
            "activation": act[entry], "document": doc[entry], "position": pos[entry], "source": src[entry],
            "center": np.full(len(entry), p["window"], np.int16), "batch": np.full(len(entry), len(self.tables)),
            "tok": tok})
        self.tables.append(join_table(ctx, tok, f, e_tok, feat, act, d))
        self.n_pending += len(entry)
        self.n_table += len(self.tables[-1][-1])
        limit = max(len(self.rows["feature"]), 1 << 16)  # amortised: the kept rows at most double
        if self.n_pending > limit or self.n_table > 4 * limit or len(self.tables) >= 256:
            self.flush()

    def merge(self, other: LayerPartial, source_map: np.ndarray) -> None:
        """Fold in another partial of the same layer (its source ids mapped through ``source_map``)."""
        self.flush()
        other.flush()
        self.count += other.count
        self.total += other.total
        np.maximum(self.peak, other.peak, out=self.peak)
        self.hist += other.hist
        self.grow_sources(int(source_map.max()) + 1 if len(source_map) else 0)
        for i, j in enumerate(source_map):
            self.by_source[:, j] += other.by_source[:, i]
        rows = dict(other.rows, source=source_map[other.rows["source"]].astype(np.int16)) if len(source_map) \
            else other.rows
        p = self.params
        self.rows = select(concat(self.rows, rows), p["n_top"], p["samples_per_bin"], p["n_bins"])
        self._thresholds()

    # ------------------------------------------------------------------ files
    def write(self, folder: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder.mkdir(parents=True, exist_ok=True)
        self.flush()
        rows, width = self.rows, 2 * self.params["window"] + 1
        f = rows["feature"]
        length = np.bincount(f, minlength=self.d_sae)
        start = np.r_[0, np.cumsum(length)[:-1]]
        block = np.arange(self.d_sae) // BLOCK
        block_start = start[np.minimum(block * BLOCK, self.d_sae - 1)]
        columns = {name: pa.array(rows[name]) for name in ROW_FIELDS if name != "priority"}  # a hash: recomputed
        for name in ("window", "values"):
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(rows[name].reshape(-1)), width)
        table = pa.table(columns)
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_file(str(folder / fmt.CONTEXTS), table.schema, options=options) as writer:
            edges = np.r_[start[::BLOCK], len(f)]
            for b in range(len(edges) - 1):
                writer.write_batch(table.slice(int(edges[b]), int(edges[b + 1] - edges[b])).combine_chunks()
                                   .to_batches()[0] if edges[b + 1] > edges[b] else
                                   pa.RecordBatch.from_pylist([], schema=table.schema))
        pq.write_table(pa.table({"feature": np.arange(self.d_sae, dtype=np.int32), "count": self.count,
                                 "total": self.total, "peak": self.peak, "batch": block.astype(np.int32),
                                 "offset": (start - block_start).astype(np.int64), "length": length.astype(np.int32)}),
                       folder / fmt.STATS)
        for name, table2, column in ((fmt.HISTOGRAM, self.hist, "bin"), (fmt.SOURCES, self.by_source, "source")):
            feat, x = np.nonzero(table2)
            pq.write_table(pa.table({"feature": feat.astype(np.int32), column: x.astype(np.int16),
                                     "count": table2[feat, x]}), folder / name)

    @classmethod
    def read(cls, folder: Path, d_sae: int, params: dict, n_sources: int) -> LayerPartial:
        out = cls(d_sae, params, n_sources)
        stats = fmt.read_table(folder / fmt.STATS)
        out.count = stats.column("count").to_numpy().copy()
        out.total = stats.column("total").to_numpy().copy()
        out.peak = stats.column("peak").to_numpy().copy()
        for name, table, column in ((fmt.HISTOGRAM, out.hist, "bin"), (fmt.SOURCES, out.by_source, "source")):
            t = fmt.read_table(folder / name)
            table[t.column("feature").to_numpy(), t.column(column).to_numpy().astype(np.int64)] = \
                t.column("count").to_numpy()
        reader = fmt.open_contexts(folder / fmt.CONTEXTS)
        try:
            table = reader.read_all()
        except Exception as err:
            raise fmt.CorruptIndexError(f"{folder / fmt.CONTEXTS} is corrupt ({type(err).__name__}: {err})") from None
        width = 2 * params["window"] + 1
        rows = {name: table.column(name).to_numpy().astype(dtype) for name, dtype in ROW_FIELDS.items()
                if name != "priority"}
        rows["priority"] = priority(rows["document"], rows["position"], rows["feature"], params["seed"])
        for name in ("window", "values"):
            rows[name] = table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, width).copy()
        out.rows = rows
        out._thresholds()
        return out


class Partial:
    """Statistics of some documents at every indexed layer, plus their sources and counted tokens."""

    def __init__(self, layers: list[int], d_sae: int, params: dict):
        self.layers, self.d_sae, self.params = list(layers), d_sae, params
        self.by_layer = {layer: LayerPartial(d_sae, params) for layer in self.layers}
        self.sources: list[str] = []
        self.tokens_by_source: list[int] = []
        self.documents = self.chunks = 0
        self.shards: list[int] = []

    def source_id(self, name: str) -> int:
        if name not in self.sources:
            self.sources.append(name)
            self.tokens_by_source.append(0)
        return self.sources.index(name)

    def merge(self, other: Partial) -> None:
        source_map = np.array([self.source_id(s) for s in other.sources], np.int64)
        for i, n in enumerate(other.tokens_by_source):
            self.tokens_by_source[source_map[i]] += n
        for layer in self.layers:
            self.by_layer[layer].merge(other.by_layer[layer], source_map)
        self.documents += other.documents
        self.chunks += other.chunks
        self.shards += other.shards

    def token_ids(self) -> np.ndarray:
        """Every token id that appears in a stored window."""
        for part in self.by_layer.values():
            part.flush()
        windows = [part.rows["window"].reshape(-1) for part in self.by_layer.values()]
        top = max((int(w.max()) for w in windows if len(w)), default=-1)
        seen = np.zeros(top + 2, bool)  # a flag per id (-1, outside a chunk, flags the last): no sort
        for w in windows:
            seen[w] = True
        return np.flatnonzero(seen[:-1]).astype(np.int32)

    def write(self, folder: Path) -> None:
        """Write atomically: into ``folder.tmp``, then renamed over ``folder``."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for layer, part in self.by_layer.items():
            part.write(tmp / f"layer{layer}")
        files = {str(p.relative_to(tmp)): (p.stat().st_size, fmt.file_digest(p))
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        meta = {"layers": self.layers, "sources": self.sources, "tokens_by_source": self.tokens_by_source,
                "documents": self.documents, "chunks": self.chunks, "shards": self.shards, "files": files}
        with open(tmp / fmt.PARTIAL, "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
            handle.flush()
            os.fsync(handle.fileno())
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def read(cls, folder: Path, d_sae: int, params: dict, verify: bool = True) -> Partial:
        meta = fmt.check_partial(folder, verify=verify)
        out = cls(meta["layers"], d_sae, params)
        out.sources, out.tokens_by_source = list(meta["sources"]), list(meta["tokens_by_source"])
        out.documents, out.chunks, out.shards = meta["documents"], meta["chunks"], list(meta["shards"])
        out.by_layer = {layer: LayerPartial.read(folder / f"layer{layer}", d_sae, params, len(out.sources))
                        for layer in out.layers}
        return out
