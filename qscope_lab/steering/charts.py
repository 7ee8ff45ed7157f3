"""Charts of steering evidence: concept score against fluency, over strength (a sweep) or across the bench's
conditions. Both axes are what the bench measures: the concept score (higher is more of the concept) and fluency as
perplexity under the unsteered model (log scale; lower is more fluent), so the trade-off a strength buys is read as
a path: up is the concept, right is garbage.
"""

from __future__ import annotations

import math

import pandas as pd

from ..viz.charts import log_axis, to_svg
from ..viz.lazy_altair import alt
from ..viz.render import ACCENT

SERIES = ("chosen", "other candidates", "random controls", "unsteered", "sweep")
SERIES_COLOURS = (ACCENT, "#c4c4c4", "#1f77b4", "#222222", ACCENT)
SERIES_OPACITY = (1.0, 0.5, 0.55, 1.0, 1.0)
CONDITION_COLOURS = {"unsteered": "#222222", "prompt-only": "#2ca02c", "steering-only": ACCENT,
                     "prompt + steering": "#9467bd", "zero strength": "#7f7f7f", "random feature": "#1f77b4",
                     "negative strength": "#8c564b"}
X_TITLE = "perplexity, unsteered model (log; lower: fluent)"
X_AXIS = {"labelOverlap": "greedy", "labelSeparation": 6, "format": ",~r"}
WIDTH, HEIGHT = 360, 240
SWEEP_COLUMNS = ("alpha", "concept", "fluency_ppl")


def sweep_frame(sweep, chosen: tuple[int, int] | None = None) -> pd.DataFrame:
    """A sweep (the autopilot's ``recipe.sweep_frame()``, ``bench.sweep_rows`` or any frame with ``alpha``,
    ``concept`` and ``fluency_ppl``) with a ``series`` column: the ``chosen`` (layer, feature), the other candidates,
    the random controls and the unsteered start; a sweep without candidates is one series, "sweep". Rows whose
    perplexity is not a positive finite number (an empty completion) are left out: a log axis cannot place them."""
    frame = pd.DataFrame(sweep).copy() if not isinstance(sweep, pd.DataFrame) else sweep.copy()
    missing = [c for c in SWEEP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"sweep needs the columns {list(SWEEP_COLUMNS)}; it lacks {missing} "
                         f"(it has {list(frame.columns)})")
    if frame.empty:
        raise ValueError("sweep has no rows")
    if "kind" in frame.columns:
        series = []
        for row in frame.itertuples():
            kind = row.kind
            if kind == "candidate":
                mine = chosen is not None and (int(row.layer), int(row.feature)) == tuple(chosen)
                series.append("chosen" if mine else "other candidates")
            else:
                series.append("random controls" if kind == "random control" else "unsteered")
        frame["series"] = series
    else:
        frame["series"] = "sweep"
    if "candidate" not in frame.columns:
        frame["candidate"] = 0
    for column in ("concept_lo", "concept_hi"):
        if column not in frame.columns:
            frame[column] = frame["concept"]
    frame["label"] = [_label(r) for r in frame.itertuples()]
    ok = frame["fluency_ppl"].map(lambda v: v is not None and math.isfinite(float(v)) and float(v) > 0)
    return frame[ok.to_numpy(dtype=bool)].reset_index(drop=True)


def _label(row) -> str:
    layer, feature = getattr(row, "layer", None), getattr(row, "feature", None)
    if layer is None or feature is None or (isinstance(layer, float) and math.isnan(layer)):
        return "unsteered" if getattr(row, "series", "") == "unsteered" else f"alpha {row.alpha:g}"
    return f"L{int(layer)} f{int(feature)}"


