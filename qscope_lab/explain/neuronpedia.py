"""Neuronpedia's explanations (its Qwen-Scope labels among them) imported into an index's explanations table.

Neuronpedia's export keeps explanations as ``explanations/batch-*.jsonl.gz``: one JSON object a line with
``modelId``, ``layer`` ("<n>-<set>", e.g. "11-qwenscope-res-32k"), ``index`` (the feature), ``description``,
``typeName`` (the method) and ``explanationModelName`` (the model that wrote it), and optional ``scores``. Each
becomes a row with its provenance: explainer "neuronpedia", model = explanationModelName, prompt_version =
typeName, score = the mean of its scores' values when it has any.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd

from ..index.explanations import add_explanations


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "explanations" if (path / "explanations").is_dir() else path
    files = sorted(folder.glob("batch-*.jsonl.gz")) + sorted(folder.glob("batch-*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no explanations/batch-*.jsonl.gz under {path} (Neuronpedia's export layout)")
    return files


def _score(scores) -> float:
    values = []
    for s in scores if isinstance(scores, list) else [scores]:
        v = s.get("value", s.get("score")) if isinstance(s, dict) else s
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            values.append(float(v))
    return sum(values) / len(values) if values else float("nan")


def read_neuronpedia(path) -> pd.DataFrame:
    """Every explanation in a Neuronpedia export (a folder holding ``explanations/`` or one batch file) as
    rows: model_id, source_set, layer, feature, explanation, type, explainer_model, score, scores."""
    rows = []
    for file in _files(Path(path)):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as handle:
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    layer, _, source_set = str(item["layer"]).partition("-")
                    rows.append({"model_id": str(item.get("modelId", "")), "source_set": source_set,
                                 "layer": int(layer), "feature": int(item["index"]),
                                 "explanation": str(item["description"]).strip(),
                                 "type": str(item.get("typeName") or "neuronpedia"),
                                 "explainer_model": str(item.get("explanationModelName") or "unknown"),
                                 "score": _score(item.get("scores", [])),
                                 "scores": json.dumps(item.get("scores", []))})
                except (KeyError, ValueError, TypeError) as err:
                    raise ValueError(f"{file}:{n} is not a Neuronpedia explanation ({type(err).__name__}: "
                                     f"{err})") from None
    return pd.DataFrame(rows, columns=["model_id", "source_set", "layer", "feature", "explanation", "type",
                                       "explainer_model", "score", "scores"])


def import_neuronpedia(path, index, model_id: str | None = None, source_set: str | None = None) -> pd.DataFrame:
    """Add a Neuronpedia export's explanations to ``index``'s table (only ``model_id`` / ``source_set`` when
    given; layers the index lacks and features past its width are skipped, counted in ``attrs["skipped"]``).
    Returns the rows added (``index.explanations.COLUMNS``)."""
    frame = read_neuronpedia(path)
    if model_id is not None:
        frame = frame[frame.model_id == model_id]
    if source_set is not None:
        frame = frame[frame.source_set == source_set]
    ok = frame.layer.isin(index.layers) & (frame.feature >= 0) & (frame.feature < index.d_sae) & \
        (frame.explanation != "")
    skipped = int((~ok).sum())
    frame = frame[ok]
    rows = pd.DataFrame({"explainer": "neuronpedia", "model": frame.explainer_model, "prompt_version": frame.type,
                         "layer": frame.layer, "feature": frame.feature, "explanation": frame.explanation,
                         "score": frame.score, "scores": frame.scores})
    if len(rows):
        add_explanations(index.path, rows)
    rows = rows.reset_index(drop=True)
    rows.attrs["skipped"] = skipped
    return rows
