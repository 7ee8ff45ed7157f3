"""``qscope-lab synthesize``: generate texts that fire the target features no seed text fires."""

from __future__ import annotations

from .options import (
    MAX_ABS_ALPHA,
    POSITIVE,
    SEED,
    add_lab_options,
    add_layer_option,
    check_features,
    check_layers,
    command,
    feature_ids,
    lab_from_args,
    layer_from_args,
    numbers,
    print_frame,
)


def register(sub) -> None:
    p = command(sub, "synthesize", "generate texts that fire the target features no seed fires", """
Grow a small data set toward features it lacks: for each target feature that no seed text fires, generate from
the seeds with the feature steered on (each strength in --alphas in turn) and keep a candidate only if it fires
the target and reads fluently. The targets are given (--targets) or found as the features that fire on goal
texts more than on the seeds (--targets-from). Prints the coverage report and the kept texts.

File format (--seeds and --targets-from): .txt with one text per line, .jsonl / .json with a "text" field, or
.csv / .parquet with a 'text' column. examples/seeds.txt:
  We walked in the park today.
  This book is very interesting.""", """
  qscope-lab synthesize --layer 2 --seeds examples/seeds.txt --targets-from examples/goal.txt
  qscope-lab synthesize --layer 2 --seeds examples/seeds.txt --targets 1588 --max-new-tokens 16 --out synth""")
    add_lab_options(p)
    add_layer_option(p)
    p.add_argument("--seeds", required=True, metavar="FILE",
                   help="seed texts: .txt one per line, .jsonl / .json 'text' field, .csv / .parquet 'text' column")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--targets", type=feature_ids, metavar="IDS",
                       help="target feature ids at --layer, comma-separated, e.g. 12,45,301")
    group.add_argument("--targets-from", metavar="FILE",
                       help="goal texts (same formats as --seeds): the targets are the features firing on them "
                            "more than on the seeds")
    p.add_argument("--n-targets", type=POSITIVE, default=8, metavar="N",
                   help="how many targets --targets-from picks (default 8)")
    p.add_argument("--per-target", type=POSITIVE, default=4, metavar="N",
                   help="candidates generated per uncovered target and strength (default 4)")
    p.add_argument("--alphas", type=numbers(-MAX_ABS_ALPHA, MAX_ABS_ALPHA), default="4,8,16", metavar="A,B,...",
                   help="steering strengths, comma-separated, tried in order until a target is covered "
                        "(default 4,8,16)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=32, metavar="N",
                   help="tokens generated per candidate (default 32)")
    p.add_argument("--sample", action="store_true", help="sample (seeded) instead of greedy decoding")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the seed prefixes drawn and of --sample (default 0)")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX_kept.csv and PREFIX_report.csv")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..base.textfiles import read_texts

    alphas = args.alphas  # parsed and checked by the option's type
    seeds = read_texts(args.seeds)
    goal = read_texts(args.targets_from) if args.targets_from else None
    check_layers(args, layer=[args.layer])
    if args.targets:
        check_features(args, "--targets", [int(f) for f in args.targets.split(",") if f.strip()])
    from ..workflows.synthesis import as_targets, synthesize, targets_from_contrast  # torch: after the checks

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
