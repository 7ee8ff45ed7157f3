"""``qscope-lab steer``: baseline and steered generation side by side."""

from __future__ import annotations

from .options import LAYER, POSITIVE, add_lab_options, lab_from_args


def register(sub) -> None:
    p = sub.add_parser("steer", help="baseline vs steered generation")
    add_lab_options(p)
    p.add_argument("--layer", type=LAYER, help="layer of FEATURE=ALPHA items (default: the middle layer)")
    p.add_argument("--steer", action="append", required=True, metavar="[LAYER:]FEATURE=ALPHA")
    p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    p.add_argument("--mode", default="add", choices=["add", "clamp", "ablate"])
    p.add_argument("--max-new-tokens", type=POSITIVE, default=32)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("prompt")
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
    parse_steer_args(args.steer, 0)  # refuse malformed items before the model loads
    lab = lab_from_args(args)
    layer = lab.n_layers // 2 if args.layer is None else args.layer
    gen = lab.generate(args.prompt, steer=parse_steer_args(args.steer, layer), positions=args.positions,
                       mode=args.mode, max_new_tokens=args.max_new_tokens, chat=args.chat)
    edits = ", ".join(f"layer {s.layer} feature {s.feature} {s.mode} {s.value:+g}" for s in gen.steers)
    print(f"prompt:   {gen.prompts[0]!r}\nsteering: {edits} (positions: {args.positions})")
    print(f"baseline: {gen.baseline[0]!r}\nsteered:  {gen.steered[0]!r}")
