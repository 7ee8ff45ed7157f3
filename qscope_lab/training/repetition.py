"""Repetition features: the SAE features whose activation rises as a text repeats itself (a loop detector)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..base.validate import as_texts

if TYPE_CHECKING:
    from ..lab import Lab


@torch.no_grad()
def repetition_features(lab: Lab, texts: Sequence[str] | str, layer: int, top: int = 10, repeats: int = 4,
                        separator: str = "\n", batch_size: int = 8, max_unit_tokens: int = 48) -> pd.DataFrame:
    """Features whose activation rises most from a token's first occurrence to its last one.

    Each text (a sentence) + ``separator`` is tokenized once and its token ids repeated ``repeats`` times, so
    every token of the unit recurs at the same offset of each copy. rise = mean over texts and offsets of
    activation(last copy) - activation(first copy) (TopK activations; offset 0 of the first copy, the attention
    sink, is left out). Columns: feature, rise, first, last, fire_first, fire_last and ``copy_<i>`` (mean
    activation per copy, to see the trend)."""
    lab.check_layer(layer)
    if repeats < 2:
        raise ValueError("repeats must be at least 2")
    texts = as_texts(texts)
    sae = lab.sae(layer)
    units = [ids[:max_unit_tokens] for ids in lab.token_ids([t + separator for t in texts], None)]
    per_copy = torch.zeros(repeats, sae.d_sae, dtype=torch.float64)
    fire = torch.zeros(2, sae.d_sae, dtype=torch.float64)
    rise = torch.zeros(sae.d_sae, dtype=torch.float64)
    count = 0
    for start in range(0, len(units), batch_size):
        chunk = units[start:start + batch_size]
        enc = lab.pad([unit * repeats for unit in chunk])
        h = lab.residuals(enc, [layer])[layer]
        width = enc["input_ids"].shape[1]
        for row, unit in enumerate(chunk):
            n = len(unit)
            if n < 2:
                continue
            begin = width - n * repeats  # left padding
            acts = sae.encode(h[row, begin:]).float().cpu().view(repeats, n, sae.d_sae)[:, 1:]
            per_copy += acts.sum(1).double()
            rise += (acts[-1] - acts[0]).sum(0).double()
            fire[0] += (acts[0] > 0).sum(0).double()
            fire[1] += (acts[-1] > 0).sum(0).double()
            count += n - 1
    if count == 0:
        raise ValueError("no text gave a unit of two or more tokens")
    per_copy, fire, rise = per_copy / count, fire / count, rise / count
    order = torch.argsort(rise, descending=True)[:top]
    data = {"layer": layer, "feature": order.numpy(), "rise": rise[order].float().numpy(),
            "first": per_copy[0, order].float().numpy(), "last": per_copy[-1, order].float().numpy(),
            "fire_first": fire[0, order].float().numpy(), "fire_last": fire[1, order].float().numpy()}
    for i in range(repeats):
        data[f"copy_{i}"] = per_copy[i, order].float().numpy()
    return pd.DataFrame(data)


