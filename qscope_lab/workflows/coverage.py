"""Benchmark redundancy and coverage in SAE feature space (REFERENCE section 2, "Evaluation").

The active set of a sample is ``F(x) = {f : a_f(x_last) > 0}``, the SAE features firing at its last token
(``position="all"``: the union over its counted tokens); the footprint of a benchmark is ``F(D)``, the union over
its samples. From it:

- the coverage curve ``c_n = E|F(S_n)| / |F(D)|`` over random subsets ``S_n`` of n samples: how fast a benchmark
  runs out of new features (a redundant one saturates early);
- the redundancy ``R_hat(D) = sum_n c_n / |F(D)|`` (see ``Footprint.redundancy`` for its normalisation);
- the overlap between benchmarks, asymmetric ``|F1 & F2| / |F1|`` and min-normalised
  ``|F1 & F2| / min(|F1|, |F2|)``;
- a greedy set-cover subset that keeps a given share of a benchmark's features with fewer samples.

Memory stays flat in the number of texts: texts are scanned in length-sorted batches and only each text's active
feature ids are kept (one CSR-like ``(indices, offsets)`` pair, int32 ids), never activations::

    fp = footprint(lab, texts, layer=2)          # Footprint
    fp.coverage_curve(), fp.redundancy(), fp.chart()
    asym, mins = overlap({"gsm8k": fp1, "math": fp2})
    select_subset(fp, fraction=0.95)
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..base.validate import as_texts
from ..core.scan import CHUNK, scan

if TYPE_CHECKING:
    from ..lab import Lab

POSITIONS = ("last", "all")


# ---------------------------------------------------------------------------------------------------- footprint
@dataclass(eq=False)
class Footprint:
    """Active SAE features of each text of a benchmark at one layer, stored CSR-like: text i's sorted feature
    ids are ``indices[offsets[i]:offsets[i + 1]]`` (int32). ``len(fp)`` is the number of texts; ``n_features``
    the size of the footprint ``|F(D)|``."""

    layer: int
    position: str
    d_sae: int
    indices: np.ndarray  # int32, every text's active features, text-major, sorted within a text
    offsets: np.ndarray  # int64, [n_texts + 1]

    def __post_init__(self):
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.indices) or (np.diff(self.offsets) < 0).any():
            raise ValueError("offsets must rise from 0 to len(indices)")
        self._features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __repr__(self) -> str:
        return (f"Footprint(layer={self.layer}, position={self.position!r}, texts={len(self)}, "
                f"features={self.n_features}, d_sae={self.d_sae})")

    @property
    def features(self) -> np.ndarray:
        """``F(D)``: the sorted ids of the features active in at least one text."""
        if self._features is None:
            self._features = np.unique(self.indices)
        return self._features

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def per_text(self) -> list[np.ndarray]:
        """``F(x)`` of each text: its sorted active feature ids (views into ``indices``)."""
        return np.split(self.indices, self.offsets[1:-1])

    @property
    def sizes(self) -> np.ndarray:
        """``|F(x)|`` per text."""
        return np.diff(self.offsets)

    def text_index(self) -> np.ndarray:
        """Entry of ``indices`` -> its text."""
        return np.repeat(np.arange(len(self)), self.sizes)

    def document_frequency(self) -> np.ndarray:
        """[d_sae] number of texts each feature is active in."""
        return np.bincount(self.indices, minlength=self.d_sae)

    def subset(self, texts: Sequence[int]) -> Footprint:
        """The footprint of some of the texts (in the order given), e.g. those ``select_subset`` picked."""
        texts = np.asarray(texts, dtype=np.int64).reshape(-1)
        if len(texts) and (texts.min() < -len(self) or texts.max() >= len(self)):
            raise IndexError(f"text index out of range 0..{len(self) - 1}")
        parts = [self.indices[self.offsets[i]:self.offsets[i + 1]] for i in texts % max(len(self), 1)]
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        return Footprint(self.layer, self.position, self.d_sae,
                         np.concatenate(parts) if parts else np.zeros(0, np.int32),
                         np.concatenate([[0], np.cumsum(sizes)]))

    def _check_nonempty(self) -> None:
        if len(self) == 0:
            raise ValueError("the benchmark has no texts")
        if self.n_features == 0:
            raise ValueError("no feature is active in any text of this benchmark: its coverage is undefined")

    # ------------------------------------------------------------------ coverage and redundancy
    def coverage_curve(self, n_orders: int = 20, seed: int = 0, exact: bool = False) -> pd.DataFrame:
        """``c_n = E|F(S_n)| / |F(D)|`` for n = 1..len(fp), as columns ``n, coverage`` (plus ``coverage_std``,
        the spread over the orders).

        The expectation over random subsets of size n is estimated with ``n_orders`` random orders of the texts
        (seeded): the first n texts of an order are a uniform random subset of size n. ``exact=True`` computes
        it in closed form instead: a feature active in m of the N texts is missed by a random n-subset with
        probability C(N-m, n) / C(N, n), so ``E|F(S_n)| = sum_f 1 - C(N-m_f, n) / C(N, n)``
        (``coverage_std`` is then 0). The curve is non-decreasing and ends at 1."""
        self._check_nonempty()
        n_texts = len(self)
        if exact:
            coverage, std = self._exact_curve(), np.zeros(n_texts)
        else:
            if n_orders < 1:
                raise ValueError(f"n_orders must be >= 1, got {n_orders}")
            rng = np.random.default_rng(seed)
            feats = torch.as_tensor(self.indices.astype(np.int64))
            owner = torch.as_tensor(self.text_index())
            curves = np.empty((n_orders, n_texts))
            for r in range(n_orders):
                rank = torch.as_tensor(rng.permutation(n_texts))  # rank[t]: where text t comes in this order
                first = torch.full((self.d_sae,), n_texts, dtype=torch.long).scatter_reduce_(
                    0, feats, rank[owner], reduce="amin")  # the rank at which each feature is first seen
                new = torch.bincount(first[first < n_texts], minlength=n_texts).numpy()
                curves[r] = np.cumsum(new) / self.n_features
            coverage, std = curves.mean(0), curves.std(0)
        return pd.DataFrame({"n": np.arange(1, n_texts + 1), "coverage": coverage, "coverage_std": std})

    def _exact_curve(self) -> np.ndarray:
        n_texts = len(self)
        df = self.document_frequency()
        m_values, m_counts = np.unique(df[df > 0], return_counts=True)
        n = np.arange(1, n_texts + 1, dtype=np.float64)
        missed = np.zeros(n_texts)
        log_all = _lgamma(n_texts + 1) - _lgamma(n_texts - n + 1)  # log of N! / (N-n)!
        block = max(1, min(256, 4_000_000 // n_texts))  # distinct document frequencies per block (<= 32 MB)
        for start in range(0, len(m_values), block):
            m = m_values[start:start + block, None].astype(np.float64)
            rest = n_texts - m  # texts without the feature
            ok = n[None, :] <= rest
            log_miss = _lgamma(rest + 1) - _lgamma(np.where(ok, rest - n[None, :], 0) + 1) - log_all[None, :]
            p = np.where(ok, np.exp(np.minimum(log_miss, 0.0)), 0.0)
            missed += (m_counts[start:start + block, None] * p).sum(0)
        coverage = (self.n_features - missed) / self.n_features
        coverage = np.maximum.accumulate(np.clip(coverage, 0.0, 1.0))
        coverage[-1] = 1.0
        return coverage

    def redundancy(self, normalize: str = "features", exact: bool = True, n_orders: int = 20,
                   seed: int = 0) -> float:
        """``R_hat(D) = sum_{n=1..N} c_n / |F(D)|``, exactly as REFERENCE section 2 writes it.

        Since ``c_n`` is already a share of ``|F(D)|`` (in (0, 1]), this is the area under the coverage curve
        divided once more by the footprint size: ``R_hat = N * AUC / |F(D)|``, with ``AUC = (1/N) sum_n c_n``.
        It rises when coverage saturates early (near-duplicates) and when the footprint is small, but it also
        grows with the number of texts N: compare benchmarks of equal size with it. ``normalize="texts"`` gives
        the size-free AUC ``(1/N) sum_n c_n`` in (0, 1] instead (1/N for disjoint texts, 1 when every text
        already carries the whole footprint), the normalisation natural for comparing benchmarks of different
        sizes. The curve is the exact expectation by default (deterministic); ``exact=False`` averages
        ``n_orders`` random orders as ``coverage_curve`` does."""
        if normalize not in ("features", "texts"):
            raise ValueError(f"normalize must be 'features' (REFERENCE) or 'texts' (AUC), got {normalize!r}")
        total = float(self.coverage_curve(n_orders=n_orders, seed=seed, exact=exact)["coverage"].sum())
        return total / (self.n_features if normalize == "features" else len(self))

    def chart(self, n_orders: int = 20, seed: int = 0, title: str | None = None):
        """Altair line chart of the coverage curve (band: +- one standard deviation over the random orders)."""
        from ..viz import charts

        if title is None:
            title = (f"coverage of {self.n_features} features, layer {self.layer} ({self.position} token), "
                     f"R_hat = {self.redundancy():.3g}")
        return charts.coverage_curve(self.coverage_curve(n_orders=n_orders, seed=seed), title)


def _lgamma(x) -> np.ndarray:
    return torch.lgamma(torch.as_tensor(x, dtype=torch.float64)).numpy()


def footprint(lab: Lab, texts, layer: int | Sequence[int], position: str = "last", batch_size: int = 16,
              max_length: int | None = 256, skip_first: bool = True, skip_special: bool = True,
              progress: bool | None = None, memory_budget=None) -> Footprint | dict[int, Footprint]:
    """The active SAE features of every text at ``layer``: one ``Footprint``, or ``{layer: Footprint}`` when
    ``layer`` is a list (one forward per batch serves all the layers).

    ``position="last"``: the features active (activation > 0) at the last counted token of each text, as in
    REFERENCE; ``"all"``: the union over all its counted tokens. Counted tokens are the real ones, without the
    first (the attention sink) if ``skip_first`` and without special tokens if ``skip_special``; a text with no
    counted token (a single token with ``skip_first``) has an empty active set. Texts longer than
    ``max_length`` tokens are cut to their first ``max_length`` (None: never), so "last" is the last token
    kept. ``texts``: a list of str or a DataFrame with a ``text`` column. A progress bar shows beyond 500 texts
    (``progress`` forces it on or off).

    ``memory_budget`` (bytes or "8GB"; default ``lab.memory_budget``): the layers' SAEs and footprints held at
    once. Layers are taken in groups that fit, one scan per group, each SAE read once (the same footprints as
    one scan of all layers); a budget too small for one layer is refused before any forward, with the numbers."""
    if position not in POSITIONS:
        raise ValueError(f"position must be 'last' or 'all', got {position!r}")
    single = isinstance(layer, numbers.Integral) and not isinstance(layer, bool)
    layers = [layer] if single else list(layer) if isinstance(layer, (list, tuple, range, np.ndarray)) else None
    if not layers:
        raise ValueError(f"layer must be an int or a non-empty list of ints, got {layer!r}")
    layers = list(dict.fromkeys(lab.check_layer(x) for x in layers))
    if isinstance(texts, pd.DataFrame):
        if "text" not in texts.columns:
            raise ValueError("a DataFrame of texts needs a 'text' column")
        texts = texts["text"].tolist()
    try:
        texts = as_texts(texts)
    except ValueError as err:
        if "no texts" in str(err):
            raise ValueError("the benchmark is empty: footprint needs at least one text") from None
        raise
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan, held = footprint_plan(lab, len(texts), layers, position, max_length, memory_budget)
    out = {}
    for group in plan.groups:
        saes = {x: held.pop(x) if x in held else lab.sae(x) for x in group}
        desc = "footprint" if len(plan.groups) == 1 else f"footprint (layers {group[0]}-{group[-1]})"
        for x, (ids, sizes) in _scan_group(lab, texts, saes, position, batch_size, max_length, skip_first,
                                           skip_special, progress, desc).items():
            out[x] = Footprint(x, position, saes[x].d_sae, np.concatenate(ids),
                               np.concatenate([[0], np.cumsum(np.concatenate(sizes))]))
        del saes
    return out[layers[0]] if single else {x: out[x] for x in layers}


def footprint_plan(lab: Lab, n_texts: int, layers, position: str = "last", max_length: int | None = 256,
                   memory_budget=None):
    """(layer plan, SAEs already read) of ``footprint``: per layer its SAE plus the int32 ids of each text's
    active features (k at the last token, at most k x ``max_length`` over all tokens); MemoryBudgetError before
    any work when one layer does not fit ``memory_budget`` (default ``lab.memory_budget``)."""
    from ..core import jobs

    k = (lab.saes.k if lab.saes is not None else None) or 64
    per_text = k if position == "last" else k * (max_length or 512)
    return jobs.plan_job(lab, list(layers), n_texts * per_text * 4, memory_budget=memory_budget, job="footprint")


def _scan_group(lab: Lab, texts: list[str], saes: dict, position: str, batch_size: int, max_length, skip_first,
                skip_special, progress, desc: str) -> dict:
    """One scan for the layers of ``saes``: per layer, (ids per chunk of texts, counts per chunk)."""
    layers = list(saes)
    # per layer and chunk of texts: their ids concatenated in text order, and their counts. Packed per chunk,
    # so no per-text objects outlive a chunk (thousands of small live arrays fragment the heap: peak RSS over
    # 2000 texts was 535 MB with them kept to the end, 500 MB packed; benchmarks/memory_bench.py)
    packed: dict[int, tuple[list, list]] = {x: ([], []) for x in layers}
    parts: dict[int, dict[int, np.ndarray]] = {x: {} for x in layers}
    start = 0  # first text of the chunk being filled (scan finishes a chunk before the next)
    for batch in scan(lab, texts, layers, batch_size, max_length, skip_first, skip_special, chunk=CHUNK,
                      progress=progress, desc=desc):
        for x in layers:
            parts[x].update(zip(batch.index.tolist(),
                                _active_sets(saes[x], batch.residuals[x], batch.counted, position)))
        stop = min(start + CHUNK, len(texts))
        if len(parts[layers[0]]) == stop - start:
            for x in layers:
                ordered = [parts[x][i] for i in range(start, stop)]
                packed[x][0].append(np.concatenate(ordered))
                packed[x][1].append(np.array([len(p) for p in ordered], dtype=np.int64))
            parts = {x: {} for x in layers}
            start = stop
    return packed


def _active_sets(sae, h: torch.Tensor, counted: torch.Tensor, position: str) -> list[np.ndarray]:
    """Per batch row, the sorted ids of the features with activation > 0 (last counted token, or any)."""
    n_rows, seq = counted.shape
    if position == "last":
        has = counted.any(1)
        last = seq - 1 - counted.flip(1).int().argmax(1)  # last counted column of each row
        rows = has.nonzero().squeeze(1)
        values, indices = sae.encode_sparse(h[rows, last[rows]])
        row_of = rows.unsqueeze(1).expand_as(indices)
    else:
        values, indices = sae.encode_sparse(h[counted])
        row_of = counted.nonzero()[:, 0].unsqueeze(1).expand_as(indices)
    keep = values > 0
    d_sae = sae.d_sae
    keys = torch.unique((row_of[keep] * d_sae + indices[keep]).cpu())  # sorted: by row, then feature
    row, feat = (keys // d_sae).numpy(), (keys % d_sae).numpy().astype(np.int32)
    bounds = np.searchsorted(row, np.arange(n_rows + 1))
    return [feat[bounds[r]:bounds[r + 1]] for r in range(n_rows)]


# ---------------------------------------------------------------------------------------------------- overlap
def overlap(footprints: dict[str, Footprint]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(asymmetric, min-normalised) overlap between benchmarks, rows and columns named by the dict keys.

    ``asym.loc[a, b] = |F_a & F_b| / |F_a|``: the share of row benchmark a's features that column benchmark b
    also covers (1 when b covers all of a, e.g. b a superset of a). Mind pandas' column-first indexing: the same
    value is ``asym[b][a]``. ``mins.loc[a, b] = |F_a & F_b| / min(|F_a|, |F_b|)`` is symmetric. A benchmark with
    no active feature gives NaN. All footprints must be of the same layer (feature ids of different layers or
    SAEs mean different things)."""
    if not isinstance(footprints, dict) or not footprints:
        raise ValueError("overlap needs a non-empty {name: Footprint} dict")
    for name, fp in footprints.items():
        if not isinstance(fp, Footprint):
            raise TypeError(f"{name!r} is a {type(fp).__name__}, not a Footprint")
    first = next(iter(footprints.values()))
    for name, fp in footprints.items():
        if (fp.layer, fp.d_sae) != (first.layer, first.d_sae):
            raise ValueError(f"{name!r} is a footprint of layer {fp.layer} (d_sae {fp.d_sae}), not layer "
                             f"{first.layer} (d_sae {first.d_sae}): feature ids are not comparable")
    if len({fp.position for fp in footprints.values()}) > 1:
        warnings.warn("comparing footprints taken at different positions ('last' and 'all')", stacklevel=2)
    names = list(footprints)
    member = np.zeros((len(names), first.d_sae), dtype=np.float32)
    for r, name in enumerate(names):
        member[r, footprints[name].features] = 1.0
    inter = member @ member.T  # |F_a & F_b|
    size = np.diag(inter).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        asym = np.where(size[:, None] > 0, inter / size[:, None], np.nan)
        low = np.minimum(size[:, None], size[None, :])
        mins = np.where(low > 0, inter / low, np.nan)
    index, columns = pd.Index(names, name="F1"), pd.Index(names, name="F2")
    return pd.DataFrame(asym, index=index, columns=columns), pd.DataFrame(mins, index=index, columns=columns)


