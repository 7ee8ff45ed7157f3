"""Altair charts the library and the widgets share, and their offline SVG rendering for widgets.

Widgets embed charts as SVG rendered in the kernel by vl-convert, and importing this module switches altair (when
it gets imported: by the first chart built, ``lazy_altair``) to the same offline SVG renderer and the one qscope
theme (``render.enable``): no Vega JavaScript is fetched from a CDN, so every chart draws offline (CI, Binder,
air-gapped GPU boxes, a static HTML export).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .lazy_altair import alt, on_import  # altair itself loads with the first chart built (~2 s of imports)
from .render import ACCENT, enable

on_import(enable)


def log_ticks(values, length: float) -> list[float]:
    """Tick values of a log axis ``length`` px long over ``values``: 1, 2 and 5 per power of ten where a decade
    has 100 px or more, else the powers of ten alone. Vega's own log ticks are every 1..9 per decade with most labels
    blank; the blank ones are still drawn as (empty) labels, which a browser measures on top of their neighbours.
    Ticks outside the scale's domain are dropped by vega."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return []
    low, high = int(np.floor(np.log10(values.min()))), int(np.ceil(np.log10(values.max())))
    steps = (1, 2, 5) if length / max(1, high - low) >= 100 else (1,)
    return [float(f"{m}e{k}") for k in range(low, high + 1) for m in steps]


def log_axis(values, length: float, **kwargs):
    """An axis ``length`` px long for a log scale over ``values``: every tick labelled (``log_ticks``)."""
    ticks = log_ticks(values, length)
    return alt.Axis(values=ticks, **kwargs) if ticks else alt.Axis(**kwargs)


def activation_histogram(values, bins: int = 30, title: str = "") -> alt.Chart:
    """Histogram of a feature's non-zero activations (log count axis, as in feature dashboards)."""
    values = np.asarray(values, dtype=float)
    values = values[values > 0]
    if values.size:
        counts, edges = np.histogram(values, bins=bins)
    else:
        counts, edges = np.zeros(0, dtype=int), np.zeros(1)
    frame = pd.DataFrame({"start": edges[:-1], "end": edges[1:], "count": counts})
    frame = frame[frame["count"] > 0]
    return alt.Chart(frame, title=title).mark_bar(color=ACCENT).encode(
        x=alt.X("start:Q", title="activation"), x2="end:Q",
        y=alt.Y("count:Q", title="tokens", scale=alt.Scale(type="log"), axis=log_axis(frame["count"], 120)),
        tooltip=["start:Q", "end:Q", "count:Q"]).properties(width=280, height=120)


def layer_delta_chart(frame: pd.DataFrame, value: str = "delta", title: str = "") -> alt.Chart:
    """Bars of a per-layer score (e.g. the top-1 firing-probability difference of a seed classifier)."""
    return alt.Chart(frame, title=title).mark_bar(color=ACCENT).encode(
        x=alt.X("layer:O"), y=alt.Y(f"{value}:Q"), tooltip=list(frame.columns)).properties(width=260, height=120)


def classifier_layers(layer_scores: pd.DataFrame, chosen: list[int]) -> alt.Chart:
    """A seed classifier's top-1 delta per layer, the chosen layer(s) highlighted."""
    data = layer_scores.assign(chosen=layer_scores.layer.isin(chosen))
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("layer:O", title="layer"), y=alt.Y("top1_delta:Q", title="top-1 delta", scale=alt.Scale(
            domain=[min(0.0, float(data.top1_delta.min())), 1])),
        color=alt.Color("chosen:N", title="chosen", scale=alt.Scale(domain=[False, True], range=["#bbbbbb", ACCENT])),
        tooltip=["layer", "feature", alt.Tooltip("top1_delta", format=".2f"),
                 alt.Tooltip("topk_delta", format=".2f")],
    ).properties(title="P(fires | positive) - P(fires | negative), best feature per layer",
                 width=max(280, 20 * len(data)))  # a few layers still give the title room


