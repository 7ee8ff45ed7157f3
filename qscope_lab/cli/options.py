"""What every ``qscope-lab`` subcommand shares: the model / SAE options, building the Lab, printing a table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..lab import Lab


def add_lab_options(p: argparse.ArgumentParser, needs_saes: bool = True) -> None:
    """-m / -s / --k / --device / --dtype, with help that names what omitting each one does."""
    p.add_argument("-m", "--model", help="hub id or local checkpoint folder (default: the embedded qscope model, "
                                         "offline)")
    p.add_argument("-s", "--saes", help="Qwen-Scope hub id, or a local folder/file of SAEs (default: the model's "
                                        "own: the embedded SAEs, or a Qwen-Scope backbone's k=50 group)"
                   + ("" if needs_saes else "; optional"))
    p.add_argument("--k", type=int, help="TopK k, when the SAE files and their folder name do not say")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", help="model dtype: float32, bfloat16, float16 (default: the checkpoint's)")


def add_layer_option(p: argparse.ArgumentParser, what: str = "layer whose SAE is used") -> None:
    p.add_argument("--layer", type=int, help=f"{what} (default: the middle layer)")


def add_out_option(p: argparse.ArgumentParser, what: str = "write CSV (or .parquet) instead of printing") -> None:
    p.add_argument("--out", help=what)


def lab_from_args(args: argparse.Namespace) -> Lab:
    """The Lab the options describe, loaded quietly (no weight-loading progress bars on stderr)."""
    from ..lab import Lab

    return Lab.load(args.model, saes=args.saes, device=args.device, dtype=args.dtype, k=args.k)


def layer_from_args(args: argparse.Namespace, lab: Lab) -> int:
    """``--layer``, or the model's middle layer when it was not given."""
    return lab.n_layers // 2 if getattr(args, "layer", None) is None else lab.check_layer(args.layer)


def print_frame(frame, out: str | None) -> None:
    """A table to stdout, or to ``out`` (.csv, or .parquet) with a one-line note of what was written."""
    import pandas as pd

    if out:
        path = Path(out)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"--out {out}: the folder {path.parent} does not exist")
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        print(f"wrote {len(frame)} rows to {path}")
    else:
        with pd.option_context("display.max_rows", 500, "display.width", 160, "display.max_colwidth", 60):
            print(frame.to_string(index=False))
