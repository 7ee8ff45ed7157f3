"""SteerBench view: one steer's evidence on one screen. The seven conditions against the metrics with their 95%
intervals, the gates and the verdict they earn, concept against fluency over alpha (the autopilot's sweep) as an
SVG chart, and before / after completions on the same prompts.

``SteerBenchView(lab.bench_steer(...))``, ``SteerBenchView(recipe)`` or ``SteerBenchView("recipe.json")``. A bench
alone has no sweep: pass ``sweep=`` (a frame with ``alpha``, ``concept`` and ``fluency_ppl``, e.g. another recipe's
``sweep_frame()``) or the chart shows the conditions themselves at (fluency, concept). With ``lab=`` the steered
features show their display names and a recipe is checked against the Lab (another model or suite is refused).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import traitlets

from ..base import validate
from ..steering import charts
from ..steering.bench import CONDITIONS, SteerBench
from ..steering.recipe import Recipe
from ._base import LabWidget, checked, css, esm
from ._charts import widget_svg

if TYPE_CHECKING:
    from ..lab import Lab

# (column, label, digits, which way is better: "up", "down" or "" when neither)
METRICS = (("concept", "concept", 3, "up"), ("fluency_ppl", "perplexity", 3, "down"),
           ("distinct_2", "distinct-2", 2, "up"), ("repetition", "repetition", 2, "down"),
           ("collateral", "collateral", 3, "down"), ("latency_ms", "ms / token", 1, "down"))


def _number(value):
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value):
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _number(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, int | str) else str(value)


class SteerBenchView(LabWidget):
    _esm = esm("steerbench.js")
    _css = css()

    title = traitlets.Unicode("").tag(sync=True)              # the recipe's name, or "steering bench"
    status = traitlets.Unicode("").tag(sync=True)             # the recipe's status ("" for a bench alone)
    verdict = traitlets.Unicode("").tag(sync=True)
    reason = traitlets.Unicode("").tag(sync=True)
    steers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steer_features = traitlets.List(traitlets.Dict()).tag(sync=True)  # {layer, feature} of each feature steer
    concept = traitlets.Unicode("").tag(sync=True)
    settings = traitlets.Unicode("").tag(sync=True)           # prompts, tokens, seed... as one line
    metrics = traitlets.List(traitlets.Dict()).tag(sync=True)  # {key, label, digits, better}
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)     # condition, n, <metric>, <metric>_lo, <metric>_hi
    gates = traitlets.List(traitlets.Dict()).tag(sync=True)    # gate, rule, value, outcome, passed
    chart_svg = traitlets.Unicode("").tag(sync=True)
    chart_kind = traitlets.Unicode("").tag(sync=True)         # "sweep" (over alpha) or "conditions"
    examples = traitlets.List(traitlets.Dict()).tag(sync=True)  # prompt, texts: {condition: completion}
    conditions = traitlets.List(traitlets.Unicode()).tag(sync=True)
    controls = traitlets.Unicode("").tag(sync=True)           # the random features drawn, and their densities
    cost = traitlets.Unicode("").tag(sync=True)               # completions generated and seconds taken
    before = traitlets.Unicode("unsteered").tag(sync=True)     # the examples' two columns
    after = traitlets.Unicode("steering-only").tag(sync=True)

    _check_columns = checked("before", "after", check=lambda value, name: validate.choice(value, CONDITIONS, name))

    def __init__(self, source, lab: Lab | None = None, sweep=None, examples: int = 3, before: str = "unsteered",
                 after: str = "steering-only", **kwargs):
        bench, recipe = self._read(source, lab)
        examples = validate.integer(examples, "examples", minimum=1)
        validate.choice(before, CONDITIONS, "before")
        validate.choice(after, CONDITIONS, "after")
        if sweep is None and recipe is not None and recipe.sweep:
            sweep = recipe.sweep_frame()
        chosen = None
        if recipe is not None and len(recipe.steer_records) == 1 and recipe.features[0] is not None:
            chosen = (recipe.layers[0], int(recipe.features[0]))
        if sweep is not None:
            try:
                chart = charts.alpha_chart(sweep, chosen=chosen)
            except (ValueError, TypeError) as err:
                raise ValueError(f"sweep: {err}") from None
            kind = "sweep"
        else:
            chart, kind = charts.conditions_chart(bench.to_frame()), "conditions"
        super().__init__(lab, before=before, after=after, **kwargs)
        self.bench, self.recipe = bench, recipe
        features = [{"layer": int(r["layer"]), "feature": int(r["feature"])}
                    for r in (recipe.steer_records if recipe is not None else []) if r.get("feature") is not None]
        concept = bench.concept or {}
        settings = bench.settings or {}
        with self.hold_sync():
            self.title = recipe.name if recipe is not None else "steering bench"
            self.status = recipe.status if recipe is not None else ""
            self.verdict, self.reason = bench.verdict, bench.reason
            self.steers = list(bench.steers)
            self.steer_features = features
            self.concept = ", ".join(f"{k}: {v}" for k, v in concept.items() if v not in (None, ""))
            self.settings = ", ".join(f"{k} {settings[k]}" for k in ("prompts", "samples", "max_new_tokens", "seed",
                                                                     "goal", "fluency_bound") if k in settings)
            self.metrics = [{"key": k, "label": label, "digits": d, "better": b} for k, label, d, b in METRICS]
            self.rows = self._rows(bench.to_frame())
            self.gates = [{k: _plain(v) for k, v in g.items()} for g in bench.gates.to_dict("records")]
            self.chart_svg, self.chart_kind = widget_svg(chart), kind
            self.conditions = [c for c in CONDITIONS if c in set(bench.rows["condition"])]
            self.examples = self._examples(bench, examples)
            self.controls = self._controls(bench.controls)
            cost = bench.cost or {}
            if "rows" in cost and cost.get("total_s") is not None:
                self.cost = f"{cost['rows']} completions in {float(cost['total_s']):.1f} s"
        if lab is not None:
            self.refresh_names()

    @staticmethod
    def _read(source, lab: Lab | None) -> tuple[SteerBench, Recipe | None]:
        """The bench (and recipe) ``source`` holds: a SteerBench, a Recipe with a bench, or a recipe file."""
        if isinstance(source, str | Path):
            source = Recipe.load(source)
        if isinstance(source, Recipe):
            if lab is not None:
                source.check(lab)
            if source.bench is None:
                raise ValueError(f"source: recipe {source.name!r} (status {source.status!r}) has no bench to show: "
                                 f"run lab.bench_steer(recipe, prompts, concept) or lab.autopilot(...)")
            return source.bench, source
        if isinstance(source, SteerBench):
            return source, None
        raise TypeError(f"source must be a SteerBench (lab.bench_steer), a Recipe (lab.autopilot) or a recipe "
                        f"file, got {type(source).__name__}")

    @staticmethod
    def _rows(summary: pd.DataFrame) -> list[dict]:
        rows = []
        for record in summary.to_dict("records"):
            row = {"condition": str(record["condition"]), "n": int(record.get("n", 0))}
            for key, *_ in METRICS:
                for suffix in ("", "_lo", "_hi"):
                    row[key + suffix] = _number(record.get(key + suffix))
            rows.append(row)
        return rows

    @staticmethod
    def _examples(bench: SteerBench, n: int) -> list[dict]:
        table = bench.examples(n=n)
        return [{"prompt": str(r["prompt"]), "texts": {c: str(r[c]) for c in table.columns if c != "prompt"}}
                for r in table.to_dict("records")]

    @staticmethod
    def _controls(controls: pd.DataFrame) -> str:
        """One line on the random-feature control: which features were drawn, at what firing density, against the
        steered feature's (the control is only fair when they match)."""
        if controls is None or controls.empty or "control_feature" not in controls.columns:
            return ""
        parts = []
        for (layer, feature), group in controls.groupby(["layer", "feature"], dropna=False, sort=False):
            drawn = ", ".join(f"f{int(f)}" + (f" ({d:.3g})" if pd.notna(d) else "")
                              for f, d in zip(group["control_feature"], group["control_density"]) if pd.notna(f))
            if pd.isna(feature):
                parts.append(f"L{int(layer)}: random directions of the same norm")
                continue
            density = group["density"].iloc[0]
            parts.append(f"L{int(layer)} f{int(feature)} (firing density {density:.3g}) against {drawn}")
        source = controls["source"].iloc[0] if "source" in controls.columns else ""
        return "random-feature control: " + "; ".join(parts) + (f"; densities from {source}" if source else "")

    def to_frame(self) -> pd.DataFrame:
        """The table the widget shows: one row per condition, each metric's mean and 95% interval."""
        return pd.DataFrame(self.rows)

    def named_features(self) -> list[tuple[int, int]]:
        """The steered features (a recipe's)."""
        return [(r["layer"], r["feature"]) for r in self.steer_features]

    def refresh_names(self) -> None:
        if self.lab is not None:  # a bench shown without a Lab has ids only
            super().refresh_names()

    def _label_saved(self, change: dict) -> None:
        if self.lab is not None:
            super()._label_saved(change)
