"""Edges between SAE features of two layers: how much feature i at layer a drives feature j at layer b.

Both layers are spliced with their error terms (``splice.py``); for each of the ``top`` downstream features
(the strongest by attribution to ``target``, or by activation without one) the gradient of its total activation
``sum_pos relu(W_enc[j] . h_b + b_enc[j])`` (over the positions where it fired) is taken with respect to the
upstream activations. ``weight`` = activation x that gradient, summed over the upstream feature's positions: the
linear estimate of how much j's activation would drop without i (Marks et al.'s feature-circuit edges). The
upstream error term gets a row too (feature -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core.steering import Steer
from . import splice, targets

if TYPE_CHECKING:
    from ..core.protocol import LabLike


def attribute_edges(lab: LabLike, prompt: str, upstream: int, downstream: int, target=None, top: int = 10,
                    top_upstream: int = 10, steers: Sequence[Steer] = ()) -> pd.DataFrame:
    if upstream >= downstream:
        raise ValueError(f"upstream layer ({upstream}) must come before downstream layer ({downstream})")
    resolved = targets.resolve(lab, target).check(1) if target is not None else None
    enc = lab.pad(targets.sequences(lab, [prompt], resolved or targets.Target()))
    real = enc["attention_mask"][0].bool()
    logits, sites = splice.run(lab, enc, [upstream, downstream], keep=resolved.keep if resolved else 1,
                               steers=list(steers), stop_at=None if resolved else downstream)
    up, down = sites[upstream], sites[downstream]
    if resolved is not None:
        assert logits is not None  # a target: the forward ran to the end
        if isinstance(resolved, targets.TopToken):
            resolved = targets.NextToken(ids=int(logits[0, -1].argmax()))
        grad = torch.autograd.grad(resolved(logits).sum(), down.spliced()[0], retain_graph=True)[0]
        score = (down.values * grad).detach()
    else:
        score = down.values.detach()
    d_sae = lab.sae(downstream).d_sae
    fired = (down.values[0] > 0) & real[:, None]
    totals = torch.zeros(d_sae).index_add_(0, down.indices[0][fired].cpu(), score[0][fired].float().cpu())
    activations = torch.zeros(d_sae).index_add_(0, down.indices[0][fired].cpu(), down.values[0][fired].float().cpu())
    chosen = [j for j in totals.abs().argsort(descending=True).tolist() if activations[j] > 0][:top]

    sae_b, d_up = lab.sae(downstream), lab.sae(upstream).d_sae
    up_fired = (up.values[0] > 0) & real[:, None]
    rows = []
    for rank, j in enumerate(chosen):
        where = ((down.indices[0] == j) & fired).any(-1)
        pre = down.spliced()[1][0, where].to(sae_b.dtype) @ sae_b.W_enc[j] + sae_b.b_enc[j]
        up_leaf, _, up_out = up.spliced()
        g_leaf, g_out = torch.autograd.grad(pre.relu().sum(), [up_leaf, up_out], retain_graph=True)
        weight = (up.values[0] * g_leaf[0]).detach()[up_fired].float().cpu()
        per_feature = torch.zeros(d_up).index_add_(0, up.indices[0][up_fired].cpu(), weight)
        best = [i for i in per_feature.abs().argsort(descending=True).tolist()[:top_upstream] if per_feature[i] != 0]
        error = float((g_out[0][real].float() * up.error[0][real].to(g_out).float()).sum())
        for i, w in [(i, float(per_feature[i])) for i in best] + [(-1, error)]:
            rows.append({"upstream_layer": upstream, "upstream_feature": i, "downstream_layer": downstream,
                         "downstream_feature": j, "weight": w, "downstream_rank": rank,
                         "downstream_activation": float(activations[j]), "downstream_score": float(totals[j])})
    return pd.DataFrame(rows, columns=["upstream_layer", "upstream_feature", "downstream_layer", "downstream_feature",
                                       "weight", "downstream_rank", "downstream_activation", "downstream_score"])
