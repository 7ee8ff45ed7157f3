"""Search by example: the features that fire on a given text far more than on the corpus.

The text is encoded at each layer (``lab.encode``, sink and special tokens skipped as everywhere); a feature's
rate on it (the share of its counted tokens where it fires) is set against its firing rate over the index's
corpus (the base rate), smoothed so that one firing on a short text is not a thousandfold lift:
``lift = (fires + 1) / (tokens x base_rate + 1)``. Features are ranked by lift among those firing on at least
``min_fires`` tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..base import validate
from .names import display_names

COLUMNS = ("layer", "feature", "name", "fires", "tokens", "text_rate", "corpus_rate", "lift", "mean_activation")


def search_by_example(lab: Any, text, layers=None, top: int = 20, min_fires: int = 1,
                      max_density: float | None = None) -> pd.DataFrame:
    """Features that fire on ``text`` (one str or a list of them) far more than on the corpus, most lifted
    first (``COLUMNS``)."""
    texts = validate.texts(text, "text")
    index = lab.index
    if index is None:
        raise ValueError("this Lab has no feature index: lab.use_index(folder) (FeatureIndex.build makes one)")
    layers = index.layers if layers is None else lab.check_layers(layers)
    for layer in layers:
        if layer not in index.layers:
            raise ValueError(f"layer {layer} is not in the index (layers: {index.layers})")
    top = validate.integer(top, "top", minimum=1)
    min_fires = validate.integer(min_fires, "min_fires", minimum=1)
    if max_density is not None:
        max_density = validate.number(max_density, "max_density", minimum=0.0)
    frames = []
    for layer in layers:
        acts = lab.encode(texts, layer)
        mask = acts.mask.bool()
        n = int(mask.sum())
        if n == 0:
            continue
        values, indices = acts.values[mask], acts.indices[mask]
        fired = values > 0
        feats = indices[fired].numpy()
        fires = np.bincount(feats, minlength=index.d_sae)
        total = np.bincount(feats, weights=values[fired].numpy().astype(np.float64), minlength=index.d_sae)
        base = index.stats(layer)["firing_rate"].to_numpy(np.float64)
        lift = (fires + 1) / (n * base + 1)
        keep = fires >= min_fires
        if max_density is not None:
            keep &= base <= max_density
        pick = np.flatnonzero(keep)
        frames.append(pd.DataFrame({"layer": layer, "feature": pick, "fires": fires[pick], "tokens": n,
                                    "text_rate": fires[pick] / n, "corpus_rate": base[pick], "lift": lift[pick],
                                    "mean_activation": total[pick] / np.maximum(fires[pick], 1)}))
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    out = pd.concat(frames, ignore_index=True).sort_values(["lift", "fires"], ascending=False, kind="stable")
    out = out.head(top).reset_index(drop=True)
    out["name"] = [display_names(lab, layer, [f])[0] for layer, f in zip(out.layer, out.feature)]
    return out[list(COLUMNS)]
