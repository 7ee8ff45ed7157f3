"""SAE file formats: each reads one layer into (tensors, ``SAEConfig``) and writes it back, nothing more.

The formats know nothing of the ``SAE`` class (which builds itself from what they return, as SAELens separates
its loaders from its SAE class); one table, ``FORMATS``, says which reader and writer a file needs.

- ``qwen-scope``: ``layer{n}.sae.pt``, a torch-saved dict of four float32 tensors, no config. Read with
  ``torch.load(weights_only=True, mmap=True)``: never arbitrary unpickling, no copy of the weights. k is not in
  the file: it comes from the caller or from a hub-pattern name (``...-W32K-L0_50``).
- ``saelens``: a folder with ``cfg.json`` + ``sae_weights.safetensors`` (``W_enc (d_in, d_sae)``); we keep
  transposed *views*, which ``F.linear`` consumes without copying.
- ``qscope`` (ours): ``layer{n}.sae.safetensors`` in Qwen-Scope orientation, any float dtype, with k, layer and
  provenance in the safetensors metadata, so one file describes itself.
"""

from __future__ import annotations

import json
import pickle
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .registry import parse_group_name

TENSOR_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec")
QWEN_SCOPE_KEYS = TENSOR_NAMES  # the hub's .pt holds exactly these
QSCOPE_FORMAT = "qscope-sae/1"
_LAYER_FILE = re.compile(r"^layer(\d+)\.sae\.(pt|safetensors)$")
_SAELENS_HOOK = re.compile(r"(?:blocks|layers?)\.(\d+)\.")