def classifier_baselines(summary: pd.DataFrame, title: str = "held-out accuracy over seed draws") -> alt.Chart:
    """Mean held-out accuracy per method (a ``classify.summarize`` table), with a rule from the worst to the best
    seed draw; one row per task when the table has a ``task`` column. The calibrated rule in the accent."""
    data = summary.copy()
    if "variant" in data.columns:  # one bar per method and statistic variant
        data["method"] = np.where(data.variant.isin(["-", ""]), data.method, data.method + " (" + data.variant + ")")
    data["calibrated"] = data.method.str.startswith("calibrated")
    y = alt.Y("method:N", title=None, sort=None)
    base = alt.Chart(data)
    bars = base.mark_bar().encode(
        y=y, x=alt.X("accuracy:Q", title="accuracy (mean over draws)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("calibrated:N", legend=None, scale=alt.Scale(domain=[False, True],
                                                                      range=["#bbbbbb", ACCENT])),
        tooltip=["method", alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("accuracy_min:Q", format=".3f"),
                 alt.Tooltip("accuracy_max:Q", format=".3f"), "draws:Q"])
    spread = base.mark_rule(color="black").encode(y=y, x="accuracy_min:Q", x2="accuracy_max:Q")
    chart = (bars + spread).properties(width=300, height=alt.Step(14))
    if "task" in data.columns:
        return chart.facet(row=alt.Row("task:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
                           title=title)
    return chart.properties(title=title)


def coverage_curve(curve: pd.DataFrame, title: str) -> alt.Chart:
    """A footprint's coverage curve, with a band of +- one standard deviation over the random orders."""
    curve = curve.assign(low=(curve.coverage - curve.coverage_std).clip(lower=0),
                         high=(curve.coverage + curve.coverage_std).clip(upper=1))
    base = alt.Chart(curve, title=title)
    band = base.mark_area(opacity=0.25, color=ACCENT).encode(x="n:Q", y="low:Q", y2="high:Q")
    line = base.mark_line(color=ACCENT).encode(
        x=alt.X("n:Q", title="texts in the random subset (n)"),
        y=alt.Y("coverage:Q", title="E|F(S_n)| / |F(D)|", scale=alt.Scale(domain=[0, 1])),
        tooltip=["n:Q", alt.Tooltip("coverage:Q", format=".3f"), alt.Tooltip("coverage_std:Q", format=".3f")])
    return (band + line).properties(width=360, height=200)


def overlap_heatmap(frame: pd.DataFrame, title: str | None = None) -> alt.Chart:
    """Heatmap of an overlap frame (rows F1, columns F2) with the values written in the cells."""
    if "F1" in frame.columns:  # the CSV layout of ``coverage_report``: F1 as a column
        frame = frame.set_index("F1")
    order = [str(x) for x in frame.index]
    cols = [str(x) for x in frame.columns]
    wide = pd.DataFrame(np.asarray(frame, dtype=float), index=order, columns=cols)
    long = wide.rename_axis(index="F1").reset_index().melt(id_vars="F1", var_name="F2", value_name="overlap")
    base = alt.Chart(long, title=title or "overlap: |F1 & F2| / normaliser (row F1, column F2)").encode(
        x=alt.X("F2:N", sort=cols, title="F2"), y=alt.Y("F1:N", sort=order, title="F1"))
    cells = base.mark_rect().encode(
        color=alt.Color("overlap:Q", scale=alt.Scale(domain=[0, 1], scheme="oranges")),
        tooltip=["F1", "F2", alt.Tooltip("overlap:Q", format=".3f")])
    text = base.mark_text(baseline="middle").encode(
        text=alt.Text("overlap:Q", format=".2f"),
        color=alt.condition("datum.overlap > 0.6", alt.value("white"), alt.value("black")))
    return (cells + text).properties(width=max(120, 40 * len(cols)), height=max(120, 30 * len(order)))


def coverage_before_after(before: float, after: float, covered: tuple[int, int], n_targets: int,
                          layer: int) -> alt.Chart:
    """Target coverage of the seeds and of seeds + synthesized texts, side by side."""
    data = pd.DataFrame({"data": ["seeds", "seeds + synthesized"], "coverage": [before, after],
                         "covered": list(covered), "targets": [n_targets] * 2})
    return alt.Chart(data).mark_bar(color=ACCENT).encode(
        x=alt.X("data:N", title=None, sort=None),
        y=alt.Y("coverage:Q", title="target coverage", scale=alt.Scale(domain=[0, 1])),
        tooltip=["data", alt.Tooltip("coverage", format=".1%"), "covered", "targets"],
    ).properties(width=200, height=160, title=f"Target coverage, layer {layer} ({n_targets} targets)")


NEGATIVE = "#3b7dd8"  # signed views (attribution, logit contributions): ACCENT pushes towards, this away


def _signed(field: str) -> alt.Color:
    return alt.Color(f"sign({field}):N", legend=None,
                     scale=alt.Scale(domain=["+", "-"], range=[ACCENT, NEGATIVE]))


def _with_sign(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    return frame.assign(**{f"sign({field})": np.where(frame[field] >= 0, "+", "-")})


def attribution_bars(features: pd.DataFrame, title: str = "attribution", n: int | None = None) -> alt.Chart:
    """Signed bars of ``Attribution.top_features()`` (layer, feature, attribution; ``name`` when present): the
    ``n`` largest by |attribution| (default all), largest first, negative ones drawn to the left in their own
    colour, so the chart's top bar is the feature with the largest effect either way (as in the widget)."""
    order = features.attribution.abs().sort_values(ascending=False, kind="stable").index
    top = features.reindex(order)
    if n is not None:
        top = top.head(int(n))
    names = top["name"] if "name" in top.columns else pd.Series([""] * len(top), index=top.index)
    labels = [f"L{a}/F{b}" + (f" {str(c)[:40]}" if c and str(c) != f"L{a}/F{b}" else "")
              for a, b, c in zip(top.layer, top.feature, names)]
    data = _with_sign(top.assign(label=labels), "attribution")
    tooltip = ["layer", "feature"] + (["name"] if "name" in top.columns else []) + [
        alt.Tooltip("attribution:Q", format=".4f"), alt.Tooltip("activation:Q", format=".3f")]
    return alt.Chart(data, title=title).mark_bar().encode(
        x=alt.X("attribution:Q"), y=alt.Y("label:N", sort=None, title=None), color=_signed("attribution"),
        tooltip=tooltip).properties(width=320)


def logit_bars(frame: pd.DataFrame, n: int = 20) -> alt.Chart:
    """Direct logit attribution (layer, feature, logit): the ``n`` largest |contributions|, signed."""
    top = frame.reindex(frame.logit.abs().sort_values(ascending=False).index).head(n)
    top = _with_sign(top.assign(name=[f"L{a} " + (f"f{b}" if b >= 0 else "rest") for a, b in
                                      zip(top.layer, top.feature)]), "logit")
    token = frame.token.iloc[0] if len(frame) else ""
    return alt.Chart(top, title=f"direct logit attribution to {token!r}").mark_bar().encode(
        x=alt.X("logit:Q", title="logit contribution"), y=alt.Y("name:N", sort="-x", title=None),
        color=_signed("logit"), tooltip=["layer", "feature", alt.Tooltip("activation:Q", format=".3f"),
                                         alt.Tooltip("logit:Q", format=".4f")]).properties(width=320)


def logit_lens_grid(frame: pd.DataFrame) -> alt.Chart:
    """The logit lens (layer x position): each cell's top prediction, shaded by its probability."""
    top = frame[frame["rank"] == 1].assign(column=lambda f: f.position.astype(str) + " " + f.token)
    order = list(dict.fromkeys(top.sort_values("position").column))
    base = alt.Chart(top, title="logit lens: top next token per layer and position").encode(
        x=alt.X("column:N", sort=order, title="input token"), y=alt.Y("layer:O", sort="descending"))
    cells = base.mark_rect().encode(
        color=alt.Color("probability:Q", scale=alt.Scale(domain=[0, 1], range=["#ffffff", ACCENT])),
        tooltip=["layer", "position", "token", "prediction", alt.Tooltip("probability:Q", format=".3f")])
    text = base.mark_text(fontSize=10).encode(text="prediction:N")
    return (cells + text).properties(width=max(200, 48 * len(order)), height=max(120, 26 * top.layer.nunique()))


def edge_graph(edges: pd.DataFrame) -> alt.Chart:
    """``lab.attribute_edges`` as a two-column graph: upstream features left, downstream right, one line per
    edge (width |weight|, colour its sign)."""
    up = list(dict.fromkeys(edges.upstream_feature))
    down = list(dict.fromkeys(edges.downstream_feature))
    y_up = {f: i / max(len(up) - 1, 1) for i, f in enumerate(up)}
    y_down = {f: i / max(len(down) - 1, 1) for i, f in enumerate(down)}
    layers = (edges.upstream_layer.iloc[0], edges.downstream_layer.iloc[0]) if len(edges) else (0, 1)
    lines = _with_sign(edges.assign(x=0.0, x2=1.0, y=edges.upstream_feature.map(y_up),
                                    y2=edges.downstream_feature.map(y_down), size=edges.weight.abs()), "weight")
    nodes = pd.DataFrame(
        [{"x": 0.0, "y": y, "name": "error" if f < 0 else f"L{layers[0]} f{f}"} for f, y in y_up.items()]
        + [{"x": 1.0, "y": y, "name": f"L{layers[1]} f{f}"} for f, y in y_down.items()])
    axis = dict(axis=None, scale=alt.Scale(domain=[-0.25, 1.25]))
    rules = alt.Chart(lines).mark_rule(opacity=0.7).encode(
        x=alt.X("x:Q", **axis), x2="x2:Q", y=alt.Y("y:Q", axis=None), y2="y2:Q", color=_signed("weight"),
        strokeWidth=alt.StrokeWidth("size:Q", legend=None, scale=alt.Scale(range=[0.5, 6])),
        tooltip=["upstream_feature", "downstream_feature", alt.Tooltip("weight:Q", format=".4f")])
    points = alt.Chart(nodes).mark_circle(size=80, color="#555").encode(x=alt.X("x:Q", **axis), y="y:Q")
    labels = alt.Chart(nodes).mark_text(dx=0, dy=-9, fontSize=10).encode(x=alt.X("x:Q", **axis), y="y:Q",
                                                                          text="name:N")
    return (rules + points + labels).properties(width=360, height=max(160, 22 * max(len(up), len(down))),
                                                 title=f"edges L{layers[0]} -> L{layers[1]}")


def binned_histogram(frame: pd.DataFrame, title: str = "") -> alt.Chart:
    """A histogram already binned (columns lower, upper, count; e.g. a feature index's log-spaced bins), on a
    log activation axis and a log count axis."""
    frame = frame[frame["count"] > 0].assign(upper=lambda f: f.upper.where(f.upper < float("inf"), f.lower * 1.5),
                                             lower=lambda f: f.lower.where(f.lower > 0, f.upper / 1.5))
    return alt.Chart(frame, title=title).mark_bar(color=ACCENT).encode(
        x=alt.X("lower:Q", title="activation", scale=alt.Scale(type="log"),
                axis=log_axis(pd.concat([frame.lower, frame.upper]), 280)), x2="upper:Q",
        y=alt.Y("count:Q", title="tokens", scale=alt.Scale(type="log"), axis=log_axis(frame["count"], 120)),
        tooltip=["lower:Q", "upper:Q", "count:Q"]).properties(width=280, height=120)


def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())
