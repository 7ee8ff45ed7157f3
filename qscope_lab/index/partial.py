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

ROW_FIELDS = {"feature": np.int32, "kind": np.int8, "bin": np.int16, "priority": np.uint64,
              "activation": np.float32, "document": np.int64, "position": np.int32, "source": np.int16,
              "center": np.int16}
_MAX = np.iinfo(np.uint64).max
BLOCK = 256  # features per record batch of contexts.arrow: reading one feature decompresses one block


def activation_bins(act: np.ndarray, params: dict) -> np.ndarray:
    bpd, n = params["bins_per_decade"], params["n_bins"]
    with np.errstate(divide="ignore"):
        b = np.floor(np.log10(act.astype(np.float64)) * bpd) - params["min_exponent"] * bpd
    return np.clip(b, 0, n - 1).astype(np.int16)


def _empty_rows(width: int) -> dict:
    rows = {name: np.zeros(0, dtype) for name, dtype in ROW_FIELDS.items()}
    rows["window"] = np.zeros((0, width), np.int32)
    rows["values"] = np.zeros((0, width), np.float32)
    return rows


def _take(rows: dict, index: np.ndarray) -> dict:
    return {name: value[index] for name, value in rows.items()}


def _concat(*parts: dict) -> dict:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _rank(groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal (sorted) group keys."""
    if not len(groups):
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def select(rows: dict, n_top: int, per_bin: int, n_bins: int) -> dict:
    """The rows an index keeps: top ``n_top`` per feature, bottom-``per_bin`` priorities per (feature, bin);
    in stored order (feature, kind, then activation desc / (bin, priority))."""
    top = np.flatnonzero(rows["kind"] == fmt.TOP)
    order = top[np.lexsort((rows["position"][top], rows["document"][top], -rows["activation"][top],
                            rows["feature"][top]))]
    order = order[_rank(rows["feature"][order]) < n_top]
    sample = np.flatnonzero(rows["kind"] == fmt.SAMPLE)
    group = rows["feature"][sample].astype(np.int64) * n_bins + rows["bin"][sample]
    s_order = np.lexsort((rows["position"][sample], rows["document"][sample], rows["priority"][sample], group))
    s_order = s_order[_rank(group[s_order]) < per_bin]
    keep = np.concatenate([order, sample[s_order]])
    keep = keep[np.argsort(rows["feature"][keep], kind="stable")]
    return _take(rows, keep)


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
        self.rows = _empty_rows(2 * params["window"] + 1)
        self.pending: list[dict] = []  # rows proposed by batches since the last flush
        self.n_pending = 0
        self._thresholds()

    def _thresholds(self, rows: dict | None = None) -> None:
        """The N-th best activation per feature and the S-th smallest priority per (feature, bin): a new row must
        reach them to matter. Without ``rows`` they are recomputed from the kept rows; with ``rows`` (the
        ``select`` of one batch's candidates) they are only tightened, which stays safe: a batch's N-th best is
        a lower bound of the final N-th best, its S-th smallest priority an upper bound of the final one."""
        p, n_bins = self.params, self.params["n_bins"]
        if rows is None:
            rows = self.rows
            self.top_thr = np.full(self.d_sae, -np.inf, np.float32)
            self.sample_thr = np.full(self.d_sae * n_bins, _MAX, np.uint64)
        top = rows["kind"] == fmt.TOP
        f, a = rows["feature"][top], rows["activation"][top]
        last = _rank(f) == p["n_top"] - 1
        self.top_thr[f[last]] = np.maximum(self.top_thr[f[last]], a[last])
        sample = ~top
        g = rows["feature"][sample].astype(np.int64) * n_bins + rows["bin"][sample]
        last = _rank(g) == p["samples_per_bin"] - 1
        self.sample_thr[g[last]] = np.minimum(self.sample_thr[g[last]], rows["priority"][sample][last])

    def flush(self) -> None:
        """Fold the rows proposed since the last flush into the kept rows (exact ``select`` over both)."""
        if self.pending:
            p = self.params
            self.rows = select(_concat(self.rows, *self.pending) if len(self.pending) > 1 else
                               _concat(self.rows, self.pending[0]), p["n_top"], p["samples_per_bin"], p["n_bins"])
            self.pending, self.n_pending = [], 0
            self._thresholds()

    def grow_sources(self, n: int) -> None:
        if n > self.by_source.shape[1]:
            extra = np.zeros((self.d_sae, n - self.by_source.shape[1]), np.int64)
            self.by_source = np.concatenate([self.by_source, extra], axis=1)

    def update(self, ctx: dict, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold in one batch: ``values`` / ``indices`` ``[n, k]`` of the counted tokens ``ctx["tok_row"]`` /
        ``ctx["tok_col"]`` (see ``build.batch_context`` for the rest of ``ctx``)."""
        p = self.params
        values_np, indices_np = values.numpy(), indices.numpy()
        e_tok, e_slot = np.nonzero(values_np > 0)
        feat = indices_np[e_tok, e_slot].astype(np.int64)
        act = values_np[e_tok, e_slot]
        row, col = ctx["tok_row"][e_tok], ctx["tok_col"][e_tok]
        doc = ctx["doc"][row]
        pos = (ctx["start"][row] + col - ctx["pad"][row]).astype(np.int32)
        src = ctx["src"][row]
        self.grow_sources(ctx["n_sources"])
        d, n_bins, n_src = self.d_sae, p["n_bins"], self.by_source.shape[1]
        self.count += np.bincount(feat, minlength=d)
        self.total += np.bincount(feat, weights=act.astype(np.float64), minlength=d)
        peak = torch.zeros(d).scatter_reduce_(0, torch.from_numpy(feat), torch.from_numpy(act), "amax").numpy()
        np.maximum(self.peak, peak, out=self.peak)
        b = activation_bins(act, p)
        for table, key in ((self.hist, feat * n_bins + b), (self.by_source, feat * n_src + src)):
            if table.size <= 1 << 22:
                table.reshape(-1)[:] += np.bincount(key, minlength=table.size)
            else:
                keys, counts = np.unique(key, return_counts=True)
                table.reshape(-1)[keys] += counts
        prio = priority(doc, pos, feat, p["seed"])
        group = feat * n_bins + b
        cand_top = np.flatnonzero(act >= self.top_thr[feat])
        cand_sample = np.flatnonzero(prio <= self.sample_thr[group])
        cand = np.concatenate([cand_top, cand_sample])
        kind = np.r_[np.full(len(cand_top), fmt.TOP, np.int8), np.full(len(cand_sample), fmt.SAMPLE, np.int8)]
        new = {"feature": feat[cand].astype(np.int32), "kind": kind, "bin": b[cand], "priority": prio[cand],
               "activation": act[cand], "document": doc[cand], "position": pos[cand], "source": src[cand],
               "center": np.full(len(cand), p["window"], np.int16), "_entry": cand}
        pre = select(new, p["n_top"], p["samples_per_bin"], n_bins)  # what of this batch can survive at all
        entry = pre.pop("_entry")
        if len(entry):
            pre["window"], pre["values"] = self._windows(ctx, row[entry], col[entry], feat[entry], e_tok, feat, act)
            self.pending.append(pre)
            self.n_pending += len(entry)
            self._thresholds(pre)
        if self.n_pending > max(len(self.rows["feature"]), 1 << 16):  # amortised: the kept rows at most double
            self.flush()

    def _windows(self, ctx, row, col, feat, e_tok, e_feat, act):
        """Token ids (-1 outside the chunk) and the feature's activation at each position of the windows, looked
        up among the batch's firing entries (sorted by (token, feature)), not by scanning each token's top-k."""
        w, d = self.params["window"], self.d_sae
        cols = col[:, None] + np.arange(-w, w + 1)
        r = row[:, None]
        width = ctx["input_ids"].shape[1]
        valid = (cols >= ctx["pad"][r]) & (cols < width)
        cc = np.clip(cols, 0, width - 1)
        window = np.where(valid, ctx["input_ids"][r, cc], -1).astype(np.int32)
        neighbour = np.where(valid, ctx["tok_index"][r, cc], -1)
        keys = e_tok.astype(np.int64) * d + e_feat
        order = np.argsort(keys, kind="stable")
        keys, vals = keys[order], act[order]
        query = neighbour * d + feat[:, None]
        at = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
        hit = (neighbour >= 0) & (keys[at] == query) if len(keys) else np.zeros(query.shape, bool)
        return window, np.where(hit, vals[at] if len(keys) else 0, 0).astype(np.float32)

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
        self.rows = select(_concat(self.rows, rows), p["n_top"], p["samples_per_bin"], p["n_bins"])
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
        ids = [np.unique(part.rows["window"]) for part in self.by_layer.values()]
        ids = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int32)
        return ids[ids >= 0]

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