Tensors = dict[str, torch.Tensor]


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A ``.pt`` file asks to import or call something other than tensors: refused without running it. Also a
    ValueError: to a caller it is a bad input file like any other."""


def _refusal_detail(err: Exception) -> str:
    """What torch's weights-only unpickler objected to, without its advice to retry with weights_only=False
    (which would run the file's code)."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error" in line or "Unsupported" in line:
            return line.strip()
    return type(err).__name__


@dataclass(frozen=True)
class SAEConfig:
    """What a file says about its SAE besides the weights. ``provenance``: everything else it records (hub repo,
    training statistics, ...), kept as given and written back by the qscope format."""

    d_model: int
    d_sae: int
    k: int
    layer: int | None = None
    apply_b_dec_to_input: bool = False
    format: str = "qscope"
    path: str | None = None
    hook: str | None = "resid_post"
    provenance: dict[str, Any] = field(default_factory=dict)


def layer_of(path: str | Path) -> int | None:
    """Layer number of a ``layer{n}.sae.pt`` / ``layer{n}.sae.safetensors`` file name, else None."""
    match = _LAYER_FILE.match(Path(path).name)
    return int(match[1]) if match else None


def k_from_name(path: str | Path) -> int | None:
    """k from the nearest path component named in the hub pattern ``...-W{N}K-L0_{k}``."""
    for part in reversed(Path(path).parts):
        parsed = parse_group_name(part)
        if parsed:
            return parsed[2]
    return None


def _require_tensors(tensors: Tensors, path: Path) -> None:
    missing = [name for name in TENSOR_NAMES if name not in tensors]
    if missing:
        raise ValueError(f"{path}: no tensor {', '.join(missing)} (has {sorted(tensors)})")


CHECK_CHUNK_ELEMENTS = 1 << 22  # 4M values a step: a 4 MB bool mask, never a copy of the tensor


def _nonfinite(t: torch.Tensor) -> int:
    """How many values of ``t`` are NaN or infinite, read in slices of its first dimension (views: a memory-mapped
    file stays mapped, a transposed view is not made contiguous, nothing is widened to float64). One float32 sum
    per slice (NaN and inf carry through it; 5x faster than a float64 sum of the whole tensor), and an exact count
    only for a slice whose sum is not finite (which a finite slice can also reach by overflowing: it counts 0)."""
    if t.numel() == 0:
        return 0
    if t.ndim == 0:
        return int(not torch.isfinite(t))
    wide = None if t.dtype in (torch.float32, torch.float64) else torch.float32  # half sums would overflow
    step = max(1, CHECK_CHUNK_ELEMENTS // max(1, t[0].numel()))
    bad = 0
    for i in range(0, t.shape[0], step):
        part = t[i:i + step]
        if not torch.isfinite(part.sum(dtype=wide)):
            bad += int((~torch.isfinite(part)).sum())
    return bad


def check_values(tensors: Tensors, path: Path | str) -> None:
    """Every tensor is floating point and finite, checked slice by slice (no copy, no float64), with the count
    of bad values when something is wrong."""
    for name in TENSOR_NAMES:
        t = tensors[name]
        if not t.is_floating_point():
            raise ValueError(f"{path}: {name} holds {str(t.dtype).replace('torch.', '')} values, not floats: "
                             f"not an SAE checkpoint")
        bad = _nonfinite(t)
        if bad:
            raise ValueError(f"{path}: {name} holds {bad} NaN or infinite value(s) of {t.numel()}: the file is "
                             f"damaged or was saved from a diverged training run")


# Files whose values passed check_values, by (resolved path, size, mtime): a reload of an unchanged file skips the
# pass over its weights (seconds per GB-sized layer). A rewritten file has a new size or mtime and is checked again.
_CHECKED: set[tuple[str, int, int]] = set()
_RACY_NS = 2 * 10**9  # files modified this recently are checked on every read
CHECKS = {"run": 0, "skipped": 0}  # what check_values did (tests and benchmarks read it)


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns) of the file holding ``path``'s weights (a SAELens folder's safetensors)."""
    weights = path / "sae_weights.safetensors" if path.is_dir() else path
    stat = weights.stat()
    return str(weights.resolve()), stat.st_size, stat.st_mtime_ns


def forget_checks() -> None:
    """Check every file again on its next read."""
    _CHECKED.clear()


def _shape_config(tensors: Tensors, path: Path, **fields) -> SAEConfig:
    _require_tensors(tensors, path)
    d_sae, d_model = tensors["W_enc"].shape if tensors["W_enc"].ndim == 2 else (0, 0)
    return SAEConfig(d_model=int(d_model), d_sae=int(d_sae), path=str(path), **fields)


# ---------------------------------------------------------------------------- Qwen-Scope .pt
def _torch_load(path: Path):
    """``torch.load`` of tensors only, memory-mapped where the file allows it."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a torch checkpoint")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head == b"PK":  # torch's zip container, cut before its central directory
            raise ValueError(f"{path} is truncated: a torch checkpoint (zip archive) whose end is missing, "
                             f"{path.stat().st_size:,} bytes on disk; download it again")
        if head[:1] != b"\x80":  # neither torch's zip container nor a legacy pickle
            raise ValueError(f"{path} is not a torch checkpoint (neither a zip archive nor a pickle)")
        return torch.load(path, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def read_qwen_scope(path: str | Path, k: int | None = None) -> tuple[Tensors, SAEConfig]:
    """The four tensors of a Qwen-Scope checkpoint, memory-mapped, never unpickling code."""
    path = Path(path)
    k = k or k_from_name(path)
    if k is None:
        raise ValueError(
            f"Qwen-Scope checkpoints carry no config, so k is unknown for {path}: pass k=50 (or 100), or keep "
            f"the hub folder name (e.g. 'SAE-Res-Qwen3-1.7B-Base-W32K-L0_50') in the path.")
    try:
        state = _torch_load(path)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it is not a plain tensor checkpoint (the pickle asks for something other "
            f"than tensors, which could run code). Nothing from it was executed. Detail: {_refusal_detail(err)}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupt: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not isinstance(state, dict) or set(state) != set(QWEN_SCOPE_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a Qwen-Scope SAE checkpoint: expected keys {list(QWEN_SCOPE_KEYS)}, "
                         f"got {keys}")
    bad = [name for name, t in state.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad} are not tensors")
    return state, _shape_config(state, path, k=int(k), layer=layer_of(path), format="qwen-scope")


def write_qwen_scope(path: str | Path, tensors: Tensors, config: SAEConfig, dtype=None) -> Path:
    """The exact Qwen-Scope file: a dict of four contiguous float32 tensors (no room for a config)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensors[name].detach().to("cpu", torch.float32).contiguous() for name in TENSOR_NAMES}, path)
    return path


# ---------------------------------------------------------------------------- SAELens folders
def is_saelens_folder(path: Path) -> bool:
    return path.is_dir() and (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()


def _saelens_cfg(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{folder / 'cfg.json'} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder / 'cfg.json'} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def saelens_layer(folder: str | Path) -> int | None:
    """The layer a SAELens folder hooks (from cfg.json's hook_name), without reading its weights."""
    match = _SAELENS_HOOK.search(str(_saelens_cfg(Path(folder)).get("hook_name", "")))
    return int(match[1]) if match else None


def _load_safetensors(path: Path) -> Tensors:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError for every kind of damage
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


def read_saelens(folder: str | Path, k: int | None = None) -> tuple[Tensors, SAEConfig]:
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    cfg = _saelens_cfg(folder)
    arch = cfg.get("architecture") or (cfg.get("activation_fn") if cfg.get("activation_fn") == "topk" else None)
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch != "topk" or not k:
        raise ValueError(f"{folder}: only TopK SAELens SAEs are supported (got architecture={arch!r}, k={k!r})")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported")
    sd = _load_safetensors(folder / "sae_weights.safetensors")
    _require_tensors(sd, folder / "sae_weights.safetensors")
    hook = str(cfg.get("hook_name", ""))
    match = _SAELENS_HOOK.search(hook)
    # SAELens stores W_enc (d_in, d_sae) and W_dec (d_sae, d_in): transposed views, no copy.
    tensors = {"W_enc": sd["W_enc"].T, "W_dec": sd["W_dec"].T, "b_enc": sd["b_enc"], "b_dec": sd["b_dec"]}
    return tensors, _shape_config(tensors, folder, k=int(k), layer=int(match[1]) if match else None,
                                  apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
                                  format="saelens", hook=hook or None)


# ---------------------------------------------------------------------------- qscope safetensors
def read_qscope_meta(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded metadata of one of our safetensors files, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta


_CONFIG_KEYS = ("format", "k", "d_model", "d_sae", "apply_b_dec_to_input", "layer", "hook")


def read_qscope(path: str | Path, k: int | None = None) -> tuple[Tensors, SAEConfig]:
    """Our safetensors layer file (SAELens' own file when a ``cfg.json`` stands beside it)."""
    path = Path(path)
    if (path.parent / "cfg.json").is_file():
        return read_saelens(path.parent)
    meta = read_qscope_meta(path)
    if meta.get("format") != QSCOPE_FORMAT:
        raise ValueError(f"{path} is a safetensors file without qscope SAE metadata (format={meta.get('format')!r})")
    if not isinstance(meta.get("k"), int):
        raise ValueError(f"{path}: its metadata has no integer k (got {meta.get('k')!r})")
    tensors = _load_safetensors(path)
    layer = meta.get("layer")
    return tensors, _shape_config(
        tensors, path, k=int(meta["k"]), layer=layer if isinstance(layer, int) else layer_of(path),
        apply_b_dec_to_input=bool(meta.get("apply_b_dec_to_input", False)), format="qscope",
        hook=meta.get("hook", "resid_post"), provenance={key: v for key, v in meta.items() if key not in _CONFIG_KEYS})


def write_qscope(path: str | Path, tensors: Tensors, config: SAEConfig, dtype=None) -> Path:
    """One layer as ``layer{n}.sae.safetensors`` (Qwen-Scope orientation) with its config as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {name: tensors[name].detach().to("cpu", dtype or tensors[name].dtype).contiguous() for name in TENSOR_NAMES}
    info = {"format": QSCOPE_FORMAT, "k": config.k, "d_model": config.d_model, "d_sae": config.d_sae,
            "apply_b_dec_to_input": config.apply_b_dec_to_input, "layer": config.layer, "hook": config.hook,
            **config.provenance}
    save_file(out, str(path), metadata={key: json.dumps(value) for key, value in info.items()})
    return path


# ---------------------------------------------------------------------------- shapes without the weights
def peek_shape(path: str | Path) -> tuple[int, int] | None:
    """(d_model, d_sae) of a layer file or SAELens folder from its header or config, reading no weights (a
    ``.pt`` is memory-mapped, its pages untouched); None when the file does not say."""
    path = Path(path)
    try:
        if is_saelens_folder(path) or (path.suffix == ".safetensors" and (path.parent / "cfg.json").is_file()):
            cfg = _saelens_cfg(path if path.is_dir() else path.parent)
            return int(cfg["d_in"]), int(cfg["d_sae"])
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(min(size, 1 << 24)))
            d_sae, d_model = header["W_enc"]["shape"]
            return int(d_model), int(d_sae)
        if path.suffix in (".pt", ".pth", ".bin") and zipfile.is_zipfile(path):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            d_sae, d_model = state["W_enc"].shape
            return int(d_model), int(d_sae)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError):
        return None
    return None


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    read: Callable[..., tuple[Tensors, SAEConfig]]
    write: Callable[..., Path] | None


FORMATS: dict[str, Format] = {
    "qwen-scope": Format("qwen-scope", (".pt", ".pth", ".bin"), read_qwen_scope, write_qwen_scope),
    "qscope": Format("qscope", (".safetensors",), read_qscope, write_qscope),
    "saelens": Format("saelens", (), read_saelens, None),  # a folder, found by its cfg.json
}


def format_of(path: str | Path) -> Format:
    """The format that reads ``path`` (a layer file or a SAELens folder); ValueError naming the path if none."""
    path = Path(path)
    if is_saelens_folder(path):
        return FORMATS["saelens"]
    if path.is_dir():
        raise ValueError(f"{path} is a folder of several layers: pass layer=")
    for fmt in FORMATS.values():
        if path.suffix in fmt.suffixes:
            return fmt
    raise ValueError(f"{path}: not a supported SAE file (layer{{n}}.sae.pt, layer{{n}}.sae.safetensors, "
                     f"or a SAELens folder with cfg.json + sae_weights.safetensors)")


def read(path: str | Path, k: int | None = None) -> tuple[Tensors, SAEConfig]:
    """(tensors, config) of one layer file or SAELens folder, whichever supported format it is in."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no SAE file at {path}")
    stamp = file_stamp(path)  # taken before reading: a file rewritten meanwhile gets a new stamp, and a check
    tensors, config = format_of(path).read(path, k=k)
    if stamp in _CHECKED:
        CHECKS["skipped"] += 1
    else:
        check_values(tensors, path)
        CHECKS["run"] += 1
        if time.time_ns() - stamp[2] > _RACY_NS:  # as git does: a file written within the clock's granularity
            _CHECKED.add(stamp)                    # could be rewritten with the same size and mtime
    return tensors, config


def write(path: str | Path, tensors: Tensors, config: SAEConfig, format: str = "qscope", dtype=None) -> Path:
    fmt = FORMATS.get(format)
    if fmt is None or fmt.write is None:
        writable = [name for name, f in FORMATS.items() if f.write is not None]
        raise ValueError(f"format must be one of {writable}, got {format!r}")
    return fmt.write(path, tensors, config, dtype=dtype)
