"""``qscope-lab synthesize``: generate texts that fire the target features no seed text fires."""

from __future__ import annotations

from .options import (
    MAX_ABS_ALPHA,
    POSITIVE,
    SEED,
    add_lab_options,
    add_layer_option,
    feature_ids,
    lab_from_args,
    layer_from_args,
    numbers,
    print_frame,
)


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="generate texts that fire the target features no seed fires")
    add_lab_options(p)
    add_layer_option(p)
    p.add_argument("--seeds", required=True, help="seed texts: one per line, or .jsonl / .csv with a text column")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--targets", type=feature_ids, help="comma-separated target feature ids, e.g. 12,45,301")
    group.add_argument("--targets-from", metavar="PATH",
                       help="goal texts: targets = features firing on them more than on the seeds")
    p.add_argument("--n-targets", type=POSITIVE, default=8, help="how many contrastive targets (--targets-from)")
    p.add_argument("--per-target", type=POSITIVE, default=4, help="candidates per uncovered target and alpha")
    p.add_argument("--alphas", type=numbers(-MAX_ABS_ALPHA, MAX_ABS_ALPHA), default="4,8,16",
                   help="steering strengths, comma-separated, tried in order")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=32)
    p.add_argument("--sample", action="store_true", help="sample (seeded) instead of greedy decoding")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX_kept.csv and PREFIX_report.csv")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..base.textfiles import read_texts
    from ..workflows.synthesis import as_targets, synthesize, targets_from_contrast

    alphas = args.alphas  # parsed and checked by the option's type
    seeds = read_texts(args.seeds)
    goal = read_texts(args.targets_from) if args.targets_from else None
    lab = lab_from_args(args)
    layer = layer_from_args(args, lab)
    if goal is not None:
        targets = targets_from_contrast(lab, goal, seeds, layer, n=args.n_targets)
    else:
        targets = as_targets(lab, args.targets, layer)
    result = synthesize(lab, seeds, targets, layer, per_target=args.per_target, alphas=alphas,
                        max_new_tokens=args.max_new_tokens, seed=args.seed, do_sample=args.sample)
    if args.out:
        print_frame(result.kept, f"{args.out}_kept.csv")
        print_frame(result.report, f"{args.out}_report.csv")
    else:
        print_frame(result.report, None)
        print_frame(result.kept[["target", "activation", "alpha", "text"]], None)
