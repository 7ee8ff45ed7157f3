"""``qscope-lab language-features`` and ``qscope-lab sasft-demo``: the training-signal workflow from the shell."""

from __future__ import annotations

from .options import COUNT, LAYER, POSITIVE, SEED, add_lab_options, add_out_option, lab_from_args, number, print_frame


def register(sub) -> None:
    p = sub.add_parser("language-features", help="the most language-specific SAE features (SASFT)")
    add_lab_options(p)
    p.add_argument("--layer", type=LAYER, action="append", help="layer (repeat for several; default: all)")
    p.add_argument("--top", type=POSITIVE, default=10, help="features per language and layer")
    p.add_argument("--texts", action="append", metavar="LANG=FILE",
                   help="one text per line for LANG (repeat; default: the shipped reference corpus en/zh/code)")
    add_out_option(p)
    p.set_defaults(func=run_language_features)

    p = sub.add_parser("sasft-demo", help="plain SFT vs SASFT on a code-switching habit (minutes, CPU)")
    add_lab_options(p, needs_saes=False)
    p.add_argument("--steps", type=POSITIVE, default=30, help="SFT steps of each arm (>= 1)")
    p.add_argument("--habit-steps", type=COUNT, default=60, help="steps that teach the habit (>= 0)")
    p.add_argument("--weight", type=number(minimum=0.0), action="append",
                   help="lambda, finite and >= 0 (repeat for several; default 0.25)")
    p.add_argument("--features", type=POSITIVE, default=16, help="Chinese features per layer")
    p.add_argument("--layer", type=LAYER, action="append", help="SASFT layer (repeat; default: the last)")
    p.add_argument("--seed", type=SEED, default=0)
    add_out_option(p)
    p.set_defaults(func=run_sasft_demo)


def texts_by_language(items: list[str] | None) -> dict[str, list[str]]:
    """``LANG=FILE`` items -> {lang: texts}; none: the shipped reference corpus grouped by language."""
    from ..base.textfiles import read_texts

    if not items:
        from ..embedded import reference_documents

        grouped: dict[str, list[str]] = {}
        for doc in reference_documents():
            grouped.setdefault(doc["lang"], []).append(doc["text"])
        return grouped
    out: dict[str, list[str]] = {}
    for item in items:
        language, sep, path = item.partition("=")
        if not sep or not language or not path:
            raise ValueError(f"--texts {item!r}: use LANG=FILE")
        out.setdefault(language, []).extend(read_texts(path))
    return out


def run_language_features(args) -> None:
    from ..training.language import language_features

    lab = lab_from_args(args)
    print_frame(language_features(lab, texts_by_language(args.texts), layers=args.layer, top=args.top), args.out)


def run_sasft_demo(args) -> None:
    from ..training.code_switch_experiment import code_switch_experiment

    lab = lab_from_args(args)
    frame = code_switch_experiment(lab, steps=args.steps, habit_steps=args.habit_steps,
                                   weight=args.weight or 0.25, layers=args.layer, n_features=args.features,
                                   seed=args.seed)
    print_frame(frame, args.out)
