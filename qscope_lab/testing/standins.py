"""Stand-ins for a Qwen-Scope group: a tiny random-weight model of the backbone's own class and tiny random
SAEs in the hub's ``layer{n}.sae.pt`` format, written as local folders laid out like ``hf download`` output.

``Lab.load(model_folder, saes=sae_folder)`` on them runs the very code a GPU run of the real group runs (same
transformers class and module tree, Gated-DeltaNet and MoE blocks included, same checkpoint reader, same
hooks) on a CPU, offline, in seconds: the GPU notebook's dry run in CI, or a script's check before renting a
GPU. Widths and depth are scaled down, so the registry's d_model check does not apply; features mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..saes.registry import SAEGroup, find_group, layer_filename
from ..saes.sae import SAE


def stage(group: str | SAEGroup, folder: str | Path, n_layers: int = 4, hidden: int = 64, width: int = 1024,
          seed: int = 0) -> tuple[Path, Path]:
    """(model folder, SAE folder) standing in for ``group`` (a Qwen-Scope repo id); reused if already staged.

    The model uses the embedded default's tokenizer (a Qwen2Tokenizer with Qwen's special tokens and chat
    template, 4k vocabulary) so nothing is downloaded. The SAE folder is named in the hub pattern with the
    stand-in's width, so k is read from the name exactly as for a real download."""
    from transformers import AutoTokenizer

    from .. import embedded
    from .tiny import tiny_model

    resolved = group if isinstance(group, SAEGroup) else find_group(group)
    if resolved is None:
        raise ValueError(f"'{group}' is not a Qwen-Scope group id; registry_frame() lists the 14")
    if width % 1024:
        raise ValueError(f"width must be a multiple of 1024 (the hub names widths in K), got {width}")
    folder = Path(folder)
    name = resolved.backbone.split("/", 1)[1]
    model_dir = folder / f"standin-{name}"
    sae_dir = folder / f"SAE-Res-{name}-standin-W{width // 1024}K-L0_{resolved.k}"
    if not (model_dir / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(embedded.MODEL_DIR)
        model = tiny_model(resolved.model_class, vocab_size=len(tokenizer), hidden=hidden, layers=n_layers,
                           seed=seed)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    sae_dir.mkdir(parents=True, exist_ok=True)
    for layer in range(n_layers):
        path = sae_dir / layer_filename(layer)
        if not path.is_file():
            SAE.random(hidden, width, resolved.k, seed=seed + layer).save(path, format="qwen-scope")
    return model_dir, sae_dir
