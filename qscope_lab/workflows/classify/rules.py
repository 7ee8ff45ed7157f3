"""The rules a seed classifier holds, fitted on per-text statistics of the seeds (numpy only, no model here).

- ``"any"`` (the report's rule): a feature fires in a text when its largest activation exceeds ``eps``; features
  are ranked by delta = P(fires | positive) - P(fires | negative); a text is positive if ANY selected one fires.
- ``"rate"`` (share of counted tokens where the feature fires) and ``"mean"`` (mean activation over counted
  tokens): read on a square-root scale (activations are heavy-tailed; the root keeps one long document from
  outvoting the rest), each feature gets a threshold (the midpoint of the two classes' seed means) and a weight
  (their difference over the pooled seed variance, shrunk toward the layer's average variance so a feature that
  happens to be constant on eight seeds cannot take an infinite weight: a diagonal linear discriminant).
  Features are ranked by that shrunk separation; a text is positive when the weighted margins past the
  thresholds sum above zero (or, with ``combine="vote"``, when most features vote so). In a long text almost
  every feature fires somewhere, so "any" loses precision; a rate or a mean keeps it.

Model selection (layer, statistic, K) is cross-validation over the seeds only: leave-one-out up to
``LOO_MAX`` seeds, ten stratified folds beyond; each fold ranks and thresholds on its own training seeds.
``top_k=ALL`` keeps every feature the seeds separate: a dense diagonal discriminant, a few points more accurate
where the signal is spread over many token-level features (two Romance languages in one line), but no longer a
rule one reads at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STATISTICS = ("rate", "mean", "any")  # also the order ties are broken in
TOP_KS = (5, 10, 20)
ALL = 0  # top_k meaning every feature with a positive separation: a dense discriminant, accurate but not short
LOO_MAX = 64
SHRINK = 1.0  # pooled variance + SHRINK x the layer's mean pooled variance (the discriminant's shrinkage)
ROOTED = ("rate", "mean")  # statistics read on a square-root scale


@dataclass
class Ranking:
    """Columns of a statistic matrix, best first, with each one's threshold, side (+1: positive above it),
    seed score (shrunk separation for rate / mean, delta for any) and scale (margin = distance past the
    threshold on the statistic's scale, divided by it)."""

    order: np.ndarray
    thresholds: np.ndarray
    directions: np.ndarray
    scores: np.ndarray
    scales: np.ndarray


def scaled(x: np.ndarray, statistic: str) -> np.ndarray:
    """The scale a statistic is compared on: the square root for rate / mean, as is for any."""
    x = np.asarray(x, float)
    return np.sqrt(np.maximum(x, 0.0)) if statistic in ROOTED else x


def discriminant(x: np.ndarray, y: np.ndarray, shrink: float = SHRINK) -> tuple[np.ndarray, ...]:
    """Per column of ``x [n, F]`` (already on its comparison scale): (separation, threshold, direction, scale)
    of a diagonal linear discriminant on labels ``y``; the margin of a value v is (v - threshold) * direction /
    scale."""
    pos, neg = x[y], x[~y]
    mp, mn = pos.mean(0), neg.mean(0)
    pooled = (pos.var(0) + neg.var(0)) / 2
    varies = x.max(0) > x.min(0) if len(x) else np.zeros(x.shape[1], bool)
    floor = shrink * (pooled[varies].mean() if varies.any() else 1.0) + 1e-12
    reg = pooled + floor
    diff = mp - mn
    separation = np.where(varies, np.abs(diff) / np.sqrt(reg), 0.0)
    scale = reg / np.maximum(np.abs(diff), 1e-12)
    return separation, (mp + mn) / 2, np.where(diff >= 0, 1, -1), scale


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
    separation, threshold, direction, scale = discriminant(scaled(x, statistic), y)
    order = np.argsort(-separation, kind="stable")
    order = order[separation[order] > 0]
    # thresholds are kept in the statistic's own units (squared back from the root scale)
    return Ranking(order, threshold[order] ** 2, direction[order], separation[order], scale[order])


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
        """``[n, K]``: each feature's weighted distance past its threshold toward the positive side, on the
        statistic's comparison scale (the square root for rate / mean)."""
        x = np.asarray(x, float).reshape(len(x), -1)
        scales = np.ones(len(self.thresholds)) if self.scales is None else self.scales
        return (scaled(x, self.statistic) - scaled(self.thresholds, self.statistic)) * self.directions / scales

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Bool per row of ``x`` (the statistic of each of the rule's features per text)."""
        return self.decide(self.votes(x), self.margins(x))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Per row of ``x``, the decision's score (> 0: positive): for "any" the largest activation past its
        threshold, else the summed margins (``combine="sum"``) or the share of positive votes minus one half."""
        x = np.asarray(x, float).reshape(len(x), -1)
        if not x.shape[1]:
            return np.zeros(len(x))
        if self.statistic == "any":
            return (x - self.thresholds).max(1)
        if self.combine == "sum":
            return self.margins(x).sum(1)
        return self.votes(x).mean(1) - 0.5

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
    """The first ``k`` ranked features (``k=ALL``: all of them) as a rule."""
    k = k or None
    return Rule(statistic, ranking.order[:k], ranking.thresholds[:k], ranking.directions[:k], ranking.scales[:k],
                combine or COMBINE)


def separation(scores: np.ndarray, y: np.ndarray) -> float:
    """d' of held-out seeds' decision scores: the gap of the class means over the pooled sd (continuous, where
    a leave-one-out accuracy over a few seeds takes a few values and ties)."""
    pos, neg = scores[y], scores[~y]
    if not len(pos) or not len(neg):
        return 0.0
    sd = np.sqrt((pos.var() + neg.var()) / 2)
    gap = pos.mean() - neg.mean()
    return float(np.clip(gap / sd if sd > 0 else np.sign(gap) * 10, -10, 10))


def folds(y: np.ndarray, loo_max: int = LOO_MAX) -> list[np.ndarray]:
    """Held-out rows of each fold: one seed each up to ``loo_max`` seeds, else ten stratified folds."""
    if len(y) <= loo_max:
        return [np.array([i]) for i in range(len(y))]
    slot = np.empty(len(y), int)
    for cls in (True, False):
        rows = np.flatnonzero(y == cls)
        slot[rows] = np.arange(len(rows)) % 10
    return [np.flatnonzero(slot == f) for f in range(10) if (slot == f).any()]


SELECT_BY = ["cv_accuracy", "cv_separation", "cv_vote", "cv_margin"]  # ties in accuracy go to the wider gap


def cross_validate(matrices: dict, y: np.ndarray, ks=TOP_KS, eps: float = 0.0, drop_always_on=True,
                   loo_max: int = LOO_MAX, combine: str = "sum") -> pd.DataFrame:
    """One row per candidate (layer, statistic, top_k; ``ALL``: every separating feature): the separation (d')
    of the held-out seeds' decision scores, their accuracy over the folds, the mean share of selected features
    voting right, and the mean normalised margin of the first feature; best first (``SELECT_BY``: accuracy,
    its ties to the wider separation, which unlike accuracy over a few seeds is continuous).

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
        scores = {k: [] for k in ks}
        truth, margin = [], []
        for test in parts:
            train = np.setdiff1d(np.arange(len(y)), test)
            xt, yt = x[train], y[train]
            if yt.all() or not yt.any():
                continue
            ranking = rank(xt, yt, statistic, eps, drop_always_on, None if peak is None else peak[train])
            truth += list(y[test])
            for k in ks:
                rule = top_rule(ranking, statistic, k, combine)
                votes = rule.votes(x[test][:, rule.features])
                right[k] += list(rule.predict(x[test][:, rule.features]) == y[test])
                vote[k] += list((votes == y[test, None]).mean(1) if votes.shape[1] else np.zeros(len(test)))
                scores[k] += list(rule.score(x[test][:, rule.features]))
            if len(ranking.order) and statistic != "any":
                first = top_rule(ranking, statistic, 1)
                signed = first.margins(x[test][:, first.features])[:, 0]
                margin += list(np.where(y[test], signed, -signed))
            else:
                margin += [0.0] * len(test)
        for k in ks:
            rows.append({"layer": layer, "statistic": statistic, "top_k": k,
                         "cv_separation": separation(np.asarray(scores[k]), np.asarray(truth, bool)),
                         "cv_accuracy": float(np.mean(right[k])) if right[k] else 0.0,
                         "cv_vote": float(np.mean(vote[k])) if vote[k] else 0.0,
                         "cv_margin": float(np.clip(np.mean(margin), -10, 10)) if margin else 0.0})
    table = pd.DataFrame(rows, columns=["layer", "statistic", "top_k", "cv_separation", "cv_accuracy", "cv_vote",
                                       "cv_margin"])
    table["_stat"] = table.statistic.map({s: i for i, s in enumerate(STATISTICS)})
    table = table.sort_values(SELECT_BY + ["_stat", "top_k", "layer"],
                              ascending=[False] * len(SELECT_BY) + [True, True, True], kind="stable")
    return table.drop(columns="_stat").reset_index(drop=True)
