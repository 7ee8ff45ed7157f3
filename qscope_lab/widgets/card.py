"""Feature card: what one (layer, feature) is. Top activating contexts, activation histogram and firing rate
(read from a ``FeatureSource``: the Lab's feature index where it covers the layer, else a reference corpus),
decoder norm, the logit table, and a label / note kept on disk.

``FeatureCard(lab, layer=2, feature=f)``; ``card.on_steer(callback)`` is called with ``(layer, feature)``
when the user presses "steer with it" (the Workbench sends it to its steering panel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import traitlets

from ..analysis import index_view
from ..analysis.features import logit_table
from ..analysis.labels import FeatureLabels
from ..analysis.reference import Reference
from ..viz.charts import to_svg
from ._base import LabWidget, css, esm, reacts

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
    contexts = traitlets.List(traitlets.Dict()).tag(sync=True)   # {left, token, right, activation, text}
    logits = traitlets.List(traitlets.Dict()).tag(sync=True)     # {side, token, logit}
    stats = traitlets.Dict().tag(sync=True)
    histogram_svg = traitlets.Unicode("").tag(sync=True)

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

    def on_steer(self, callback) -> None:
        """``callback(layer, feature)`` when the user sends this feature to steering."""
        self._steer_callbacks.append(callback)

    def _send_to_steering(self, content: dict) -> None:
        for callback in self._steer_callbacks:
            callback(self.layer, self.feature)

    @reacts("layer", "feature")
    def _selection_changed(self, change):
        self._show()

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
            self._show_content(layer, *index_view.card(self.lab, source, layer, self.feature, self.n_contexts,
                                                       self.window))

    def _show_content(self, layer: int, stats: dict, contexts: list, chart) -> None:
        """Send one card's content (from the index or the reference corpus) to the front end."""
        svg = to_svg(chart)
        logits = logit_table(self.lab, layer, self.feature, n=8)
        stored = self.labels.get(layer, self.feature)
        with self.quietly(), self.hold_sync():  # the stored label / note are not saved back
            self.stats = stats
            self.contexts = contexts
            self.logits = logits[["side", "token", "logit"]].to_dict("records")
            self.histogram_svg = svg
            self.label, self.note = stored["label"], stored["note"]

    def histogram(self):
        """The activation histogram as an altair chart (log-spaced bins, from the card's source)."""
        layer = self.lab.check_layer(self.layer)
        return index_view.card(self.lab, self._source(layer), layer, self.feature, 0)[2]
