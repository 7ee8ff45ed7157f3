"""A difference-of-means steering vector: the representation-steering baseline AxBench requires.

``mean(positive residuals) - mean(negative residuals)`` at one layer, each text weighted once (its counted
tokens averaged first, so a long text does not outvote short ones; the attention sink and special tokens are not
counted, as everywhere in qscope-lab). The result is a ``Steer`` on a raw direction, not an SAE feature: the
vector is stored with unit norm and ``value`` is the difference's own norm, so the default steer adds exactly
the mean difference and a sweep's alphas are in the same units as a (near unit-norm) SAE decoder column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..base import validate
from ..core.scan import scan
from ..core.steering import Steer

if TYPE_CHECKING:
    from ..core.protocol import LabLike


def text_means(lab: LabLike, texts: list[str], layer: int, batch_size: int = 8, max_length: int | None = 256,
               skip_first: bool = True) -> torch.Tensor:
    """``[n_texts, d_model]`` float32: each text's mean residual over its counted tokens at ``layer`` (a text
    with no counted token, such as a one-token text, is refused naming it)."""
    out = torch.zeros(len(texts), lab.d_model, dtype=torch.float32)
    for batch in scan(lab, texts, [layer], batch_size=batch_size, max_length=max_length, skip_first=skip_first,
                      desc="diff_means"):
        h = batch.residuals[layer].float()
        counted = batch.counted.to(h.device)
        n = counted.sum(-1)
        empty = (n == 0).nonzero().flatten().tolist()
        if empty:
            i = int(batch.index[empty[0]])
            raise ValueError(f"text {i} ({texts[i][:40]!r}) has no counted token (one token, the attention sink, "
                             f"is skipped): give longer texts")
        means = (h * counted.unsqueeze(-1)).sum(1) / n.unsqueeze(-1)
        out[batch.index] = means.cpu()
    return out


@torch.no_grad()
def diff_means(lab: LabLike, positives, negatives, layer: int, batch_size: int = 8, max_length: int | None = 256,
               skip_first: bool = True, name: str | None = None) -> Steer:
    """``Steer`` adding the difference of the mean residuals of ``positives`` and ``negatives`` at ``layer``
    (see the module docstring); ``steer.with_value(alpha)`` for another strength."""
    positives = validate.texts(positives, "positives")
    negatives = validate.texts(negatives, "negatives")
    layer = lab.check_layer(layer)
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    pos = text_means(lab, positives, layer, batch_size, max_length, skip_first).mean(0)
    neg = text_means(lab, negatives, layer, batch_size, max_length, skip_first).mean(0)
    difference = pos - neg
    norm = float(difference.norm())
    if not norm > 0:
        raise ValueError("positives and negatives have the same mean residual: no direction separates them")
    return Steer.from_vector(layer, difference / norm, value=norm, name=name or f"diff-means L{layer}")
