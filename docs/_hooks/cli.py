"""MkDocs hook: the CLI page shows the `--help` of every command as the installed parser prints it.

A line ``<!-- cli-help -->`` in a page is replaced by one section per subcommand (and per action of a command
with actions, such as ``index build``), read from ``qscope_lab.cli.main.build_parser()``: the help on the site
is the help of the code it was built from, and a new subcommand or option shows up without editing the page.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os

MARKER = "<!-- cli-help -->"


def _help(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: fixed for the page
    with contextlib.redirect_stdout(io.StringIO()):
        return parser.format_help().rstrip()


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def sections() -> str:
    from qscope_lab.cli.main import build_parser

    top = build_parser()
    out = ["## qscope-lab", "", "```text", _help(top), "```", ""]
    for name, sub in _subparsers(top):
        out += [f"## qscope-lab {name}", "", "```text", _help(sub), "```", ""]
        for action, inner in _subparsers(sub):
            out += [f"### qscope-lab {name} {action}", "", "```text", _help(inner), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files, **_):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, sections())
    return markdown
