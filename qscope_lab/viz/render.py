"""Charts that display with no network: one theme and altair's vl-convert SVG renderer.

altair's default renderer emits HTML that loads Vega from a CDN ("Error loading script" offline), and
JupyterLab 4 has no Vega-Lite 6 mime renderer. An SVG drawn in the kernel by vl-convert shows the same in
JupyterLab, Notebook 7, a static HTML export and an air-gapped GPU box. ``enable()`` runs when the chart
builders are imported and, through ``display_hook``, when a notebook first displays any altair chart.
"""

from __future__ import annotations

ACCENT = "#ff6600"  # the one colour of activations in every chart and widget (widgets/src/qscope.css uses it too)
THEME = "qscope"
FONT = ("system-ui, -apple-system, 'Segoe UI', 'Noto Sans', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', "
        "sans-serif")
_CDN_RENDERERS = {"default", "html", "browser", "colab", "kaggle", "nteract", "zeppelin", "jupyterlab", "mimetype"}


def theme() -> dict:
    """The qscope look: ACCENT marks, grey for the rest, a font stack that has CJK glyphs."""
    return {"config": {
        "mark": {"color": ACCENT}, "bar": {"color": ACCENT}, "line": {"color": ACCENT}, "area": {"color": ACCENT},
        "point": {"color": ACCENT}, "range": {"category": [ACCENT, "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd"]},
        "font": FONT, "view": {"stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 11},
        "title": {"fontSize": 13, "anchor": "start"}}}


def enable() -> None:
    """Register and enable the theme; switch a CDN renderer to the offline SVG one (a renderer the user chose
    that needs no CDN, e.g. ``jupyter`` offline or ``png``, is kept)."""
    import altair as alt

    if THEME not in alt.theme.names():
        alt.theme.register(THEME, enable=False)(theme)
    if alt.theme.active != THEME:
        alt.theme.enable(THEME)
    if alt.renderers.active in _CDN_RENDERERS:
        alt.renderers.enable("svg")


def display_hook(chart) -> tuple[dict, dict] | dict:
    """IPython mime-bundle printer for any altair chart: enable offline rendering, then let altair render."""
    enable()
    return chart._repr_mimebundle_()


def install_display_hook() -> bool:
    """In a running IPython kernel, route every altair chart through ``display_hook`` (registered by class
    name, so altair is not imported here). Returns whether a kernel was found."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    formatter = shell.display_formatter.mimebundle_formatter
    for version in ("v5", "v6"):
        formatter.for_type_by_name(f"altair.vegalite.{version}.api", "TopLevelMixin", display_hook)
    return True
