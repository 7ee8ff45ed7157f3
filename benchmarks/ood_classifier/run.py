"""Run the out-of-domain seed-classifier benchmark on the embedded default and write the result tables.

    python benchmarks/ood_classifier/build_tasks.py     # once: fetch and build the tasks under build/ood
    python benchmarks/ood_classifier/run.py             # -> benchmarks/ood_classifier/results.csv, summary.csv

Per task, 8 and 16 seeds per class drawn 5 times from the task's seed pool, scored on its 150 + 150 held-out
documents: the report's rule (any feature fires, top-1 delta layer), the calibrated rule of each statistic
variant (layer / K chosen by leave-one-out over the seeds), random features with thresholds chosen the same
way, and a logistic probe on the mean residual of the chosen layer. The pool and the held-out texts are each
scanned once per task; every draw and variant is fitted on its seeds' statistics alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).parent
# name -> SeedClassifier parameters (the layer always, and what is left open, chosen by leave-one-out)
VARIANTS = {"default": {}, "rate-k20": {"statistic": "rate", "top_k": 20},
            "mean-k10": {"statistic": "mean", "top_k": 10}, "mean-k5": {"statistic": "mean", "top_k": 5},
            "auto-k5-10-20": {"statistic": "auto", "top_k": "auto"}, "any-auto": {"statistic": "any", "top_k": "auto"},
            "dense": {"top_k": "all"}}


def load_task(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    pool = [r for r in rows if r["split"] == "pool"]
    held = [r for r in rows if r["split"] == "heldout"]
    return ([r["text"] for r in pool], np.array([r["label"] for r in pool]), [r["text"] for r in held],
            np.array([r["label"] for r in held]))


def task_stats(lab, path: Path):
    """(pool statistics, pool labels, held-out statistics, held-out labels) of one task, all layers: one scan
    each, every draw and variant fitted / scored on them."""
    from qscope_lab.workflows.classify import stats

    pool, y_pool, held, y_held = load_task(path)
    layers = list(range(lab.n_layers))
    options = {"batch_size": 16, "max_length": 256, "progress": False}
    return (stats.collect(lab, pool, layers, residual_layers=layers, **options), y_pool,
            stats.collect(lab, held, layers, residual_layers=layers, **options), y_held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="build/ood/tasks")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="task names to run (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from qscope_lab import Lab, SeedClassifier
    from qscope_lab.workflows.classify import baselines, summarize

    lab = Lab.load()
    frames = []
    paths = sorted(Path(args.tasks).glob("*.jsonl"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    if not paths:
        raise SystemExit(f"no tasks under {args.tasks}: run benchmarks/ood_classifier/build_tasks.py first")
    for path in paths:
        t0 = time.perf_counter()
        pool_stats, y_pool, held_stats, y_held = task_stats(lab, path)
        for n in args.seeds:
            picks = baselines.draw_seeds(y_pool, args.draws, n, seed=0)
            for name, params in VARIANTS.items():
                clf = SeedClassifier(lab, progress=False, **params)
                frame = baselines.score_draws(baselines.fit_draws(clf, pool_stats, y_pool, picks), held_stats,
                                              y_held)
                if name != "default":  # the report's rule, random control and probe are listed once
                    frame = frame[frame.method == "calibrated_rule"]
                frame = frame.assign(task=path.stem, variant=name, seeds_per_class=n)
                frame.loc[frame.method != "calibrated_rule", "variant"] = "-"
                frames.append(frame)
        print(f"{path.stem}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(Path(args.out) / "results.csv", index=False, float_format="%.4f")
    summary = summarize(results, by=("seeds_per_class", "task", "method", "variant"))
    summary.to_csv(Path(args.out) / "summary.csv", index=False, float_format="%.4f")
    pd.set_option("display.width", 200)
    for n in args.seeds:
        part = summary[summary.seeds_per_class == n]
        wide = part.assign(col=part.method + ":" + part.variant).pivot(index="task", columns="col", values="accuracy")
        print(f"\nmean held-out accuracy over {args.draws} draws, {n} seeds per class")
        print(wide.round(3).to_string())
        print("mean over tasks:", wide.mean().round(3).to_dict())


if __name__ == "__main__":
    main()
