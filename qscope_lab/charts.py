"""Altair charts the library and the widgets share, and their offline SVG rendering for widgets.

Widgets embed charts as SVG rendered in the kernel by vl-convert: no Vega JavaScript is fetched from a CDN, so
they draw offline (CI, Binder, air-gapped GPU boxes). In a notebook the charts themselves are ordinary altair.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


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
    return alt.Chart(frame, title=title).mark_bar(color="#ff6600").encode(
        x=alt.X("start:Q", title="activation"), x2="end:Q",
        y=alt.Y("count:Q", title="tokens", scale=alt.Scale(type="log")),
        tooltip=["start:Q", "end:Q", "count:Q"]).properties(width=280, height=120)


def layer_delta_chart(frame: pd.DataFrame, value: str = "delta", title: str = "") -> alt.Chart:
    """Bars of a per-layer score (e.g. the top-1 firing-probability difference of a seed classifier)."""
    return alt.Chart(frame, title=title).mark_bar(color="#ff6600").encode(
        x=alt.X("layer:O"), y=alt.Y(f"{value}:Q"), tooltip=list(frame.columns)).properties(width=260, height=120)


def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())
