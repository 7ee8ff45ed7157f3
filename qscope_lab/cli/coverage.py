"""``qscope-lab coverage``: benchmark footprints in SAE feature space, their overlap and coverage curves."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    POSITIVE,
    add_lab_options,
    add_layer_option,
    check_layers,
    command,
    integer,
    lab_from_args,
    layer_from_args,
    print_frame,
)


def register(sub) -> None:
    p = command(sub, "coverage", "benchmark footprints in SAE feature space: redundancy, overlap", """
Which SAE features each benchmark exercises (its footprint), how much its items repeat each other (redundancy),
how much of one benchmark's footprint another covers (overlap), and the coverage curve (features covered by the
first n items).

File format (--benchmark NAME=FILE): .txt with one item per line, .jsonl or .json with a "text" field, or
.csv / .parquet with a 'text' column. examples/cats.jsonl:
  {"text": "The cat sat on the mat."}
  {"text": "The cat sat on the rug."}""", """
  qscope-lab coverage --layer 2 --benchmark mixed=examples/mixed.txt --benchmark cats=examples/cats.jsonl
  qscope-lab coverage --layer 2 --benchmark mixed=examples/mixed.txt --benchmark cats=examples/cats.jsonl --out cov""")
    add_lab_options(p)
    add_layer_option(p)
    p.add_argument("--position", default="last", choices=["last", "all"],
                   help="active features at the last token (default) or at any token")
    p.add_argument("--benchmark", action="append", required=True, metavar="NAME=FILE",
                   help="a benchmark's name and file (.txt one item per line, .jsonl / .json 'text' field, .csv / "
                        ".parquet 'text' column); a bare FILE is named by its stem; repeat for several")
    p.add_argument("--batch-size", type=POSITIVE, default=16, metavar="N",
                   help="texts per forward pass (default 16; lower it if memory runs short)")
    p.add_argument("--max-length", type=max_length, default=256, metavar="N",
                   help="tokens kept per text (default 256; 0 keeps all; else at least 2)")
    p.add_argument("--n-orders", type=POSITIVE, default=20, metavar="N",
                   help="random orders of the items averaged in the coverage curve (default 20)")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX_footprint.csv, PREFIX_overlap_asym.csv, "
                                                    "PREFIX_overlap_min.csv and PREFIX_curve.csv instead of printing")
    p.set_defaults(func=run)


def max_length(text: str) -> int:
    """``--max-length``: 0 (all tokens) or at least 2 (position 0, the attention sink, is not counted)."""
    value = integer(0)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("must be 0 (all tokens) or at least 2: one token is only the attention "
                                         "sink, which is not counted")
    return value


def parse_benchmark_args(items: list[str]) -> dict[str, Path]:
    """``NAME=path`` (or a bare path, named by its stem) -> {name: path}; names must be unique."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if not name or not path:
            raise ValueError(f"--benchmark {item!r}: use NAME=path")
        if name in out:
            raise ValueError(f"--benchmark: the name {name!r} is given twice")
        out[name] = Path(path)
    return out


def run(args) -> None:
    from ..base.textfiles import read_texts

    benchmarks = {}
    for name, path in parse_benchmark_args(args.benchmark).items():
        benchmarks[name] = read_texts(path)
        if not benchmarks[name]:
            raise ValueError(f"--benchmark {name}={path}: the file has no texts")
    check_layers(args, layer=[args.layer])
    from ..workflows.coverage import coverage_report  # torch: after the checks

    lab = lab_from_args(args)
    tables = coverage_report(lab, benchmarks, layer_from_args(args, lab), position=args.position,
                             batch_size=args.batch_size, max_length=args.max_length or None, n_orders=args.n_orders)
    if args.out:
        for key in ("footprint", "overlap_asym", "overlap_min", "curve"):
            print_frame(tables[key], f"{args.out}_{key}.csv")
    else:
        print_frame(tables["footprint"], None)
        print("\noverlap |F1 & F2| / |F1| (row F1, column F2):")
        print_frame(tables["overlap_asym"], None)
        print("\noverlap |F1 & F2| / min(|F1|, |F2|):")
        print_frame(tables["overlap_min"], None)
