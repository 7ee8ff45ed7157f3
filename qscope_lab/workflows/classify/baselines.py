"""What a seed classifier is measured against, on the same seeds and held-out texts: the report's rule (OR over
the top-delta feature of the best layer), random features with thresholds chosen the same way, and a logistic
probe on the mean residual of the chosen layer; over several draws of seeds, so the spread shows.

One scan of the drawn seeds and one of the held-out texts serve every draw and method: the rules are fitted
on the seeds' statistics alone (``fit_stats``), the held-out statistics are only read to score them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...base import validate
from . import stats
from .common import STORE_LIMIT, metrics, texts_labels

METHODS = ("report_rule", "calibrated_rule", "random_features", "logreg_probe")
METRICS = ("accuracy", "precision", "recall", "f1")


def logreg(train: np.ndarray, y: np.ndarray, test: np.ndarray, steps: int = 100, l2: float = 1e-3) -> np.ndarray:
    """Bool predictions of an L2 logistic regression (LBFGS, standardized inputs) fitted on ``train``."""
    x = torch.as_tensor(train, dtype=torch.float32)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x, target = (x - mu) / sd, torch.as_tensor(np.asarray(y, bool), dtype=torch.float32)
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], target)
        loss = loss + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = (torch.as_tensor(test, dtype=torch.float32) - mu) / sd
    return (t @ w[:-1].detach() + w[-1].detach() > 0).numpy()


def draw_seeds(y: np.ndarray, draws: int, n_seeds: int | None, seed: int) -> list[np.ndarray]:
    if draws == 1 and n_seeds is None:
        return [np.arange(len(y))]
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n = n_seeds or min(len(pos), len(neg))
    if n > min(len(pos), len(neg)):
        raise ValueError(f"n_seeds={n} per class but the training texts have {len(pos)} positive and "
                         f"{len(neg)} negative")
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
            for _ in range(draws)]


def compare_draws(clf, train_texts, train_labels, test_texts, test_labels, n_random: int = 5,
                  seed: int = 0, draws: int = 1, n_seeds: int | None = None) -> pd.DataFrame:
    """One row per (draw, method): held-out metrics, the chosen layer / statistic / K, and the seeds used.
    Draw 0 is fitted into ``clf`` itself (with ``draws=1`` and no ``n_seeds``: on all training texts)."""
    validate.integer(draws, "draws", 1)
    validate.integer(n_random, "n_random", 1)
    if n_seeds is not None:
        validate.integer(n_seeds, "n_seeds", 1)
    train_texts, y = texts_labels(train_texts, train_labels)
    test_texts, y_test = texts_labels(test_texts, test_labels)
    if not y.any() or y.all():
        raise ValueError(f"both classes are needed: got {int(y.sum())} positive and {int((~y).sum())} "
                         f"negative texts")
    clf._validate_params()
    picks = draw_seeds(y, draws, n_seeds, seed)
    union = np.unique(np.concatenate(picks))
    union_texts = [train_texts[i] for i in union]
    layers, options = clf.candidate_layers_, clf._scan_options()
    if len(union) <= STORE_LIMIT:
        seed_stats = stats.collect(clf.lab, union_texts, layers, residual_layers=layers, eps=clf.eps, **options,
                                   desc="seeds")
    else:
        seed_stats, _ = clf.seed_stats(union_texts, y[union])
        seed_stats.residual_means = stats.collect(clf.lab, union_texts, [], residual_layers=layers,
                                                  **options, desc="probe").residual_means
    position = {int(i): j for j, i in enumerate(union)}
    fitted = fit_draws(clf, seed_stats, y[union], [np.array([position[int(i)] for i in rows]) for rows in picks],
                       n_random, seed)
    needed = {}
    for _, _, cal, report, controls in fitted:
        for model in [cal, report, *controls]:
            for layer, f in model.features_:
                needed.setdefault(layer, set()).add(f)
    probe_layers = sorted({cal.layer_ for _, _, cal, _, _ in fitted})
    held = stats.collect(clf.lab, test_texts, sorted(needed), needed, residual_layers=probe_layers, eps=clf.eps,
                         **options, desc="held-out")
    return score_draws(fitted, held, y_test)


def fit_draws(clf, seed_stats: stats.TextStats, y: np.ndarray, picks, n_random: int = 5,
              seed: int = 0) -> list[tuple]:
    """Per draw (rows of ``seed_stats``): (seed statistics, labels, calibrated rule, report's rule, random
    controls), all fitted on those seeds' statistics alone. Draw 0 is fitted into ``clf`` itself."""
    fitted = []
    for d, rows in enumerate(picks):
        sub, yd = seed_stats.take(rows), np.asarray(y, bool)[rows]
        cal = clf if d == 0 else type(clf)(**clf.get_params())
        cal.fit_stats(sub, yd)
        report = type(clf)(**{**clf.get_params(), "statistic": "any", "top_k": 1, "select": "delta",
                                   "n_layers": 1}).fit_stats(sub, yd)
        fitted.append((sub, yd, cal, report, [cal.random_feature_control(seed + i) for i in range(n_random)]))
    return fitted


def score_draws(fitted: list[tuple], held: stats.TextStats, y_test) -> pd.DataFrame:
    """Held-out metrics of every method of every fitted draw (``fit_draws``), read from ``held``'s statistics
    (which must hold the features the rules use and the residual means of the chosen layers)."""
    y_test = np.asarray(y_test, bool)
    out = []
    for d, (sub, yd, cal, report, controls) in enumerate(fitted):
        info = {"draw": d, "n_seeds": int(min(yd.sum(), (~yd).sum())), "n_test": len(y_test)}

        def row(method, model, result, info=info):
            return {**info, "method": method, **result, "layer": model.layer_, "statistic": model.statistic_,
                    "top_k": len(model.features_)}

        out.append(row("report_rule", report, metrics(report.predict_matrix(report.stats_matrix(held)), y_test)))
        out.append(row("calibrated_rule", cal, metrics(cal.predict_matrix(cal.stats_matrix(held)), y_test)))
        rand = pd.DataFrame([metrics(c.predict_matrix(c.stats_matrix(held)), y_test) for c in controls]).mean()
        out.append(row("random_features", cal, {**rand.to_dict(), "n": len(y_test)}))
        probe = logreg(sub.residual_means[cal.layer_], yd, held.residual_means[cal.layer_])
        out.append(row("logreg_probe", cal, metrics(probe, y_test)))
    return pd.DataFrame(out)


def summarize(per_draw: pd.DataFrame, by=("method",)) -> pd.DataFrame:
    """Mean metrics per method (and per task, when ``by`` has it) with the accuracy's sd, min and max over
    the draws; methods in the order report, calibrated, random, probe."""
    by = [c for c in by if c in per_draw.columns]
    grouped = per_draw.groupby(by, sort=False)
    table = grouped[list(METRICS)].mean()
    table["accuracy_sd"] = grouped.accuracy.std(ddof=0)
    table["accuracy_min"], table["accuracy_max"] = grouped.accuracy.min(), grouped.accuracy.max()
    table["draws"], table["n"] = grouped.size(), grouped.n.first()
    table = table.reset_index()
    table["_order"] = table.method.map({m: i for i, m in enumerate(METHODS)})
    keys = [c for c in by if c != "method"] + ["_order"]
    return table.sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)
