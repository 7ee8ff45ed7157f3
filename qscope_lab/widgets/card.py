"""Feature card: what one (layer, feature) is. At the top its display name and explanation with its score (the
best stored one, else the offline explainer's, computed for the card and not stored); top activating contexts
with every token shaded by the feature's activation on it, activation histogram and firing rate (read from a
``FeatureSource``: the Lab's feature index where it covers the layer, else a reference corpus), decoder norm, the
logit table, the features with the most similar decoder directions, a box to test the feature on your own text,
and a label / note kept on disk (a label saved in any other widget shows here at once).

``FeatureCard(lab, layer=2, feature=f)``; ``card.on_steer(callback)`` is called with ``(layer, feature)``
when the user presses "steer with it" (the Workbench sends it to its steering panel).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import traitlets

from ..analysis import index_view
from ..analysis.features import logit_table
from ..analysis.labels import FeatureLabels
from ..analysis.reference import Reference
from ..core import tokens as token_text
from ..explain import offline
from ..explain.documents import best_explanations
from ._base import ArrayTrait, LabWidget, css, esm, reacts
from ._charts import widget_svg

N_SIMILAR = 8
TEST_MAX_CHARS = 4000  # the test box encodes what the user typed; a pasted book is cut here


def similar_features(lab: Lab, layer: int, feature: int, n: int = N_SIMILAR) -> list[dict]:
    """The ``n`` features of ``layer`` whose decoder directions (columns of ``W_dec``) have the largest cosine
    with ``feature``'s: ``[{layer, feature, cosine}]``, most similar first."""
    sae = lab.sae(layer)
    sae.check_feature(feature)
    with torch.no_grad():
        w_dec = sae.W_dec.detach()
        column = w_dec[:, feature]
        cosine = (column @ w_dec).float() / (sae.decoder_norms.float() * float(column.float().norm())).clamp_min(1e-12)
        cosine[feature] = -math.inf
        top = torch.topk(cosine, min(n, sae.d_sae - 1))
    return [{"layer": int(layer), "feature": int(f), "cosine": round(float(c), 4)}
            for c, f in zip(top.values.tolist(), top.indices.tolist())]


def feature_explanation(lab: Lab, layer: int, feature: int) -> dict:
    """What the card shows at its top: ``{text, score, explainer, model, stored}`` of the feature's best stored
    explanation, else the offline explainer's (``stored`` False: computed now, not added to the index); ``{}``
    where no feature index covers the layer (the offline explainer reads the index)."""
    index = index_view.index_for(lab, layer)
    if index is None:
        return {}
    best = best_explanations(index)
    mine = best[(best.layer == layer) & (best.feature == feature)] if len(best) else best
    if len(mine):
        row = mine.iloc[0]
        score = float(row.score) if row.score is not None and not math.isnan(float(row.score)) else None
        return {"text": str(row.explanation), "score": score, "explainer": str(row.explainer),
                "model": str(row.model), "stored": True}
    row = offline.explain(index, layer, [feature])[0]
    return {"text": row["explanation"], "score": float(row["score"]), "explainer": "offline",
            "model": offline.MODEL, "stored": False}

if TYPE_CHECKING:
    from ..index.source import FeatureSource
    from ..lab import Lab


