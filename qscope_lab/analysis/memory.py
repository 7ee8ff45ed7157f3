"""Memory of a Qwen-Scope setup: planned before renting a GPU (``plan``), measured once loaded (``measure``).

The plan adds the three things that must fit on the device: the model's weights in its dtype, the SAE layers
kept in the cache (in the SAE dtype, plus the row-major decoder copy sparse decoding makes: +50% of W_dec), and
the encode workspace (dense pre-activations, ``batch_tokens x d_sae`` floats, twice for top-k's temporaries).
KV cache and generation buffers come on top; the 20% headroom of ``smallest_gpu_gb`` is for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core.models import resolve_dtype
from ..saes.registry import GROUPS, SAEGroup, find_group

if TYPE_CHECKING:
    from ..lab import Lab

# Parameters (billions) per backbone: Qwen3 counts from the model cards; Qwen3.5 checkpoints are
# vision-language and their names give the size. Estimates for planning: `measure` reports the real bytes.
PARAMS_B = {
    "Qwen/Qwen3-1.7B-Base": 2.03, "Qwen/Qwen3-8B-Base": 8.19, "Qwen/Qwen3-30B-A3B-Base": 30.5,
    "Qwen/Qwen3.5-2B-Base": 2.3, "Qwen/Qwen3.5-9B-Base": 9.0, "Qwen/Qwen3.5-27B": 27.0,
    "Qwen/Qwen3.5-35B-A3B-Base": 35.0,
}
GPU_SIZES_GB = (16, 24, 40, 48, 80, 94, 141, 192)
HEADROOM = 1.2


def _bytes_per(dtype) -> int:
    try:
        resolved = resolve_dtype(dtype)  # the names Lab.load takes, aliases included ("bf16", "fp32", ...)
    except ValueError:
        resolved = None
    if resolved is None:
        raise ValueError(f"dtype must be a torch dtype or its name (e.g. 'bfloat16'), got {dtype!r}")
    return resolved.itemsize


def _groups(groups) -> list[SAEGroup]:
    if groups is None:
        return list(GROUPS)
    out = []
    for g in [groups] if isinstance(groups, (str, SAEGroup)) else groups:
        group = g if isinstance(g, SAEGroup) else find_group(g)
        if group is None:
            raise ValueError(f"'{g}' is not a Qwen-Scope group id; registry_frame() lists the 14")
        out.append(group)
    return out


def plan(groups=None, model_dtype="bfloat16", sae_dtype="float32", cached_layers: int = 1,
         batch_tokens: int = 4096) -> pd.DataFrame:
    """GB needed per group (all 14 by default) and the smallest common GPU that holds it with 20% headroom."""
    if cached_layers < 1 or batch_tokens < 1:
        raise ValueError("cached_layers and batch_tokens must be at least 1")
    model_b, sae_b = _bytes_per(model_dtype), _bytes_per(sae_dtype)
    rows = []
    for g in _groups(groups):
        model_gb = PARAMS_B[g.backbone] * model_b
        layer_gb = g.bytes_per_layer / 4 * sae_b * 1.5 / 1e9
        sae_gb = layer_gb * min(cached_layers, g.n_layers)
        workspace_gb = 2 * batch_tokens * g.d_sae * 4 / 1e9
        total = model_gb + sae_gb + workspace_gb
        fits = [size for size in GPU_SIZES_GB if size >= total * HEADROOM]
        rows.append({"repo_id": g.repo_id, "backbone": g.backbone, "model_gb": round(model_gb, 1),
                     "sae_gb": round(sae_gb, 2), "workspace_gb": round(workspace_gb, 2),
                     "total_gb": round(total, 1), "smallest_gpu_gb": fits[0] if fits else None})
    return pd.DataFrame(rows)


def measure(lab: Lab) -> pd.DataFrame:
    """What a loaded Lab holds: model weights, cached SAE layers, and CUDA allocated / peak when on a GPU."""
    model = lab.hf_model
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    rows = [{"what": "model weights", "gb": weights / 1e9,
             "detail": f"{sum(p.numel() for p in model.parameters()) / 1e6:,.1f} M parameters, "
                       f"{next(model.parameters()).dtype}"}]
    if lab.saes is not None:
        rows.append({"what": "SAE layers cached", "gb": lab.saes.cached_bytes / 1e9,
                     "detail": f"layers {lab.saes.cached_layers} (cache limit {lab.saes.cache_bytes / 1e9:.1f} GB)"})
    device = lab.device
    if device.type == "cuda":
        rows.append({"what": "CUDA allocated", "gb": torch.cuda.memory_allocated(device) / 1e9, "detail": str(device)})
        rows.append({"what": "CUDA peak", "gb": torch.cuda.max_memory_allocated(device) / 1e9,
                     "detail": "since start or torch.cuda.reset_peak_memory_stats()"})
    frame = pd.DataFrame(rows)
    frame["gb"] = frame.gb.round(4)
    return frame
