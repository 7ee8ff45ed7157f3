"""The context rows an index keeps, and the batch-level work that proposes them, vectorised over whole batches.

A row is one firing (feature, document, position) kept as a top context (``kind`` TOP) or a quantile sample
(``kind`` SAMPLE), with its token window. ``select`` keeps the first ``n_top`` rows of each feature under one
total order (activation descending, then document, then position) and the ``per_bin`` smallest priorities of each
(feature, histogram bin) (then document, then position), so it is exact under any grouping of its input; with
``distinct`` a feature's top rows are first reduced to the strongest of each window of text (``window_key``). It sorts
one packed 64-bit key per row with ``np.sort`` (a lexsort over four columns costs ten times more) and breaks the
rare ties of that key with the full order. A row's window is cut only once it is sure to be kept for a while:
``join_table`` keeps what a batch's windows need (its firings near the proposed rows, sorted by feature and
position) and ``cut_windows`` reads a window as one run of them. ``activation_bins`` gives the histogram bin of
the log10 formula by a table lookup on the float32 bits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .schema import ROW_COLUMNS, SAMPLE, TOP, bins_formula

_MARK_LIMIT = 1 << 26  # (row, feature) flags above this many: the window join reads every firing instead


_SHIFT = 16  # float32 bit patterns >> _SHIFT: sign, exponent and the top 7 mantissa bits index the bin table
_NEAR = 1024  # float32 neighbours of each bin edge where the table's answers are checked against the formula


@lru_cache(maxsize=16)
def _bin_table(bpd: int, min_exponent: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(bin of the smallest float32 of each bit-pattern prefix, float32 ``start`` of each bin) for
    ``activation_bins``; None where the table would not reproduce ``bins_formula`` exactly.

    Each bin's start is the smallest float32 the formula puts in it or above (bisection over the bit patterns,
    the formula deciding). The table is exact if the formula never decreases as the activation grows and a
    prefix's floats (a 2**-7 relative range) span two bins at most; the first is checked around every start,
    the only places a rounding of log10 could break it (1024 floats further, log10 moves a thousand times more
    than its error), and the second at both ends of every prefix."""
    if not 1 <= bpd <= 1000:
        return None
    formula = (lambda u: bins_formula(np.asarray(u, np.uint32).view(np.float32), bpd, min_exponent, n))
    inf = 0x7F800000
    target = np.arange(1, n, dtype=np.int64)
    lo, hi = np.zeros(n - 1, np.int64), np.full(n - 1, inf, np.int64)
    for _ in range(32):  # the smallest pattern whose bin is >= target
        mid = (lo + hi) // 2
        up = formula(mid) >= target
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid + 1)
    starts = np.r_[0, hi, inf]  # bit patterns; bin b is [starts[b], starts[b + 1])
    near = (hi[:, None] + np.arange(-_NEAR, _NEAR + 1)).reshape(-1)
    near = near[(near >= 0) & (near <= inf)]
    if (formula(near) != np.searchsorted(starts[1:-1], near, "right")).any():
        return None
    first = np.arange((inf >> _SHIFT) + 1, dtype=np.int64) << _SHIFT  # every positive prefix, inf's included
    table = formula(first)
    if (formula(np.minimum(first + (1 << _SHIFT) - 1, inf)) - table > 1).any():
        return None
    full = np.zeros(1 << (32 - _SHIFT), np.int16)  # negative patterns: never asked (activations are positive)
    full[:len(table)] = table
    starts = starts.astype(np.uint32).view(np.float32)
    starts[-1] = np.nan  # the last bin has no next one (not even inf reaches it)
    return full, starts


def activation_bins(act: np.ndarray, params: dict) -> np.ndarray:
    """``bins_formula`` of positive activations, by a table lookup on the float32 bits and one comparison with
    the next bin's start (a third of the log10's time)."""
    bpd, lo, n = params["bins_per_decade"], params["min_exponent"], params["n_bins"]
    table = _bin_table(bpd, lo, n)
    if table is None:
        return bins_formula(act, bpd, lo, n)
    prefix, starts = table
    act = np.ascontiguousarray(act, np.float32)
    b = prefix[act.view(np.uint32) >> np.uint32(_SHIFT)]
    return b + (act >= starts[b + 1])


