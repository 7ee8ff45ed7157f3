"""Is a generated text fluent? Two cheap checks that hold on text nobody here wrote: repetition (the share of
distinct token n-grams: steered generation that loops on one token scores near 0) and the model's own
perplexity, compared with the perplexity it gives the seed texts the generation should resemble."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..base.validate import as_texts
from ..core.scan import scan

if TYPE_CHECKING:
    from ..lab import Lab


def distinct_n(ids, n: int = 2) -> float:
    """Distinct n-grams over all n-grams of a token sequence (1.0 when it is shorter than n + 1 tokens)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if len(grams) > 1 else 1.0


@torch.no_grad()
def perplexities(lab: Lab, texts, batch_size: int = 16, max_length: int | None = 256) -> np.ndarray:
    """The model's perplexity of each text: exp of its mean next-token cross-entropy over its real tokens."""
    texts = as_texts(texts)
    out = np.full(len(texts), np.nan)
    for batch in scan(lab, texts, (), batch_size, max_length, skip_first=False, progress=False, desc="perplexity"):
        ids, real = batch.enc["input_ids"], batch.real
        logits = lab.hf_model(input_ids=ids, attention_mask=batch.enc["attention_mask"]).logits
        ok = (real[:, 1:] & real[:, :-1]).float()
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        mean = (losses.view(ok.shape) * ok).sum(1) / ok.sum(1).clamp_min(1)
        out[batch.index.numpy()] = torch.exp(mean).cpu().numpy()
    return out


def perplexity_limit(lab: Lab, seeds, max_perplexity_ratio: float = 2.0) -> float:
    """The highest perplexity a fluent text may have: the ratio times the seeds' 90th-percentile perplexity."""
    return max_perplexity_ratio * float(np.quantile(perplexities(lab, seeds), 0.9))


def fluency(lab: Lab, texts, limit: float, min_distinct: float = 0.5, n: int = 2) -> pd.DataFrame:
    """Per text: ``distinct`` (distinct token n-grams), ``perplexity`` and ``fluent`` (distinct >= min_distinct
    and perplexity <= ``limit``, e.g. ``perplexity_limit(lab, seeds)``)."""
    texts = as_texts(texts)
    distinct = np.array([distinct_n(row, n) for row in lab.token_ids(texts)])
    ppl = perplexities(lab, texts)
    return pd.DataFrame({"distinct": distinct, "perplexity": ppl,
                         "fluent": (distinct >= min_distinct) & (ppl <= limit)})
