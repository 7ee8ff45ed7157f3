"""Reading and writing one layer's SAE in the three supported formats.

- Qwen-Scope: ``layer{n}.sae.pt``, a torch-saved dict of four float32 tensors, no config. Read with
  ``torch.load(weights_only=True, mmap=True)``: never arbitrary unpickling, no copy of the weights.
  k is not in the file: it comes from the caller or from a hub-pattern name (``...-W32K-L0_50``).
- SAELens: a folder with ``cfg.json`` + ``sae_weights.safetensors`` (``W_enc (d_in, d_sae)``); we keep
  transposed *views*, which ``F.linear`` consumes without copying.
- qscope (ours): ``layer{n}.sae.safetensors`` in Qwen-Scope orientation, any float dtype, with k, layer and
  provenance in the safetensors metadata, so one file describes itself.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .registry import parse_group_name
from .sae import SAE

QWEN_SCOPE_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec")
QSCOPE_FORMAT = "qscope-sae/1"
_LAYER_FILE = re.compile(r"^layer(\d+)\.sae\.(pt|safetensors)$")
_SAELENS_HOOK = re.compile(r"(?:blocks|layers?)\.(\d+)\.")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A ``.pt`` file asks to import or call something other than tensors: refused without running it."""


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


def _cast(t: torch.Tensor, device, dtype) -> torch.Tensor:
    if dtype is not None or device is not None:
        return t.to(device=device or t.device, dtype=dtype or t.dtype)
    return t


# ---------------------------------------------------------------------------- Qwen-Scope .pt
def read_qwen_scope_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The four tensors of a Qwen-Scope checkpoint, memory-mapped, validated, never unpickling code."""
    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) serialisation cannot be memory-mapped
            if "mmap" not in str(err).lower():
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it is not a plain tensor checkpoint (the pickle asks for something other "
            f"than tensors, which could run code). Nothing from it was executed.\nDetail: {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(state, dict) or set(state) != set(QWEN_SCOPE_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a Qwen-Scope SAE checkpoint: expected keys {list(QWEN_SCOPE_KEYS)}, got {keys}")
    bad = [name for name, t in state.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad} are not tensors")
    return state


def load_qwen_scope(path: str | Path, k: int | None = None, layer: int | None = None,
                    device=None, dtype=None) -> SAE:
    path = Path(path)
    k = k or k_from_name(path)
    if k is None:
        raise ValueError(
            f"Qwen-Scope checkpoints carry no config, so k is unknown for {path}: pass k=50 (or 100), or keep "
            f"the hub folder name (e.g. 'SAE-Res-Qwen3-1.7B-Base-W32K-L0_50') in the path.")
    state = read_qwen_scope_state(path)
    tensors = {name: _cast(state[name], device, dtype) for name in QWEN_SCOPE_KEYS}
    layer = layer if layer is not None else layer_of(path)
    return SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], k=k,
               meta={"layer": layer, "format": "qwen-scope", "path": str(path), "hook": "resid_post"})


def save_qwen_scope(sae: SAE, path: str | Path) -> Path:
    """Write the exact Qwen-Scope file: a dict of four contiguous float32 tensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: getattr(sae, name).detach().to("cpu", torch.float32).contiguous() for name in QWEN_SCOPE_KEYS}
    torch.save(state, path)
    return path


# ---------------------------------------------------------------------------- SAELens folders
def is_saelens_folder(path: Path) -> bool:
    return path.is_dir() and (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()


def saelens_layer(folder: str | Path) -> int | None:
    """The layer a SAELens folder hooks (from cfg.json's hook_name), without reading its weights."""
    match = _SAELENS_HOOK.search(str(json.loads((Path(folder) / "cfg.json").read_text()).get("hook_name", "")))
    return int(match[1]) if match else None


def load_saelens(folder: str | Path, device=None, dtype=None) -> SAE:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    arch = cfg.get("architecture") or (cfg.get("activation_fn") if cfg.get("activation_fn") == "topk" else None)
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch != "topk" or not k:
        raise ValueError(f"{folder}: only TopK SAELens SAEs are supported (got architecture={arch!r}, k={k!r})")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported")
    sd = load_file(folder / "sae_weights.safetensors")
    for name in QWEN_SCOPE_KEYS:
        if name not in sd:
            raise ValueError(f"{folder}/sae_weights.safetensors has no '{name}' (keys: {sorted(sd)})")
    hook = str(cfg.get("hook_name", ""))
    match = _SAELENS_HOOK.search(hook)
    # SAELens stores W_enc (d_in, d_sae) and W_dec (d_sae, d_in): transposed views, no copy.
    tensors = {"W_enc": sd["W_enc"].T, "W_dec": sd["W_dec"].T, "b_enc": sd["b_enc"], "b_dec": sd["b_dec"]}
    tensors = {name: _cast(t, device, dtype) for name, t in tensors.items()}
    return SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], k=int(k),
               apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
               meta={"layer": int(match[1]) if match else None, "format": "saelens", "path": str(folder),
                     "hook": hook or None})


# ---------------------------------------------------------------------------- qscope safetensors
def save_qscope(sae: SAE, path: str | Path, dtype: torch.dtype | None = None, **meta: Any) -> Path:
    """Write one layer as ``layer{n}.sae.safetensors`` (Qwen-Scope orientation) with its config as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(sae, name).detach().to("cpu", dtype or sae.dtype).contiguous()
               for name in QWEN_SCOPE_KEYS}
    info = {"format": QSCOPE_FORMAT, "k": sae.k, "d_model": sae.d_model, "d_sae": sae.d_sae,
            "apply_b_dec_to_input": sae.apply_b_dec_to_input,
            **{key: value for key, value in sae.meta.items() if key not in ("path", "format")}, **meta}
    save_file(tensors, str(path), metadata={key: json.dumps(value) for key, value in info.items()})
    return path


def read_qscope_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta


def load_qscope(path: str | Path, device=None, dtype=None) -> SAE:
    """Load our safetensors layer file. Stored in bf16/fp16 to save space, it is upcast to float32 by default."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_qscope_meta(path)
    if meta.get("format") != QSCOPE_FORMAT:
        raise ValueError(f"{path} is a safetensors file without qscope SAE metadata (format={meta.get('format')!r})")
    sd = load_file(path)
    tensors = {name: _cast(sd[name], device, dtype or torch.float32) for name in QWEN_SCOPE_KEYS}
    config_keys = ("format", "k", "d_model", "d_sae", "apply_b_dec_to_input")
    extra = {key: value for key, value in meta.items() if key not in config_keys}
    extra.update(format="qscope", path=str(path))
    extra.setdefault("layer", layer_of(path))
    return SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], k=int(meta["k"]),
               apply_b_dec_to_input=bool(meta.get("apply_b_dec_to_input", False)), meta=extra)
