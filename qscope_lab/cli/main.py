"""``qscope-lab``: the Lab from the shell, for headless runs and quick looks. Every command runs on the embedded
default when ``-m`` is omitted, and on the middle layer when ``--layer`` is.

Each subcommand is a module of this package with ``register(subparsers)`` (``options.command`` gives it a
plain-text description and examples; ``DESCRIPTION`` / ``EPILOG`` here are the top level's); heavy imports happen
inside the command, so ``qscope-lab saes`` or ``--help`` never load torch. Every numeric option is checked while
the arguments are parsed (``options.integer`` / ``number``), and layers and feature ids against the model's
config.json and the SAE's width (``options.check_layers`` / ``check_features``), before any model loads: exit
code 2 and a message naming the option. A user's error is one line and exit code 2; Ctrl-C is one line
("interrupted", and how to resume where the command can) and exit code 130, as a shell reports SIGINT. Every
example in a ``--help`` is a line of docs/cli.md or a how-to page, which the snippet test runs on ``examples/``.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import signal
import sys
import threading

from . import classify, coverage, encode, index, info, saes, steer, synthesize, training

COMMANDS = (saes, info, encode, steer, classify, coverage, training, synthesize, index)


DESCRIPTION = """\
The Lab from the shell, for headless runs and quick looks: SAE features of texts, steered generation, seed
classifiers, benchmark coverage, data synthesis and feature indexes.

Every command runs on the embedded default (a tiny Qwen3 model with its own SAEs, shipped in the package: offline,
CPU, seconds) unless -m names a checkpoint, and on the model's middle layer unless --layer names one. A bad
argument is refused before any model loads: one line on stderr and exit code 2. Ctrl-C stops a command with one
line and exit code 130."""

EPILOG = """\
examples (from the repository root; the files are in examples/):
  qscope-lab saes
  qscope-lab encode "hello world 你好" --top 5
  qscope-lab steer --layer 2 --steer 1588=32 "The weather today is"
  qscope-lab classify --train examples/seeds.csv --test examples/heldout.csv
  qscope-lab coverage --layer 2 --benchmark mixed=examples/mixed.txt --benchmark cats=examples/cats.jsonl
  qscope-lab synthesize --layer 2 --seeds examples/seeds.txt --targets-from examples/goal.txt
  qscope-lab index build --corpus examples/corpus.jsonl --out my-index --layers 2 3

Run qscope-lab COMMAND --help for a command's options and examples."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; its help is plain text (the site's CLI page prints it as it is)."""
    parser = argparse.ArgumentParser(prog="qscope-lab", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands",
                                help="one of these (qscope-lab COMMAND --help for its options):")
    for command in COMMANDS:
        command.register(sub)
    return parser


# What a user can cause (a bad argument, a missing or damaged file, a refused pickle, a busy lock): one line
# on stderr and exit 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, pickle.UnpicklingError)


def one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return " ".join(str(message).split()) or type(err).__name__


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def resume_hint(args: argparse.Namespace) -> str:
    """How to pick up an interrupted command where it stopped, or "" where it cannot be."""
    if args.command == "index" and getattr(args, "action", None) == "build":
        return (f": run the same command again to resume the build at {args.out} (add --overwrite to start "
                f"afresh)")
    return ": this command does not resume; run it again to start over"


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` (or a weakref / GC callback under one), where Python prints
    an exception and drops it: a KeyboardInterrupt raised there would be lost and the command run on."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def ctrl_c_lands():
    """Ctrl-C raises KeyboardInterrupt in the command, even when it arrives while a finaliser runs (a progress
    bar's ``__del__``): then it is raised 10 ms later, outside it. Main thread, POSIX timers only."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def interrupt(signum, frame):
        if _in_finalizer(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # raised again by the alarm, once out of it
            return
        raise KeyboardInterrupt

    old_int = signal.signal(signal.SIGINT, interrupt)
    old_alarm = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGINT, old_int)


def main(argv: list[str] | None = None) -> int:
    """Run one ``qscope-lab`` command; returns its exit code (0, 2 for a refused argument or a user's error,
    130 when interrupted), argparse's own refusals and ``--help`` included."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or argparse's refusal (2), already printed
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    except KeyboardInterrupt:
        print("qscope-lab: interrupted", file=sys.stderr)
        return INTERRUPTED
    try:
        with ctrl_c_lands():
            args.func(args)
    except KeyboardInterrupt:
        print(f"qscope-lab {args.command}: interrupted{resume_hint(args)}", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as err:
        print(f"qscope-lab {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
