"""Sparse SAE activations of a batch of texts, stored ragged (no pad positions ever reach the user).

Each real token keeps its top-k (values, indices). ``mask`` marks the positions that count: pads are not stored
at all; the first position (attention sink; ``skip_first``, True by default) and special tokens
(``skip_special``) are masked unless the caller asked to count them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..base import validate


@dataclass
class FeatureActs:
    texts: list[str]
    layer: int
    d_sae: int
    token_ids: list[list[int]]
    tokens: list[list[str]]
    values: torch.Tensor   # [n_tokens, k] float32, text-major, position order
    indices: torch.Tensor  # [n_tokens, k] int64
    mask: torch.Tensor     # [n_tokens] bool: position counts (not skipped)
    # per text, each token shown whole: a character split over byte tokens on each of its tokens (readable_tokens)
    readable: list[list[str]] | None = field(default=None, repr=False, compare=False)
    # features -> display names (``lab.feature_names`` for this layer): the ``name`` column of the tables below
    namer: Callable[[list[int]], list[str]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        lengths = torch.tensor([len(ids) for ids in self.token_ids], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        if int(self.offsets[-1]) != self.values.shape[0]:
            raise ValueError("token count does not match the activation rows")

    def __len__(self) -> int:
        return len(self.texts)

    def __getstate__(self) -> dict:  # the namer holds the Lab: not sent along when pickled
        return {**self.__dict__, "namer": None}

    def names(self, features: Sequence[int]) -> list[str]:
        """Display names of ``features`` (the Lab's labels / explanations / top tokens when it encoded these;
        "L<layer>/F<feature>" otherwise)."""
        feats = [int(f) for f in features]
        if not feats:
            return []
        if self.namer is None:
            return [f"L{self.layer}/F{f}" for f in feats]
        unique = list(dict.fromkeys(feats))
        table = dict(zip(unique, self.namer(unique)))
        return [table[f] for f in feats]

    def __repr__(self) -> str:
        return (f"FeatureActs(layer={self.layer}, texts={len(self)}, tokens={self.n_tokens}, "
                f"k={self.values.shape[-1]}, d_sae={self.d_sae})")

    @property
    def n_tokens(self) -> int:
        return self.values.shape[0]

    @property
    def text_index(self) -> torch.Tensor:
        """Row -> index of its text."""
        return torch.repeat_interleave(torch.arange(len(self)), self.offsets.diff())

    @property
    def position(self) -> torch.Tensor:
        """Row -> position of its token within its own text (0 = first real token, whatever the padding)."""
        return torch.arange(self.n_tokens) - self.offsets[:-1].repeat_interleave(self.offsets.diff())

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def _masked_values(self) -> torch.Tensor:
        return self.values * self.mask.unsqueeze(-1).to(self.values.dtype)

    def dense(self, i: int | None = None) -> torch.Tensor:
        """Dense activations: ``[T_i, d_sae]`` for text i, or ``[B, T_max, d_sae]`` right-padded with zeros.
        Skipped positions are zero."""
        values = self._masked_values()
        if i is not None:
            rows = self.rows(i)
            out = torch.zeros(rows.stop - rows.start, self.d_sae, dtype=values.dtype)
            return out.scatter_(-1, self.indices[rows], values[rows])
        t_max = int(self.offsets.diff().max()) if len(self) else 0
        out = torch.zeros(len(self), t_max, self.d_sae, dtype=values.dtype)
        out[self.text_index, self.position] = torch.zeros(self.n_tokens, self.d_sae, dtype=values.dtype).scatter_(
            -1, self.indices, values)
        return out

    def feature(self, f: int) -> list[torch.Tensor]:
        """Per text, the activation of feature f at every position (0 where it is not in the top-k or skipped)."""
        if not 0 <= int(f) < self.d_sae:
            raise IndexError(f"feature {f} is out of range 0..{self.d_sae - 1}")
        per_row = (self._masked_values() * (self.indices == int(f))).sum(-1)
        return [per_row[self.rows(i)] for i in range(len(self))]

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[d_sae]`` each, over counted positions: how many times each feature fires, the sum and the maximum
        of its activations (what every feature statistic is computed from)."""
        keep = self.mask.unsqueeze(-1) & (self.values > 0)
        idx, val = self.indices[keep], self.values[keep].float()
        count = torch.bincount(idx, minlength=self.d_sae)
        total = torch.zeros(self.d_sae).index_add_(0, idx, val)
        peak = torch.zeros(self.d_sae).scatter_reduce_(0, idx, val, reduce="amax")
        return count, total, peak

    def feature_stats(self) -> pd.DataFrame:
        """Per feature that fires at a counted position, strongest first: feature, firing_count, firing_rate (share
        of counted positions), max_activation, mean_activation (where it fires): the columns of every feature
        statistic in qscope-lab (``index.source.STAT_COLUMNS``: a feature index's and the reference corpus's)."""
        count, total, peak = self.totals()
        fired = count.nonzero().squeeze(-1)
        n = max(int(self.mask.sum()), 1)
        return pd.DataFrame({
            "feature": fired.numpy(),
            "firing_count": count[fired].numpy(),
            "firing_rate": (count[fired].float() / n).numpy(),
            "max_activation": peak[fired].numpy(),
            "mean_activation": (total[fired] / count[fired].float()).numpy(),
        }).sort_values("max_activation", ascending=False, ignore_index=True)

    def top_features(self, n: int = 10, max_firing_rate: float | None = 0.5) -> pd.DataFrame:
        """The n features with the largest activation. ``max_firing_rate`` (default 0.5) drops always-on 'register'
        features, which otherwise top every ranking and say nothing about the text; None keeps them."""
        stats = self.feature_stats()
        if max_firing_rate is not None:
            stats = stats[stats.firing_rate <= max_firing_rate]
        stats = stats.head(n).reset_index(drop=True)
        stats.insert(1, "name", self.names(stats.feature.tolist()))
        return stats

    def firing_rates(self) -> torch.Tensor:
        """``[d_sae]``: the share of counted positions where each feature fires."""
        keep = self.mask.unsqueeze(-1) & (self.values > 0)
        count = torch.bincount(self.indices[keep], minlength=self.d_sae)
        return count.float() / max(int(self.mask.sum()), 1)

    def to_frame(self, min_activation: float = 0.0, max_firing_rate: float | None = None,
                 top: int | None = None) -> pd.DataFrame:
        """One row per (text, position, active feature): text (its index), snippet (its first words), position,
        token (a character split over byte tokens shown whole on each of them), feature, name, activation, rank
        (0 = strongest at that token).

        ``max_firing_rate`` leaves out features firing on more than that share of these counted tokens (the
        always-on 'register' features that otherwise top every token) and ranks the rest; ``top`` keeps the
        ``top`` strongest of each token (``to_frame(max_firing_rate=0.5, top=1)``: one telling row per token)."""
        keep = self.mask.unsqueeze(-1) & (self.values > min_activation)
        if max_firing_rate is not None:
            keep &= (self.firing_rates() <= max_firing_rate)[self.indices]
        if top is not None:
            keep &= keep.cumsum(-1) <= validate.integer(top, "top", minimum=1)
        rows, slots = keep.nonzero(as_tuple=True)
        # rank among the kept features of each token: values are sorted per row, so count the kept ones before
        ranks = (keep.cumsum(-1) - 1)[rows, slots]
        flat_tokens = [tok for toks in (self.readable or self.tokens) for tok in toks]
        text_index = self.text_index[rows]
        snippets = [_snippet(t) for t in self.texts]
        features = self.indices[rows, slots].numpy()
        return pd.DataFrame({
            "text": text_index.numpy(),
            "snippet": [snippets[i] for i in text_index.tolist()],
            "position": self.position[rows].numpy(),
            "token": [flat_tokens[r] for r in rows.tolist()],
            "feature": features,
            "name": self.names(features.tolist()),
            "activation": self.values[rows, slots].float().numpy(),
            "rank": ranks.numpy(),
        })


def _snippet(text: str, width: int = 32) -> str:
    """The first words of a text on one line, cut at ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"
