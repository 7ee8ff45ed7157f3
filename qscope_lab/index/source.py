"""What a corpus says about features, as one protocol: the feature index (``store.FeatureIndex``) and the
reference corpus (``analysis.reference.Reference``) both implement ``FeatureSource``, so a feature card, search
and hover labels read either without renaming a column.

One vocabulary: ``STAT_COLUMNS`` (also ``FeatureActs.feature_stats``'s), ``CONTEXT_COLUMNS`` (a context row),
``QUANTILE_COLUMNS`` and ``HISTOGRAM_COLUMNS``. ``top_tokens`` and ``quantile_pick`` are the one implementation
of what both compute the same way. No torch here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

STAT_COLUMNS = ("feature", "firing_count", "firing_rate", "max_activation", "mean_activation")
"""Per feature over counted tokens: how many times it fires, the share of counted tokens where it fires, its
largest activation and its mean activation where it fires (0 when it never fires)."""
CONTEXT_COLUMNS = ("activation", "document", "position", "token", "context", "boundary", "source", "tokens",
                   "values", "center")
"""A firing in its context: its activation, document (text index) and position there, the token shown whole
(``core.tokens.readable``), the context with the token in [[ ]], ``boundary`` (which byte token of a character
fired, or ''), the document's source, and the window: its tokens, the feature's values over it, the centre."""
QUANTILE_COLUMNS = ("interval", "lower", "upper") + CONTEXT_COLUMNS
HISTOGRAM_COLUMNS = ("bin", "lower", "upper", "count")


@runtime_checkable
class FeatureSource(Protocol):
    """A corpus's statistics of an SAE's features, layer by layer."""

    @property
    def name(self) -> str: ...  # what the tokens are, in a sentence: "indexed", "reference"

    def counted_tokens(self, layer: int) -> int: ...  # tokens the statistics are over (sink / specials skipped)

    def stats(self, layer: int) -> pd.DataFrame: ...  # one row per feature: STAT_COLUMNS first

    def feature_stats(self, layer: int, feature: int) -> dict: ...  # one feature's STAT_COLUMNS (and more)

    def top_contexts(self, layer: int, feature: int, n: int | None = None) -> pd.DataFrame: ...  # CONTEXT_COLUMNS

    def quantile_samples(self, layer: int, feature: int, intervals: int = 5,
                         per_interval: int | None = None) -> pd.DataFrame: ...  # QUANTILE_COLUMNS

    def histogram(self, layer: int, feature: int) -> pd.DataFrame: ...  # HISTOGRAM_COLUMNS, log-spaced bins

    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]: ...


def stat_frame(d_sae: int, count: np.ndarray, total: np.ndarray, peak: np.ndarray, tokens: int) -> pd.DataFrame:
    """``STAT_COLUMNS`` of every feature from its firing count, activation sum and maximum over ``tokens``."""
    count = np.asarray(count)
    return pd.DataFrame({"feature": np.arange(d_sae), "firing_count": count,
                         "firing_rate": count / max(int(tokens), 1), "max_activation": np.asarray(peak),
                         "mean_activation": np.where(count > 0, np.asarray(total) / np.maximum(count, 1), 0.0)})


def top_tokens(feature: np.ndarray, token: np.ndarray, activation: np.ndarray, n: int) -> dict[int, list[int]]:
    """Per feature, the ``n`` token ids carrying most of its activation (summed over its firings ``feature`` /
    ``token`` / ``activation``), strongest first; equal sums in token id order."""
    feature, token = np.asarray(feature, np.int64), np.asarray(token, np.int64)
    if not len(feature):
        return {}
    vocab = int(token.max()) + 1
    pairs, inverse = np.unique(feature * vocab + token, return_inverse=True)
    mass = np.bincount(inverse.reshape(-1), weights=np.asarray(activation, np.float64), minlength=len(pairs))
    f, t = np.divmod(pairs, vocab)
    order = np.lexsort((t, -mass, f))
    f, t = f[order], t[order]
    first = np.r_[True, f[1:] != f[:-1]]
    rank = np.arange(len(f)) - np.maximum.accumulate(np.where(first, np.arange(len(f)), 0))
    keep = rank < n
    out: dict[int, list[int]] = {}
    for fi, ti in zip(f[keep].tolist(), t[keep].tolist()):
        out.setdefault(fi, []).append(ti)
    return out


def context_string(window: list[str], center: int) -> str:
    """A window's tokens joined, the centre token in [[ ]]."""
    return "".join(window[:center]) + f"[[{window[center]}]]" + "".join(window[center + 1:])


def quantile_pick(hist: pd.DataFrame, bins: np.ndarray, priority: np.ndarray, intervals: int, per: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quantile samples of one feature: its histogram (``HISTOGRAM_COLUMNS``) cut into ``intervals`` intervals of
    about equal firing counts at bin edges (so weak firings show too, not only the peaks; 0 is the weakest), and
    of the candidate firings (their ``bins`` and a uniform hash ``priority``) the ``per`` smallest priorities of
    each interval. Returns (picked candidates, their interval, its lower and upper activation)."""
    none = np.zeros(0, np.int64)
    if hist.empty or not len(bins):
        return none, none, np.zeros(0), np.zeros(0)
    counts, hist_bins = hist["count"].to_numpy(), hist["bin"].to_numpy()
    mid = (np.cumsum(counts) - counts / 2) / counts.sum()
    q_of_bin = np.minimum((mid * intervals).astype(int), intervals - 1)
    q = q_of_bin[np.searchsorted(hist_bins, bins)]
    order = np.lexsort((priority, q))
    ranks = np.arange(len(order)) - np.searchsorted(q[order], q[order])
    pick = order[ranks < per]
    lower, upper = hist["lower"].to_numpy(), hist["upper"].to_numpy()
    low = np.array([lower[q_of_bin == i].min() for i in q[pick]], float)
    high = np.array([upper[q_of_bin == i].max() for i in q[pick]], float)
    return pick, q[pick], low, high


def quantile_frame(records: list[dict]) -> pd.DataFrame:
    """Quantile-sample rows (``QUANTILE_COLUMNS``), weakest interval first, strongest firing first in each."""
    records = sorted(records, key=lambda r: (r["interval"], -r["activation"]))
    return pd.DataFrame(records, columns=list(QUANTILE_COLUMNS))
