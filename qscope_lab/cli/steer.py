"""``qscope-lab steer``: baseline and steered generation side by side."""

from __future__ import annotations

import argparse

from ..base.defaults import DEFAULT_REPETITION_PENALTY, STEER_MODES
from .options import (
    LAYER,
    POSITIVE,
    SEED,
    add_lab_options,
    check_features,
    check_layers,
    command,
    lab_from_args,
    number,
    text,
)

MODE_HELP = ("add: h + alpha*d (default); clamp: set the feature's activation to ALPHA; ablate: remove ALPHA times "
             "its contribution; cap: lower the component along d to at most ALPHA (projection capping); "
             "orthogonal: scale the component along d by 1+ALPHA")


def condition(text: str) -> tuple[int, int, float]:
    """``LAYER:FEATURE`` or ``LAYER:FEATURE>THRESHOLD`` (threshold 0 when left out) -> (layer, feature, threshold)."""
    try:
        key, _, threshold = text.partition(">")
        at, feature = key.split(":", 1)
        layer, feature_id = int(at), int(feature)
        value = float(threshold) if threshold else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"use LAYER:FEATURE or LAYER:FEATURE>THRESHOLD, got {text!r}") from None
    if layer < 0 or feature_id < 0:
        raise argparse.ArgumentTypeError(f"layer and feature must be at least 0, got {text!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"the threshold must be a finite number, got {text!r}")
    return layer, feature_id, value


def register(sub) -> None:
    p = command(sub, "steer", "baseline vs steered generation", """
Generate from a prompt twice, without and with steering, and print both. Each --steer adds ALPHA times a
feature's decoder direction to the residual stream at its layer (or, with --mode, clamps, ablates, caps or
rotates that direction): a positive ALPHA pushes the text toward the feature, a negative one away from it.
Decoding is greedy unless --temperature is given, with the library's repetition penalty.""", """
  qscope-lab steer --layer 2 --steer 1588=32 "The weather today is"
  qscope-lab steer --steer 2:1588=8 --steer 1:11=-5 --positions generated --max-new-tokens 20 "The weather today is"
""")
    add_lab_options(p)
    p.add_argument("--layer", type=LAYER, help="layer of FEATURE=ALPHA items (default: the middle layer)")
    p.add_argument("--steer", action="append", required=True, metavar="[LAYER:]FEATURE=ALPHA",
                   help="steer FEATURE by ALPHA: FEATURE=ALPHA at --layer, or LAYER:FEATURE=ALPHA at LAYER; ALPHA is "
                        "in the feature's activation units (negative suppresses); repeat for several features")
    p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"],
                   help="which tokens are steered: all (prompt and generated, the default), prompt (only the prompt's "
                        "tokens) or generated (only the new tokens, the prompt read as it is)")
    p.add_argument("--mode", default="add", choices=list(STEER_MODES), help=MODE_HELP)
    p.add_argument("--when", type=condition, metavar="LAYER:FEATURE[>THRESHOLD]",
                   help="steer only the positions where this SAE feature's activation exceeds THRESHOLD "
                        "(default 0), read at LAYER, at or before the steered layer (conditional steering)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=32, metavar="N",
                   help="tokens generated after the prompt, for the baseline and the steered text each (default: 32)")
    p.add_argument("--temperature", type=number(above=0), metavar="T",
                   help="sample at this temperature (> 0; default: greedy)")
    p.add_argument("--top-p", type=number(above=0, maximum=1), metavar="P",
                   help="sample within the smallest set of tokens holding this probability (0 < p <= 1)")
    p.add_argument("--seed", type=SEED, help="seed of the sampling, to repeat a sampled run (default: drawn and "
                                                   "printed)")
    p.add_argument("--repetition-penalty", type=number(above=0), default=DEFAULT_REPETITION_PENALTY, metavar="X",
                   help=f"divide the logits of tokens already seen by this (> 0; 1 turns it off; default: the "
                        f"library's {DEFAULT_REPETITION_PENALTY:g})")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template "
                                                       "(instruct models)")
    p.add_argument("prompt", type=text("the prompt"), help="the text generation continues (quote it)")
    p.set_defaults(func=run)


def parse_steer_args(items: list[str], layer: int | None) -> dict:
    """``F=A`` (at ``layer``) or ``L:F=A`` -> the ``{(layer, feature): alpha}`` dict Lab.generate takes."""
    steer = {}
    for item in items:
        try:
            key, value = item.split("=", 1)
            if ":" in key:
                at, feature = key.split(":", 1)
                steer[(int(at), int(feature))] = float(value)
            else:
                if layer is None:
                    raise ValueError
                steer[(layer, int(key))] = float(value)
        except ValueError:
            raise ValueError(f"--steer {item!r}: use FEATURE=ALPHA (at --layer) or LAYER:FEATURE=ALPHA") from None
    from ..base import validate  # torch-free

    for item in items:
        validate.alpha(float(item.split("=", 1)[1]), f"--steer {item}: alpha")
    return steer


def run(args) -> None:
    given = parse_steer_args(args.steer, args.layer if args.layer is not None else 0)  # malformed items refused
    check_layers(args, layer=[args.layer], steer=[layer for layer, _ in given],
                 when=[args.when[0]] if args.when else [])  # before the model loads
    check_features(args, "--steer", [feature for _, feature in given])
    check_features(args, "--when", [args.when[1]] if args.when else [])
    lab = lab_from_args(args)
    layer = lab.n_layers // 2 if args.layer is None else args.layer
    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p)) if v is not None}
    gen = lab.generate(args.prompt, steer=parse_steer_args(args.steer, layer), positions=args.positions,
                       mode=args.mode, when=args.when, max_new_tokens=args.max_new_tokens, chat=args.chat,
                       seed=args.seed, repetition_penalty=args.repetition_penalty, **sampling)
    edits = ", ".join(f"layer {s.layer} feature {s.feature} {s.mode} {s.value:+g}" for s in gen.steers)
    if args.when is not None:
        edits += f" when {gen.steers[0].when.label}"
    settings = gen.settings
    decoding = (f"sampled (temperature {settings['temperature']:g}, top_p {settings['top_p']:g}, "
                f"seed {settings['seed']})" if settings["do_sample"] else "greedy")
    print(f"prompt:   {gen.prompts[0]!r}\nsteering: {edits} (positions: {args.positions})")
    print(f"decoding: {decoding}, repetition_penalty {settings['repetition_penalty']:g}")
    print(f"baseline: {gen.baseline[0]!r}\nsteered:  {gen.steered[0]!r}")
