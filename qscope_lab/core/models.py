"""Building the transformers model + tokenizer for a Lab and finding its decoder layers, whatever the architecture.

Qwen-Scope covers dense Qwen3, Qwen3-MoE and the hybrid Qwen3.5 families. Their text decoders live at
``model.layers`` (``*ForCausalLM``) or ``model.language_model.layers`` (the vision-language
``*ForConditionalGeneration`` checkpoints Qwen3.5 ships as).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from ..saes import hub

QWEN_SCOPE_ARCHITECTURES = {
    "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
    "Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration",
}
LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers", "transformer.h")
_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    value = getattr(torch, aliases.get(name, name), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'")
    return value


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device, name: str = "device") -> str | None:
    """``device`` if this torch can use it; a ValueError naming what is missing instead of torch's bare
    AssertionError ("Torch not compiled with CUDA enabled") deep inside a load."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str such as 'cpu', 'cuda' or 'cuda:1', got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}={device!r} is not a device: use 'cpu', 'cuda', 'cuda:1', 'mps' ...") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}, but this torch has no usable CUDA GPU (use 'cpu')")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={device!r}, but MPS is not available here (use 'cpu')")
    return str(device)


def local_model_folder(model: str | Path) -> Path:
    """A folder holding config + weights: the path itself, or the hub snapshot (fetched only if missing)."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers checkpoint folder")
        return path
    text = str(model)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"no checkpoint folder at '{model}' (and it is not a hub id like "
                                f"'Qwen/Qwen3-8B-Base')")
    return hub.fetch_snapshot(str(model), allow_patterns=_MODEL_FILES)


@contextmanager
def _quiet_transformers():
    """The text-generation pipeline warns that vision-language classes are 'not supported'; they work fine."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the message is logged at ERROR level
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _no_loading_bar():
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_pretrained(folder: Path, device: str, dtype: torch.dtype | None):
    """The checkpoint's own class (from config.architectures) so VL Qwen3.5 checkpoints load with all weights."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls or AutoModelForCausalLM
    # device_map places big checkpoints straight onto the GPU(s); on CPU it only adds accelerate's overhead
    placement = {} if str(device) == "cpu" else {"device_map": device}
    with _no_loading_bar():  # files are local by now: a "Loading weights 100%" bar on stderr says nothing
        model = cls.from_pretrained(folder, dtype=dtype or "auto", **placement)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def find_layers(module: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """(dotted path, ModuleList) of the decoder blocks; raises if the architecture hides them elsewhere."""
    for path in LAYER_PATHS:
        node = module
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        if isinstance(node, torch.nn.ModuleList) and len(node) > 0:
            return path, node
    raise ValueError(f"cannot find the decoder layers of {type(module).__name__}: looked at {', '.join(LAYER_PATHS)}")


def text_config(model: torch.nn.Module):
    """The config holding hidden_size / num_hidden_layers (the text sub-config for VL checkpoints)."""
    config = model.config
    return getattr(config, "text_config", None) or config


def wrap(model: torch.nn.Module, tokenizer):
    """The nnsight 0.8 wrapper on an already built model: offline, milliseconds; pads on the left."""
    from nnsight import TransformersModel

    with _quiet_transformers():
        return TransformersModel(model, tokenizer=tokenizer)
