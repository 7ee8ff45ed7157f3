"""Charts drawn inside widgets as SVG: a title wider than the chart is wrapped onto lines (vega leaves the title out
of the SVG's width, so a one-line title wider than the plot runs past the SVG's edge and is cut), axis labels keep
a gap between them (vega measures text with its own font metrics; the notebook's font is wider, so labels placed
edge to edge, "0.3" "0.4", touch), and numbers get thousands separators (148,767, as the widgets print)."""

from __future__ import annotations

import re
import textwrap

from ..viz.charts import to_svg
from ..viz.lazy_altair import alt

TITLE_PX = 12            # title font size
TITLE_CHAR_PX = 8.0      # a bold 12 px character, generously (digits in DejaVu Sans Bold are 8.4 px, "i" 4)
TITLE_MARGIN_PX = 14     # the title starts a few px in from the SVG's left edge; keep as much free on the right
MIN_TITLE_CHARS = 16     # a chart narrower than this many characters still gets words, not letters, per line


def _lines(text) -> list[str]:
    if text is None or text is alt.Undefined:
        return []
    return [text] if isinstance(text, str) else [str(line) for line in text]


def wrap(text, chars: int) -> list[str]:
    """``text`` (a string or a list of lines, as vega takes it) as lines of at most ``chars`` characters."""
    return [part for line in _lines(text) for part in (textwrap.wrap(line, chars) or [""])]


def title_parts(chart) -> tuple[list[str], list[str]]:
    """A chart's title and subtitle as lines, whichever form it was given in (a string, lines, TitleParams)."""
    title = getattr(chart, "title", alt.Undefined)
    if title is alt.Undefined or title is None:
        return [], []
    if isinstance(title, (str, list, tuple)):
        return _lines(title), []
    to_dict = title.to_dict() if hasattr(title, "to_dict") else dict(title)
    return _lines(to_dict.get("text")), _lines(to_dict.get("subtitle"))


def svg_width(svg: str) -> float:
    match = re.search(r'<svg[^>]*\swidth="([\d.]+)"', svg)
    return float(match.group(1)) if match else 0.0


def widget_svg(chart) -> str:
    """``chart`` as an SVG that fits its box: a title and subtitle wrapped to the drawn width, separated axis
    labels, grouped thousands."""
    chart = chart.configure_axis(labelSeparation=6, labelOverlap="greedy", format=",~r") \
        .configure_title(anchor="start", fontSize=TITLE_PX)
    svg = to_svg(chart)
    text, subtitle = title_parts(chart)
    if not text and not subtitle:
        return svg
    title = chart.title
    # vega sizes the SVG by its own (narrower) measure of the title: wrap it to the width drawn, which may then
    # shrink (a long title had widened it), so again until the lines fit
    for _ in range(4):
        chars = max(MIN_TITLE_CHARS, int((svg_width(svg) - 2 * TITLE_MARGIN_PX) / TITLE_CHAR_PX))
        if all(len(line) <= chars for line in text + subtitle):
            break
        text, subtitle = wrap(text, chars), wrap(subtitle, chars)
        if isinstance(title, (str, list, tuple)):
            svg = to_svg(chart.properties(title=text))
        else:
            svg = to_svg(chart.properties(title=alt.TitleParams(**{**title.to_dict(), "text": text,
                                                                    **({"subtitle": subtitle} if subtitle else {})})))
    return svg
