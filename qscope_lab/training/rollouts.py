"""Steered rollouts for RL: groups of sampled rollouts per prompt with exactly one of each group steered (e.g. a
repetition feature up), so a reward model or a GRPO group sees a rare bad case on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..analysis.text_predicates import repetition_rate
from ..base.validate import as_texts

if TYPE_CHECKING:
    from ..lab import Lab


def steered_rollouts(lab: Lab, prompts: Sequence[str] | str, features, alphas=8.0, group_size: int = 4,
                     layer: int | None = None, max_new_tokens: int = 32, temperature: float = 1.0,
                     top_p: float | None = None, seed: int = 0, chat: bool = False, mode: str = "add",
                     metric=repetition_rate) -> pd.DataFrame:
    """Groups of ``group_size`` sampled rollouts per prompt, exactly one of them steered.

    ``features``: a feature id, a list of ids (at ``layer``) or of ``(layer, feature)`` pairs; ``alphas``: one
    value or one per feature (e.g. a repetition feature up: a rare bad case in every group, for a reward model
    or a GRPO-style group to learn from). Which rollout of the group is steered is drawn per group (seeded).
    Columns: prompt, group, rollout, steered, alpha, text, and ``metric(text)`` (default ``repetition_rate``;
    None for none)."""
    prompts = as_texts(prompts)
    if group_size < 2:
        raise ValueError("group_size must be at least 2 (one steered rollout and one or more plain ones)")
    single_pair = (isinstance(features, tuple) and len(features) == 2 and layer is None
                   and all(isinstance(x, (int, np.integer)) for x in features))
    features = [features] if isinstance(features, (int, np.integer)) or single_pair else list(features)
    alphas = [float(alphas)] * len(features) if np.ndim(alphas) == 0 else [float(a) for a in alphas]
    if len(alphas) != len(features):
        raise ValueError(f"{len(features)} features but {len(alphas)} alphas")
    steer = {}
    for feature, alpha in zip(features, alphas):
        if isinstance(feature, tuple):
            steer[(int(feature[0]), int(feature[1]))] = alpha
        elif layer is None:
            raise ValueError("give layer= for plain feature ids, or (layer, feature) pairs")
        else:
            steer[(int(layer), int(feature))] = alpha
    options = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, chat=chat)
    if top_p is not None:
        options["top_p"] = top_p
    plain = lab.generate([p for p in prompts for _ in range(group_size - 1)], baseline=False, seed=seed,
                         **options).steered
    steered = lab.generate(prompts, steer=steer, mode=mode, baseline=False, seed=seed + 1, **options).steered
    pick = np.random.default_rng(seed).integers(0, group_size, size=len(prompts))
    label = alphas[0] if len(set(alphas)) == 1 else ",".join(f"{a:g}" for a in alphas)
    rows = []
    for g, prompt in enumerate(prompts):
        others = iter(plain[g * (group_size - 1):(g + 1) * (group_size - 1)])
        for r in range(group_size):
            is_steered = r == pick[g]
            text = steered[g] if is_steered else next(others)
            row = {"prompt": prompt, "group": g, "rollout": r, "steered": bool(is_steered),
                   "alpha": label if is_steered else 0.0, "text": text}
            if metric is not None:
                row[getattr(metric, "__name__", "metric")] = metric(text)
            rows.append(row)
    return pd.DataFrame(rows)
