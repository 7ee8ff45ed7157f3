"""Display names of the features a widget shows, and how a saved label reaches every open widget.

A widget's ``names`` trait maps ``"<layer>/<feature>"`` to the feature's display name
(``explain.names.display_names``: the user's label, else its best stored explanation, else its top tokens); the
front end shows it beside the id (``featureName`` in ``src/lib/common.js``). Features with nothing but their id to
go by are left out. ``FeatureLabels.set`` announces every saved label (``analysis.labels.subscribe``): the name
cache is dropped first, then each open widget re-sends its names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..analysis import labels as label_store
from ..explain import names as explain_names

if TYPE_CHECKING:
    from ..analysis.labels import FeatureLabels
    from ..lab import Lab


def key(layer: int, feature: int) -> str:
    """The key of a feature in a ``names`` trait (and in the front end)."""
    return f"{int(layer)}/{int(feature)}"


def feature_names(lab: Lab, pairs: Iterable[tuple[int, int]], store: FeatureLabels | None = None) -> dict[str, str]:
    """``{"layer/feature": name}`` of ``pairs``; a ``store`` (the widget's own labels, which may live in another
    file than the default one ``display_names`` reads) has the last word on labels."""
    by_layer: dict[int, set[int]] = defaultdict(set)
    for layer, feature in pairs:
        by_layer[int(layer)].add(int(feature))
    own = {}
    if store is not None:
        try:
            own = {(int(r.layer), int(r.feature)): r.label for r in store.to_frame().itertuples() if r.label}
        except (OSError, ValueError):  # an unreadable labels file: names from the rest (the card shows the error)
            own = {}
    out = {}
    for layer, features in by_layer.items():
        ordered = sorted(features)
        for feature, name in zip(ordered, explain_names.display_names(lab, layer, ordered)):
            name = own.get((layer, feature), name)
            if name != f"L{layer}/F{feature}":
                out[key(layer, feature)] = name
    return out


def _forget(change: dict) -> None:
    """A label was saved: names read before it are stale (the name cache keys on the labels file's stamp, which a
    second save within the same clock tick and of the same size would not change)."""
    explain_names._CACHE.clear()


label_store.subscribe(_forget)  # first: every widget's refresh after it reads the new label
