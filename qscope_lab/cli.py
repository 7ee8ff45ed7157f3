"""``qscope-lab``: the Lab from the shell, for headless runs and quick looks.

    qscope-lab saes [--backbone Qwen3-8B-Base]
    qscope-lab info   -m MODEL [-s SAES] [--layer L]
    qscope-lab encode -m MODEL -s SAES --layer L "text" ... [--top 5] [--out acts.csv]
    qscope-lab steer  -m MODEL -s SAES --layer L --steer 6159=-8 [--steer 14:20=3] "prompt"
    qscope-lab classify   -m MODEL --train seeds.csv --test heldout.csv [--save clf.json] [--out prefix]
    qscope-lab coverage   -m MODEL --layer L --benchmark a=a.txt --benchmark b=b.jsonl [--out prefix]
    qscope-lab language-features [--layer L] [--texts zh=zh.txt --texts en=en.txt] [--out features.csv]
    qscope-lab sasft-demo [--steps 30] [--weight 0.25] [--out table.csv]
    qscope-lab synthesize -m MODEL --layer L --seeds seeds.txt --targets-from goal.txt [--out prefix]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .registry import groups_for_backbone, registry_frame


def _add_lab_options(p: argparse.ArgumentParser, needs_saes: bool = True) -> None:
    p.add_argument("-m", "--model", help="hub id or local checkpoint folder")
    p.add_argument("-s", "--saes", help="Qwen-Scope hub id, or a local folder/file of SAEs"
                   + ("" if needs_saes else " (optional)"))
    p.add_argument("--k", type=int, help="TopK k, when the SAE files and their folder name do not say")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", help="model dtype: float32, bfloat16, float16")


def _lab(args):
    from .lab import Lab

    return Lab.load(args.model, saes=args.saes, device=args.device, dtype=args.dtype, k=args.k)


def _print_frame(frame: pd.DataFrame, out: str | None) -> None:
    if out:
        path = Path(out)
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        print(f"wrote {len(frame)} rows to {path}")
    else:
        with pd.option_context("display.max_rows", 500, "display.width", 160, "display.max_colwidth", 60):
            print(frame.to_string(index=False))


def cmd_saes(args) -> None:
    frame = registry_frame()
    if args.backbone:
        keep = {g.repo_id for g in groups_for_backbone(args.backbone)}
        if not keep:
            raise ValueError(f"no Qwen-Scope group for backbone {args.backbone!r}")
        frame = frame[frame.repo_id.isin(keep)]
    _print_frame(frame, args.out)


def cmd_info(args) -> None:
    lab = _lab(args)
    frame = lab.info()
    if args.layer is not None:
        sae = lab.sae(args.layer)
        norms = sae.decoder_norms
        extra = {f"layer {args.layer} SAE": repr(sae), "decoder norm min/mean/max":
                 f"{norms.min():.4f} / {norms.mean():.4f} / {norms.max():.4f}", "source": sae.meta.get("path")}
        frame = pd.concat([frame, pd.DataFrame({"field": list(extra), "value": [str(v) for v in extra.values()]})])
    _print_frame(frame, None)


def cmd_encode(args) -> None:
    lab = _lab(args)
    acts = lab.encode(args.texts, layer=args.layer, skip_first=args.skip_first)
    frame = acts.to_frame()
    frame = frame[frame["rank"] < args.top].reset_index(drop=True)
    _print_frame(frame, args.out)


def parse_steer_args(items: list[str], layer: int | None) -> dict:
    """``F=A`` (at --layer) or ``L:F=A`` -> the dict Lab.generate takes."""
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
            raise ValueError(f"--steer {item!r}: use FEATURE=ALPHA with --layer, or LAYER:FEATURE=ALPHA") from None
    return steer


def cmd_steer(args) -> None:
    steer = parse_steer_args(args.steer, args.layer)
    lab = _lab(args)
    gen = lab.generate(args.prompt, steer=steer, positions=args.positions, mode=args.mode,
                       max_new_tokens=args.max_new_tokens, chat=args.chat)
    edits = ", ".join(f"layer {s.layer} feature {s.feature} {s.mode} {s.value:+g}" for s in gen.steers)
    print(f"prompt:   {gen.prompts[0]!r}\nsteering: {edits} (positions: {args.positions})")
    print(f"baseline: {gen.baseline[0]!r}\nsteered:  {gen.steered[0]!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qscope-lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("saes", help="the Qwen-Scope SAE groups as a table")
    p.add_argument("--backbone", help="only the groups of this backbone, e.g. Qwen3-8B-Base")
    p.add_argument("--out", help="write CSV (or .parquet) instead of printing")
    p.set_defaults(func=cmd_saes)

    p = sub.add_parser("info", help="model and SAE facts")
    _add_lab_options(p, needs_saes=False)
    p.add_argument("--layer", type=int, help="also load this layer's SAE and describe it")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("encode", help="top SAE features of every token")
    _add_lab_options(p)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--top", type=int, default=5, help="features shown per token")
    p.add_argument("--skip-first", action="store_true", help="mask position 0 (the attention sink)")
    p.add_argument("--out", help="write CSV (or .parquet) instead of printing")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("steer", help="baseline vs steered generation")
    _add_lab_options(p)
    p.add_argument("--layer", type=int, help="layer for FEATURE=ALPHA items")
    p.add_argument("--steer", action="append", required=True, metavar="[LAYER:]FEATURE=ALPHA")
    p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    p.add_argument("--mode", default="add", choices=["add", "clamp", "ablate"])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("prompt")
    p.set_defaults(func=cmd_steer)
    from .classify import add_cli as add_classify_cli
    from .coverage import add_cli as add_coverage_cli
    from .synthesis import add_cli as add_synthesis_cli
    from .code_switch_experiment import add_cli as add_training_signals_cli

    add_classify_cli(sub)
    add_coverage_cli(sub)
    add_synthesis_cli(sub)
    add_training_signals_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, KeyError, IndexError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"qscope-lab {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
