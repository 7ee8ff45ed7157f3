"""A reference corpus, encoded once per layer: where feature cards find top activating contexts, activation
histograms and firing density, and where feature search finds features by the tokens they fire on.

The default is the corpus shipped with the package (held-out English, Chinese and Python documents of the
embedded model's corpus, about 60k tokens): plain text, so it serves any Qwen model. Pass your own texts for a
domain of your own. Activations are kept sparse (tokens x k), so a layer costs a few MB.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core.activations import FeatureActs
from .features import top_contexts

if TYPE_CHECKING:
    from ..core.lab import Lab

_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_texts() -> list[str]:
    """The shipped reference corpus (embedded/reference.jsonl): plain text, so it serves any Qwen model."""
    from ..embedded import reference_documents

    return [doc["text"] for doc in reference_documents()]


class Reference:
    def __init__(self, lab: Lab, texts: Sequence[str] | None = None, max_length: int = 128, batch_size: int = 16):
        self.lab = lab
        self.texts = list(texts) if texts is not None else default_texts()
        if not self.texts:
            raise ValueError("a reference corpus needs at least one text")
        self.max_length = max_length
        self.batch_size = batch_size
        self._acts: dict[int, FeatureActs] = {}
        self._top_tokens: dict[int, dict[int, list[str]]] = {}
        self._last: tuple = (None, None)

    @classmethod
    def of(cls, lab) -> Reference:
        """The default reference of ``lab``, shared by every widget on it (encoded once per layer)."""
        ref = _DEFAULTS.get(lab)
        if ref is None:
            ref = _DEFAULTS[lab] = cls(lab)
        return ref

    def __repr__(self) -> str:
        return f"Reference({len(self.texts)} texts, layers encoded: {sorted(self._acts)})"

    def acts(self, layer: int) -> FeatureActs:
        if layer not in self._acts:
            self._acts[layer] = self.lab.encode(self.texts, layer, batch_size=self.batch_size, skip_first=True,
                                                max_length=self.max_length)
        return self._acts[layer]

    def contexts(self, layer: int, feature: int, n: int = 8, window: int = 10) -> pd.DataFrame:
        return top_contexts(self.acts(layer), feature, n=n, window=window)

    def activations(self, layer: int, feature: int) -> torch.Tensor:
        """The feature's activation at every counted token where it fires (the last one asked is memoised:
        a card reads it for its histogram and its statistics)."""
        if self._last[0] != (layer, feature):
            values = torch.cat(self.acts(layer).feature(feature))
            self._last = ((layer, feature), values[values > 0])
        return self._last[1]

    def stats(self, layer: int, feature: int) -> dict:
        acts = self.acts(layer)
        fired = self.activations(layer, feature)
        n = max(int(acts.mask.sum()), 1)
        return {"layer": layer, "feature": feature, "tokens": n, "fires": int(fired.numel()),
                "firing_rate": fired.numel() / n,
                "max_activation": float(fired.max()) if fired.numel() else 0.0,
                "mean_activation": float(fired.mean()) if fired.numel() else 0.0,
                "decoder_norm": float(self.lab.sae(layer).decoder_norms[feature])}

    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]:
        """Per feature that fires on the corpus, the ``n`` tokens carrying most of its activation."""
        if layer not in self._top_tokens:
            acts = self.acts(layer)
            keep = acts.mask.unsqueeze(-1) & (acts.values > 0)
            rows, ranks = keep.nonzero(as_tuple=True)
            token = torch.tensor([t for ids in acts.token_ids for t in ids], dtype=torch.long)[rows]
            feature = acts.indices[rows, ranks]
            vocab = int(token.max()) + 1 if token.numel() else 1
            pairs, inverse = torch.unique(feature * vocab + token, return_inverse=True)
            mass = torch.zeros(len(pairs)).index_add_(0, inverse, acts.values[rows, ranks].float())
            order = torch.argsort(mass, descending=True)  # strongest (feature, token) pairs first
            table: dict[int, list[str]] = {}
            for key in pairs[order].tolist():
                f, tok = divmod(key, vocab)
                tokens = table.setdefault(f, [])
                if len(tokens) < n:
                    tokens.append(self.lab.token_strings([tok])[0])
            self._top_tokens[layer] = table
        return self._top_tokens[layer]

    def search(self, layer: int, query: str, labels=None, n: int = 20) -> pd.DataFrame:
        """Features whose label or note (from a ``FeatureLabels``) or top tokens contain ``query``
        (case-insensitive); a number finds that feature id. Label matches come first."""
        query = query.strip()
        columns = ["feature", "label", "top_tokens", "match"]
        if not query:
            return pd.DataFrame(columns=columns)
        tops = self.top_tokens(layer)
        named = labels.to_frame() if labels is not None else pd.DataFrame(columns=["layer", "feature", "label"])
        named = named[named.layer == layer].set_index("feature")
        rows = []
        if query.isdigit() and int(query) < self.lab.sae(layer).d_sae:
            rows.append((int(query), "id"))
        q = query.lower()
        for f, entry in named.iterrows():
            if q in f"{entry.label} {entry.get('note', '')}".lower():
                rows.append((int(f), "label"))
        for f, tokens in tops.items():
            if any(q in tok.lower() for tok in tokens):
                rows.append((f, "top token"))
        seen, out = set(), []
        for f, why in rows:
            if f not in seen:
                seen.add(f)
                out.append({"feature": f, "label": named.label.get(f, "") if len(named) else "",
                            "top_tokens": tops.get(f, []), "match": why})
        return pd.DataFrame(out[:n], columns=columns)
