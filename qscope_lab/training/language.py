"""Language-specific SAE features (Deng et al. 2025, the SASFT paper): monolinguality per feature and language.

nu_L(s) = mu_L(s) - mean over the other languages of mu(s) (mu = mean TopK activation per counted token), the top
features per language and layer, and alpha_j(s) = the mean encoder pre-activation of s on language j (what the
SASFT loss clips at; ``sasft_targets`` turns a table into the loss's arguments).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..base.validate import as_texts
from ..core.scan import scan

if TYPE_CHECKING:
    from ..lab import Lab


def _layers_of(lab: Lab, layers) -> list[int]:
    if layers is None:
        layers = lab.saes.layers if lab.saes is not None else range(lab.n_layers)
    return sorted(lab.check_layers(layers))


@torch.no_grad()
def language_statistics(lab: Lab, texts_by_language: Mapping[str, Sequence[str]], layers=None, batch_size: int = 16,
                        max_length: int = 128, skip_first: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """Per layer: ``{"languages": [...], "act": [n_lang, d_sae] mean TopK activation per token,
    "pre": [n_lang, d_sae] mean encoder pre-activation, "fire": [n_lang, d_sae] firing rate, "tokens": [n_lang]}``
    over counted tokens (no pads, no special tokens, no attention sink when ``skip_first``)."""
    if not texts_by_language or len(texts_by_language) < 2:
        raise ValueError("give texts for at least two languages: {'en': [...], 'zh': [...]}")
    layers = _layers_of(lab, layers)
    languages = list(texts_by_language)
    stats = {layer: {"languages": languages, **{key: torch.zeros(len(languages), lab.sae(layer).d_sae,
                                                                  dtype=torch.float64)
                                                for key in ("act", "pre", "fire")},
                     "tokens": torch.zeros(len(languages), dtype=torch.float64)} for layer in layers}
    for li, language in enumerate(languages):
        texts = as_texts(texts_by_language[language])
        for batch in scan(lab, texts, layers, batch_size=batch_size, max_length=max_length, skip_first=skip_first,
                          desc=f"language statistics ({language})"):
            keep, hidden = batch.counted, batch.residuals
            for layer in layers:
                sae = lab.sae(layer)
                pre = sae.pre_activations(hidden[layer][keep]).float()
                acts = sae.encode(hidden[layer][keep]).float()
                s = stats[layer]
                s["pre"][li] += pre.sum(0).double().cpu()
                s["act"][li] += acts.sum(0).double().cpu()
                s["fire"][li] += (acts > 0).sum(0).double().cpu()
                s["tokens"][li] += int(keep.sum())
    for s in stats.values():
        if (s["tokens"] == 0).any():
            empty = [languages[i] for i in torch.nonzero(s["tokens"] == 0).flatten().tolist()]
            raise ValueError(f"no counted tokens for language(s) {empty}")
        for key in ("act", "pre", "fire"):
            s[key] = (s[key] / s["tokens"].unsqueeze(-1)).float()
    return stats


def monolinguality(act_means: torch.Tensor) -> torch.Tensor:
    """[n_lang, d_sae]: nu_L = mu_L - mean over the other languages of mu (each language weighs the same)."""
    n = act_means.shape[0]
    others = (act_means.sum(0, keepdim=True) - act_means) / max(n - 1, 1)
    return act_means - others


def language_features(lab: Lab, texts_by_language: Mapping[str, Sequence[str]], layers=None, top: int = 10,
                      batch_size: int = 16, max_length: int = 128, skip_first: bool = True) -> pd.DataFrame:
    """The most language-specific features per language and layer (Deng et al. 2025, the SASFT paper).

    monolinguality = mean TopK activation on language L minus the mean, over the other languages, of their mean
    activation (per counted token). Columns: layer, language, rank, feature, monolinguality, mean_in,
    mean_others, fire_in, fire_others, and ``alpha_<lang>`` for every language: the feature's mean encoder
    pre-activation on that language, the threshold ``SASFTLoss`` clips at (``sasft_targets`` picks them)."""
    stats = language_statistics(lab, texts_by_language, layers, batch_size=batch_size, max_length=max_length,
                                skip_first=skip_first)
    frames = []
    for layer, s in stats.items():
        languages, act, fire, pre = s["languages"], s["act"], s["fire"], s["pre"]
        nu = monolinguality(act)
        n = len(languages)
        for li, language in enumerate(languages):
            order = torch.argsort(nu[li], descending=True)[:top]
            data = {"layer": layer, "language": language, "rank": np.arange(len(order)),
                    "feature": order.numpy(), "monolinguality": nu[li, order].numpy(),
                    "mean_in": act[li, order].numpy(),
                    "mean_others": ((act.sum(0) - act[li]) / max(n - 1, 1))[order].numpy(),
                    "fire_in": fire[li, order].numpy(),
                    "fire_others": ((fire.sum(0) - fire[li]) / max(n - 1, 1))[order].numpy()}
            for lj, other in enumerate(languages):
                data[f"alpha_{other}"] = pre[lj, order].numpy()
            frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def sasft_targets(frame: pd.DataFrame, language: str, alpha_language: str, top: int | None = None,
                  min_monolinguality: float = 0.0) -> tuple[dict[int, list[int]], dict[int, torch.Tensor]]:
    """(features, alphas) for ``SASFTLoss`` from a ``language_features`` table: the features of ``language``
    (the one to suppress), ``top`` per layer with monolinguality above ``min_monolinguality``, and alpha = their
    mean pre-activation on ``alpha_language`` (the language of the samples the loss is applied to)."""
    column = f"alpha_{alpha_language}"
    if column not in frame.columns:
        raise ValueError(f"no column {column!r}: the table's languages are "
                         f"{[c[6:] for c in frame.columns if c.startswith('alpha_')]}")
    rows = frame[(frame.language == language) & (frame.monolinguality > min_monolinguality)]
    if rows.empty:
        raise ValueError(f"no feature of language {language!r} with monolinguality > {min_monolinguality}")
    features, alphas = {}, {}
    for layer, group in rows.sort_values("rank").groupby("layer"):
        group = group.head(top) if top else group
        features[int(layer)] = group.feature.astype(int).tolist()
        alphas[int(layer)] = torch.tensor(group[column].to_numpy(), dtype=torch.float32)
    return features, alphas


