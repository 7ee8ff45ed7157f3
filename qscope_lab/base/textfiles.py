"""Reading texts (and labelled texts) from the files people keep datasets in, for the CLI and the workflows.

.txt (one text per non-empty line), .jsonl (a "text" field per line), .json (a list of str or of {"text": ...}),
.csv / .parquet (a "text" column, or the only column). Labelled files add a "label" field / column (0/1, bool).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import validate


def read_texts(path) -> list[str]:
    """Texts of a file: .txt (one per non-empty line), .jsonl (a "text" field per line), .json (a
    list of str or of {"text": ...}), .csv or .parquet (a "text" column, or the only column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        if "text" in frame.columns:
            column = frame["text"]
        elif len(frame.columns) == 1:
            column = frame.iloc[:, 0]
        else:
            raise ValueError(f"{path} has no 'text' column (columns: {list(frame.columns)})")
        return [str(t) for t in column.dropna() if str(t)]
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            items = json.load(handle) if suffix == ".json" else [json.loads(row) for row in handle if row.strip()]
        texts = []
        for n, item in enumerate(items, 1):
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise ValueError(f"{path} item {n} has no 'text' string")
            if text:
                texts.append(text)
        return texts
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def read_labelled(path) -> pd.DataFrame:
    """Columns text, label (bool) from a .csv / .parquet / .jsonl / .json file with "text" and "label"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=suffix == ".jsonl")
    else:
        raise ValueError(f"{path}: labelled texts need .csv, .parquet, .jsonl or .json with text and label")
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)} (has {list(frame.columns)})")
    labels = validate.labels(frame["label"].tolist(), len(frame), name=f"{path}: label")
    return pd.DataFrame({"text": frame["text"].astype(str), "label": labels})
