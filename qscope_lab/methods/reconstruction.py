"""Reconstruction quality of a layer's SAE, measured the way SAE papers report it.

One plain forward per batch runs four copies of the batch side by side. At the SAE's layer an edit
(``core.hooks``) gives them: clean h | the SAE's reconstruction x_hat | x_hat plus the splice's error term (the
forward attribution and steering edits run on) | zeros (the floor for "CE recovered"). Positions the caller
skips (the attention sink at position 0) keep h in every copy, so one outlier token cannot dominate the numbers.

``ce_with_error`` is measured, not assumed: the third copy is rebuilt from ``splice.encode_site``'s top-k and
error term, so it equals ``ce_clean`` up to float rounding exactly when the splice is right, and a broken
splice shows here. A hook, not an nnsight trace: the report is the library's own computation, and a plain
forward is what it should cost (``benchmarks/speed_bench.py``: against four plain forwards).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..core.hooks import edit_blocks
from ..core.protocol import LabLike
from ..core.scan import Batch, scan
from .splice import encode_site

VARIANTS = ("clean", "spliced", "with_error", "zero")


def _next_token_ce(logits: torch.Tensor, ids: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE of predicting token t+1 at every real position t with a real successor, and the count."""
    target_ok = real[:, 1:] & real[:, :-1]
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    losses = losses.view(target_ok.shape)[target_ok]
    return losses.sum(), torch.tensor(losses.numel())


@torch.no_grad()
def _batch_stats(lab: LabLike, scanned: Batch, layer: int) -> dict[str, float]:
    sae = lab.sae(layer)
    enc, real, counted = scanned.enc, scanned.real, scanned.counted
    batch = {key: torch.cat([value] * len(VARIANTS)) for key, value in enc.items()}
    n = real.shape[0]
    seen: dict[str, torch.Tensor] = {}

    def splice(h: torch.Tensor) -> torch.Tensor:
        x = h[:n][counted]
        site = encode_site(sae, x)
        x_hat = sae.decode_sparse(site.values, site.indices)
        seen.update(x=x.to(sae.dtype), x_hat=x_hat, values=site.values)
        out = h.clone()
        out[n:2 * n][counted] = x_hat.to(device=h.device, dtype=h.dtype)
        out[2 * n:3 * n][counted] = (x_hat + site.error).to(device=h.device, dtype=h.dtype)
        out[3 * n:][counted] = 0
        return out

    with edit_blocks(lab.blocks, {layer: splice}):
        logits = lab.hf_model(**batch).logits
    stats: dict[str, Any] = {}  # sums; x_sum is a vector
    for v, name in enumerate(VARIANTS):
        total, count = _next_token_ce(logits[v * n:(v + 1) * n], enc["input_ids"], real)
        stats[f"ce_{name}_sum"] = float(total)
    x, x_hat, values = seen["x"], seen["x_hat"], seen["values"]
    stats["ce_count"] = float(count)
    stats["sq_err"] = float((x - x_hat).pow(2).sum())
    stats["x_sum"] = x.sum(0).double()
    stats["x_sq"] = float(x.double().pow(2).sum())
    stats["cos_sum"] = float(F.cosine_similarity(x, x_hat, dim=-1).sum())
    stats["l0_sum"] = float((values > 0).sum())
    stats["tokens"] = float(x.shape[0])
    return stats


def reconstruction_report(lab: LabLike, texts: list[str], layer, batch_size: int = 4, skip_first: bool = True,
                          max_length: int | None = None) -> pd.DataFrame:
    """One row per layer: FVU, cosine, L0, CE clean / spliced / with error term / zero-ablated, CE recovered."""
    rows = []
    for L in lab.check_layers(layer):
        acc: dict = {}
        for batch in scan(lab, texts, (), batch_size=batch_size, max_length=max_length, skip_first=skip_first,
                          desc=f"reconstruct layer {L}"):
            for key, value in _batch_stats(lab, batch, L).items():
                acc[key] = acc.get(key, 0) + value
        rows.append(_summarise(L, acc))
    return pd.DataFrame(rows)


def _summarise(layer: int, acc: dict) -> dict:
    tokens = max(acc["tokens"], 1.0)
    mean = acc["x_sum"] / tokens
    total_var = acc["x_sq"] - tokens * float(mean.pow(2).sum())  # sum ||x - mean||^2
    ce = {name: acc[f"ce_{name}_sum"] / max(acc["ce_count"], 1.0) for name in VARIANTS}
    floor = ce["zero"] - ce["clean"]
    return {
        "layer": layer,
        "tokens": int(acc["tokens"]),
        "fvu": acc["sq_err"] / total_var if total_var > 0 else float("nan"),
        "cosine": acc["cos_sum"] / tokens,
        "l0": acc["l0_sum"] / tokens,
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_delta": ce["spliced"] - ce["clean"],
        "ce_with_error": ce["with_error"],
        "ce_zero_ablation": ce["zero"],
        "ce_recovered": (ce["zero"] - ce["spliced"]) / floor if floor > 0 else float("nan"),
    }
