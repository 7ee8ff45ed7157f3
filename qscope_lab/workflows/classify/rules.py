"""The rules a seed classifier holds, fitted on per-text statistics of the seeds (numpy only, no model here).

- ``"any"`` (the report's rule): a feature fires in a text when its largest activation exceeds ``eps``; features
  are ranked by delta = P(fires | positive) - P(fires | negative); a text is positive if ANY selected one fires.
- ``"rate"`` (share of counted tokens where the feature fires) and ``"mean"`` (mean activation over counted
  tokens): each feature gets the threshold and side that best separate the seeds (balanced accuracy, ties to the
  widest gap between neighbouring seed values); a text is positive when most selected features vote so (a tie
  goes to the first). In a long text almost every feature fires somewhere, so "any" loses precision; a rate or
  a mean keeps it.

With more than ``LOO_MAX`` seeds and ``SHORTLIST`` firing features, the threshold search runs on the
``SHORTLIST`` whose class means differ most (in units of their spread), computed on the same seeds.

Model selection (layer, statistic, K) is cross-validation over the seeds only: leave-one-out up to
``LOO_MAX`` seeds, ten stratified folds beyond; each fold ranks and thresholds on its own training seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STATISTICS = ("rate", "mean", "any")  # also the order ties are broken in
TOP_KS = (1, 3, 5)
LOO_MAX = 64
SHORTLIST = 256  # columns whose thresholds are searched (by standardized mean difference, on the fold's seeds)


@dataclass
class Ranking:
    """Columns of a statistic matrix, best first, with each one's threshold, side (+1: positive above it) and
    seed score (balanced accuracy for rate / mean, delta for any)."""

    order: np.ndarray
    thresholds: np.ndarray
    directions: np.ndarray
    scores: np.ndarray
    scales: np.ndarray


def _best_cuts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per column of ``x [n, F]``: (score, threshold, direction) of the best single threshold on labels ``y``."""
    n, width = x.shape
    order = np.argsort(x, axis=0, kind="stable")
    xs, ys = np.take_along_axis(x, order, 0), y[order]
    n_pos, n_neg = int(y.sum()), int(n - y.sum())
    below_pos, below_neg = np.cumsum(ys, 0)[:-1], np.cumsum(~ys, 0)[:-1]  # at or below cut i (i = 0..n-2)
    up = ((n_pos - below_pos) / n_pos + below_neg / n_neg) / 2  # positive above the cut
    valid = xs[1:] > xs[:-1]
    up = np.where(valid, up, 0.5)
    down = np.where(valid, 1.0 - up, 0.5)
    gap = (xs[1:] - xs[:-1]) / (x.std(0) + 1e-9)
    tie = 1e-6 * np.minimum(gap, 10.0)  # below one seed's worth of balanced accuracy: only breaks ties
    best_up, best_down = up + tie, down + tie
    i_up, i_down = best_up.argmax(0), best_down.argmax(0)
    cols = np.arange(width)
    use_up = best_up[i_up, cols] >= best_down[i_down, cols]
    cut = np.where(use_up, i_up, i_down)
    score = np.where(use_up, best_up[i_up, cols], best_down[i_down, cols])
    threshold = (xs[cut, cols] + xs[cut + 1, cols]) / 2 if n > 1 else np.zeros(width)
    return score, threshold, np.where(use_up, 1, -1)


def rank(x: np.ndarray, y: np.ndarray, statistic: str, eps: float = 0.0, drop_always_on=True,
         peak: np.ndarray | None = None) -> Ranking:
    """Rank the columns of ``x`` (the statistic per seed text) for ``statistic`` on labels ``y``."""
    if statistic == "any":
        fires = x > eps
        n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
        pos_rate, neg_rate = fires[y].sum(0) / n_pos, fires[~y].sum(0) / n_neg
        delta = pos_rate - neg_rate
        usable = fires.any(0) & (delta > 0)
        limit = 1.0 if drop_always_on is True else (drop_always_on or None)
        if limit is not None:
            usable &= fires.mean(0) < limit - 1e-9
        strength = x if peak is None else peak  # equal deltas: the more strongly firing feature first
        tie = strength[y].sum(0) / n_pos - strength[~y].sum(0) / n_neg
        order = np.lexsort((-tie, -delta))
        order = order[usable[order]]
        return Ranking(order, np.full(len(order), eps), np.ones(len(order), int), delta[order], np.ones(len(order)))
    columns = np.arange(x.shape[1])
    if x.shape[1] > SHORTLIST and len(y) > LOO_MAX:  # many seeds: search only where class means differ most
        gap = np.abs(x[y].mean(0) - x[~y].mean(0)) / (x.std(0) + 1e-9)
        columns = np.sort(np.argsort(-gap, kind="stable")[:SHORTLIST])
    score, threshold, direction = _best_cuts(x[:, columns], y)
    order = np.argsort(-score, kind="stable")
    order = order[score[order] > 0.5 + 1e-9]
    return Ranking(columns[order], threshold[order], direction[order], score[order],
                   x[:, columns[order]].std(0) + 1e-9)


