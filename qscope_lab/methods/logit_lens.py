"""Reading residuals as next-token predictions: the logit lens and direct logit attribution of SAE features.

Both go through the model's own final norm and unembedding. The final RMSNorm is ``gain * x / rms(x)`` (Qwen3:
gain = weight; Qwen3.5: 1 + weight), so with the scale ``rms`` of the position's last-layer residual held fixed it
is linear: each feature's decoder column times its activation then adds a definite amount to every logit
(direct logit attribution, TransformerLens' DLA for SAE features). At the last layer the pieces add up to the
model's logit exactly; at earlier layers they are the direct path only (later blocks may change them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import torch

from . import targets

if TYPE_CHECKING:
    from ..core.protocol import LabLike


def final_norm(lab: LabLike) -> torch.nn.Module:
    """The norm applied after the last decoder block (beside the blocks: ``model.norm``,
    ``model.language_model.norm``)."""
    return lab.hf_model.get_submodule(lab.layers_path.rsplit(".", 1)[0] + ".norm")


def unembed(lab: LabLike, x: torch.Tensor) -> torch.Tensor:
    return lab.hf_model.get_output_embeddings()(x)


def _gain_and_eps(norm: torch.nn.Module, d_model: int, like: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The norm's per-dimension gain, read off its output on a vector of ones (works for weight and 1 + weight)."""
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    ones = torch.ones(d_model, dtype=like.dtype, device=like.device)
    return norm(ones).float() * math.sqrt(1.0 + eps), eps


@torch.no_grad()
def logit_lens(lab: LabLike, prompt: str, top: int = 3) -> pd.DataFrame:
    """layer, position, token, rank, prediction, probability: each block output's top ``top`` next tokens
    through the final norm and unembedding (the last layer's are the model's own predictions)."""
    enc = lab.tokenize([prompt])
    ids = enc["input_ids"][0].tolist()
    tokens = lab.token_strings(ids)
    residuals = lab.residuals(enc, range(lab.n_layers), run_to_end=True)
    norm = final_norm(lab)
    rows = []
    for layer in range(lab.n_layers):
        probs = unembed(lab, norm(residuals[layer][0])).float().softmax(-1)
        best = probs.topk(min(top, probs.shape[-1]), dim=-1)
        for position in range(len(ids)):
            names = lab.token_strings(best.indices[position].tolist())
            for rank, (name, p) in enumerate(zip(names, best.values[position].tolist()), start=1):
                rows.append({"layer": layer, "position": position, "token": tokens[position], "rank": rank,
                             "prediction": name, "probability": p})
    return pd.DataFrame(rows)


@torch.no_grad()
def direct_logit_attribution(lab: LabLike, prompt: str, position: int = -1, layers=None, token=None) -> pd.DataFrame:
    """layer, feature, activation, token, logit: what each feature active at ``position`` adds to ``token``'s
    logit through the final norm (at that position's scale) and the unembedding, most positive first. One
    row per layer with feature -1 holds the rest of the residual (error term + decoder bias), so a layer's
    rows add up to the logit its residual alone would give. ``token``: default the model's top prediction."""
    enc = lab.tokenize([prompt])
    n = enc["input_ids"].shape[1]
    if not -n <= position < n:
        raise IndexError(f"position {position} is outside a prompt of {n} tokens")
    layers = lab.check_layers(lab.n_layers // 2 if layers is None else layers)
    last = lab.n_layers - 1
    residuals = lab.residuals(enc, sorted(set(layers) | {last}), run_to_end=True)
    final = residuals[last][0, position]
    norm = final_norm(lab)
    gain, eps = _gain_and_eps(norm, lab.d_model, final)
    rms = float(final.float().pow(2).mean().add(eps).sqrt())
    if token is None:
        token = int(unembed(lab, norm(final)).argmax())
    token = targets.token_id(lab, token, "token")
    direction = lab.hf_model.get_output_embeddings().weight[token].float() * gain / rms  # logit per unit residual
    name = lab.token_strings([token])[0]
    rows = []
    for layer in layers:
        sae = lab.sae(layer)
        h = residuals[layer][0, position].to(sae.dtype)
        values, indices = sae.encode_sparse(h)
        fired = values > 0
        values, indices = values[fired], indices[fired]
        per_feature = values * (direction.to(sae.dtype) @ sae.W_dec[:, indices])
        rest = h - (sae.W_dec[:, indices] @ values if len(values) else torch.zeros_like(h))
        for f, a, c in zip(indices.tolist(), values.tolist(), per_feature.tolist()):
            rows.append({"layer": layer, "feature": f, "activation": a, "token": name, "logit": c})
        rows.append({"layer": layer, "feature": -1, "activation": float((h - sae.decode_sparse(*sae.encode_sparse(h)))
                                                                        .norm()),
                     "token": name, "logit": float(direction.to(sae.dtype) @ rest)})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["layer", "logit"], ascending=[True, False]).reset_index(drop=True)
