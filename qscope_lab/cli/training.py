"""``qscope-lab language-features`` and ``qscope-lab sasft-demo``: the training-signal workflow from the shell."""

from __future__ import annotations

from .options import (
    COUNT,
    LAYER,
    POSITIVE,
    SEED,
    add_lab_options,
    add_out_option,
    check_layers,
    command,
    lab_from_args,
    number,
    print_frame,
)


def register(sub) -> None:
    p = command(sub, "language-features", "the most language-specific SAE features (SASFT)", """
The SAE features most specific to each language: per layer and language, the features whose firing is most
concentrated on that language's texts (the targets of SASFT, sparse-autoencoder-guided fine-tuning). Without
--texts, the shipped reference corpus (English, Chinese, code).

File format (--texts LANG=FILE): .txt with one text per line, .jsonl / .json with a "text" field, or .csv /
.parquet with a 'text' column.""", """
  qscope-lab language-features --layer 2 --texts zh=examples/goal.txt --texts en=examples/seeds.txt --top 5""")
    add_lab_options(p)
    p.add_argument("--layer", type=LAYER, action="append", help="a layer to rank (repeat for several; default: all)")
    p.add_argument("--top", type=POSITIVE, default=10, metavar="N", help="features per language and layer (default 10)")
    p.add_argument("--texts", action="append", metavar="LANG=FILE",
                   help="texts of the language LANG (repeat for each language; default: the shipped reference corpus, "
                        "en / zh / code)")
    add_out_option(p)
    p.set_defaults(func=run_language_features)

    p = command(sub, "sasft-demo", "plain SFT vs SASFT on a code-switching habit (about 30 s of CPU)", """
The SASFT experiment on the embedded default, in about 30 s of CPU time: teach the model a habit of switching into
Chinese, then fine-tune it on English answers twice, with plain SFT and with SASFT (a penalty on the Chinese
features' activations), and print how often each arm still switches (the code-switch ratio) and its loss.""", """
  qscope-lab sasft-demo --out sasft.csv""")
    add_lab_options(p, needs_saes=False)
    p.add_argument("--steps", type=POSITIVE, default=30, metavar="N", help="fine-tuning steps of each arm (default 30)")
    p.add_argument("--habit-steps", type=COUNT, default=60, metavar="N",
                   help="steps that first teach the code-switching habit (default 60; 0 skips it)")
    p.add_argument("--weight", type=number(minimum=0.0), action="append",
                   metavar="LAMBDA", help="weight of the SASFT penalty, >= 0 (repeat for one SASFT arm each; "
                                           "default 0.25)")
    p.add_argument("--features", type=POSITIVE, default=16, metavar="N",
                   help="Chinese features per layer that the penalty holds down (default 16)")
    p.add_argument("--layer", type=LAYER, action="append",
                   help="a layer whose features SASFT penalises (repeat for several; default: the last)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="seed of the generated data, its order and the training (default 0)")
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
    texts = texts_by_language(args.texts)  # the files read before the model loads
    check_layers(args, layer=args.layer)
    from ..training.language import language_features  # torch: after the checks

    lab = lab_from_args(args)
    print_frame(language_features(lab, texts, layers=args.layer, top=args.top), args.out)


def run_sasft_demo(args) -> None:
    check_layers(args, layer=args.layer)
    from ..training.code_switch_experiment import code_switch_experiment  # torch: after the checks

    lab = lab_from_args(args)
    frame = code_switch_experiment(lab, steps=args.steps, habit_steps=args.habit_steps,
                                   weight=args.weight or 0.25, layers=args.layer, n_features=args.features,
                                   seed=args.seed)
    print_frame(frame, args.out)
