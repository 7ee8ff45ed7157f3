"""A reference corpus, encoded once per layer: where feature cards find top activating contexts, activation
histograms and firing density, and where feature search finds features by the tokens they fire on.

The default is the corpus shipped with the package (held-out English, Chinese and Python documents of the
embedded model's corpus, about 60k tokens): plain text, so it serves any Qwen model. Pass your own texts for a
domain of your own. Activations are kept sparse (tokens x k), so a layer costs a few MB.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core.activations import FeatureActs
from .features import top_contexts

if TYPE_CHECKING:
    from ..lab import Lab

_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
PREVIEW_STRIDE = 8  # a first card reads every 8th text; the rest is encoded while the kernel is idle


def default_texts() -> list[str]:
    """The shipped reference corpus (embedded/reference.jsonl): plain text, so it serves any Qwen model."""
    from ..embedded import reference_documents

    return [doc["text"] for doc in reference_documents()]


class Reference:
    def __init__(self, lab: Lab, texts: Sequence[str] | None = None, max_length: int = 128, batch_size: int = 16):
        self.lab = lab
        self.default = texts is None  # the default corpus gives way to the Lab's feature index, if it has one
        self.texts = list(texts) if texts is not None else default_texts()
        if not self.texts:
            raise ValueError("a reference corpus needs at least one text")
        self.max_length = max_length
        self.batch_size = batch_size
        self._acts: dict[int, FeatureActs] = {}
        self._top_tokens: dict[int, dict[int, list[str]]] = {}
        self._last: tuple = (None, None, None)
        self._fills: dict[int, _Fill] = {}

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
        """The whole corpus encoded at ``layer`` (a fill under way is finished now)."""
        if layer in self._fills:
            self.wait(layer)
        if layer not in self._acts:
            self._acts[layer] = self.lab.encode(self.texts, layer, batch_size=self.batch_size, skip_first=True,
                                                max_length=self.max_length)
        return self._acts[layer]

    def current(self, layer: int) -> FeatureActs:
        """The layer's encoding as far as it goes: the whole corpus once encoded; before that, inside a running
        event loop (a Jupyter kernel), a preview of every ``PREVIEW_STRIDE``-th text encoded now while the rest
        is encoded batch by batch whenever the kernel is idle (``ready``, ``on_ready``, ``wait``). The model
        runs on the kernel's own thread throughout: nnsight traces on two threads at once corrupt each other.
        With no event loop (a script), or a corpus too small to split, this is ``acts``."""
        if layer in self._acts:
            return self._acts[layer]
        if layer not in self._fills:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self.acts(layer)
            if len(self.texts) < 4 * PREVIEW_STRIDE:  # small enough to encode whole at once
                return self.acts(layer)
            fill = self._fills[layer] = _Fill(self, layer)
            fill.task = loop.create_task(fill.run())
        return self._fills[layer].preview

    def ready(self, layer: int) -> bool:
        """Whether the whole corpus is encoded at ``layer``."""
        return layer in self._acts

    def on_ready(self, layer: int, callback) -> None:
        """``callback()`` once the whole corpus is encoded at ``layer`` (now, if it is)."""
        if layer in self._fills:
            self._fills[layer].callbacks.append(callback)
        elif layer in self._acts:
            callback()

    def wait(self, layer: int | None = None) -> None:
        """Finish the fills under way (of ``layer``, or all) here and now."""
        for key in [layer] if layer is not None else list(self._fills):
            fill = self._fills.get(key)
            while fill is not None and fill.step():
                pass

    def contexts(self, layer: int, feature: int, n: int = 8, window: int = 10, preview: bool = False
                 ) -> pd.DataFrame:
        """Top activating contexts; ``preview=True`` reads ``current`` (what a first card shows)."""
        acts = self.current(layer) if preview else self.acts(layer)
        return top_contexts(acts, feature, n=n, window=window, lab=self.lab)

    def activations(self, layer: int, feature: int, preview: bool = False) -> torch.Tensor:
        """The feature's activation at every counted token where it fires (the last one asked is memoised:
        a card reads it for its histogram and its statistics)."""
        acts = self.current(layer) if preview else self.acts(layer)
        if self._last[0] != (layer, feature) or self._last[2] is not acts:
            values = torch.cat(acts.feature(feature))
            self._last = ((layer, feature), values[values > 0], acts)
        return self._last[1]

    def stats(self, layer: int, feature: int, preview: bool = False) -> dict:
        acts = self.current(layer) if preview else self.acts(layer)
        fired = self.activations(layer, feature, preview=preview)
        n = max(int(acts.mask.sum()), 1)
        return {"layer": layer, "feature": feature, "tokens": n, "fires": int(fired.numel()),
                "texts": len(acts), "complete": len(acts) == len(self.texts),
                "firing_rate": fired.numel() / n,
                "max_activation": float(fired.max()) if fired.numel() else 0.0,
                "mean_activation": float(fired.mean()) if fired.numel() else 0.0,
                "decoder_norm": float(self.lab.sae(layer).decoder_norms[feature])}

    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]:
        """Per feature that fires on the corpus, the ``n`` tokens carrying most of its activation."""
        index = getattr(self.lab, "index", None)
        if self.default and index is not None and layer in index.layers:
            return index.top_tokens(layer, n)  # the Lab's feature index: a larger corpus, nothing to encode
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


class _Fill:
    """One layer's encoding in steps: a preview of every ``PREVIEW_STRIDE``-th text now, then the other texts
    ``batch_size`` at a time (``step``), merged back into corpus order when the last step is done."""

    def __init__(self, ref: Reference, layer: int):
        self.ref, self.layer, self.callbacks, self.task = ref, layer, [], None
        n = len(ref.texts)
        self.order = list(range(0, n, PREVIEW_STRIDE))
        self.rest = [i for i in range(n) if i % PREVIEW_STRIDE]
        self.preview = self._encode(self.order)
        self.parts = [self.preview]

    def _encode(self, index: list[int]) -> FeatureActs:
        ref = self.ref
        return ref.lab.encode([ref.texts[i] for i in index], self.layer, batch_size=ref.batch_size,
                              skip_first=True, max_length=ref.max_length, progress=False)

    def step(self) -> bool:
        """Encode the next batch; False once the layer is complete (then the callbacks have run)."""
        if self.ref._fills.get(self.layer) is not self:
            return False
        done = len(self.order)
        chunk = self.rest[done - len(self.preview):][:self.ref.batch_size]
        if chunk:
            self.parts.append(self._encode(chunk))
            self.order += chunk
            return True
        self.ref._acts[self.layer] = _merged(self.parts, self.order, self.ref.texts)
        del self.ref._fills[self.layer]
        for callback in self.callbacks:
            callback()
        return False

    async def run(self) -> None:
        while self.step():
            await asyncio.sleep(0)  # the kernel handles waiting messages (widget events, cells) in between


def _merged(parts: list[FeatureActs], order: list[int], texts: list[str]) -> FeatureActs:
    """``parts`` (whose texts, concatenated, are ``texts[order]``) as one FeatureActs in corpus order."""
    token_ids = [ids for part in parts for ids in part.token_ids]
    tokens = [toks for part in parts for toks in part.tokens]
    values = torch.cat([part.values for part in parts])
    indices = torch.cat([part.indices for part in parts])
    mask = torch.cat([part.mask for part in parts])
    starts = torch.tensor([0] + [len(ids) for ids in token_ids]).cumsum(0).tolist()
    inverse = sorted(range(len(order)), key=order.__getitem__)
    rows = torch.cat([torch.arange(starts[j], starts[j + 1]) for j in inverse])
    return FeatureActs(texts=list(texts), layer=parts[0].layer, d_sae=parts[0].d_sae,
                       token_ids=[token_ids[j] for j in inverse], tokens=[tokens[j] for j in inverse],
                       values=values[rows], indices=indices[rows], mask=mask[rows])
