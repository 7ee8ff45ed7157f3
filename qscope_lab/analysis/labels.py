"""User labels and notes for features, kept in one JSON file so they outlive the kernel.

Keys are ``"<sae suite>/<layer>/<feature>"``: the same feature id means different things in different SAE
suites. Every write re-reads the file and replaces it atomically, so two notebooks labelling at once lose
nothing and a crash mid-write leaves the old file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import pandas as pd


def default_path() -> Path:
    """``$QSCOPE_LAB_HOME/labels.json`` (default ``~/.qscope-lab``)."""
    return Path(os.environ.get("QSCOPE_LAB_HOME", Path.home() / ".qscope-lab")) / "labels.json"


def label_namespace(lab) -> str:
    """Model and SAE suite: the same feature id means different things in different suites."""
    return f"{lab.name}|{lab.saes.name}" if lab.saes is not None else lab.name


class FeatureLabels:
    def __init__(self, namespace: str, path: str | os.PathLike | None = None):
        self.namespace = namespace
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()

    def _key(self, layer: int, feature: int) -> str:
        return f"{self.namespace}/{int(layer)}/{int(feature)}"

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.path} is not a labels file (JSON error: {err}); "
                             "move it away to start afresh") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} is not a labels file (expected a JSON object)")
        return data

    def get(self, layer: int, feature: int) -> dict:
        """``{"label": str, "note": str}`` (empty strings when never set)."""
        entry = self._read().get(self._key(layer, feature), {})
        return {"label": entry.get("label", ""), "note": entry.get("note", "")}

    def set(self, layer: int, feature: int, label: str | None = None, note: str | None = None) -> dict:
        """Update the label and/or note (None keeps the stored value); an entry with both empty is removed."""
        with self._lock:
            data = self._read()
            key = self._key(layer, feature)
            entry = {"label": "", "note": "", **data.get(key, {})}
            if label is not None:
                entry["label"] = str(label)
            if note is not None:
                entry["note"] = str(note)
            if entry["label"] or entry["note"]:
                data[key] = entry
            else:
                data.pop(key, None)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".labels-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            return {"label": entry["label"], "note": entry["note"]}

    def to_frame(self) -> pd.DataFrame:
        """This namespace's labels: layer, feature, label, note."""
        rows = []
        prefix = self.namespace + "/"
        for key, entry in self._read().items():
            if key.startswith(prefix):
                layer, feature = key[len(prefix):].split("/")
                rows.append({"layer": int(layer), "feature": int(feature), "label": entry.get("label", ""),
                             "note": entry.get("note", "")})
        return pd.DataFrame(rows, columns=["layer", "feature", "label", "note"])
