"""Feature card: what one (layer, feature) is. Top activating contexts over a reference corpus, activation
histogram and firing density, decoder norm, the logit table, and a label / note kept on disk.

``FeatureCard(lab, layer=2, feature=f)``; ``card.on_steer(callback)`` is called with ``(layer, feature)``
when the user presses "steer with it" (the Workbench sends it to its steering panel).
"""

from __future__ import annotations

import traitlets

from ..analysis.features import logit_table
from ..analysis.labels import FeatureLabels, label_namespace
from ..analysis.reference import Reference
from ..viz.charts import activation_histogram, to_svg
from ._base import LabWidget, css, esm, reacts


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

    def __init__(self, lab, layer: int | None = None, feature: int = 0, reference=None, labels=None,
                 n_contexts: int = 8, window: int = 10, **kwargs):
        super().__init__(lab, n_layers=lab.n_layers, layer=lab.n_layers // 2 if layer is None else layer,
                         feature=feature, **kwargs)
        if reference is None:
            reference = Reference.of(lab)
        elif not isinstance(reference, Reference):
            reference = Reference(lab, reference)
        self.reference = reference
        self.labels = labels if labels is not None else FeatureLabels(label_namespace(lab))
        self.n_contexts, self.window = n_contexts, window
        self._steer_callbacks = []
        self.on_msg(self._on_message)
        self._show()

    def on_steer(self, callback) -> None:
        """``callback(layer, feature)`` when the user sends this feature to steering."""
        self._steer_callbacks.append(callback)

    def _on_message(self, widget, content, buffers):
        if content.get("event") == "steer":
            for callback in self._steer_callbacks:
                with self.working("steer"):
                    callback(self.layer, self.feature)

    @reacts("layer", "feature")
    def _selection_changed(self, change):
        self._show()

    @reacts("label", "note")
    def _annotation_changed(self, change):
        with self.working("save label"):
            self.labels.set(self.layer, self.feature, **{change["name"]: change["new"]})

    def _show(self) -> None:
        with self.working("feature card"):
            layer = self.lab.check_layer(self.layer)
            self.lab.sae(layer).check_feature(self.feature)
            acts = self.reference.acts(layer)
            stats = self.reference.stats(layer, self.feature)
            values = self.reference.activations(layer, self.feature)
            contexts = []
            for row in self.reference.contexts(layer, self.feature, n=self.n_contexts, window=self.window).itertuples():
                toks = acts.tokens[row.text]
                contexts.append({"left": toks[max(0, row.position - self.window):row.position], "token": row.token,
                                 "right": toks[row.position + 1:row.position + 1 + self.window],
                                 "activation": row.activation, "text": row.text})
            title = (f"L{layer} f{self.feature}: fires on {stats['firing_rate']:.2%} of "
                     f"{stats['tokens']:,} reference tokens")
            svg = to_svg(activation_histogram(values.numpy(), title=title))
            logits = logit_table(self.lab, layer, self.feature, n=8)
            stored = self.labels.get(layer, self.feature)
            with self.quietly(), self.hold_sync():  # the stored label / note are not saved back
                self.stats = stats
                self.contexts = contexts
                self.logits = logits[["side", "token", "logit"]].to_dict("records")
                self.histogram_svg = svg
                self.label, self.note = stored["label"], stored["note"]

    def histogram(self):
        """The activation histogram as an altair chart."""
        return activation_histogram(self.reference.activations(self.layer, self.feature).numpy(),
                                    title=f"L{self.layer} f{self.feature}")
