"""Saving a fitted SeedClassifier to JSON and loading it back (version 1 files, the OR rule, still load).

Saving never loses a file: the JSON goes to a temporary file beside the target, is flushed to disk and renamed
over it (``base.atomic``), so a full disk or a crash leaves the old file intact; a symbolic link is written
through, the file keeps its mode. ``save(path)`` replaces an existing file only if it is a SeedClassifier file
(a JSON object whose ``format`` is ``FORMAT``): anything else at ``path`` (a notebook, another JSON file, an
empty or unreadable file) is refused with ``FileExistsError`` unless ``overwrite=True``; a folder is never
replaced. What is saved is first checked as ``load`` checks it, so a file ``save`` writes always loads.

Loading checks every field before it is used, and a damaged or tampered file gets a ``ValueError`` naming the
file and the field: types, finite numbers, positive scales, directions of +1 / -1, lists whose lengths agree,
known statistic / combine / select names, layers that have an SAE in the Lab and feature ids within it, the
format version (a newer one is refused). Only JSON is read (a pickle is never unpickled: it is not JSON), at most
``MAX_BYTES``, and JSON nested too deeply to parse is refused by name rather than with a RecursionError.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...base.atomic import write_atomic
from . import rules

if TYPE_CHECKING:
    from ...lab import Lab

FORMAT, VERSION = "qscope-lab/seed-classifier", 2
MAX_BYTES = 64 * 2**20  # far beyond any saved classifier (the seed tables are a few hundred rows)
CONFIG_KEYS = ("layers", "statistic", "top_k", "select", "combine", "n_layers", "skip_first", "skip_special",
               "drop_always_on", "batch_size", "max_length", "eps")
TABLE_COLUMNS = {"rules": ("layer", "feature", "threshold", "direction", "scale"),
                 "deltas": ("layer", "feature", "pos_rate", "neg_rate", "delta", "rank"),
                 "layer_scores": ("layer", "feature", "top1_delta", "topk_delta"),
                 "selection": ()}


class DamagedField(ValueError):
    """A field of a classifier file that cannot be trusted: ``field`` names it."""

    def __init__(self, field: str, why: str):
        super().__init__(f"field {field!r}: {why}")
        self.field = field


# ---------------------------------------------------------------------------------------------- reading
def _read_json(path: Path):
    """The parsed JSON at ``path``; ValueError naming the file for anything that is not JSON."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a saved SeedClassifier")
    if size > MAX_BYTES:
        raise ValueError(f"{path} is not a saved SeedClassifier ({size:,} bytes; a classifier file is at most "
                         f"{MAX_BYTES:,})")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{path} is not a saved SeedClassifier (JSON nested too deeply to read)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not a saved SeedClassifier ({type(e).__name__}: {e})") from None


def is_classifier_file(path: str | Path) -> bool:
    """Whether ``path`` holds a JSON object marked as a SeedClassifier file (what ``save`` may replace)."""
    try:
        data = _read_json(Path(path))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


