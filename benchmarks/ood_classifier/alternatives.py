"""Rules tried against the default seed classifier and not taken, on the same tasks and seed draws as ``run.py``
(which also runs ``top_k="all"``, every feature of the chosen layer): what each buys in accuracy and what it
costs in readability or principle.

    python benchmarks/ood_classifier/alternatives.py --seeds 8 16      # about 6 min on one thread

- ``default``: ``SeedClassifier()`` (mean, K = 20, the layer by leave-one-out).
- ``per-layer-sum``: one K = 20 rule per layer, their summed margins decide (80 features).
- ``dense-layer0``: every feature of layer 0, fixed (the token-identity layer, picked by hand, not by the seeds).
- ``loo-intercept``: the default rule with its cut moved to the midpoint of the seeds' leave-one-out scores.
Every variant is fitted on the drawn seeds' statistics alone; held-out texts are only scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from run import task_stats  # the benchmark's own scans


def discriminant_score(x: np.ndarray, y: np.ndarray, k: int, statistic: str = "mean"):
    """The default's rule (``rules.rank`` / ``top_rule``, top ``k`` by separation; ``rules.ALL``: every feature)
    as a function of a statistic matrix with the same columns: its score (> 0: positive)."""
    from qscope_lab.workflows.classify import rules

    rule = rules.top_rule(rules.rank(x, y, statistic), statistic, k)
    return lambda m: rule.score(m[:, rule.features])


def variants(lab) -> dict:
    """name -> fit(seed statistics, labels) -> predict(held-out statistics) -> bool per text."""
    from qscope_lab import SeedClassifier
    from qscope_lab.workflows.classify import rules

    def on_layer(layer, k):
        def fit(seeds, y):
            feats = seeds.features(layer)
            score = discriminant_score(seeds.matrix(layer, "mean", feats), y, k)
            return lambda held: score(held.matrix(layer, "mean", feats))
        return fit

    def default(seeds, y):
        clf = SeedClassifier(lab, progress=False).fit_stats(seeds, y)
        return lambda held: np.where(clf.predict_matrix(clf.stats_matrix(held)), 1.0, -1.0)

    def per_layer_sum(seeds, y):
        scores = [on_layer(layer, 20)(seeds, y) for layer in range(lab.n_layers)]
        return lambda held: sum(score(held) for score in scores)

    def loo_intercept(seeds, y):
        layer = SeedClassifier(lab, progress=False).fit_stats(seeds, y).layer_
        feats = seeds.features(layer)
        x = seeds.matrix(layer, "mean", feats)
        loo = np.array([discriminant_score(np.delete(x, i, 0), np.delete(y, i), 20)(x[i:i + 1])[0]
                        for i in range(len(y))])
        cut = (loo[y].mean() + loo[~y].mean()) / 2
        score = discriminant_score(x, y, 20)
        return lambda held: score(held.matrix(layer, "mean", feats)) - cut

    return {"default": default, "per-layer-sum": per_layer_sum, "dense-layer0": on_layer(0, rules.ALL),
            "loo-intercept": loo_intercept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="build/ood/tasks")
    parser.add_argument("--seeds", type=int, nargs="+", default=[8])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from qscope_lab import Lab
    from qscope_lab.workflows.classify import baselines

    lab = Lab.load()
    paths = sorted(Path(args.tasks).glob("*.jsonl"))
    if not paths:
        raise SystemExit(f"no tasks under {args.tasks}: run benchmarks/ood_classifier/build_tasks.py first")
    rows = []
    for path in paths:
        pool, y_pool, held, y_held = task_stats(lab, path)
        for n in args.seeds:
            for d, picks in enumerate(baselines.draw_seeds(y_pool, args.draws, n, seed=0)):
                seeds, y = pool.take(picks), y_pool[picks]
                for name, fit in variants(lab).items():
                    accuracy = float(((fit(seeds, y)(held) > 0) == y_held).mean())
                    rows.append({"task": path.stem, "seeds_per_class": n, "draw": d, "variant": name,
                                 "accuracy": accuracy})
        print(path.stem, flush=True)
    table = pd.DataFrame(rows).pivot_table(index=["seeds_per_class", "task"], columns="variant",
                                           values="accuracy", sort=False)
    pd.set_option("display.width", 200)
    print(f"\nmean held-out accuracy over {args.draws} draws")
    print(table.round(3).to_string())
    print(table.groupby(level="seeds_per_class").mean().round(3).to_string())


if __name__ == "__main__":
    main()