class FeatureCard(LabWidget):
    _esm = esm("card.js")
    _css = css()

    layer = traitlets.Int(0).tag(sync=True)
    feature = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    # {left, token, right, activation, text, left_values, right_values}: every token with the feature's value on it
    contexts = traitlets.List(traitlets.Dict()).tag(sync=True)
    logits = traitlets.List(traitlets.Dict()).tag(sync=True)     # {side, token, logit}
    stats = traitlets.Dict().tag(sync=True)
    histogram_svg = traitlets.Unicode("").tag(sync=True)
    explanation = traitlets.Dict().tag(sync=True)                # {text, score, explainer, model, stored}
    similar = traitlets.List(traitlets.Dict()).tag(sync=True)    # {layer, feature, cosine}, most similar first
    test_text = traitlets.Unicode("").tag(sync=True)             # the user's own text ("" = none)
    test_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    test_values = ArrayTrait("float32", ndim=1).tag(sync=True)   # the feature on each of test_tokens

    def __init__(self, lab: Lab, layer: int | None = None, feature: int = 0, reference=None, labels=None,
                 n_contexts: int = 8, window: int = 10, **kwargs):
        super().__init__(lab, n_layers=lab.n_layers, layer=lab.n_layers // 2 if layer is None else layer,
                         feature=feature, **kwargs)
        self.use_index = reference is None  # a Lab's feature index serves the card unless a corpus is given
        if reference is None:
            reference = Reference.of(lab)
        elif not isinstance(reference, Reference):
            reference = Reference(lab, reference, window=window)
        self.reference = reference
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.n_contexts, self.window = n_contexts, window
        self._steer_callbacks = []
        self._filling: set[int] = set()  # layers whose reference encoding is still filling in
        self.on_events(steer=self._send_to_steering)
        self._show()
        if self.test_text:
            self._test()

    def on_steer(self, callback) -> None:
        """``callback(layer, feature)`` when the user sends this feature to steering."""
        self._steer_callbacks.append(callback)

    def _send_to_steering(self, content: dict) -> None:
        for callback in self._steer_callbacks:
            callback(self.layer, self.feature)

    @reacts("layer", "feature")
    def _selection_changed(self, change):
        self._show()
        if self.test_text:
            self._test()

    def select(self, layer: int, feature: int) -> None:
        """Show ``feature`` of ``layer``: both set, then one render (setting the two traits one by one renders
        twice, the first time an unrelated pair: f53 of the new layer)."""
        if (layer, feature) == (self.layer, self.feature):
            return
        with self.quietly():
            self.layer, self.feature = layer, feature
        self._selection_changed(None)

    @reacts("test_text")
    def _test_text_changed(self, change):
        self._test()

    def _test(self) -> None:
        """Encode the user's text and send the feature's activation on each of its tokens."""
        with self.working("test text"):
            text = self.test_text[:TEST_MAX_CHARS]
            if not text.strip():
                with self.hold_sync():
                    self.test_tokens, self.test_values = [], np.zeros(0, np.float32)
                return
            layer = self.lab.check_layer(self.layer)
            self.lab.sae(layer).check_feature(self.feature)
            acts = self.lab.encode([text], layer, skip_first=True)
            values = acts.feature(self.feature)[0].numpy().astype(np.float32)
            pieces, _ = token_text.groups(self.lab, acts.token_ids[0])
            with self.hold_sync():
                self.test_tokens = pieces
                self.test_values = values

    def test(self, text: str) -> list[tuple[str, float]]:
        """The feature's activation on each token of ``text`` (what the card's test box shows)."""
        self.test_text = text
        if self.error:
            raise ValueError(self.error)
        return list(zip(self.test_tokens, self.test_values.tolist()))

    def named_features(self) -> list[tuple[int, int]]:
        """The card's feature and its similar ones."""
        return [(self.layer, self.feature)] + [(r["layer"], r["feature"]) for r in self.similar]

    def label_saved(self, change: dict) -> None:
        """A label of the card's feature saved elsewhere shows in its label box (not saved back)."""
        if (change["layer"], change["feature"]) == (self.layer, self.feature) and \
                (change["label"], change["note"]) != (self.label, self.note):
            with self.quietly():
                self.label, self.note = change["label"], change["note"]

    @reacts("label", "note")
    def _annotation_changed(self, change):
        with self.working("save label"):
            self.labels.set(self.layer, self.feature, **{change["name"]: change["new"]})

    def _source(self, layer: int) -> FeatureSource:
        """Where the card reads: the Lab's feature index if it covers ``layer`` (unless a corpus was given), else
        the reference corpus."""
        index = index_view.index_for(self.lab, layer) if self.use_index else None
        return index if index is not None else self.reference

    def _show(self) -> None:
        with self.working("feature card"):
            layer = self.lab.check_layer(self.layer)
            self.lab.sae(layer).check_feature(self.feature)
            source = self._source(layer)
            if source is self.reference:
                # a first card of a layer in a kernel reads a preview; the card redraws when the corpus is in
                self.reference.current(layer)
                if not self.reference.ready(layer) and layer not in self._filling:
                    self._filling.add(layer)
                    self.reference.on_ready(layer, lambda: (self._filling.discard(layer), self._show()))
            stats, _, chart = index_view.card(self.lab, source, layer, self.feature, 0)
            self._show_content(layer, stats, self._contexts(source, layer), chart)

    def _contexts(self, source: FeatureSource, layer: int) -> list[dict]:
        """The top contexts with the feature's value on every token of the window (not only the peak)."""
        out, w = [], self.window
        for c in source.top_contexts(layer, self.feature, n=self.n_contexts).itertuples():
            lo, values = max(0, c.center - w), [round(float(v), 4) for v in c.values]
            out.append({"left": list(c.tokens[lo:c.center]), "token": c.token,
                        "right": list(c.tokens[c.center + 1:c.center + 1 + w]), "boundary": c.boundary,
                        "activation": float(c.activation), "text": int(c.document),
                        "left_values": values[lo:c.center], "right_values": values[c.center + 1:c.center + 1 + w]})
        return out

    def _show_content(self, layer: int, stats: dict, contexts: list, chart) -> None:
        """Send one card's content (from the index or the reference corpus) to the front end."""
        svg = widget_svg(chart)
        logits = logit_table(self.lab, layer, self.feature, n=8)
        stored = self.labels.get(layer, self.feature)
        explanation = feature_explanation(self.lab, layer, self.feature)
        similar = similar_features(self.lab, layer, self.feature)
        with self.quietly(), self.hold_sync():  # the stored label / note are not saved back
            self.stats = stats
            self.contexts = contexts
            self.logits = logits[["side", "token", "logit"]].to_dict("records")
            self.histogram_svg = svg
            self.explanation = explanation
            self.similar = similar
            self.label, self.note = stored["label"], stored["note"]
            self.refresh_names()

    def histogram(self):
        """The activation histogram as an altair chart (log-spaced bins, from the card's source)."""
        layer = self.lab.check_layer(self.layer)
        return index_view.card(self.lab, self._source(layer), layer, self.feature, 0)[2]