# ---------------------------------------------------------------------------------------------- field checks
def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int(value, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DamagedField(field, f"must be an int, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise DamagedField(field, f"must be in {bounds}, got {value}")
    return value


def _float(value, field: str, minimum: float | None = None, maximum: float | None = None,
           positive: bool = False) -> float:
    if not _is_number(value):
        raise DamagedField(field, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DamagedField(field, f"must be a finite number, got {value}")
    if positive and not value > 0:
        raise DamagedField(field, f"must be positive, got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise DamagedField(field, f"must be in [{minimum}, {maximum}], got {value}")
    return value


def _list(value, field: str, n: int | None = None, nonempty: bool = False) -> list:
    if not isinstance(value, list):
        raise DamagedField(field, f"must be a list, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise DamagedField(field, f"has {len(value)} entries but there are {n} features")
    if nonempty and not value:
        raise DamagedField(field, "is empty")
    return value


def _table(value, field: str, columns) -> list[dict]:
    """A table saved as records: a list of objects holding ``columns``, every value a JSON scalar (numbers
    finite)."""
    rows = _list(value, field)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DamagedField(f"{field}[{i}]", f"must be an object, got {type(row).__name__}")
        missing = [c for c in columns if c not in row]
        if missing:
            raise DamagedField(f"{field}[{i}]", f"lacks {missing}")
        for key, cell in row.items():
            if cell is not None and not isinstance(cell, (str, bool)) and not _is_number(cell):
                raise DamagedField(f"{field}[{i}].{key}", f"must be a number, text or null, got "
                                                          f"{type(cell).__name__}")
            if _is_number(cell) and not math.isfinite(float(cell)):
                raise DamagedField(f"{field}[{i}].{key}", f"must be finite, got {cell}")
    return rows


def _config(value, field: str = "config") -> dict:
    if not isinstance(value, dict):
        raise DamagedField(field, f"must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(CONFIG_KEYS))
    if unknown:
        raise DamagedField(f"{field}.{unknown[0]}", f"is not a SeedClassifier parameter (known: {list(CONFIG_KEYS)})")
    for key in ("skip_first", "skip_special"):
        if key in value and not isinstance(value[key], bool):
            raise DamagedField(f"{field}.{key}", f"must be true or false, got {value[key]!r}")
    return dict(value)


def check(cls, data, lab: Lab, where: str = "this classifier") -> tuple:
    """Every field of a parsed classifier file checked against ``lab``: (unfitted classifier with the saved
    parameters, fitted attributes). Raises ``DamagedField``, or ValueError for a file of another model
    (``where``: the file, for the warning about another SAE suite)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DamagedField("format", f"must be {FORMAT!r}: this is not a SeedClassifier file")
    version = data.get("version", 1)
    _int(version, "version", 1)
    if version > VERSION:
        raise DamagedField("version", f"is {version}: written by a newer qscope-lab (this one reads up to "
                                      f"{VERSION}); upgrade qscope-lab to load it")
    old = version < 2  # version 1: the OR rule, chosen by delta; fields added in 2 may be absent

    def field(name, default=None):
        if name in data:
            return data[name]
        if old and default is not None:
            return default
        raise DamagedField(name, "is missing")

    model, saes = field("model"), data.get("saes")
    if not isinstance(model, str):
        raise DamagedField("model", f"must be a model name, got {model!r}")
    if saes is not None and not isinstance(saes, str):
        raise DamagedField("saes", f"must be an SAE suite name or null, got {saes!r}")
    if model != lab.name:
        raise ValueError(f"was fitted on model {model!r} but this lab runs {lab.name!r}: its feature ids mean "
                         f"nothing here")
    if saes != getattr(lab.saes, "name", None):
        warnings.warn(f"{where} was fitted with SAEs {saes!r}, this lab has {getattr(lab.saes, 'name', None)!r}",
                      stacklevel=4)

    config = _config(field("config"))
    if old:
        config.update(statistic="any", select="delta")
    try:
        clf = cls(lab, **config)
        clf._validate_params()
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise DamagedField("config", str(e)) from None

    candidates = set(clf.candidate_layers_)
    layers = [_int(x, f"layers[{i}]") for i, x in enumerate(_list(field("layers"), "layers", nonempty=True))]
    for i, layer in enumerate(layers):
        if layer not in candidates:
            raise DamagedField(f"layers[{i}]", f"layer {layer} is not among the file's candidate layers "
                                               f"{sorted(candidates)}")
    if len(set(layers)) != len(layers):
        raise DamagedField("layers", f"repeats a layer: {layers}")
    layer = _int(field("layer"), "layer")
    if layer != layers[0]:
        raise DamagedField("layer", f"is {layer} but the first of 'layers' is {layers[0]}")

    statistic = field("statistic", "any")
    if statistic not in rules.STATISTICS:
        raise DamagedField("statistic", f"must be one of {list(rules.STATISTICS)}, got {statistic!r}")
    if statistic not in clf._statistics:
        raise DamagedField("statistic", f"{statistic!r} is not among the candidates of config.statistic "
                                        f"{list(clf._statistics)}")

    features = []
    seen = set()
    for i, pair in enumerate(_list(field("features"), "features", nonempty=True)):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DamagedField(f"features[{i}]", f"must be a [layer, feature] pair, got {pair!r}")
        at = _int(pair[0], f"features[{i}] layer")
        if at not in layers:
            raise DamagedField(f"features[{i}] layer", f"layer {at} is not among the chosen layers {layers}")
        try:
            d_sae = lab.sae(at).d_sae
        except (KeyError, ValueError, IndexError, TypeError, OSError) as e:
            raise DamagedField(f"features[{i}] layer", f"this lab has no SAE at layer {at} ({e})") from None
        f = _int(pair[1], f"features[{i}] feature", 0, d_sae - 1)
        if (at, f) in seen:
            raise DamagedField(f"features[{i}]", f"repeats feature {f} of layer {at}")
        seen.add((at, f))
        features.append((at, f))
    n = len(features)

    top_k = field("top_k", n)
    if top_k != "all":
        top_k = _int(top_k, "top_k", 1, 32)
        if n > top_k * len(layers):
            raise DamagedField("features", f"holds {n} features but top_k is {top_k} per layer")
    eps = float(clf.eps)
    threshold_max = 1.0 if statistic == "rate" else None
    thresholds = [_float(t, f"thresholds[{i}]", 0.0, threshold_max)
                  for i, t in enumerate(_list(field("thresholds", [eps] * n), "thresholds", n))]
    directions = [_int(d, f"directions[{i}]", -1, 1)
                  for i, d in enumerate(_list(field("directions", [1] * n), "directions", n))]
    for i, d in enumerate(directions):
        if d == 0:
            raise DamagedField(f"directions[{i}]", "must be +1 or -1, got 0")
    scales = [_float(v, f"scales[{i}]", positive=True)
              for i, v in enumerate(_list(field("scales", [1.0] * n), "scales", n))]
    if statistic == "any" and (any(d != 1 for d in directions) or any(t != eps for t in thresholds)):
        raise DamagedField("thresholds", f"the OR rule ('any') fires past eps={eps} only: thresholds must all be "
                                         f"eps and directions +1")
    n_seeds = _list(field("n_seeds"), "n_seeds")
    if len(n_seeds) != 2:
        raise DamagedField("n_seeds", f"must be [positive, negative] seed counts, got {n_seeds!r}")
    n_seeds = (_int(n_seeds[0], "n_seeds[0]", 1), _int(n_seeds[1], "n_seeds[1]", 1))

    tables = {}
    for name, columns in TABLE_COLUMNS.items():
        if name == "rules" and old and not data.get("rules"):
            rows = [{"layer": at, "feature": f, "statistic": statistic, "threshold": t, "direction": d}
                    for (at, f), t, d in zip(features, thresholds, directions)]
        else:
            rows = _table(field(name, []), name, columns if not (old and name == "rules") else ("layer", "feature"))
        tables[name] = rows
    if len(tables["rules"]) != n:
        raise DamagedField("rules", f"has {len(tables['rules'])} rows but there are {n} features")
    for i, (row, pair) in enumerate(zip(tables["rules"], features)):
        if (row["layer"], row["feature"]) != pair:
            raise DamagedField(f"rules[{i}]", f"names layer {row['layer']} feature {row['feature']} but "
                                              f"features[{i}] is {list(pair)}")
    fitted = {"layer_": layer, "layers_": layers, "features_": features, "statistic_": statistic,
              "top_k_": top_k, "thresholds_": thresholds, "directions_": directions, "scales_": scales,
              "n_seeds_": n_seeds, "rules_": pd.DataFrame(tables["rules"]),
              "deltas_": pd.DataFrame(tables["deltas"]), "layer_scores_": pd.DataFrame(tables["layer_scores"]),
              "selection_": pd.DataFrame(tables["selection"])}
    return clf, fitted


def load_classifier(cls, path: str | Path, lab: Lab):
    """A classifier rebuilt from ``path`` on ``lab``, every field checked (``check``)."""
    path = Path(path)
    data = _read_json(path)
    try:
        clf, fitted = check(cls, data, lab, str(path))
    except DamagedField as e:
        if e.field == "format":
            raise ValueError(f"{path} is not a saved SeedClassifier ({e})") from None
        raise ValueError(f"{path} is a damaged SeedClassifier file: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path} {e}") from None
    for name, value in fitted.items():
        setattr(clf, name, value)
    return clf


# ---------------------------------------------------------------------------------------------- writing
def classifier_data(clf) -> dict:
    """What ``save`` writes: the config, model and SAE names, the rule and the seed tables."""
    return {"format": FORMAT, "version": VERSION, "model": clf.lab.name,
            "saes": getattr(clf.lab.saes, "name", None), "config": clf._config(), "layer": clf.layer_,
            "layers": clf.layers_, "statistic": clf.statistic_, "top_k": clf.top_k_,
            "features": [list(f) for f in clf.features_], "thresholds": clf.thresholds_,
            "directions": clf.directions_, "scales": clf.scales_, "n_seeds": list(clf.n_seeds_),
            "rules": clf.rules_.to_dict("records"),
            "selection": clf.selection_.to_dict("records"), "deltas": clf.deltas_.to_dict("records"),
            "layer_scores": clf.layer_scores_.to_dict("records")}


def save_classifier(clf, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``clf`` to ``path`` atomically; an existing file that is not a SeedClassifier file is replaced only
    with ``overwrite=True`` (see the module's docstring). Returns ``path``."""
    path = Path(path)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name, e.g. {path / 'classifier.json'}")
    if not overwrite and os.path.lexists(path) and not is_classifier_file(path):
        raise FileExistsError(f"{path} exists and is not a SeedClassifier file: not replaced (pass "
                              f"overwrite=True to replace it)")
    data = classifier_data(clf)
    try:
        check(type(clf), json.loads(json.dumps(data)), clf.lab)  # what load will read back
    except ValueError as e:
        raise ValueError(f"cannot save this classifier to {path}: {e}") from None
    text = json.dumps(data, indent=1, allow_nan=False)
    write_atomic(path, text, prefix=f".{path.name}.", suffix=".tmp")
    return path