@dataclass
class Rule:
    """``statistic`` on ``features`` (ids, or columns of a matrix) with ``thresholds`` and ``directions``."""

    statistic: str
    features: np.ndarray
    thresholds: np.ndarray
    directions: np.ndarray
    scales: np.ndarray | None = None
    combine: str = "sum"

    def margins(self, x: np.ndarray) -> np.ndarray:
        """``[n, K]``: how far each feature is past its threshold toward the positive side, in units of its
        spread over the seeds."""
        x = np.asarray(x, float).reshape(len(x), -1)
        scales = np.ones(len(self.thresholds)) if self.scales is None else self.scales
        return (x - self.thresholds) * self.directions / scales

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Bool per row of ``x`` (the statistic of each of the rule's features per text)."""
        return self.decide(self.votes(x), self.margins(x))

    def votes(self, x: np.ndarray) -> np.ndarray:
        """``[n, K]`` bool: each feature's vote for the positive class (``x``: its statistic per text)."""
        x = np.asarray(x, float).reshape(len(x), -1)
        return np.where(self.directions > 0, x > self.thresholds, x <= self.thresholds)

    def decide(self, votes: np.ndarray, margins: np.ndarray | None = None) -> np.ndarray:
        """OR for "any"; otherwise the sum of the margins (``combine="sum"``) or a majority of the votes, a
        tie going to the first feature."""
        if not votes.shape[1]:
            return np.zeros(len(votes), bool)
        if self.statistic == "any":
            return votes.any(1)
        if self.combine == "sum" and margins is not None:
            return margins.sum(1) > 0
        share = votes.mean(1)
        return np.where(np.isclose(share, 0.5), votes[:, 0], share > 0.5)


COMBINE = "sum"


def top_rule(ranking: Ranking, statistic: str, k: int, combine: str | None = None) -> Rule:
    return Rule(statistic, ranking.order[:k], ranking.thresholds[:k], ranking.directions[:k], ranking.scales[:k],
                combine or COMBINE)


def folds(y: np.ndarray, loo_max: int = LOO_MAX) -> list[np.ndarray]:
    """Held-out rows of each fold: one seed each up to ``loo_max`` seeds, else ten stratified folds."""
    if len(y) <= loo_max:
        return [np.array([i]) for i in range(len(y))]
    slot = np.empty(len(y), int)
    for cls in (True, False):
        rows = np.flatnonzero(y == cls)
        slot[rows] = np.arange(len(rows)) % 10
    return [np.flatnonzero(slot == f) for f in range(10) if (slot == f).any()]


def cross_validate(matrices: dict, y: np.ndarray, ks=TOP_KS, eps: float = 0.0, drop_always_on=True,
                   loo_max: int = LOO_MAX, combine: str = "sum") -> pd.DataFrame:
    """One row per candidate (layer, statistic, top_k): accuracy of the held-out seeds over the folds, the mean
    share of selected features voting right, and the mean normalised margin of the first feature.

    ``matrices``: ``{(layer, statistic): x [n_seeds, n_features]}``, computed from the seeds alone; every fold
    ranks and thresholds on its own training rows (``y`` are the seed labels, nothing else is read)."""
    rows = []
    parts = folds(y, loo_max)
    for (layer, statistic), x in matrices.items():
        peak = matrices.get((layer, "peak"))
        if statistic == "peak":
            continue
        right = {k: [] for k in ks}
        vote = {k: [] for k in ks}
        margin = []
        for test in parts:
            train = np.setdiff1d(np.arange(len(y)), test)
            xt, yt = x[train], y[train]
            if yt.all() or not yt.any():
                continue
            ranking = rank(xt, yt, statistic, eps, drop_always_on, None if peak is None else peak[train])
            for k in ks:
                rule = top_rule(ranking, statistic, k, combine)
                votes = rule.votes(x[test][:, rule.features])
                right[k] += list(rule.predict(x[test][:, rule.features]) == y[test])
                vote[k] += list((votes == y[test, None]).mean(1) if votes.shape[1] else np.zeros(len(test)))
            if len(ranking.order) and statistic != "any":
                f = ranking.order[0]
                signed = (x[test, f] - ranking.thresholds[0]) * ranking.directions[0] / (xt[:, f].std() + 1e-9)
                margin += list(np.where(y[test], signed, -signed))
            else:
                margin += [0.0] * len(test)
        for k in ks:
            rows.append({"layer": layer, "statistic": statistic, "top_k": k,
                         "cv_accuracy": float(np.mean(right[k])) if right[k] else 0.0,
                         "cv_vote": float(np.mean(vote[k])) if vote[k] else 0.0,
                         "cv_margin": float(np.clip(np.mean(margin), -10, 10)) if margin else 0.0})
    table = pd.DataFrame(rows, columns=["layer", "statistic", "top_k", "cv_accuracy", "cv_vote", "cv_margin"])
    table["_stat"] = table.statistic.map({s: i for i, s in enumerate(STATISTICS)})
    table = table.sort_values(["cv_accuracy", "cv_vote", "cv_margin", "_stat", "top_k", "layer"],
                              ascending=[False, False, False, True, True, True], kind="stable")
    return table.drop(columns="_stat").reset_index(drop=True)
