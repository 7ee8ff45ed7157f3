"""Altair charts the library and the widgets share, and their offline SVG rendering for widgets.

Widgets embed charts as SVG rendered in the kernel by vl-convert: no Vega JavaScript is fetched from a CDN, so
they draw offline (CI, Binder, air-gapped GPU boxes). In a notebook the charts themselves are ordinary altair.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

ACCENT = "#ff6600"  # the one colour of activations in every chart and widget (widgets/qscope.css uses it too)


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
        y=alt.Y("count:Q", title="tokens", scale=alt.Scale(type="log")),
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
    ).properties(title="P(fires | positive) - P(fires | negative), best feature per layer")


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


def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())
