"""What every ``qscope-lab`` subcommand shares: the model / SAE options, building the Lab, printing a table."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..lab import Lab


# ---------------------------------------------------------------------------------------------- option types
# argparse ``type=`` checks: a bad number is refused while the arguments are parsed, before any model loads, as
# "argument --steps: must be at least 1, got -1" (exit code 2). No numpy or torch here: ``--help`` stays fast.
MAX_ABS_ALPHA = 1e4  # as base.validate: far beyond any useful steering strength


def integer(minimum: int | None = None, maximum: int | None = None):
    """An int option within [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, above: float | None = None):
    """A finite float option within [minimum, maximum] (and > ``above``): NaN and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be more than {above:g}, got {value:g}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {value:g}")
        return value
    parse.__name__ = "float"
    return parse


def numbers(minimum: float | None = None, maximum: float | None = None):
    """Comma-separated finite numbers (at least one) within [minimum, maximum] -> a list."""
    one = number(minimum, maximum)

    def parse(text: str) -> list[float]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"give comma-separated numbers, e.g. 4,8,16; got {text!r}")
        return [one(item) for item in items]
    parse.__name__ = "numbers"
    return parse


def feature_ids(text: str) -> str:
    """Comma-separated feature ids (ints >= 0), checked for form here and against the SAE once it is loaded."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(item.isdigit() for item in items):
        raise argparse.ArgumentTypeError(f"give comma-separated feature ids (ints >= 0), e.g. 12,45; got {text!r}")
    return text


LAYER = integer(0)      # the upper bound is the model's: checked by ``check_layers`` before the model loads
POSITIVE = integer(1)
COUNT = integer(0)
SEED = integer(0, 2**32 - 1)


DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


def dtype(text: str) -> str:
    """``--dtype``: a name torch knows for float32, bfloat16 or float16 (refused while parsing, without torch)."""
    name = text.strip().lower().removeprefix("torch.")
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"use float32, bfloat16 or float16 (or fp32, bf16, fp16), got {text!r}")
    return DTYPES[name]


def text(what: str):
    """A positional text that must hold more than white space (an empty prompt would load the model for nothing)."""
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{what} is empty, got {value!r}")
        return value
    parse.__name__ = what
    return parse


# ---------------------------------------------------------------------------------------------- parsers
FORMATTER = argparse.RawDescriptionHelpFormatter  # descriptions and examples keep their lines; options are wrapped


def command(sub, name: str, summary: str, description: str, examples: str = "") -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` is plain text: ``summary`` in the command list, ``description`` above its
    options, ``examples`` (shell lines, run verbatim from the repository root) below them."""
    epilog = "examples (from the repository root):\n" + examples.strip("\n") if examples else None
    return sub.add_parser(name, help=summary, description=description.strip("\n"), epilog=epilog,
                          formatter_class=FORMATTER)


# ---------------------------------------------------------------------------------------------- checks before loading
def model_layers(model: str | None) -> int | None:
    """How many decoder layers ``-m MODEL`` has, read from its config.json without torch or a download: the
    embedded default, a local checkpoint folder, or a hub id already in the local cache; None where it cannot
    be read (the Lab then checks the layer once loaded). A local path that holds no checkpoint is refused here,
    naming -m, before torch is imported."""
    from .. import embedded

    config: Path | None = None
    if model is None:
        config = embedded.MODEL_DIR / "config.json"
    elif Path(model).expanduser().is_dir():
        config = Path(model).expanduser() / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"-m {model}: the folder has no config.json, so it is not a transformers "
                                    f"checkpoint folder")
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise FileNotFoundError(f"-m {model}: no checkpoint folder there (and it is not a hub id like "
                                f"'Qwen/Qwen3-8B-Base')")
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # noqa: BLE001 - an unusable cache only means the Lab checks the layer later
            return None
        config = Path(found) if isinstance(found, str) else None
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data = data.get("text_config") if isinstance(data.get("text_config"), dict) else data  # VL checkpoints
    n = data.get("num_hidden_layers")
    return n if isinstance(n, int) and n > 0 else None


def check_layers(args: argparse.Namespace, **options) -> None:
    """Refuse a layer the model does not have before it loads: ``options`` maps an option's name (underscores for
    dashes) to the layers it gave. Raises ValueError naming the option, the layer and the valid range (and
    FileNotFoundError for a -m path that holds no checkpoint)."""
    n = model_layers(getattr(args, "model", None))
    if n is None:
        return
    for option, layers in options.items():
        for layer in layers or ():
            if layer is not None and not 0 <= layer < n:
                name = "--" + option.replace("_", "-")
                raise ValueError(f"{name} {layer}: layer must be an int in 0..{n - 1} (the model has {n} layers)")


def sae_width(args: argparse.Namespace) -> int | None:
    """Features per SAE of the suite ``-m`` / ``-s`` name, known without loading it: the embedded default's (its
    file header) or a registered Qwen-Scope group's; None otherwise (the Lab checks feature ids once loaded)."""
    from .. import embedded
    from ..saes.registry import default_group, find_group

    model, saes = getattr(args, "model", None), getattr(args, "saes", None)
    if model is None and saes is None:
        files = sorted(embedded.SAE_DIR.glob("layer*.sae.safetensors"))
        widths = {_safetensors_metadata(f).get("d_sae") for f in files}
        return int(widths.pop()) if len(widths) == 1 and None not in widths else None
    group = find_group(saes) if saes is not None else default_group(model) if model is not None else None
    return group.d_sae if group is not None else None


def _safetensors_metadata(path: Path) -> dict:
    """The ``__metadata__`` of a .safetensors file, read from its JSON header (8-byte length, then JSON)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size)) if 0 < size < 1 << 24 else {}
    except (OSError, ValueError):
        return {}
    return header.get("__metadata__") or {} if isinstance(header, dict) else {}


def check_features(args: argparse.Namespace, option: str, features) -> None:
    """Refuse a feature id the SAE does not have before the model loads (where its width is known)."""
    width = sae_width(args)
    if width is None:
        return
    for feature in features:
        if not 0 <= feature < width:
            raise ValueError(f"{option} {feature}: feature must be an int in 0..{width - 1} (the SAE has {width:,} "
                             f"features)")


def add_lab_options(p: argparse.ArgumentParser, needs_saes: bool = True) -> None:
    """-m / -s / --k / --device / --dtype, with help that names what omitting each one does."""
    p.add_argument("-m", "--model", help="hub id or local checkpoint folder (default: the embedded qscope model, "
                                         "offline)")
    p.add_argument("-s", "--saes", help="Qwen-Scope hub id, or a local folder/file of SAEs (default: the model's "
                                        "own: the embedded SAEs, or a Qwen-Scope backbone's k=50 group)"
                   + ("" if needs_saes else "; optional"))
    p.add_argument("--k", type=POSITIVE, help="TopK k, when the SAE files and their folder name do not say")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", type=dtype, help="model dtype: float32, bfloat16, float16 (default: the checkpoint's)")


def add_layer_option(p: argparse.ArgumentParser, what: str = "layer whose SAE is used") -> None:
    p.add_argument("--layer", type=LAYER, help=f"{what} (default: the middle layer)")


def add_out_option(p: argparse.ArgumentParser, what: str = "write the table to this .csv (or .parquet) file instead "
                                                           "of printing it") -> None:
    p.add_argument("--out", metavar="FILE", help=what)


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