def empty_rows() -> dict:
    """No rows: every column of ``ROW_COLUMNS``, and ``slot`` (where a row's window is kept)."""
    return {name: np.zeros(0, dtype) for name, dtype in {**ROW_COLUMNS, "slot": np.int64}.items()}


def take(rows: dict, index: np.ndarray) -> dict:
    return {name: value.take(index, axis=0) for name, value in rows.items()}  # take: 4x a 2-d fancy index


class ByToken:
    """A column of a batch's firings read through each firing's token (``values[tok[index]]``), never built
    whole: documents and positions are only read for tied rows."""

    def __init__(self, values: np.ndarray, tok: np.ndarray):
        self.values, self.tok = values, tok

    def __getitem__(self, index):
        return self.values[self.tok[index]]


def concat(*parts: dict) -> dict:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def rank(groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal (sorted) group keys."""
    n = len(groups)
    if not n:
        return np.zeros(0, np.int64)
    first = np.empty(n, bool)
    first[0] = True
    np.not_equal(groups[1:], groups[:-1], out=first[1:])
    return np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))


def _argsort(key: np.ndarray, bits: int, ties=None, runs: bool = False) -> np.ndarray:
    """Indices sorting the uint64 ``key`` (below ``2**bits``) ascending, runs of equal keys ordered by
    ``ties(positions)`` (the tie-breaking columns at those positions, most significant first). When the key and the
    row number fit in 64 bits together they are sorted packed, with ``np.sort`` (vectorised: three times an
    argsort's speed; a merge sort when the keys come in a few sorted ``runs``); only the rare tied rows are
    lexsorted, and only their tie columns read."""
    n = len(key)
    shift = max(n - 1, 0).bit_length()
    if bits + shift <= 64:
        packed = np.sort((key << np.uint64(shift)) | np.arange(n, dtype=np.uint64), kind="stable" if runs else None)
        order = (packed & np.uint64((1 << shift) - 1)).astype(np.intp)
        k = packed >> np.uint64(shift)
    else:
        order = np.argsort(key)
        k = key[order]
    if ties is None:
        return order
    same = k[1:] == k[:-1]
    if same.any():
        run = np.zeros(n, bool)
        run[1:] = same
        run[:-1] |= same
        sub = order[run]
        order[run] = sub[np.lexsort(tuple(reversed(ties(sub))) + (key[sub],))]
    return order


def _bits(x: np.ndarray) -> int:
    return max(int(x.max()).bit_length(), 1) if len(x) else 1


def _top_order(rows: dict, index: np.ndarray, runs: bool = False) -> np.ndarray:
    """``index`` sorted by (feature, activation descending, document, position)."""
    f, a = rows["feature"][index].astype(np.uint64), rows["activation"][index]
    # activations are positive: their IEEE bits order them, and 31 bits hold them
    key = (f << np.uint64(31)) | (np.uint64(0x7FFFFFFF) - np.ascontiguousarray(a, np.float32).view(np.uint32))
    order = _argsort(key, _bits(f) + 31, lambda at: (rows["document"][index[at]], rows["position"][index[at]]), runs)
    return index[order]


def _sample_order(rows: dict, index: np.ndarray, n_bins: int, runs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``index`` sorted by (feature, bin, priority, document, position), and the (feature, bin) of each."""
    group = rows["feature"][index].astype(np.int64) * n_bins + rows["bin"][index]
    prio = rows["priority"][index]
    bits = _bits(group)
    kept = 64 - bits - max(len(index) - 1, 0).bit_length()  # bits of the hash that leave room for row numbers
    kept = kept if kept >= 16 else 64 - bits
    key = (group.astype(np.uint64) << np.uint64(kept)) | (prio >> np.uint64(64 - kept))  # the top of the hash
    order = _argsort(key, bits + kept,
                     lambda at: (prio[at], rows["document"][index[at]], rows["position"][index[at]]), runs)
    return index[order], group[order]


def _first_of_each_window(rows: dict, top: np.ndarray) -> np.ndarray:
    """Of ``top`` (in ``_top_order``), the rows whose (feature, ``window_key``) no earlier row has: the strongest
    firing of each distinct window of text. Exact under any grouping, like the order itself: a window's strongest
    firing is the strongest in whichever part holds it."""
    if len(top) < 2:
        return top
    feature, key = rows["feature"][top], rows["window_key"][top]
    order = np.lexsort((np.arange(len(top)), key, feature))  # equal (feature, key) together, earliest first
    first = np.ones(len(top), bool)
    first[1:] = (feature[order][1:] != feature[order][:-1]) | (key[order][1:] != key[order][:-1])
    keep = np.zeros(len(top), bool)
    keep[order[first]] = True
    return top[keep]


def choose(rows: dict, top: np.ndarray, sample: np.ndarray, n_top: int, per_bin: int, n_bins: int,
           runs: bool = False, distinct: bool = False):
    """Of the rows ``top`` and ``sample`` (indices into the columns ``rows``), the first ``n_top`` per feature
    (``distinct``: of distinct windows) and the first ``per_bin`` per (feature, bin), each list in its order; and
    the (feature, bin) of each sample."""
    top = _top_order(rows, top, runs)
    if distinct:
        top = _first_of_each_window(rows, top)
    top = top[rank(rows["feature"][top]) < n_top]
    sample, group = _sample_order(rows, sample, n_bins, runs)
    keep = rank(group) < per_bin
    return top, sample[keep], group[keep]


def select(rows: dict, n_top: int, per_bin: int, n_bins: int, runs: bool = False, distinct: bool = False) -> dict:
    """The rows an index keeps: top ``n_top`` per feature (``distinct``: of distinct windows), bottom-``per_bin``
    priorities per (feature, bin); in stored order (feature, kind, then activation desc / (bin, priority)).
    ``runs``: the rows are a few stretches in that order (kept rows, then batches' proposals), merged rather than
    sorted afresh."""
    top, sample, _ = choose(rows, np.flatnonzero(rows["kind"] == TOP), np.flatnonzero(rows["kind"] == SAMPLE),
                            n_top, per_bin, n_bins, runs, distinct)
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
               e_act: np.ndarray, d_sae: int, w: int) -> tuple:
    """What cutting the windows (``w`` tokens either side) of some of a batch's firings (counted tokens ``tok``,
    features ``feat``) needs later: the batch's token windows and positions, and the firings of the same features
    near them, sorted by (feature, chunk, column): the values of a window are then one run of them. "Near" is
    in the same block of ``2w + 1`` columns as one end of a window (so a window spans two blocks at most)."""
    n_rows, width = ctx["input_ids"].shape
    tok_row, tok_col = ctx["tok_row"], ctx["tok_col"]
    flat = tok_row * width + tok_col  # position in the padded batch
    span = 2 * w + 1
    blocks = -(-width // span)
    if n_rows * blocks * d_sae > _MARK_LIMIT:
        span, blocks = width, 1  # whole chunks, or no filter at all below
    if n_rows * blocks * d_sae <= _MARK_LIMIT:
        wanted = np.zeros(n_rows * blocks * d_sae, bool)
        row, col = tok_row[tok] * blocks, tok_col[tok]
        wanted[(row + np.maximum(col - w, 0) // span) * d_sae + feat] = True
        wanted[(row + np.minimum(col + w, width - 1) // span) * d_sae + feat] = True
        block = tok_row * blocks + tok_col // span
        pick = np.flatnonzero(wanted[block[e_tok] * d_sae + e_feat])
        e_tok, e_feat, e_act = e_tok[pick], e_feat[pick], e_act[pick]
    key = e_feat.astype(np.uint64) * np.uint64(n_rows * width) + flat[e_tok].astype(np.uint64)
    order = _argsort(key, _bits(key))
    return ctx["tok_window"], flat, tok_col, n_rows, width, key[order].astype(np.int64), e_act[order]


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
        values.reshape(-1)[owner * (2 * w + 1) + (key[at] - centre[owner] + w)] = act[at]
    return tok_window.take(tok, axis=0), values
