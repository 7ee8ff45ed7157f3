"""``qscope-lab classify``: fit a seed classifier on labelled seeds, report held-out metrics, save it."""

from __future__ import annotations

import argparse
import os

from .options import POSITIVE, add_lab_options, check_layers, command, lab_from_args, print_frame


def register(sub) -> None:
    p = command(sub, "classify", "seed-data classifier: fit, evaluate against baselines, save", """
Fit a readable classifier on a few labelled seed texts: a weighted rule over SAE features, each with a threshold.
Prints the rule's features, the layers it tried and its metrics; with --test, the metrics on held-out texts
against baselines (random features, a logistic probe on the activations).

File format (--train and --test): a .csv or .parquet with a 'text' and a 'label' column, or a .jsonl / .json
with "text" and "label" fields; label 1 for the class, 0 for the rest. examples/seeds.csv:
  text,label
  我们今天去公园散步。,1
  We walked in the park today.,0""", """
  qscope-lab classify --train examples/seeds.csv --test examples/heldout.csv
  qscope-lab classify --train examples/seeds.csv --test examples/heldout.csv --save clf-cli.json --out run""")
    add_lab_options(p, needs_saes=False)
    p.add_argument("--train", required=True, metavar="FILE",
                   help="labelled seed texts: .csv / .parquet (text, label columns) or .jsonl (text, label fields)")
    p.add_argument("--test", metavar="FILE",
                   help="labelled held-out texts in the same format: metrics against the baselines")
    p.add_argument("--statistic", default="mean", choices=["mean", "rate", "any", "auto"],
                   help="per-text score of a feature: mean (its mean activation, the default), rate (the share of "
                        "tokens it fires on), any (fires at all: the Qwen-Scope report's OR rule) or auto (chosen by "
                        "leave-one-out)")
    p.add_argument("--top-k", default="20", type=top_k, metavar="K",
                   help="features in the rule: 1 to 32 (default 20), all (every feature the seeds separate: more "
                        "accurate, long to read), or auto (5, 10 or 20, by leave-one-out)")
    p.add_argument("--select", default="loo", choices=["loo", "delta"],
                   help="how the layer is chosen: loo (leave-one-out accuracy on the seeds, the default) or delta (the "
                        "largest class difference, the report's choice)")
    p.add_argument("--n-layers", type=POSITIVE, default=1, metavar="N",
                   help="how many of the best layers the rule draws features from (default 1: one layer)")
    # dest is not "save": nnsight mounts a .save() on every object, Namespace included, and argparse sets no
    # default for a name the namespace already has, so a second in-process run would find a bound method there
    p.add_argument("--save", dest="save_to", metavar="FILE",
                   help="write the fitted classifier (JSON) here (replaces a classifier file only)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save replace a file that is not a classifier file")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX_features.csv, PREFIX_layers.csv and "
                                                       "PREFIX_metrics.csv instead of printing")
    p.set_defaults(func=run)


def top_k(text: str) -> int | str:
    """``--top-k``: an int from 1 to 32, "all" or "auto" (refused while parsing, before the model loads)."""
    if text in ("all", "auto"):
        return text
    if text.isdigit() and 1 <= int(text) <= 32:
        return int(text)
    raise argparse.ArgumentTypeError(f"top_k must be an int from 1 to 32, 'all' or 'auto', got {text!r}")


def run(args) -> None:
    import pandas as pd

    from ..base.textfiles import read_labelled
    from ..workflows.classify import SeedClassifier
    from ..workflows.classify.files import is_classifier_file

    if args.save_to and not args.overwrite and os.path.lexists(args.save_to) and not is_classifier_file(args.save_to):
        raise FileExistsError(f"--save {args.save_to} exists and is not a SeedClassifier file: not replaced (add "
                              f"--overwrite to replace it)")  # before the model loads and the fit runs
    train = read_labelled(args.train)
    test = read_labelled(args.test) if args.test else None
    check_layers(args)  # -m: a path without a checkpoint is refused before the model loads
    clf = SeedClassifier(lab_from_args(args), statistic=args.statistic, top_k=args.top_k, select=args.select,
                         n_layers=args.n_layers)
    if test is not None:
        metrics_frame = clf.compare_baselines(train.text, train.label, test.text, test.label)
    else:
        clf.fit(train.text, train.label)
        metrics_frame = pd.DataFrame([{"method": "calibrated_rule (train)", **clf.evaluate(train.text,
                                                                                           train.label)}])
    for suffix, frame in (("features", clf.rules_), ("layers", clf.layer_scores_), ("metrics", metrics_frame)):
        print_frame(frame, f"{args.out}_{suffix}.csv" if args.out else None)
    if args.save_to:
        print(f"saved {clf.save(args.save_to, overwrite=args.overwrite)}")
