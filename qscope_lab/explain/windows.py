"""A feature's stored windows as units of text with the feature's value on each: what the explainers read.

An index keeps, per feature, its top contexts and quantile samples, each a window of token ids with the feature's
values over it (``index.schema``). ``feature_windows`` reads a layer's windows in bulk (one pass over its record
batches, ``FeatureIndex.blocks``) and turns each into *units*: a character split over byte tokens is one unit
(``core.tokens.join_fragments``) whose value is the largest of its tokens', so every unit is readable text and
labelled fired (value > 0) or not. Identical windows (the same text indexed twice) are kept once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.tokens import REPLACEMENT, join_fragments
from ..index import schema


@dataclass
class Window:
    """One stored context of a feature: its units (readable strings), the feature's value on each, the centre
    unit (the firing the row was kept for), its activation, document, source name, and kind (top or sample)."""

    units: list[str]
    values: np.ndarray
    center: int
    activation: float
    document: int
    source: str
    top: bool
    key: tuple = field(default=(), repr=False)

    def marked(self, threshold: float = 0.0) -> str:
        """The text with every unit whose value passes ``threshold`` in ``<<unit>>`` (Delphi's delimiters)."""
        return "".join(f"<<{u}>>" if v > threshold and u.strip() else u for u, v in zip(self.units, self.values))

    @property
    def text(self) -> str:
        return "".join(self.units)


def token_table(index) -> tuple[dict[int, str], dict[int, bytes]]:
    """Token id -> string, and -> bytes for fragments of characters, of an index (read once per call)."""
    return schema.read_tokens(schema.tokens_folder(index.path, index.meta))


def _units(ids: list[int], values: np.ndarray, center: int, strings: dict[int, str], raw: dict[int, bytes]
           ) -> tuple[list[str], np.ndarray, int]:
    pieces, starts = join_fragments([strings.get(t, "") for t in ids], [raw.get(t) for t in ids])
    units: list[str] = []
    vals: list[float] = []
    where = 0
    for i, (piece, start) in enumerate(zip(pieces, starts)):
        if start != i:  # a continuation byte token: its value joins its character's
            if vals:
                vals[-1] = max(vals[-1], float(values[i]))
            if i == center:
                where = len(units) - 1
            continue
        if i == center:
            where = len(units)
        units.append("" if REPLACEMENT in piece else piece)  # a character the window's edge cuts: no text
        vals.append(float(values[i]))
    return units, np.asarray(vals, np.float64), where


def feature_windows(index, layer: int, features=None) -> dict[int, list[Window]]:
    """``{feature: [Window, ...]}`` for ``features`` (default: every feature with stored rows) of ``layer``,
    top contexts first (strongest first), then quantile samples; duplicate windows dropped."""
    wanted = None if features is None else {int(f) for f in features}
    strings, raw = token_table(index)
    sources = index.sources
    out: dict[int, list[Window]] = {}
    seen: dict[int, set] = {}
    for block in index.blocks(layer):
        if wanted is not None:
            block = block[block.feature.isin(wanted)]
            if block.empty:
                continue
        block = block.sort_values(["feature", "kind", "activation"], ascending=[True, True, False], kind="stable")
        for f, kind, act, doc, src, center, window, values in zip(
                block.feature.tolist(), block.kind.tolist(), block.activation.tolist(), block.document.tolist(),
                block.source.tolist(), block.center.tolist(), block.window, block["values"]):
            keep = window >= 0
            ids = window[keep].tolist()
            c = int(center) - int((~keep[:center]).sum())
            key = tuple(ids)
            if key in seen.setdefault(f, set()):
                continue
            seen[f].add(key)
            units, vals, where = _units(ids, values[keep], c, strings, raw)
            out.setdefault(f, []).append(Window(units, vals, where, float(act), int(doc), sources[int(src)],
                                                kind == schema.TOP, key))
    return out
