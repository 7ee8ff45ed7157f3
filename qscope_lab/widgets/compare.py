"""Compare two texts: per layer, the features whose firing rate differs most; click a row to see both texts
coloured by that feature. Each feature shows its display name (``names``). ``Compare(lab, "text a", "text b")``;
the ranking is ``features.compare_texts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import traitlets

from ..analysis import index_view
from ..analysis.features import compare_texts, shared_prefix_length
from ..base import validate
from ._base import ArrayTrait, LabWidget, checked, css, esm, reacts

if TYPE_CHECKING:
    from ..lab import Lab


def _plain(value):
    """A table cell as JSON takes it: text (the ``name`` column) as is, numbers as float or int."""
    if isinstance(value, str):
        return value
    return float(value) if isinstance(value, float | np.floating) else int(value)


class Compare(LabWidget):
    _esm = esm("compare.js")
    _css = css()

    text_a = traitlets.Unicode("").tag(sync=True)
    text_b = traitlets.Unicode("").tag(sync=True)
    skip_first = traitlets.Bool(True).tag(sync=True)
    skip_shared_prefix = traitlets.Bool(False).tag(sync=True)
    top = traitlets.Int(8).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)       # layer, feature, rate_a, rate_b, diff
    selected = traitlets.Dict().tag(sync=True)                  # {layer, feature} of the clicked row
    tokens = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)
    values = ArrayTrait("float32", ndim=1).tag(sync=True)       # both texts' tokens in a row
    vmax = traitlets.Float(1.0).tag(sync=True)
    shared = traitlets.Int(0).tag(sync=True)                    # tokens of shared prefix (greyed when skipped)
    _check_top = checked("top", minimum=1)                      # also when set later

    def __init__(self, lab: Lab, text_a: str = "", text_b: str = "", layers=None, top: int = 8, skip_first: bool = True,
                 skip_shared_prefix: bool = False, **kwargs):
        validate.integer(top, "top", minimum=1)
        layers = None if layers is None else lab.check_layers(layers)
        super().__init__(lab, text_a=text_a, text_b=text_b, top=top, skip_first=skip_first,
                         skip_shared_prefix=skip_shared_prefix, **kwargs)
        self.layers = list(range(lab.n_layers)) if layers is None else list(layers)
        self.table = None
        self.refresh()

    @reacts("text_a", "text_b", "skip_first", "skip_shared_prefix", "top")
    def _inputs_changed(self, change):
        self.refresh()

    @reacts("selected")
    def _selected_changed(self, change):
        self._show_feature()

    def refresh(self) -> None:
        with self.working("compare"):
            if not self.text_a.strip() or not self.text_b.strip():
                raise ValueError("give two non-empty texts")
            validate.integer(self.top, "top", minimum=1)
            for layer in self.layers:
                self.lab.check_layer(layer)
            self.table = compare_texts(self.lab, self.text_a, self.text_b, self.layers, top=self.top,
                                       skip_first=self.skip_first, skip_shared_prefix=self.skip_shared_prefix)
            rates = [index_view.corpus_rates(self.lab, r.layer, [r.feature]) for r in self.table.itertuples()]
            if rates and all(r is not None for r in rates):  # how common each feature is in the indexed corpus
                self.table["corpus_rate"] = [r[0] for r in rates]
            with self.hold_sync():
                self.rows = [{k: _plain(v) for k, v in r.items()} for r in self.table.to_dict("records")]
                first = self.rows[0] if self.rows else {}
                self.selected = {"layer": first.get("layer", 0), "feature": first.get("feature", 0)}
                self._show_feature()
                self.refresh_names()

    def named_features(self) -> list[tuple[int, int]]:
        """The ranked rows (the selected one is among them)."""
        return [(r["layer"], r["feature"]) for r in self.rows]

    def _show_feature(self) -> None:
        with self.working("heatmap"):
            layer, feature = int(self.selected.get("layer", 0)), int(self.selected.get("feature", 0))
            self.lab.check_layer(layer)
            acts = self.lab.encode([self.text_a, self.text_b], layer, skip_first=self.skip_first)
            values = torch.cat(acts.feature(feature)).numpy()
            with self.hold_sync():
                self.tokens = acts.tokens
                self.values = values
                self.vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
                self.shared = shared_prefix_length(*acts.token_ids) if self.skip_shared_prefix else 0
