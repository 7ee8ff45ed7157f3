"""Attribution widget: which features made the model say the target token, and what happens without them.

``Attribution(lab, "The weather today is", target="年")``: the prompt's tokens coloured by their total
attribution (orange towards the target, blue away), the features ranked with signed bars and their labels, the
target's probability; "ablate" / "steer" on a feature re-runs the prompt and shows the new probability beside the
old one; clicking a feature opens its ``FeatureCard`` below. ``AttributionPanel`` is the part without the card
(the Workbench links it to its own card).

Arguments are checked at construction (``n_features`` 1..``MAX_FEATURES``, ``steer_alpha``, ``layer``,
``method``: TypeError / ValueError naming the argument), and the same traits set later are checked again
(``TraitError``). What the front end sends (a click's ``{event, layer, feature}``) is checked field by field and
an error shows in the panel's error line; ``selected`` holds ``{}`` or a complete ``{layer, feature}`` of the
Lab, anything else is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ipywidgets
import numpy as np
import traitlets

from ..analysis.labels import FeatureLabels
from ..base import validate
from ..core.steering import Steer
from ._base import ArrayTrait, LabWidget, checked, css, esm, message_field, reacts, reject_unknown_kwargs
from .card import FeatureCard

if TYPE_CHECKING:
    from ..lab import Lab

METHODS = ("grad_x_act", "integrated_gradients")
ACTIONS = ("ablate", "steer")
MAX_FEATURES = 1000  # features listed at most (each is a row in the panel)


class AttributionPanel(LabWidget):
    _esm = esm("attribution.js")
    _css = css()

    prompt = traitlets.Unicode("").tag(sync=True)
    target = traitlets.Unicode("").tag(sync=True)             # one token; "" = the model's own top next token
    layer = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    method = traitlets.Unicode("grad_x_act").tag(sync=True)
    n_features = traitlets.Int(15).tag(sync=True)
    steer_alpha = traitlets.Float(8.0).tag(sync=True)          # what "steer" adds to a feature

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    token_attr = ArrayTrait("float32", ndim=1).tag(sync=True)   # per token: the features' total attribution
    features = traitlets.List(traitlets.Dict()).tag(sync=True)  # {layer, feature, attribution, activation}
    target_token = traitlets.Unicode("").tag(sync=True)
    probability = traitlets.Float(0.0).tag(sync=True)
    error_share = traitlets.Float(0.0).tag(sync=True)
    intervention = traitlets.Dict().tag(sync=True)  # {action, layer, feature, value, probability, new_probability}
    selected = traitlets.Dict().tag(sync=True)      # {layer, feature}: the feature clicked last
    runs = traitlets.Int(0).tag(sync=True)

    _check_n_features = checked("n_features", minimum=1, maximum=MAX_FEATURES)
    _check_steer_alpha = checked("steer_alpha", check=validate.alpha)
    _check_method = checked("method", check=lambda value, name: validate.choice(value, METHODS, name))

    def __init__(self, lab: Lab, prompt: str = "", target: str = "", layer: int | None = None,
                 method: str = "grad_x_act", labels=None, n_features: int = 15, steer_alpha: float = 8.0,
                 **kwargs):
        layer = lab.n_layers // 2 if layer is None else lab.check_layer(layer)
        validate.choice(method, METHODS, "method")
        n_features = validate.integer(n_features, "n_features", minimum=1, maximum=MAX_FEATURES)
        steer_alpha = validate.alpha(steer_alpha, "steer_alpha")
        super().__init__(lab, prompt=prompt, target=target, n_layers=lab.n_layers, method=method, layer=layer,
                         n_features=n_features, steer_alpha=steer_alpha, **kwargs)
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.result = None
        self.on_events(select=self._select, ablate=self._intervene_message, steer=self._intervene_message)
        self.run()

    def run(self) -> None:
        """Attribute again with the current prompt, target, layer and method."""
        with self.working("attribute"):
            if not self.prompt.strip():
                raise ValueError("type a prompt")
            if self.method not in METHODS:
                raise ValueError(f"method must be one of {', '.join(METHODS)}")
            result = self.lab.attribute(self.prompt, target=self.target or None, layers=self.layer,
                                        method=self.method)
            top = result.top_features(len(result.to_frame()))
            top = top.reindex(top.attribution.abs().sort_values(ascending=False).index).head(self.n_features)
            rows = [{"layer": int(r.layer), "feature": int(r.feature), "attribution": float(r.attribution),
                     "activation": float(r.activation)} for r in top.itertuples()]
            positions = result.by_position()
            self.result = result
            with self.hold_sync():
                self.tokens = result.tokens[0]
                self.token_attr = positions.attribution.to_numpy().astype(np.float32)
                self.features = rows
                self.target_token = self.lab.token_strings([result.target.token(0)])[0]
                self.probability = float(result.probability)
                self.error_share = float(result.error_share().error_share.iloc[0])
                self.intervention = {}
                self.refresh_names()
                self.runs += 1

    def named_features(self) -> list[tuple[int, int]]:
        """The ranked features."""
        return [(r["layer"], r["feature"]) for r in self.features]

    def intervene(self, layer: int, feature: int, action: str = "ablate") -> dict:
        """Re-run the prompt with the feature ablated (or steered by ``steer_alpha``) everywhere in it; the
        target's new probability goes beside the old one."""
        with self.working(action if action in ACTIONS else "intervene"):
            validate.choice(action, ACTIONS, "action")
            if self.result is None:
                raise ValueError("nothing attributed yet")
            layer, feature = self.lab.check_layer(layer), self.lab.check_feature(layer, feature)
            edit = (Steer(layer, feature, 1.0, "ablate") if action == "ablate"
                    else Steer(layer, feature, self.steer_alpha, "add"))
            row = self.result.intervene([edit]).iloc[0]
            self.intervention = {"action": action, "layer": layer, "feature": feature, "value": edit.value,
                                 "probability": float(row.probability), "new_probability": float(row.new_probability)}
        return self.intervention

    @reacts("prompt", "target", "layer", "method", "n_features")
    def _inputs_changed(self, change):
        self.run()

    @traitlets.validate("selected")
    def _check_selected(self, proposal):
        """``{}`` or ``{"layer": int, "feature": int}`` naming a feature of the Lab."""
        value = proposal["value"]
        if not value:
            return {}
        try:
            if set(value) != {"layer", "feature"}:
                raise ValueError(f"selected must be {{}} or {{'layer': int, 'feature': int}}, got keys "
                                 f"{sorted(map(str, value))}")
            layer = self.lab.check_layer(value["layer"], "selected['layer']")
            feature = self.lab.check_feature(layer, value["feature"], "selected['feature']")
        except (TypeError, ValueError, IndexError) as err:
            raise traitlets.TraitError(str(err)) from None
        return {"layer": layer, "feature": feature}

    def _message_feature(self, content: dict) -> tuple[int, int]:
        layer = message_field(content, "layer", self.lab.check_layer)
        return layer, self.lab.check_feature(layer, message_field(content, "feature"))

    def _select(self, content: dict) -> None:
        layer, feature = self._message_feature(content)
        self.selected = {"layer": layer, "feature": feature}

    def _intervene_message(self, content: dict) -> None:
        self.intervene(*self._message_feature(content), content["event"])


class Attribution(ipywidgets.VBox):
    """The panel, and below it the card of the feature clicked last (made on the first click)."""

    def __init__(self, lab: Lab, prompt: str, target: str = "", layer: int | None = None,
                 method: str = "grad_x_act", reference=None, labels=None, n_features: int = 15, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        self.lab, self.reference = lab, reference
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.panel = AttributionPanel(lab, prompt, target=target, layer=layer, method=method, labels=self.labels,
                                      n_features=n_features)
        self.card: FeatureCard | None = None
        self.panel.observe(self._selected, names="selected")
        super().__init__([self.panel], **kwargs)

    def _selected(self, change):
        choice = change["new"]  # complete and checked (AttributionPanel._check_selected)
        if not choice:
            return
        with self.panel.working("open card"):  # a failure shows in the panel, not in the kernel's log
            if self.card is None:
                self.card = FeatureCard(self.lab, layer=choice["layer"], feature=choice["feature"],
                                        reference=self.reference, labels=self.labels)
                self.children = [self.panel, self.card]
            else:
                with self.card.hold_trait_notifications():
                    self.card.layer, self.card.feature = choice["layer"], choice["feature"]
