"""Saving a fitted SeedClassifier to JSON and loading it back (version 1 files, the OR rule, still load)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ...lab import Lab

FORMAT, VERSION = "qscope-lab/seed-classifier", 2


def save_classifier(clf, path: str | Path) -> Path:
    data = {"format": FORMAT, "version": VERSION, "model": clf.lab.name,
            "saes": getattr(clf.lab.saes, "name", None), "config": clf._config(), "layer": clf.layer_,
            "layers": clf.layers_, "statistic": clf.statistic_, "top_k": clf.top_k_,
            "features": [list(f) for f in clf.features_], "thresholds": clf.thresholds_,
            "directions": clf.directions_, "scales": clf.scales_, "n_seeds": list(clf.n_seeds_),
            "rules": clf.rules_.to_dict("records"),
            "selection": clf.selection_.to_dict("records"), "deltas": clf.deltas_.to_dict("records"),
            "layer_scores": clf.layer_scores_.to_dict("records")}
    path = Path(path)
    path.write_text(json.dumps(data, indent=1))
    return path


def load_classifier(cls, path: str | Path, lab: Lab):
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("no seed-classifier format tag")
        model, saes = data["model"], data.get("saes")
    except (UnicodeDecodeError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a saved SeedClassifier ({type(e).__name__}: {e})") from None
    if model != lab.name:
        raise ValueError(f"{path} was fitted on model {model!r} but this lab runs {lab.name!r}: "
                         f"its feature ids mean nothing here")
    if saes != getattr(lab.saes, "name", None):
        warnings.warn(f"{path} was fitted with SAEs {saes!r}, this lab has {getattr(lab.saes, 'name', None)!r}",
                      stacklevel=3)
    try:
        config = dict(data["config"])
        old = data.get("version", 1) < 2  # version 1: the OR rule, chosen by delta
        if old:
            config.update(statistic="any", select="delta")
        clf = cls(lab, **config)
        clf._validate_params()
        clf.layer_, clf.layers_ = int(data["layer"]), [int(x) for x in data["layers"]]
        clf.features_ = [(int(layer), int(f)) for layer, f in data["features"]]
        clf.statistic_ = data.get("statistic", "any")
        top_k = data.get("top_k", len(clf.features_))
        clf.top_k_ = "all" if top_k == "all" else int(top_k)
        clf.thresholds_ = [float(t) for t in data.get("thresholds", [clf.eps] * len(clf.features_))]
        clf.directions_ = [int(d) for d in data.get("directions", [1] * len(clf.features_))]
        clf.scales_ = [float(v) for v in data.get("scales", [1.0] * len(clf.features_))]
        clf.n_seeds_ = tuple(data["n_seeds"])
        clf.deltas_, clf.layer_scores_ = pd.DataFrame(data["deltas"]), pd.DataFrame(data["layer_scores"])
        clf.selection_ = pd.DataFrame(data.get("selection", []))
        clf.rules_ = pd.DataFrame(data.get("rules") or [
            {"layer": layer, "feature": f, "statistic": clf.statistic_, "threshold": t, "direction": d}
            for (layer, f), t, d in zip(clf.features_, clf.thresholds_, clf.directions_)])
        if not len(clf.thresholds_) == len(clf.directions_) == len(clf.scales_) == len(clf.features_):
            raise KeyError("thresholds / directions do not match the features")
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is a damaged SeedClassifier file ({type(e).__name__}: {e})") from None
    for layer, f in clf.features_:
        lab.sae(layer).check_feature(f)
    return clf