def alpha_chart(sweep, chosen: tuple[int, int] | None = None, title: str | None = None):
    """Concept against fluency over alpha: one path per swept feature in order of strength (the chosen one in the
    accent, with its concept interval and each point's alpha written beside it; the other candidates grey; the
    random controls blue), starting from the unsteered point."""
    frame = sweep_frame(sweep, chosen)
    # every tick labelled (vega's own log ticks draw blank labels a browser measures on top of their neighbours)
    x = alt.X("fluency_ppl:Q", title=X_TITLE, scale=alt.Scale(type="log"),
              axis=log_axis(frame["fluency_ppl"], WIDTH, **X_AXIS))
    present = [s for s in SERIES if s in set(frame["series"])]
    colours = [SERIES_COLOURS[SERIES.index(s)] for s in present]
    colour = alt.Color("series:N", title=None, scale=alt.Scale(domain=present, range=colours),
                       legend=alt.Legend(orient="bottom", columns=2))
    y = alt.Y("concept:Q", title="concept score")
    tooltip = ["label:N", alt.Tooltip("alpha:Q", format=".3g"), alt.Tooltip("concept:Q", format=".3f"),
               alt.Tooltip("fluency_ppl:Q", format=".3g", title="perplexity")]
    # each path starts at the unsteered point (alpha 0), so a strength's move is read from where it starts
    start = frame[frame["series"] == "unsteered"]
    paths = frame[frame["series"] != "unsteered"]
    if not start.empty and "candidate" in paths.columns:
        origin = start.iloc[0]
        starts = [{**origin.to_dict(), "candidate": c, "series": s, "alpha": 0.0}
                  for c, s in paths[["candidate", "series"]].drop_duplicates().itertuples(index=False)]
        paths = pd.concat([pd.DataFrame(starts), paths], ignore_index=True)
    base = alt.Chart(paths)
    emphasis = alt.Opacity("series:N", legend=None, scale=alt.Scale(
        domain=present, range=[SERIES_OPACITY[SERIES.index(s)] for s in present]))
    lines = base.mark_line(strokeWidth=1.5).encode(x=x, y=y, color=colour, detail="candidate:N",
                                                    order="alpha:Q", opacity=emphasis)
    points = base.mark_point(filled=True, size=36).encode(x=x, y=y, color=colour, opacity=emphasis,
                                                          tooltip=tooltip)
    layers = [lines, points]
    mine = frame[frame["series"] == "chosen"]
    if not mine.empty:
        layers.append(alt.Chart(mine).mark_rule(color=ACCENT).encode(x=x, y="concept_lo:Q", y2="concept_hi:Q"))
        layers.append(alt.Chart(mine).mark_text(align="left", dx=6, dy=-6, fontSize=10, color=ACCENT).encode(
            x=x, y=y, text=alt.Text("alpha:Q", format=".3~g")))
    if not start.empty:
        layers.append(alt.Chart(start).mark_point(shape="diamond", filled=True, size=90, color="#222222").encode(
            x=x, y=y, tooltip=tooltip))
    name = f"L{chosen[0]} f{chosen[1]}" if chosen is not None else "the steer"
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=alt.TitleParams(
        title or "concept against fluency over alpha",
        subtitle=f"{name} chosen: points labelled with alpha, bars its 95% interval"))


def conditions_chart(summary: pd.DataFrame, title: str = "concept against fluency per condition"):
    """Each condition of a bench at (fluency, concept) with both 95% intervals: what the steer buys against
    prompting and the controls when there is no sweep to draw."""
    needed = ["condition", "concept", "concept_lo", "concept_hi", "fluency_ppl", "fluency_ppl_lo", "fluency_ppl_hi"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks {missing}: give a SteerBench's to_frame()")
    frame = summary[needed].copy()
    ok = frame["fluency_ppl"].map(lambda v: v is not None and math.isfinite(float(v)) and float(v) > 0)
    frame = frame[ok.to_numpy(dtype=bool)]
    domain = [c for c in CONDITION_COLOURS if c in set(frame["condition"])]
    colour = alt.Color("condition:N", title=None, legend=alt.Legend(orient="bottom", columns=3),
                       scale=alt.Scale(domain=domain, range=[CONDITION_COLOURS[c] for c in domain]))
    x = alt.X("fluency_ppl:Q", title=X_TITLE, scale=alt.Scale(type="log"),
              axis=log_axis(pd.concat([frame.fluency_ppl_lo, frame.fluency_ppl_hi]), WIDTH, **X_AXIS))
    base = alt.Chart(frame)
    tooltip = ["condition:N", alt.Tooltip("concept:Q", format=".3f"),
               alt.Tooltip("fluency_ppl:Q", format=".3g", title="perplexity")]
    return alt.layer(
        base.mark_rule().encode(x=x, y="concept_lo:Q", y2="concept_hi:Q", color=colour),
        base.mark_rule().encode(x="fluency_ppl_lo:Q", x2="fluency_ppl_hi:Q", y="concept:Q", color=colour),
        base.mark_point(filled=True, size=60).encode(x=x, y=alt.Y("concept:Q", title="concept score"),
                                                     color=colour, tooltip=tooltip),
    ).properties(width=WIDTH, height=HEIGHT, title=alt.TitleParams(title, subtitle="bars: 95% intervals"))


def svg(chart) -> str:
    """The chart as an SVG string, drawn in the kernel (no network)."""
    return to_svg(chart)
