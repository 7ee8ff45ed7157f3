"""Mergeable partial statistics of a feature index: what one shard of documents (or the whole index) says.

Everything merges exactly and in any grouping: counts, sums (float64, added in shard order), maxima, histogram
and per-source counts add; the top-N contexts are the first N of each feature under one total order (activation
descending, then document, then position; with ``distinct_contexts`` only the first row of each window of text
counts), and the quantile samples are the bottom-S of a hash of (document,
position, feature) per histogram bin. A batch only proposes rows that beat the current N-th (or S-th) of their
feature and stay in its own top N (bottom S), so memory is the index's size whatever the corpus's. Proposed rows
wait, without windows, until a flush selects among them and the kept rows (``rows.select``); the windows of those
that stay are then cut from their batch's table and kept in a pool, gathered into row order when written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..base.atomic import write_atomic
from . import device, schema
from .hashes import file_digest, priority, priority_at, window_keys
from .rows import (
    ByToken,
    activation_bins,
    choose,
    concat,
    cut_windows,
    empty_rows,
    join_table,
    rank,
    select,
)

_MAX = np.iinfo(np.uint64).max


class LayerPartial:
    """One layer's statistics; ``update`` folds in a batch, ``merge`` another partial."""

    NEAR_CHUNK = 1 << 22  # the firings compared at a time to find those in windows (``_near_on``): 32 MB of int64
    PENDING = 4  # proposed rows wait for a flush until they are this many times the kept rows (see ``update``)

    def __init__(self, d_sae: int, params: dict, n_sources: int = 0, pending_bytes: int | None = None):
        self.d_sae, self.params = d_sae, params
        self.distinct = params["distinct_contexts"]  # top contexts: the strongest firing of each distinct window
        self.pending_bytes = pending_bytes  # a flush once the proposed rows and their tables hold this many bytes
        n_bins = params["n_bins"]
        self.count = np.zeros(d_sae, np.int64)
        self.total = np.zeros(d_sae, np.float64)
        self.peak = np.zeros(d_sae, np.float32)
        self.hist = np.zeros((d_sae, n_bins), np.int64)
        self.by_source = np.zeros((d_sae, n_sources), np.int64)
        self.keys: list[tuple[np.ndarray, np.ndarray]] = []  # (hist, by_source) flat keys not yet counted
        self.n_keys = 0
        self.rows = empty_rows()  # the kept rows' columns; their windows are in the pool, row i at rows["slot"][i]
        self.pool: list[tuple[np.ndarray, np.ndarray]] = []  # (token ids, values) windows, chunks in slot order
        self.pool_size = 0
        self.pending: list[dict] = []  # rows proposed by batches since the last flush, their windows not cut yet
        self.tables: list[tuple] = []  # per such batch, what cutting them needs (``rows.join_table``)
        self.n_pending = self.n_table = 0
        self._dev: device.DeviceTables | None = None  # the tables where the last batch's codes were (``update``)
        self._thresholds()

    def _thresholds(self) -> None:
        """The N-th best activation per feature and the S-th smallest priority per (feature, bin) of the kept
        rows: a new row must reach them to matter."""
        self._release()
        self.top_thr = np.full(self.d_sae, -np.inf, np.float32)
        self.sample_thr = np.full(self.d_sae * self.params["n_bins"], _MAX, np.uint64)
        rows, top = self.rows, self.rows["kind"] == schema.TOP
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
        if self._dev is not None:
            self._dev.set_thresholds(f, self.top_thr[f], g, self.sample_thr[g])

    def _batch_bars(self, feat, act, b, group, prio) -> tuple[np.ndarray, np.ndarray]:
        """The thresholds raised by bounds from this batch alone (when they are still low, so that sorting every
        firing is avoided): for each feature, the lowest activation among its firings in the top bins that hold
        n_top of them (at least n_top firings reach it); for each (feature, bin), a power-of-two bar on the hash
        that about 4 x samples_per_bin of its firings pass, kept where at least samples_per_bin do."""
        p, d = self.params, self.d_sae
        n_top, per_bin, n_bins = p["n_top"], p["samples_per_bin"], p["n_bins"]
        counts = np.bincount(group, minlength=d * n_bins)
        top_thr = self.top_thr
        if not self.distinct:  # (distinct: n_top firings may be fewer distinct windows, no bound from them)
            above = counts.reshape(d, n_bins)[:, ::-1].cumsum(axis=1)[:, ::-1]  # firings in a bin or higher
            top_bin = (above >= n_top).sum(axis=1) - 1  # -1: fewer than n_top firings
            inside = np.flatnonzero(b >= top_bin[feat])
            floor = torch.full((d,), np.inf).scatter_reduce_(0, torch.from_numpy(feat[inside]),
                                                             torch.from_numpy(act[inside]), "amin").numpy()
            floor[top_bin < 0] = -np.inf
            top_thr = np.maximum(top_thr, floor)
        shift = np.clip(np.floor(np.log2(np.maximum(counts, 1) / (4 * per_bin))), 0, 63).astype(np.uint64)
        bar = np.uint64(_MAX) >> shift
        passed = np.bincount(group[prio <= bar[group]], minlength=d * n_bins)
        bar[passed < per_bin] = _MAX
        return top_thr, np.minimum(self.sample_thr, bar)

    def flush(self) -> None:
        """Count the buffered firings, and fold the rows proposed since the last flush into the kept rows (exact
        ``select`` over both); the windows are cut for the proposed rows that stay, from their batch's table."""
        self._count()
        if not self.pending:
            return
        p = self.params
        new = concat(*self.pending)
        fresh = {name: new[name] for name in schema.ROW_COLUMNS}
        fresh["slot"] = -1 - np.arange(len(new["feature"]))  # < 0: a proposed row, no window yet
        rows = select(concat(self.rows, fresh), p["n_top"], p["samples_per_bin"], p["n_bins"], runs=True,
                      distinct=self.distinct)
        at = np.flatnonzero(rows["slot"] < 0)
        at = at[np.argsort(-1 - rows["slot"][at])]  # in proposal order: batch by batch
        j = -1 - rows["slot"][at]
        rows["slot"][at] = self.pool_size + np.arange(len(at))
        edges = np.searchsorted(new["batch"][j], np.arange(len(self.tables) + 1))
        for b in range(len(self.tables)):
            if edges[b + 1] > edges[b]:
                jj = j[edges[b]:edges[b + 1]]
                self.pool.append(cut_windows(self.tables[b], new["tok"][jj], new["feature"][jj], p["window"]))
        self.pool_size += len(at)
        self.rows = rows
        self.pending, self.tables, self.n_pending, self.n_table = [], [], 0, 0
        self._compact()
        self._thresholds()

    def _compact(self) -> None:
        """Drop the windows of rows no longer kept once they are most of the pool (memory stays the index's)."""
        if self.pool_size > 2 * len(self.rows["slot"]) + (1 << 16):
            self.windows()

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept rows' windows (token ids, values), in row order; the pool is compacted to them."""
        n, slot = len(self.rows["slot"]), self.rows["slot"]
        if not (len(self.pool) == 1 and self.pool_size == n and (slot == np.arange(n)).all()):
            width = 2 * self.params["window"] + 1
            chunks = self.pool or [(np.zeros((0, width), np.int32), np.zeros((0, width), np.float32))]
            self.pool = [tuple((part[0] if len(part) == 1 else np.concatenate(part)).take(slot, axis=0)
                               for part in zip(*chunks))]
            self.pool_size = n
            self.rows["slot"] = np.arange(n)
        return self.pool[0]

    def _count(self) -> None:
        """Add the buffered (feature, bin) and (feature, source) keys to the histogram and per-source counts: one
        bincount per table for many batches, so a batch costs its firings, not the d_sae x n_bins table; and
        the tables kept on a device are brought back."""
        self._release()
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
        ``ctx["tok_col"]`` (see ``shard.compute_shard`` for the rest of ``ctx``), on whatever device the SAE ran.

        On a device apart from the host (a GPU), the per-feature counts, sums, maxima, histogram and per-source
        counts are taken there, and so is the filter: only the candidate firings (at their feature's top
        threshold or under their (feature, bin)'s sample bar) come to the host, and of the other firings only
        those inside the windows of the rows proposed. On the CPU the codes are the host's already: numpy works on
        views of them (``update_host``, faster there than torch), nothing is copied. The state is bit for bit the
        same either way."""
        p, d, at = self.params, self.d_sae, values.device
        if not device.remote(at) or not device.exact_bins(p):  # (else the bins by the log10 formula: numpy's)
            self.update_host(ctx, values.float().cpu().numpy(), indices.cpu().numpy())
            return
        self.grow_sources(ctx["n_sources"])
        if self._dev is None or self._dev.device != at:
            self._release()
            self._dev = device.DeviceTables(self, at)
        dev, on, n_bins = self._dev, device.batch_on(ctx, at), p["n_bins"]
        values = values.float()
        fired = values > 0
        if bool(fired.all()):  # the usual case: k features fire at every token
            n, k = values.shape
            e_tok = torch.arange(n, device=at).repeat_interleave(k)  # each firing's counted token
            feat, act = indices.reshape(-1).long(), values.reshape(-1)
            flat = None  # each firing's place in the [n, k] codes: its own index
        else:
            flat = fired.reshape(-1).nonzero()[:, 0]
            e_tok = fired.nonzero()[:, 0]
            feat, act = indices[fired].long(), values[fired]
        ones = torch.ones_like(feat)
        dev.count.index_add_(0, feat, ones)
        dev.total += device.feature_sums(feat, act, d)
        dev.peak.scatter_reduce_(0, feat, act, "amax")
        b = device.activation_bins(act, p)
        group = feat * n_bins + b
        dev.hist.index_add_(0, group, ones)
        dev.by_source.index_add_(0, feat * self.by_source.shape[1] + on["tok_src"][e_tok], ones)
        prio = device.priority_bits(on["tok_key"][e_tok], feat, p["seed"])
        top_ok, sample_bar = act >= dev.top_thr[feat], dev.sample_thr
        if self.hist.size <= 4 * len(feat) and 2 * int(top_ok.sum()) > len(feat):
            top_bar, sample_bar = self._batch_bars_on(feat, act, b, group, prio)
            top_ok = act >= top_bar[feat]
        sample_ok = device.ule(prio, sample_bar[group])
        cand = (top_ok | sample_ok).nonzero()[:, 0]
        host = device.to_host
        # what crosses: per candidate its token, feature, activation and which filter it passed (13 bytes); the
        # bin and the hash are computed again on the host (the same functions, bit for bit)
        c_tok, c_feat = host(e_tok[cand].int()).astype(np.int64), host(feat[cand].int()).astype(np.int64)
        c_act, c_ok = host(act[cand]), host(top_ok[cand].to(torch.uint8) | (sample_ok[cand].to(torch.uint8) << 1))
        c_bin, c_prio = activation_bins(c_act, p), priority_at(ctx["tok_key"][c_tok], c_feat, p["seed"])

        def near(tok: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # the candidates are on the host already: only the other firings in the windows cross
            placed = cand if flat is None else flat[cand]
            o_tok, o_feat, o_act = self._near_on(ctx, on, tok, f, values, indices, fired, placed)
            return np.concatenate([c_tok, o_tok]), np.concatenate([c_feat, o_feat]), np.concatenate([c_act, o_act])

        self._propose(ctx, c_tok, c_feat, c_act, c_bin, c_prio, np.flatnonzero(c_ok & 1), np.flatnonzero(c_ok & 2),
                      near)

    def _batch_bars_on(self, feat, act, b, group, prio) -> tuple[torch.Tensor, torch.Tensor]:
        """``_batch_bars`` on the batch's device (the sample bars as int64 bits)."""
        p, d, dev = self.params, self.d_sae, self._dev
        assert dev is not None
        n_top, per_bin, n_bins = p["n_top"], p["samples_per_bin"], p["n_bins"]
        counts = torch.bincount(group, minlength=d * n_bins)
        top_thr = dev.top_thr
        if not self.distinct:  # (as ``_batch_bars``)
            above = counts.view(d, n_bins).flip(1).cumsum(1).flip(1)  # firings in a bin or higher
            top_bin = (above >= n_top).sum(1) - 1  # -1: fewer than n_top firings
            inside = b >= top_bin[feat]
            floor = torch.full((d,), np.inf, dtype=torch.float32, device=act.device)
            floor.scatter_reduce_(0, feat[inside], act[inside], "amin")
            floor[top_bin < 0] = -np.inf
            top_thr = torch.maximum(top_thr, floor)
        # floor(log2(max(count, 1) / (4 per_bin))) clipped to [0, 63], in integers: the exponent of count // (4 per_bin)
        q = torch.div(counts, 4 * per_bin, rounding_mode="floor")
        shift = (torch.frexp(q.double()).exponent.long() - 1).clamp(0, 63)
        bar = torch.where(shift == 0, -1, (torch.ones_like(shift) << (64 - shift).clamp(max=63)) - 1)
        passed = torch.bincount(group[device.ule(prio, bar[group])], minlength=d * n_bins)
        bar[passed < per_bin] = -1  # the uint64 maximum
        return top_thr, device.umin(dev.sample_thr, bar)

    def _near_on(self, ctx, on, tok, f, values, indices, fired, known) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of the batch's firings (``values`` / ``indices`` ``[n, k]`` on their device, ``fired`` where > 0), those
        inside the windows of the proposed rows (counted tokens ``tok``, features ``f``) but the ``known`` ones
        (places in the flat codes, on the host already): what cutting their windows reads of ``rows.join_table``
        (which keeps a superset: whole blocks of columns), in batch order, on the host."""
        w, at = self.params["window"], values.device
        n, k = values.shape
        n_rows, width = ctx["input_ids"].shape
        counted = torch.full((n_rows * width,), -1, dtype=torch.long, device=at)  # counted token at each place
        counted[on["tok_row"] * width + on["tok_col"]] = torch.arange(n, device=at)
        code = torch.where(fired, indices.long(), -1)
        tok_t, f_t = torch.from_numpy(tok).to(at), torch.from_numpy(f.astype(np.int64)).to(at)
        mark = torch.zeros(n * k, dtype=torch.bool, device=at)
        shift = torch.arange(-w, w + 1, device=at)
        step = max(1, self.NEAR_CHUNK // ((2 * w + 1) * k))  # proposed rows at a time
        for s in range(0, len(tok), step):
            t, ff = tok_t[s:s + step], f_t[s:s + step]
            col = on["tok_col"][t][:, None] + shift
            inside = (col >= 0) & (col < width)
            near = torch.where(inside, counted[(on["tok_row"][t][:, None] * width + col.clamp(0, width - 1))], -1)
            hit = (code[near.clamp_min(0)] == ff[:, None, None]) & (near >= 0)[:, :, None]
            slot = near.clamp_min(0)[:, :, None] * k + torch.arange(k, device=at)
            mark[slot[hit]] = True
        mark[known] = False
        at_ = mark.nonzero()[:, 0]  # in batch order
        host = device.to_host
        return (host((at_ // k).int()).astype(np.int64), host(indices.reshape(-1)[at_].int()).astype(np.int64),
                host(values.reshape(-1)[at_]))

    def update_host(self, ctx: dict, values_np: np.ndarray, indices_np: np.ndarray) -> None:
        """``update`` with numpy on the host, from every firing (the reference the device path equals; the path
        when the bins need the log10 formula)."""
        p, d = self.params, self.d_sae
        n_bins = p["n_bins"]
        fired = values_np > 0
        if fired.all():  # the usual case: k features fire at every token
            e_tok = np.repeat(np.arange(len(fired)), fired.shape[1])  # each firing's counted token
            feat, act = indices_np.reshape(-1).astype(np.int64, copy=False), values_np.reshape(-1)
        else:
            e_tok = np.repeat(np.arange(len(fired)), fired.sum(axis=1))
            feat, act = indices_np[fired].astype(np.int64, copy=False), values_np[fired]
        src = ctx["tok_src"][e_tok]
        self.grow_sources(ctx["n_sources"])
        self._release()
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
        prio = priority_at(ctx["tok_key"][e_tok], feat, p["seed"])
        top_ok, sample_bar = act >= self.top_thr[feat], self.sample_thr
        # the first batches, where nearly every firing would be a candidate (and the bounds cost less than that)
        if 2 * np.count_nonzero(top_ok) > len(feat) and self.hist.size <= 4 * len(feat):
            top_bar, sample_bar = self._batch_bars(feat, act, b, group, prio)
            top_ok = act >= top_bar[feat]
        self._propose(ctx, e_tok, feat, act, b, prio, np.flatnonzero(top_ok),
                      np.flatnonzero(prio <= sample_bar[group]), lambda tok, f: (e_tok, feat, act))

    def _propose(self, ctx, e_tok, feat, act, b, prio, top_ok, sample_ok, near) -> None:
        """Of a batch's candidate firings (``e_tok`` ... ``prio``; ``top_ok`` / ``sample_ok`` index them), propose
        what stays in this batch's own top N (bottom S), raising the thresholds by them; ``near(tok, f)``: the
        firings ``rows.join_table`` needs to cut their windows later."""
        # only what beats its feature's current N-th best (or S-th smallest priority) is a candidate, and only
        # what stays in this batch's own top N (bottom S) is proposed: windows are cut for those alone
        p, d = self.params, self.d_sae
        n_bins = p["n_bins"]
        if "tok_window_key" not in ctx:  # by raw ids where the batch came without (``shard`` gives text keys)
            ctx["tok_window_key"] = window_keys(ctx["tok_window"]) if self.distinct else \
                np.zeros(len(ctx["tok_window"]), np.uint64)  # (not read without distinct_contexts)
        entries = {"feature": feat, "activation": act, "bin": b, "priority": prio,  # document, position: for ties
                   "document": ByToken(ctx["tok_doc"], e_tok), "position": ByToken(ctx["tok_pos"], e_tok),
                   "window_key": ByToken(ctx["tok_window_key"], e_tok)}
        top, sample, sample_group = choose(entries, top_ok, sample_ok, p["n_top"], p["samples_per_bin"], n_bins,
                                           distinct=self.distinct)
        if not len(top) + len(sample):
            return
        self._tighten(feat[top], act[top], sample_group, prio[sample])
        entry = np.concatenate([top, sample])
        kind = np.zeros(len(entry), np.int8)
        kind[len(top):] = schema.SAMPLE
        tok = e_tok[entry]
        f = feat[entry]
        self.pending.append({
            "feature": f.astype(np.int32), "kind": kind, "bin": b[entry], "priority": prio[entry],
            "activation": act[entry], "document": ctx["tok_doc"][tok], "position": ctx["tok_pos"][tok],
            "source": ctx["tok_src"][tok], "window_key": ctx["tok_window_key"][tok],
            "center": np.full(len(entry), p["window"], np.int16), "batch": np.full(len(entry), len(self.tables)),
            "tok": tok})
        n_tok, n_feat, n_act = near(tok, f)
        self.tables.append(join_table(ctx, tok, f, n_tok, n_feat, n_act, d, p["window"]))
        self.n_pending += len(entry)
        self.n_table += len(self.tables[-1][-1])
        # amortised: a flush sorts the kept rows again, so it waits for PENDING times as many proposed ones;
        # those have no windows yet (some 50 bytes each, and their tables' firings 12 bytes each); a memory
        # budget caps them in bytes too (the result is the same whenever flushes happen: ``select`` is exact)
        limit = self.PENDING * max(len(self.rows["feature"]), 1 << 16)
        over = (self.pending_bytes is not None
                and PENDING_ROW_BYTES * self.n_pending + TABLE_BYTES * self.n_table > self.pending_bytes)
        if over or self.n_pending > limit or self.n_table > 2 * limit or len(self.tables) >= 256:
            self.flush()

    def release(self) -> None:
        """Bring the tables kept on a device back to the host's arrays (before pickling or handing the partial on)."""
        self._release()

    def _release(self) -> None:
        if self._dev is not None:
            self._dev.release(self)
            self._dev = None

    def __getstate__(self) -> dict:
        self._release()
        return self.__dict__

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
        rows = dict(other.rows, slot=other.rows["slot"] + self.pool_size)  # its pool goes after ours
        if len(source_map):
            rows["source"] = source_map[other.rows["source"]].astype(np.int16)
        self.pool += other.pool
        self.pool_size += other.pool_size
        p = self.params
        self.rows = select(concat(self.rows, rows), p["n_top"], p["samples_per_bin"], p["n_bins"], runs=True,
                           distinct=self.distinct)
        self._compact()
        self._thresholds()

    # ------------------------------------------------------------------ files
    def write(self, folder: Path) -> None:
        import pyarrow as pa

        folder.mkdir(parents=True, exist_ok=True)
        self.flush()
        rows, width = self.rows, 2 * self.params["window"] + 1
        window, values = self.windows()
        f = rows["feature"]
        length = np.bincount(f, minlength=self.d_sae)
        start = np.r_[0, np.cumsum(length)[:-1]]
        block = np.arange(self.d_sae) // schema.BLOCK
        block_start = start[np.minimum(block * schema.BLOCK, self.d_sae - 1)]
        columns = {name: pa.array(rows[name].astype(schema.ROW_COLUMNS[name], copy=False))
                   for name in schema.STORED_ROW_COLUMNS}
        for name, array in (("window", window), ("values", values)):
            flat = array.reshape(-1).astype(schema.WINDOW_COLUMNS[name], copy=False)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
        table = pa.table(columns)
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_file(str(folder / schema.CONTEXTS), table.schema, options=options) as writer:
            edges = np.r_[start[::schema.BLOCK], len(f)]
            for b in range(len(edges) - 1):
                writer.write_batch(table.slice(int(edges[b]), int(edges[b + 1] - edges[b])).combine_chunks()
                                   .to_batches()[0] if edges[b + 1] > edges[b] else
                                   pa.RecordBatch.from_pylist([], schema=table.schema))
        schema.write_stats(folder, feature=np.arange(self.d_sae), count=self.count, total=self.total, peak=self.peak,
                           batch=block, offset=start - block_start, length=length)
        for name, counts in ((schema.HISTOGRAM, self.hist), (schema.SOURCES, self.by_source)):
            schema.write_long(folder, name, counts)

    @classmethod
    def read(cls, folder: Path, d_sae: int, params: dict, n_sources: int, token_keys=None) -> LayerPartial:
        """The layer partial in ``folder``; ``token_keys`` (``core.tokens.TokenKeys``, the build's) turn the kept
        windows into the keys that keep top contexts distinct."""
        if params["distinct_contexts"] and token_keys is None:
            raise TypeError("reading a partial with distinct_contexts needs token_keys (the build's TokenKeys)")
        out = cls(d_sae, params, n_sources)
        stats = schema.read_table(folder / schema.STATS, columns=["count", "total", "peak"])
        out.count = stats.column("count").to_numpy().copy()
        out.total = stats.column("total").to_numpy().copy()
        out.peak = stats.column("peak").to_numpy().copy()
        for name, table in ((schema.HISTOGRAM, out.hist), (schema.SOURCES, out.by_source)):
            feature, x, count = schema.read_long(folder, name)
            table[feature, x.astype(np.int64)] = count
        reader = schema.open_contexts(folder / schema.CONTEXTS)
        try:
            table = reader.read_all()
        except Exception as err:
            raise schema.CorruptIndexError(f"{folder / schema.CONTEXTS} is corrupt ({type(err).__name__}: {err})") \
                from None
        width = 2 * params["window"] + 1
        rows = {name: table.column(name).to_numpy().astype(schema.ROW_COLUMNS[name])
                for name in schema.STORED_ROW_COLUMNS}
        rows["priority"] = priority(rows["document"], rows["position"], rows["feature"], params["seed"])
        out.pool = [tuple(table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, width).copy()
                          for name in schema.WINDOW_COLUMNS)]
        out.pool_size = len(rows["feature"])
        rows["slot"] = np.arange(out.pool_size)
        window = out.pool[0][0]
        rows["window_key"] = window_keys(token_keys(window) if token_keys is not None else window)
        out.rows = rows
        out._thresholds()
        return out


