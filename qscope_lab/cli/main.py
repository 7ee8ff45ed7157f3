"""``qscope-lab``: the Lab from the shell, for headless runs and quick looks. Every command runs on the embedded
default when ``-m`` is omitted, and on the middle layer when ``--layer`` is.

    qscope-lab saes [--backbone Qwen3-8B-Base]
    qscope-lab info   [-m MODEL] [-s SAES] [--layer L]
    qscope-lab encode [-m MODEL] [--layer L] "text" ... [--top 5] [--out acts.csv]
    qscope-lab steer  [-m MODEL] [--layer L] --steer 6159=-8 [--steer 14:20=3] "prompt"
    qscope-lab classify   [-m MODEL] --train seeds.csv --test heldout.csv [--save clf.json] [--out prefix]
    qscope-lab coverage   [-m MODEL] [--layer L] --benchmark a=a.txt --benchmark b=b.jsonl [--out prefix]
    qscope-lab language-features [--layer L] [--texts zh=zh.txt --texts en=en.txt] [--out features.csv]
    qscope-lab sasft-demo [--steps 30] [--weight 0.25] [--out table.csv]
    qscope-lab synthesize [-m MODEL] [--layer L] --seeds seeds.txt --targets-from goal.txt [--out prefix]
    qscope-lab index build --corpus docs.jsonl --out my-index [--layers 2 3] [--engine ray];  index info | export

Each subcommand is a module of this package with ``register(subparsers)``; heavy imports happen inside the
command, so ``qscope-lab saes`` or ``--help`` never load torch.
"""

from __future__ import annotations

import argparse
import pickle
import sys

from . import classify, coverage, encode, index, info, saes, steer, synthesize, training

COMMANDS = (saes, info, encode, steer, classify, coverage, training, synthesize, index)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qscope-lab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


# What a user can cause (a bad argument, a missing or damaged file, a refused pickle, a busy lock): one line
# on stderr and exit 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, pickle.UnpicklingError)


def one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return " ".join(str(message).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as err:
        print(f"qscope-lab {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
