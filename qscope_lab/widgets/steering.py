"""Steering panel: a prompt, one slider per feature, baseline and steered text side by side.

``SteeringPanel(lab, "The weather today is", layer=2, features=[f])``. Moving a slider regenerates (the
front-end debounces while dragging and sends at once on release); the baseline is cached per prompt and
length, so a slider move costs one steered generation. Features come by id, from ``add_feature`` (a heatmap
click in the Workbench), or from a search over labels and top tokens. ``generate_kwargs`` go to every
generation of the panel: small models loop under greedy decoding, and ``{"repetition_penalty": 1.3}`` keeps
steered text readable. Beside the texts, the ``top_next`` most likely next tokens after the prompt, baseline
and steered (0 hides them; not shown when only generated tokens are steered).

Arguments are checked at construction and the traits again whenever they are set (``max_new_tokens`` >= 1,
``alpha_max`` a finite steering strength above 0, ``positions`` / ``mode`` from their lists); each ``features``
row must be a ``{layer, feature, alpha}`` of the Lab with a finite alpha, else the regeneration shows which row
is wrong (the panel keeps the value, the next good one works). What the front end sends (add, remove, sweep,
search) is checked field by field and an error shows in the panel's error line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import traitlets

from ..analysis.labels import FeatureLabels
from ..analysis.reference import Reference
from ..base import validate
from ..core.steering import MODES
from ._base import LabWidget, checked, css, esm, message_field, reacts

if TYPE_CHECKING:
    from ..lab import Lab

POSITIONS = ("all", "prompt", "generated")


def _positive_alpha(value, name: str) -> float:
    """A steering strength above 0 (the sliders' range)."""
    value = validate.alpha(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be above 0, got {value:g}")
    return value


def _query(value, name: str) -> str:
    """A search query: any str ("" clears the results)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({type(value).__name__})")
    return value


class SteeringPanel(LabWidget):
    _esm = esm("steering.js")
    _css = css()

    prompt = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)                   # layer of features added by id or search
    n_layers = traitlets.Int(1).tag(sync=True)
    features = traitlets.List(traitlets.Dict()).tag(sync=True)  # {layer, feature, alpha, label}
    positions = traitlets.Unicode("all").tag(sync=True)
    mode = traitlets.Unicode("add").tag(sync=True)
    max_new_tokens = traitlets.Int(32).tag(sync=True)
    alpha_max = traitlets.Float(32.0).tag(sync=True)          # sliders run from -alpha_max to +alpha_max

    baseline_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steered_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    differs = traitlets.List(traitlets.Bool()).tag(sync=True)  # per steered token: not the baseline's token
    generation_ms = traitlets.Float(0.0).tag(sync=True)
    generations = traitlets.Int(0).tag(sync=True)             # counts regenerations (front-end timing)
    steered_for = traitlets.List(traitlets.Dict()).tag(sync=True)  # the {layer, feature, alpha} that made the text
    sweep_rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    next_tokens = traitlets.List(traitlets.Dict()).tag(sync=True)  # top next tokens, baseline vs prompt steered
    search_results = traitlets.List(traitlets.Dict()).tag(sync=True)

    _check_max_new_tokens = checked("max_new_tokens", minimum=1)
    _check_alpha_max = checked("alpha_max", check=lambda value, name: _positive_alpha(value, name))
    _check_positions = checked("positions", check=lambda value, name: validate.choice(value, POSITIONS, name))
    _check_mode = checked("mode", check=lambda value, name: validate.choice(value, MODES, name))

    def __init__(self, lab: Lab, prompt: str = "", layer: int | None = None, features=(), positions: str = "all",
                 max_new_tokens: int = 32, alpha_max: float = 32.0, mode: str = "add", labels=None,
                 generate_kwargs: dict | None = None, top_next: int = 5, **kwargs):
        super().__init__(lab, prompt=prompt, n_layers=lab.n_layers, positions=positions, mode=mode,
                         layer=lab.n_layers // 2 if layer is None else layer, max_new_tokens=max_new_tokens,
                         alpha_max=alpha_max, **kwargs)
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.top_next = validate.integer(top_next, "top_next", minimum=0)
        self._baseline_key, self._baseline = None, None
        self.on_events(add=self._add_message, remove=self._remove_message, sweep=self._sweep_message,
                       search=self._search_message)
        for item in features:
            feature, alpha = item if isinstance(item, tuple) else (item, 0.0)
            self.add_feature(feature, alpha, regenerate=False)
        self.regenerate()

    # ------------------------------------------------------------------ public
    def add_feature(self, feature: int, alpha: float = 0.0, layer: int | None = None, regenerate: bool = True):
        """Add a slider (or set the alpha of an existing one) for ``feature`` at ``layer`` (default: the panel's)."""
        with self.working("add feature"):
            layer = self.lab.check_layer(self.layer if layer is None else layer)
            feature = self.lab.check_feature(layer, feature)
            alpha = validate.alpha(alpha)
            rows = [dict(row) for row in self.features]
            for row in rows:
                if (row["layer"], row["feature"]) == (layer, feature):
                    row["alpha"] = alpha
                    break
            else:
                rows.append({"layer": layer, "feature": feature, "alpha": alpha,
                             "label": self.labels.get(layer, feature)["label"]})
            if regenerate:
                self.features = rows
            else:
                with self.quietly():
                    self.features = rows

    def remove_feature(self, index: int) -> None:
        index = validate.integer(index, "index", minimum=0)
        if index >= len(self.features):
            raise IndexError(f"index {index} is out of range: the panel has {len(self.features)} feature(s)")
        self.features = [row for i, row in enumerate(self.features) if i != index]

    def steer(self) -> dict:
        """The current edit as ``{(layer, feature): alpha}`` (zero sliders left out): what lab.generate takes."""
        return {(row["layer"], row["feature"]): row["alpha"] for row in self.features if row["alpha"]}

    def regenerate(self) -> None:
        with self.working("generate"):
            if not self.prompt.strip():
                raise ValueError("type a prompt")
            if self.positions not in POSITIONS:
                raise ValueError(f"positions must be one of {', '.join(POSITIONS)}")
            self._check_features()
            start = time.perf_counter()
            key = (self.prompt, self.max_new_tokens)
            if key != self._baseline_key:
                self._baseline = self.lab.generate(self.prompt, max_new_tokens=self.max_new_tokens,
                                                   **self.generate_kwargs)
                self._baseline_key = key
            base_ids = self._baseline.steered_ids[0]
            steer = self.steer()
            if steer:
                out = self.lab.generate(self.prompt, steer=steer, positions=self.positions, mode=self.mode,
                                        max_new_tokens=self.max_new_tokens, baseline=False, **self.generate_kwargs)
                ids = out.steered_ids[0]
            else:
                ids = base_ids
            # the first generated token only sees a steered prompt when the prompt is steered
            table = (self.lab.next_tokens(self.prompt, steer=steer, mode=self.mode, top=self.top_next)
                     if self.top_next and self.positions != "generated" else None)
            with self.hold_sync():
                self.steered_for = [{"layer": layer, "feature": feature, "alpha": alpha}
                                    for (layer, feature), alpha in steer.items()]
                self.next_tokens = [] if table is None else table.round(4).to_dict("records")
                self.baseline_tokens = self.lab.token_pieces(base_ids)
                self.steered_tokens = self.lab.token_pieces(ids)
                self.differs = [j >= len(base_ids) or t != base_ids[j] for j, t in enumerate(ids)]
                self.generation_ms = (time.perf_counter() - start) * 1000
                self.generations += 1

    def sweep(self, index: int = 0, alphas=None):
        """Alpha sweep of the ``index``-th feature (a table; also shown in the panel)."""
        index = validate.integer(index, "index", minimum=0)
        if index >= len(self.features):
            raise IndexError(f"index {index} is out of range: the panel has {len(self.features)} feature(s)")
        row = self.features[index]
        top = self.alpha_max
        alphas = alphas or [-top, -top / 2, -top / 4, 0, top / 4, top / 2, top]
        table = self.lab.sweep(self.prompt, row["layer"], row["feature"], alphas=alphas, positions=self.positions,
                               mode=self.mode, max_new_tokens=self.max_new_tokens, **self.generate_kwargs)
        self.sweep_rows = [{"alpha": r.alpha, "text": r.text, "same": bool(r.same)} for r in table.itertuples()]
        return table

    # ------------------------------------------------------------------ plumbing
    def _check_features(self) -> None:
        """Each row a ``{layer, feature, alpha}`` of the Lab with a finite alpha (what the sliders send)."""
        for i, row in enumerate(self.features):
            missing = [key for key in ("layer", "feature", "alpha") if key not in row]
            if missing:
                raise ValueError(f"features[{i}] has no {', '.join(map(repr, missing))}")
            layer = self.lab.check_layer(row["layer"], f"features[{i}]['layer']")
            self.lab.check_feature(layer, row["feature"], f"features[{i}]['feature']")
            validate.alpha(row["alpha"], f"features[{i}]['alpha']")

    @reacts("features", "prompt", "positions", "mode", "max_new_tokens")
    def _inputs_changed(self, change):
        self.regenerate()

    def _add_message(self, content: dict) -> None:
        alpha = message_field(content, "alpha", validate.alpha) if "alpha" in content else 0.0
        self.add_feature(message_field(content, "feature"), alpha)

    def _remove_message(self, content: dict) -> None:
        self.remove_feature(message_field(content, "index"))

    def _sweep_message(self, content: dict) -> None:
        self.sweep(message_field(content, "index"))

    def _search_message(self, content: dict) -> None:
        query = message_field(content, "query", _query)
        found = Reference.of(self.lab).search(self.layer, query, self.labels)
        self.search_results = [{"feature": int(r.feature), "label": r.label, "match": r.match,
                                "top_tokens": list(r.top_tokens)} for r in found.itertuples()]
