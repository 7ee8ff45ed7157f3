"""The index's per-batch work where the SAE codes are, on a device apart from the host (a GPU): per-feature
counts, sums, maxima, histogram and per-source counts, and the filter that leaves only the candidate firings to copy
to the host (``LayerPartial.update``; on the CPU, numpy does the same work on views of the codes).

Everything here computes bit for bit what the host's numpy computes (``hashes.priority_at``,
``rows.activation_bins``, ``np.bincount``): the uint64 hashes are done on int64 bits (multiplication and xor wrap
alike, right shifts are masked to be logical, comparisons flip the sign bit), the bins by the same float32-bits
table. The tables are kept on the device and folded back into the host's arrays when the host needs them
(``DeviceTables.release``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .rows import _SHIFT, _bin_table

AS_IF_REMOTE = False  # tests: treat the CPU as a device apart (copies kept in step, segment sums, picked firings)
SIGN = -(1 << 63)  # int64 bits of uint64 values xor this compare as the unsigned values do


def bits(x: int) -> int:
    """The int64 with the bits of the uint64 ``x``."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 copies the sign bit)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def ule(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a <= b`` of the uint64 values whose bits the int64 ``a`` and ``b`` hold."""
    return (a ^ SIGN) <= (b ^ SIGN)


def umin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise minimum of uint64 values held as int64 bits."""
    return torch.minimum(a ^ SIGN, b ^ SIGN) ^ SIGN


def priority_bits(key: torch.Tensor, feature: torch.Tensor, seed: int) -> torch.Tensor:
    """``hashes.priority_at`` on int64 tensors: the bits of the uint64 hash."""
    x = key ^ (feature * bits(0xD6E8FEB86659FD93) + seed)
    x = x ^ _srl(x, 30)
    x = x * bits(0xBF58476D1CE4E5B9)
    x = x ^ _srl(x, 27)
    x = x * bits(0x94D049BB133111EB)
    return x ^ _srl(x, 31)


@lru_cache(maxsize=16)
def _tables_on(bpd: int, min_exponent: int, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    table = _bin_table(bpd, min_exponent, n)
    if table is None:
        return None
    prefix, starts = table
    return torch.from_numpy(prefix.astype(np.int64)).to(device), torch.from_numpy(starts).to(device)


def exact_bins(params: dict) -> bool:
    """Whether ``activation_bins`` can be computed on a device (else the log10 formula decides, on the host)."""
    return _bin_table(params["bins_per_decade"], params["min_exponent"], params["n_bins"]) is not None


def activation_bins(act: torch.Tensor, params: dict) -> torch.Tensor:
    """``rows.activation_bins`` of positive float32 activations on their device (int64); needs ``exact_bins``."""
    tables = _tables_on(params["bins_per_decade"], params["min_exponent"], params["n_bins"], str(act.device))
    assert tables is not None
    prefix, starts = tables
    b = prefix[(act.contiguous().view(torch.int32) >> _SHIFT).long()]
    return b + (act >= starts[b + 1])


def remote(at: torch.device) -> bool:
    """Whether tensors on ``at`` are apart from the host's arrays (a copy crosses to reach them)."""
    return at.type != "cpu" or AS_IF_REMOTE


def feature_sums(feat: torch.Tensor, act: torch.Tensor, d: int) -> torch.Tensor:
    """Per feature the float64 sum of its activations: each feature's firings (a stable sort keeps their batch
    order) summed by one segment reduction, not by atomics in whatever order threads come, so the same bits on
    every run (on the CPU, numpy's bits: added one by one in batch order)."""
    order = torch.sort(feat, stable=True).indices
    return torch.segment_reduce(act.double()[order], "sum", lengths=torch.bincount(feat, minlength=d), unsafe=True)


def batch_on(ctx: dict, device: torch.device) -> dict:
    """What every layer's filter reads of a batch's counted tokens, on ``device`` (uploaded once per batch): the
    (document, position) part of the hash, the source, the chunk row and column."""
    cache = ctx.setdefault("on_device", {})
    key = str(device)
    if key not in cache:
        def to(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device).long()

        cache[key] = {"tok_key": to(ctx["tok_key"].view(np.int64)), "tok_src": to(ctx["tok_src"]),
                      "tok_row": to(ctx["tok_row"]), "tok_col": to(ctx["tok_col"])}
    return cache[key]


def to_host(t: torch.Tensor) -> np.ndarray:
    """The one way a tensor of the filter reaches the host (a copy from the device)."""
    return t.cpu().numpy()


class DeviceTables:
    """A layer's per-feature tables where its codes are: counts, histogram, per-source counts and maxima
    accumulate from zero, the float64 sums continue from the host's (so they are added in the same order), the
    thresholds are copies kept in step (``LayerPartial._tighten``); ``release`` folds it all into the host's
    arrays."""

    def __init__(self, part, device: torch.device):
        self.device = device

        def zeros(n: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(n, dtype=dtype, device=device)

        self.count, self.peak = zeros(part.d_sae, torch.int64), zeros(part.d_sae, torch.float32)
        self.hist, self.by_source = zeros(part.hist.size, torch.int64), zeros(part.by_source.size, torch.int64)
        self.total = torch.from_numpy(part.total).to(device, copy=True)
        self.top_thr = torch.from_numpy(part.top_thr).to(device, copy=True)
        self.sample_thr = torch.from_numpy(part.sample_thr.view(np.int64)).to(device, copy=True)
        self.by_source_shape = part.by_source.shape

    def release(self, part) -> None:
        """Fold what accumulated here into the host's arrays."""
        assert part.by_source.shape == self.by_source_shape
        part.count += to_host(self.count)
        part.hist += to_host(self.hist).reshape(part.hist.shape)
        part.by_source += to_host(self.by_source).reshape(part.by_source.shape)
        np.maximum(part.peak, to_host(self.peak), out=part.peak)
        part.total[:] = to_host(self.total)

    def set_thresholds(self, top_at: np.ndarray, top: np.ndarray, sample_at: np.ndarray, sample: np.ndarray) -> None:
        """Copy raised thresholds (the host's new values at those places) to the device."""
        if not (len(top_at) or len(sample_at)):
            return

        def to(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.top_thr[to(top_at.astype(np.int64))] = to(top)
        self.sample_thr[to(sample_at.astype(np.int64))] = to(sample.view(np.int64))