class Partial:
    """Statistics of some documents at every indexed layer, plus their sources and counted tokens."""

    def __init__(self, layers: list[int], d_sae: int, params: dict, pending_bytes: int | None = None):
        self.layers, self.d_sae, self.params = list(layers), d_sae, params
        self.by_layer = {layer: LayerPartial(d_sae, params, pending_bytes=pending_bytes) for layer in self.layers}
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
        windows = [part.windows()[0].reshape(-1) for part in self.by_layer.values()]
        top = max((int(w.max()) for w in windows if len(w)), default=-1)
        seen = np.zeros(top + 2, bool)  # a flag per id (-1, outside a chunk, flags the last): no sort
        for w in windows:
            seen[w] = True
        return np.flatnonzero(seen[:-1]).astype(np.int32)

    def write(self, folder: Path, *, tokens: tuple | None = None, state: dict | None = None) -> None:
        """Write atomically: into ``folder.tmp``, then renamed over ``folder``. ``tokens`` (ids, strings, bytes):
        a tokens.parquet written with it; ``state``: the index state's own fields (``schema.STATE_FIELDS``).
        partial.json lists every file with its size and sha256, and carries its own checksum."""
        tmp = _fresh(folder)
        for layer, part in self.by_layer.items():
            part.write(schema.layer_folder(tmp, layer))
        _seal(tmp, folder, self.meta(), tokens, state)

    def meta(self) -> dict:
        """The partial.json fields but ``files``: which layers, sources, tokens, documents, chunks and shards."""
        return dict(zip(schema.PARTIAL_FIELDS[:-1], (self.layers, self.sources, self.tokens_by_source,
                                                     self.documents, self.chunks, self.shards), strict=True))

    @classmethod
    def read(cls, folder: Path, d_sae: int, params: dict, verify: bool = True, layers=None,
             pending_bytes: int | None = None, token_keys=None) -> Partial:
        """The partial in ``folder``; ``layers``: only those (a layer group of a job under a memory budget);
        ``token_keys``: the build's ``TokenKeys`` (needed with distinct_contexts)."""
        meta = schema.check_partial(folder, verify=verify)
        if layers is not None:
            missing = sorted(set(layers) - set(meta["layers"]))
            if missing:
                raise schema.CorruptIndexError(f"{folder / schema.PARTIAL} has no layer(s) {missing}")
            meta["layers"] = [x for x in meta["layers"] if x in set(layers)]
        out = cls(meta["layers"], d_sae, params, pending_bytes)
        out.sources, out.tokens_by_source = list(meta["sources"]), list(meta["tokens_by_source"])
        out.documents, out.chunks, out.shards = meta["documents"], meta["chunks"], list(meta["shards"])
        out.by_layer = {layer: LayerPartial.read(schema.layer_folder(folder, layer), d_sae, params, len(out.sources),
                                                 token_keys) for layer in out.layers}
        for part in out.by_layer.values():
            part.pending_bytes = pending_bytes
        return out


