"""Workbench: a heatmap, a feature card and a steering panel, linked in plain Python.

Click a feature in the heatmap and the card shows it; "steer with it" on the card adds a slider to the
steering panel. A label typed in the card reaches the heatmap's, the steering panel's and the attribution
panel's names at once (every widget follows ``analysis.labels``' announcements). Nothing here is special: each
part is the standalone widget (``wb.heatmap``, ``wb.card``,
``wb.steering``), linked with ``traitlets.dlink``, two observers and a callback, as users link their own. The
card follows the heatmap's (layer, feature) as one selection (``FeatureCard.select``): a layer switch renders it
once, with the new layer's strongest feature, not first with the old feature number.

``Workbench(lab, texts, prompt="")``: ``texts`` is one text or a list of them for the heatmap; an empty list (or
an empty text) is refused at once with a ValueError naming ``texts``, since every part of the workbench starts
from a text (the steering and attribution prompt defaults to the first 80 characters of the first one).
``steer_alpha`` (what "steer with it" adds) is checked as a steering strength.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ipywidgets
import traitlets

from ..analysis.labels import FeatureLabels
from ..base import validate
from ._base import reject_unknown_kwargs
from .attribution import AttributionPanel
from .card import FeatureCard
from .heatmap import Heatmap
from .steering import SteeringPanel

if TYPE_CHECKING:
    from ..lab import Lab


class Workbench(ipywidgets.VBox):
    def __init__(self, lab: Lab, texts, prompt: str = "", layer: int | None = None, steer_alpha: float = 8.0,
                 reference=None, labels=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        texts = validate.texts(texts, "texts")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        steer_alpha = validate.alpha(steer_alpha, "steer_alpha")
        labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.heatmap = Heatmap(lab, texts, layer=layer, labels=labels)
        self.card = FeatureCard(lab, layer=self.heatmap.layer, feature=self.heatmap.feature, reference=reference,
                                labels=labels)
        self.steering = SteeringPanel(lab, prompt or texts[0][:80],
                                      layer=self.heatmap.layer, labels=labels)
        self.attribution = AttributionPanel(lab, self.steering.prompt, layer=self.heatmap.layer, labels=labels)
        self.steer_alpha = steer_alpha
        # the card follows the heatmap's (layer, feature) pair as one selection (a layer switch renders it once,
        # with the new layer's feature), and the heatmap follows the card's
        self.heatmap.observe(self._heatmap_selected, names=["layer", "feature"])
        self.card.observe(self._card_selected, names=["layer", "feature"])
        self.links = [traitlets.dlink((self.heatmap, "layer"), (self.steering, "layer")),
                      traitlets.dlink((self.heatmap, "layer"), (self.attribution, "layer"))]
        self.attribution.observe(self._attribution_selected, names="selected")  # a click there opens the card
        self.card.on_steer(lambda layer, feature: self.steering.add_feature(feature, self.steer_alpha, layer=layer))
        row = ipywidgets.HBox([self.heatmap, self.card])
        row.add_class("qs-workbench-row")  # wraps: side by side when wide, stacked below ~1,000 px (qscope.css)
        super().__init__([row, self.steering, self.attribution], **kwargs)
        self.add_class("qs-workbench")

    def _heatmap_selected(self, change):
        if self.heatmap.acts is not None and self.heatmap.acts.layer == self.heatmap.layer:  # encoded: a real pair
            self.card.select(self.heatmap.layer, self.heatmap.feature)

    def _card_selected(self, change):
        if (self.card.layer, self.card.feature) != (self.heatmap.layer, self.heatmap.feature):
            if self.card.layer != self.heatmap.layer:
                self.heatmap.layer = self.card.layer
            self.heatmap.feature = self.card.feature

    def _attribution_selected(self, change):
        if change["new"]:  # complete and checked (AttributionPanel._check_selected); a failure shows there
            with self.attribution.working("select"):
                self.heatmap.layer, self.heatmap.feature = change["new"]["layer"], change["new"]["feature"]
