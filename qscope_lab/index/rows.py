"""The context rows an index keeps, and the batch-level work that proposes them, vectorised over a whole batch.

A row is one firing (feature, document, position) kept as a top context (``kind`` TOP) or a quantile sample
(``kind`` SAMPLE), with its token window. ``select`` keeps the first ``n_top`` rows of each feature under one
total order (activation descending, then document, then position) and the ``per_bin`` smallest priorities of each
(feature, histogram bin) (then document, then position), so it is exact under any grouping of its input. It sorts
one 64-bit key per row (a lexsort over four columns costs ten times more) and breaks the rare ties of that key
with the full order. ``windows`` joins a batch's chosen rows with the batch's firing entries of the same feature
and row, so its cost follows the rows chosen and the firings found, not the window width times a search.
"""

from __future__ import annotations

import numpy as np

from ..core import feature_index as fmt

ROW_FIELDS = {"feature": np.int32, "kind": np.int8, "bin": np.int16, "priority": np.uint64,
              "activation": np.float32, "document": np.int64, "position": np.int32, "source": np.int16,
              "center": np.int16}
_MARK_LIMIT = 1 << 26  # (row, feature) flags above this many: the window join reads every firing instead


def activation_bins(act: np.ndarray, params: dict) -> np.ndarray:
    bpd, n = params["bins_per_decade"], params["n_bins"]
    with np.errstate(divide="ignore"):
        b = np.floor(np.log10(act.astype(np.float64)) * bpd) - params["min_exponent"] * bpd
    return np.clip(b, 0, n - 1).astype(np.int16)


def empty_rows(width: int) -> dict:
    rows = {name: np.zeros(0, dtype) for name, dtype in ROW_FIELDS.items()}
    rows["window"] = np.zeros((0, width), np.int32)
    rows["values"] = np.zeros((0, width), np.float32)
    return rows


def take(rows: dict, index: np.ndarray) -> dict:
    return {name: value[index] for name, value in rows.items()}