def overlap_chart(frame: pd.DataFrame, title: str | None = None):
    """Altair heatmap of an overlap frame (rows F1, columns F2) with the values written in the cells."""
    from ..viz import charts

    return charts.overlap_heatmap(frame, title)


# ---------------------------------------------------------------------------------------------------- subset
def select_subset(fp: Footprint, fraction: float = 0.95, max_size: int | None = None) -> pd.DataFrame:
    """Greedy set cover: repeatedly pick the text that adds the most features not yet covered (ties: the lower
    index), until the chosen texts cover at least ``fraction`` of the benchmark's footprint ``|F(D)|`` (or
    ``max_size`` texts are chosen, or no text adds anything).

    One row per chosen text, in order: ``step`` (1..), ``text`` (its index in the benchmark), ``new_features``,
    ``n_features`` (cumulative) and ``coverage`` (cumulative share of ``|F(D)|``). Greedy is within a factor
    1 - 1/e of the best subset of the same size; lazy evaluation keeps it fast on large benchmarks."""
    import heapq

    if not isinstance(fp, Footprint):
        raise TypeError(f"select_subset takes a Footprint, not {type(fp).__name__}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    fp._check_nonempty()
    total = fp.n_features
    target = min(total, math.ceil(fraction * total - 1e-9))
    limit = len(fp) if max_size is None else min(max_size, len(fp))
    sets = fp.per_text
    covered = np.zeros(fp.d_sae, dtype=bool)
    heap = [(-len(s), i) for i, s in enumerate(sets) if len(s)]  # (-stale gain, text): gains only shrink
    heapq.heapify(heap)
    rows, n_covered = [], 0
    while heap and n_covered < target and len(rows) < limit:
        _, i = heapq.heappop(heap)
        gain = int((~covered[sets[i]]).sum())
        if gain == 0:
            continue
        if heap and (-gain, i) > heap[0]:  # stale: someone else may now add more
            heapq.heappush(heap, (-gain, i))
            continue
        covered[sets[i]] = True
        n_covered += gain
        rows.append({"step": len(rows) + 1, "text": i, "new_features": gain, "n_features": n_covered,
                     "coverage": n_covered / total})
    return pd.DataFrame(rows, columns=["step", "text", "new_features", "n_features", "coverage"])


# ---------------------------------------------------------------------------------------------------- report
def coverage_report(lab: Lab, benchmarks: dict[str, list[str]], layer: int, position: str = "last",
                    batch_size: int = 16, max_length: int | None = 256, n_orders: int = 20,
                    progress: bool | None = None, memory_budget=None) -> dict[str, pd.DataFrame]:
    """Footprint, overlap and coverage-curve tables of several benchmarks at one layer (what ``qscope-lab
    coverage`` writes): ``footprint`` (benchmark, layer, position, n_texts, n_features, redundancy, auc),
    ``overlap_asym``, ``overlap_min`` (F1 as a column, then one column per F2) and ``curve`` (benchmark, n,
    coverage, coverage_std)."""
    fps = {name: footprint(lab, texts, layer, position=position, batch_size=batch_size, max_length=max_length,
                           progress=progress, memory_budget=memory_budget) for name, texts in benchmarks.items()}
    summary, curves = [], []
    for name, fp in fps.items():
        empty = fp.n_features == 0
        summary.append({"benchmark": name, "layer": fp.layer, "position": fp.position, "n_texts": len(fp),
                        "n_features": fp.n_features,
                        "redundancy": np.nan if empty else fp.redundancy(),
                        "auc": np.nan if empty else fp.redundancy(normalize="texts")})
        if not empty:
            curves.append(fp.coverage_curve(n_orders=n_orders).assign(benchmark=name))
    asym, mins = overlap(fps)
    curve = (pd.concat(curves, ignore_index=True) if curves
             else pd.DataFrame(columns=["n", "coverage", "coverage_std", "benchmark"]))
    return {"footprint": pd.DataFrame(summary), "overlap_asym": asym.reset_index(),
            "overlap_min": mins.reset_index(), "curve": curve[["benchmark", "n", "coverage", "coverage_std"]]}
