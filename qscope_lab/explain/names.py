"""A feature's display name, for widgets, heatmaps and the CLI: the user's label, else its best stored
explanation (shortened), else its top tokens, else "L<layer>/F<feature>".

``display_names(lab, layer, features)`` answers dozens at once from one table per layer, cached per (index
generation, explanations table, labels file): a heatmap's hover labels cost a dict lookup each after the first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import os

from ..base import validate
from ..index.explanations import FILE, location
from .documents import best_explanations, file_stamp, user_labels

MAX_CHARS = 60
_CACHE: dict = {}


def shorten(text: str, limit: int = MAX_CHARS) -> str:
    """The explanation's first clause (up to ';'), cut to ``limit`` characters with '…'."""
    text = " ".join(str(text).split(";")[0].split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _table(lab: LabLike, layer: int) -> dict[int, str]:
    index = lab.index
    home = os.environ.get("QSCOPE_LAB_HOME", os.path.expanduser("~/.qscope-lab"))
    explained = location(index.path) / FILE if index is not None else None
    key = (lab.name, getattr(lab.saes, "name", None), str(index.path) if index is not None else None,
           index.generation if index is not None else None, file_stamp(explained) if explained else None,
           file_stamp(os.path.join(home, "labels.json")), home, layer)
    names = _CACHE.get(key)
    if names is None:
        names = {}
        if index is not None and layer in index.layers:
            for f, tokens in index.top_tokens(layer, 3).items():
                names[f] = ", ".join(t.strip() or repr(t) for t in tokens)
            best = best_explanations(index)
            if len(best):
                mine = best[best.layer == layer].drop_duplicates("feature")
                names.update({int(f): shorten(e) for f, e in zip(mine.feature, mine.explanation) if str(e).strip()})
        names.update({f: lbl for (lay, f), lbl in user_labels(lab).items() if lay == layer})
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = names
    return names


def display_names(lab: LabLike, layer, features) -> list[str]:
    """Display names of ``features`` of ``layer`` (order kept)."""
    layer = lab.check_layer(layer)
    d_sae = lab.index.d_sae if lab.index is not None else lab.sae(layer).d_sae
    if validate._is_int(features):
        features = [features]
    if isinstance(features, (str, bytes)) or not hasattr(features, "__iter__"):
        raise TypeError(f"features must be a list of ints, got {type(features).__name__}")
    feats = [validate.feature(f, d_sae, "features") for f in features]
    names = _table(lab, layer)
    return [names.get(f) or f"L{layer}/F{f}" for f in feats]


def display_name(lab: LabLike, layer, feature) -> str:
    """One feature's display name (see the module's docstring)."""
    return display_names(lab, layer, [feature])[0]