def concat(*parts: dict) -> dict:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def rank(groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal (sorted) group keys."""
    if not len(groups):
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _argsort(key: np.ndarray, bits: int, *ties: np.ndarray) -> np.ndarray:
    """Indices sorting the uint64 ``key`` (below ``2**bits``) ascending, runs of equal keys ordered by ``ties``
    (most significant first). When the key and the row number fit in 64 bits together they are sorted packed,
    with ``np.sort`` (vectorised: three times an argsort's speed); the rare tied rows alone are lexsorted."""
    n = len(key)
    shift = max(n - 1, 0).bit_length()
    if bits + shift <= 64:
        packed = np.sort((key << np.uint64(shift)) | np.arange(n, dtype=np.uint64))
        order = (packed & np.uint64((1 << shift) - 1)).astype(np.intp)
        k = packed >> np.uint64(shift)
    else:
        order = np.argsort(key)
        k = key[order]
    same = k[1:] == k[:-1]
    if same.any():
        run = np.zeros(n, bool)
        run[1:] = same
        run[:-1] |= same
        sub = order[run]
        order[run] = sub[np.lexsort(tuple(t[sub] for t in reversed(ties)) + (key[sub],))]
    return order


def _bits(x: np.ndarray) -> int:
    return max(int(x.max()).bit_length(), 1) if len(x) else 1


def _top_order(rows: dict, index: np.ndarray) -> np.ndarray:
    """``index`` sorted by (feature, activation descending, document, position)."""
    f, a = rows["feature"][index].astype(np.uint64), rows["activation"][index]
    # activations are positive: their IEEE bits order them, and 31 bits hold them
    key = (f << np.uint64(31)) | (np.uint64(0x7FFFFFFF) - np.ascontiguousarray(a, np.float32).view(np.uint32))
    return index[_argsort(key, _bits(f) + 31, rows["document"][index], rows["position"][index])]


def _sample_order(rows: dict, index: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``index`` sorted by (feature, bin, priority, document, position), and the (feature, bin) of each."""
    group = rows["feature"][index].astype(np.int64) * n_bins + rows["bin"][index]
    prio = rows["priority"][index]
    bits = _bits(group)
    kept = 64 - bits - max(len(index) - 1, 0).bit_length()  # bits of the hash that leave room for row numbers
    kept = kept if kept >= 16 else 64 - bits
    key = (group.astype(np.uint64) << np.uint64(kept)) | (prio >> np.uint64(64 - kept))  # the top of the hash
    order = _argsort(key, bits + kept, prio, rows["document"][index], rows["position"][index])
    return index[order], group[order]


def choose(rows: dict, top: np.ndarray, sample: np.ndarray, n_top: int, per_bin: int, n_bins: int):
    """Of the rows ``top`` and ``sample`` (indices into the columns ``rows``), the first ``n_top`` per feature and
    the first ``per_bin`` per (feature, bin), each list in its order; and the (feature, bin) of each sample."""
    top = _top_order(rows, top)
    top = top[rank(rows["feature"][top]) < n_top]
    sample, group = _sample_order(rows, sample, n_bins)
    keep = rank(group) < per_bin
    return top, sample[keep], group[keep]


def select(rows: dict, n_top: int, per_bin: int, n_bins: int) -> dict:
    """The rows an index keeps: top ``n_top`` per feature, bottom-``per_bin`` priorities per (feature, bin);
    in stored order (feature, kind, then activation desc / (bin, priority))."""
    top, sample, _ = choose(rows, np.flatnonzero(rows["kind"] == fmt.TOP), np.flatnonzero(rows["kind"] == fmt.SAMPLE),
                            n_top, per_bin, n_bins)
    # both lists are sorted by feature: a feature's top rows go before its samples
    tf, sf = rows["feature"][top], rows["feature"][sample]
    keep = np.empty(len(top) + len(sample), np.int64)
    keep[np.arange(len(top)) + np.searchsorted(sf, tf, "left")] = top
    keep[np.arange(len(sample)) + np.searchsorted(tf, sf, "right")] = sample
    return take(rows, keep)


def token_windows(input_ids: np.ndarray, pad: np.ndarray, tok_row: np.ndarray, tok_col: np.ndarray,
                  w: int) -> np.ndarray:
    """``[n_counted, 2w + 1]``: the token ids around each counted token of a batch, -1 outside its chunk (cut
    once per batch for every layer)."""
    width = input_ids.shape[1]
    cols = tok_col[:, None] + np.arange(-w, w + 1)
    valid = (cols >= pad[tok_row][:, None]) & (cols < width)
    window = input_ids.reshape(-1)[tok_row[:, None] * width + np.clip(cols, 0, width - 1)]
    return np.where(valid, window, -1).astype(np.int32)


def join_table(ctx: dict, tok: np.ndarray, feat: np.ndarray, e_tok: np.ndarray, e_feat: np.ndarray,
               e_act: np.ndarray, d_sae: int) -> tuple:
    """What cutting the windows of some of a batch's firings (counted tokens ``tok``, features ``feat``) needs
    later: the batch's token windows and positions, and its firings of the (chunk, feature) pairs asked for,
    sorted by (feature, chunk, column): the values of a window are then one run of them."""
    n_rows, width = ctx["input_ids"].shape
    flat = ctx["tok_row"] * width + ctx["tok_col"]  # position in the padded batch
    if n_rows * d_sae <= _MARK_LIMIT:
        wanted = np.zeros(n_rows * d_sae, bool)
        wanted[ctx["tok_row"][tok] * d_sae + feat] = True
        pick = np.flatnonzero(wanted[ctx["tok_row"][e_tok] * d_sae + e_feat])
        e_tok, e_feat, e_act = e_tok[pick], e_feat[pick], e_act[pick]
    key = e_feat.astype(np.uint64) * np.uint64(n_rows * width) + flat[e_tok].astype(np.uint64)
    order = _argsort(key, _bits(key))
    return ctx["tok_window"], flat, ctx["tok_col"], n_rows, width, key[order].astype(np.int64), e_act[order]


def cut_windows(table: tuple, tok: np.ndarray, feat: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (-1 outside the chunk) and the feature's activation (0 where it does not fire) at each position
    of the windows around counted tokens ``tok`` of a batch whose ``join_table`` is ``table``."""
    tok_window, flat, tok_col, n_rows, width, key, act = table
    col = tok_col[tok].astype(np.int64)
    centre = feat.astype(np.int64) * (n_rows * width) + flat[tok]
    lo = np.searchsorted(key, centre - np.minimum(col, w), "left")
    n = np.searchsorted(key, centre + np.minimum(width - 1 - col, w), "right") - lo
    values = np.zeros((len(tok), 2 * w + 1), np.float32)
    total = int(n.sum())
    if total:
        owner = np.repeat(np.arange(len(tok)), n)
        at = np.arange(total) + np.repeat(lo - (np.cumsum(n) - n), n)
        values[owner, key[at] - centre[owner] + w] = act[at]
    return tok_window[tok], values
