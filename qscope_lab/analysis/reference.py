"""A reference corpus, encoded once per layer: where feature cards find top activating contexts, activation
histograms and firing rates, and where feature search finds features by the tokens they fire on. It is a
``FeatureSource`` (``index.source``), as a feature index is: the same columns, read by the same card.

The default is the corpus shipped with the package (held-out English, Chinese and Python documents of the
embedded model's corpus, about 60k tokens): plain text, so it serves any Qwen model. Pass your own texts for a
domain of your own. Activations are kept sparse (tokens x k), so a layer costs a few MB.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..base import validate
from ..core import tokens as token_text
from ..core.activations import FeatureActs
from ..index import schema
from ..index.hashes import priority
from ..index.source import (
    CONTEXT_COLUMNS,
    context_string,
    quantile_frame,
    quantile_pick,
    stat_frame,
    top_tokens,
)

if TYPE_CHECKING:
    from ..lab import Lab

_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
PREVIEW_STRIDE = 8  # a first card reads every 8th text; the rest is encoded while the kernel is idle
SAMPLES_PER_INTERVAL = 2  # quantile samples per interval unless asked (a feature index's samples_per_bin default)


def default_texts() -> list[str]:
    """The shipped reference corpus (embedded/reference.jsonl): plain text, so it serves any Qwen model."""
    from ..embedded import reference_documents

    return [doc["text"] for doc in reference_documents()]


class Reference:
    """Texts encoded once per layer, read as a ``FeatureSource``: ``stats``, ``feature_stats``, ``top_contexts``
    (``window`` tokens either side), ``quantile_samples``, ``histogram`` (a feature index's log-spaced bins) and
    ``top_tokens``. Those reads see what ``current`` holds: in a Jupyter kernel a first read of a layer is of a
    preview that grows to the whole corpus (``ready`` says when; ``feature_stats``' ``complete`` too)."""

    def __init__(self, lab: Lab, texts: Sequence[str] | None = None, max_length: int = 128, batch_size: int = 16,
                 window: int = 10):
        self.lab = lab
        self.window = validate.integer(window, "window", minimum=0)
        self.default = texts is None  # the default corpus gives way to the Lab's feature index, if it has one
        self.texts = list(texts) if texts is not None else default_texts()
        if not self.texts:
            raise ValueError("a reference corpus needs at least one text")
        self.max_length = max_length
        self.batch_size = batch_size
        self._acts: dict[int, FeatureActs] = {}
        self._top_tokens: dict[tuple[int, int], dict[int, list[str]]] = {}
        self._last: tuple = (None, None, None)
        self._fills: dict[int, _Fill] = {}

    @classmethod
    def of(cls, lab: Lab) -> Reference:
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

    # ------------------------------------------------------------------ the FeatureSource
    @property
    def name(self) -> str:
        return "reference"

    def counted_tokens(self, layer: int) -> int:
        return int(self.current(layer).mask.sum())

    def activations(self, layer: int, feature: int) -> torch.Tensor:
        """The feature's activation at every counted token of ``current`` where it fires (the last one asked is
        memoised: a card reads it for its histogram and its statistics)."""
        acts = self.current(layer)
        if self._last[0] != (layer, feature) or self._last[2] is not acts:
            values = torch.cat(acts.feature(feature))
            self._last = ((layer, feature), values[values > 0], acts)
        return self._last[1]

    def stats(self, layer: int) -> pd.DataFrame:
        """One row per feature: ``STAT_COLUMNS`` over the counted tokens."""
        acts = self.current(layer)
        count, total, peak = (x.numpy() for x in acts.totals())
        return stat_frame(acts.d_sae, count, total, peak, int(acts.mask.sum()))

    def feature_stats(self, layer: int, feature: int) -> dict:
        """One feature's ``STAT_COLUMNS``, and how far the encoding is: ``texts`` encoded, ``complete``."""
        acts = self.current(layer)
        fired = self.activations(layer, feature)
        count = int(fired.numel())
        return {"feature": int(feature), "firing_count": count,
                "firing_rate": count / max(int(acts.mask.sum()), 1),
                "max_activation": float(fired.max()) if count else 0.0,
                "mean_activation": float(fired.double().mean()) if count else 0.0,
                "texts": len(acts), "complete": len(acts) == len(self.texts)}

    def _records(self, acts: FeatureActs, per_text: list[torch.Tensor], rows: list[int]) -> list[dict]:
        """Firings (token rows of ``acts``) as context rows, their windows shown as a feature index shows its
        own (``core.tokens.readable``)."""
        out, w = [], self.window
        for row in rows:
            text, pos = int(acts.text_index[row]), int(acts.position[row])
            lo = max(0, pos - w)
            ids = acts.token_ids[text][lo:pos + w + 1]
            center = pos - lo
            shown, token, boundary = token_text.readable(self.lab.token_strings(ids),
                                                         token_text.fragment_bytes(self.lab, ids), center)
            values = per_text[text][lo:lo + len(ids)]
            out.append({"activation": float(values[center]), "document": text, "position": pos, "token": token,
                        "context": context_string(shown, center), "boundary": boundary, "source": self.name,
                        "tokens": shown, "values": values.tolist(), "center": center})
        return out

    def top_contexts(self, layer: int, feature: int, n: int | None = None) -> pd.DataFrame:
        """The feature's ``n`` (default 10) strongest firings, strongest first (ties: first in the corpus), each
        with ``window`` tokens either side (``CONTEXT_COLUMNS``)."""
        n = 10 if n is None else validate.integer(n, "n", minimum=0)
        acts = self.current(layer)
        per_text = acts.feature(feature)
        scores = torch.cat(per_text)
        fired = torch.nonzero(scores > 0).squeeze(-1)
        order = fired[torch.argsort(-scores[fired], stable=True)][:n]
        return pd.DataFrame(self._records(acts, per_text, order.tolist()), columns=list(CONTEXT_COLUMNS))

    def histogram(self, layer: int, feature: int) -> pd.DataFrame:
        """The feature's activation histogram over a feature index's log-spaced bins (``schema.bin_edges`` of
        ``schema.HISTOGRAM_BINS``): bin, lower, upper, count (nonzero bins)."""
        params = schema.HISTOGRAM_BINS
        bins = schema.bins_formula(self.activations(layer, feature).numpy(), params["bins_per_decade"],
                                   params["min_exponent"], params["n_bins"])
        counts = np.bincount(bins, minlength=params["n_bins"])
        b = np.flatnonzero(counts)
        edges = schema.bin_edges(params)
        return pd.DataFrame({"bin": b, "lower": edges[b], "upper": edges[b + 1], "count": counts[b]})

    def quantile_samples(self, layer: int, feature: int, intervals: int = 5,
                         per_interval: int | None = None) -> pd.DataFrame:
        """Firings from each of ``intervals`` activation quantile intervals (cut at histogram bins, 0 the
        weakest), ``per_interval`` (default 2) each, picked uniformly by the hash a feature index samples by."""
        intervals = validate.integer(intervals, "intervals", minimum=1)
        per = SAMPLES_PER_INTERVAL if per_interval is None else validate.integer(per_interval, "per_interval",
                                                                                 minimum=0)
        acts = self.current(layer)
        per_text = acts.feature(feature)
        scores = torch.cat(per_text)
        rows = torch.nonzero(scores > 0).squeeze(-1)
        params = schema.HISTOGRAM_BINS
        bins = schema.bins_formula(scores[rows].numpy(), params["bins_per_decade"], params["min_exponent"],
                                   params["n_bins"])
        hashes = priority(acts.text_index[rows].numpy(), acts.position[rows].numpy(),
                          np.full(len(rows), int(feature)), 0)
        pick, interval, lower, upper = quantile_pick(self.histogram(layer, feature), bins, hashes, intervals, per)
        records = self._records(acts, per_text, rows[pick].tolist())
        return quantile_frame([{"interval": int(q), "lower": float(a), "upper": float(b), **r}
                               for q, a, b, r in zip(interval, lower, upper, records)])

    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]:
        """Per feature that fires on the corpus, the ``n`` tokens carrying most of its activation (a fragment of
        a character named by its bytes, ``⟨e7 8c⟩``); the whole corpus is read."""
        index = getattr(self.lab, "index", None)
        if self.default and index is not None and layer in index.layers:
            return index.top_tokens(layer, n)  # the Lab's feature index: a larger corpus, nothing to encode
        key = (layer, n)
        if key not in self._top_tokens:
            acts = self.acts(layer)
            keep = acts.mask.unsqueeze(-1) & (acts.values > 0)
            rows, ranks = keep.nonzero(as_tuple=True)
            token = torch.tensor([t for ids in acts.token_ids for t in ids], dtype=torch.long)[rows]
            tops = top_tokens(acts.indices[rows, ranks].numpy(), token.numpy(),
                              acts.values[rows, ranks].float().numpy(), n)
            self._top_tokens[key] = {f: [token_text.raw_label(self.lab, t) for t in ids] for f, ids in tops.items()}
        return self._top_tokens[key]

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