def _fresh(folder: Path) -> Path:
    """An empty ``folder.tmp`` to write ``folder`` into."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _seal(tmp: Path, folder: Path, meta: dict, tokens: tuple | None, state: dict | None) -> None:
    """Finish a partial written into ``tmp`` (its tokens, partial.json listing every file with its size and
    sha256) and rename it over ``folder``."""
    if tokens is not None:
        schema.write_tokens(tmp, *tokens)
    files = {p.relative_to(tmp).as_posix(): (p.stat().st_size, file_digest(p))
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_atomic(tmp / schema.PARTIAL, json.dumps(schema.sealed({**meta, "files": files, **(state or {})})))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def assemble(folder: Path, layer_folders: dict[int, Path], meta: dict, *, tokens: tuple | None = None,
             state: dict | None = None) -> None:
    """Write the partial ``folder`` from layer folders written by separate passes (a job's layer groups), linked
    (copied where links fail), not read: what ``Partial.write`` of all of them at once writes."""
    tmp = _fresh(folder)
    for layer, source in layer_folders.items():
        target = schema.layer_folder(tmp, layer)
        target.mkdir()
        for item in sorted(Path(source).iterdir()):
            try:
                os.link(item, target / item.name)
            except OSError:
                shutil.copy2(item, target / item.name)
    _seal(tmp, folder, {**meta, "layers": list(layer_folders)}, tokens, state)


def window_token_ids(layer_folders) -> np.ndarray:
    """Every token id in a stored window of these layer folders (read one layer at a time)."""
    seen = np.zeros(1, bool)
    for folder in layer_folders:
        reader = schema.open_contexts(Path(folder) / schema.CONTEXTS)
        for b in range(reader.num_record_batches):
            w = reader.get_batch(b).column("window").flatten().to_numpy()
            if len(w):
                top = int(w.max()) + 2
                if top > len(seen):
                    seen = np.concatenate([seen, np.zeros(top - len(seen), bool)])
                seen[w] = True  # -1 (outside a chunk) flags the last entry, dropped below
    return np.flatnonzero(seen[:-1]).astype(np.int32)


# ---------------------------------------------------------------------- what a layer holds while indexed
ROW_BYTES = sum(np.dtype(t).itemsize for t in schema.ROW_COLUMNS.values()) + 8  # a kept row's columns + slot
PENDING_ROW_BYTES = ROW_BYTES + 16  # a proposed row: + its batch and token
TABLE_BYTES = 12  # a firing kept in a batch's join table (key, activation)


def layer_bytes(d_sae: int, params: dict, pending_bytes: int, n_sources: int = 8) -> dict:
    """An upper bound of what indexing one layer holds in memory, in bytes, by part: the per-feature tables
    (count, sum, max, thresholds, the d_sae x n_bins histogram and sample thresholds, per-source counts), the
    kept rows at their most (``n_top`` + ``samples_per_bin`` x ``n_bins`` per feature, each with its window),
    the window pool before compaction (twice the kept rows), the proposed rows (``pending_bytes``), the copy a
    flush or merge makes of them; and all of it twice, for the running state and the shard being folded in."""
    p = params
    n_bins, width = p["n_bins"], 2 * p["window"] + 1
    tables = d_sae * (n_bins * 8 * 2 + 8 + 8 + 4 + 4 + 8 * n_sources)
    rows = d_sae * (p["n_top"] + p["samples_per_bin"] * n_bins)
    kept = rows * (ROW_BYTES + width * 8)
    pool = rows * width * 8 + (1 << 16) * width * 8
    flush = rows * ROW_BYTES + 2 * pending_bytes  # select's copy of kept + proposed columns, the proposals
    one = tables + kept + pool + pending_bytes
    return {"tables": 2 * tables, "kept rows": 2 * kept, "window pool": 2 * pool, "pending": 2 * pending_bytes,
            "flush copy": flush, "total": 2 * one + flush}
