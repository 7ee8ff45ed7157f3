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


def stage(group: str | SAEGroup, folder: str | Path, n_layers: int | None = None, hidden: int | None = None,
          width: int | None = None, seed: int = 0, shape: str = "tiny", dtype: str = "float32") -> tuple[Path, Path]:
    """(model folder, SAE folder) standing in for ``group`` (a Qwen-Scope repo id); reused if already staged.

    ``shape="tiny"`` (default: 4 layers, hidden 64, 1K-wide SAEs) runs the real code paths in seconds;
    ``shape="real"`` builds the backbone's published shapes (``group.config``: hidden, intermediate, heads, kv
    heads, head_dim, experts, Qwen3.5's linear-attention layout, vocabulary) at full depth or the first
    ``n_layers``, with SAEs of the group's real width: what memory plans and benchmarks measure, offline.
    The model uses the embedded default's tokenizer (a Qwen2Tokenizer with Qwen's special tokens and chat
    template, 4k vocabulary; ids stay inside the real vocabulary) so nothing is downloaded. The SAE folder is
    named in the hub pattern with the stand-in's width, so k is read from the name exactly as for a real
    download. ``dtype`` is the saved model's (the SAEs are float32, as the hub's files are)."""
    from transformers import AutoTokenizer

    from .. import embedded
    from .tiny import real_config, tiny_model

    resolved = group if isinstance(group, SAEGroup) else find_group(group)
    if resolved is None:
        raise ValueError(f"'{group}' is not a Qwen-Scope group id; registry_frame() lists the 14")
    if shape not in ("tiny", "real"):
        raise ValueError(f"shape must be 'tiny' or 'real', got {shape!r}")
    real = shape == "real"
    if real and hidden is not None and hidden != resolved.d_model:
        raise ValueError(f"shape='real' uses the backbone's hidden size {resolved.d_model}; leave hidden unset")
    depth = n_layers if n_layers is not None else (resolved.n_layers if real else 4)
    if not 1 <= depth <= resolved.n_layers:
        raise ValueError(f"n_layers must be in 1..{resolved.n_layers} for {resolved.repo_id}, got {depth}")
    hidden = resolved.d_model if real else (hidden or 64)
    width = width if width is not None else (resolved.d_sae if real else 1024)
    if width % 1024:
        raise ValueError(f"width must be a multiple of 1024 (the hub names widths in K), got {width}")
    folder = Path(folder)
    name = resolved.backbone.split("/", 1)[1]
    tag = f"real{depth}" if real else "standin"
    model_dir = folder / f"{tag}-{name}"
    sae_dir = folder / f"SAE-Res-{name}-{tag}-W{width // 1024}K-L0_{resolved.k}"
    if not (model_dir / "config.json").is_file():
        import torch
        import transformers

        tokenizer = AutoTokenizer.from_pretrained(embedded.MODEL_DIR)
        if real:
            torch.manual_seed(seed)
            config = real_config(resolved.model_class, resolved.config, n_layers=depth)
            model = getattr(transformers, resolved.model_class)(config).eval()
        else:
            model = tiny_model(resolved.model_class, vocab_size=len(tokenizer), hidden=hidden, layers=depth,
                               seed=seed)
        model.to(getattr(torch, dtype)).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    sae_dir.mkdir(parents=True, exist_ok=True)
    for layer in range(depth):
        path = sae_dir / layer_filename(layer)
        if not path.is_file():
            SAE.random(hidden, width, resolved.k, seed=seed + layer).save(path, format="qwen-scope")
    return model_dir, sae_dir
