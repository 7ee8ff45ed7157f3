"""Explanations of an index's features, stored with the index: one table, ``explanations.parquet``.

Columns (``COLUMNS``): explainer ("offline", "llm", "neuronpedia"...), model (the explainer's model), prompt_version,
layer, feature, explanation, score (the explainer's main score, NaN when none), scores (JSON: every score it
computed), date (ISO 8601, UTC). One row per (explainer, model, prompt_version, layer, feature): a later row for the
same key replaces the earlier, so explaining again with another model or prompt adds rows and never loses any.

Where: ``explanations.parquet`` in the index folder, beside the manifest. The shipped index (read-only in an
installed package) and any index folder this process cannot write keep theirs in
``$QSCOPE_LAB_HOME/explanations/<model>-<corpus fingerprint>/`` instead (``location``). Every write takes a
cross-process lock (``explanations.lock`` beside the file), re-reads the table, merges and replaces the file
atomically (``base.atomic.write_atomic``): two processes adding at once lose nothing, and a killed writer leaves
the old table or the new one. Adding is incremental: ``explained`` says which features a given explainer, model
and prompt version already has, so a rerun of a layer skips them.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..base.atomic import write_atomic
from . import schema

FILE = "explanations.parquet"
LOCK = "explanations.lock"
KEY = ("explainer", "model", "prompt_version", "layer", "feature")
COLUMNS = KEY + ("explanation", "score", "scores", "date")
_LOCK_TIMEOUT_S = 60.0


def _home() -> Path:
    return Path(os.environ.get("QSCOPE_LAB_HOME", Path.home() / ".qscope-lab"))


def _shipped(path: Path) -> bool:
    from .. import embedded

    try:
        return path.resolve() == embedded.INDEX_DIR.resolve()
    except OSError:
        return False


def location(index_path) -> Path:
    """The folder an index's explanations live in: the index folder, or for the shipped index and a folder this
    process cannot write, ``$QSCOPE_LAB_HOME/explanations/<model>-<corpus fingerprint>``."""
    path = Path(index_path)
    if not (path / schema.MANIFEST).is_file():
        raise FileNotFoundError(f"{path} is not a feature index (no {schema.MANIFEST})")
    if not _shipped(path) and os.access(path, os.W_OK):
        return path
    manifest = json.loads((path / schema.MANIFEST).read_text(encoding="utf-8"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(manifest.get("model", "index")))
    return _home() / "explanations" / f"{name}-{manifest.get('corpus', {}).get('fingerprint', 'unknown')}"


def empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    return frame.astype({"layer": "int64", "feature": "int64", "score": "float64"})


def _read(file: Path) -> pd.DataFrame:
    if not file.is_file():
        return empty()
    try:
        frame = pd.read_parquet(file)
    except Exception as err:
        raise ValueError(f"{file} is not an explanations table ({type(err).__name__}: {err}); move it away to "
                         f"start afresh") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{file} is not an explanations table (missing columns {missing})")
    return frame[list(COLUMNS)]


def read_explanations(index_path) -> pd.DataFrame:
    """Every stored explanation of the index at ``index_path`` (``COLUMNS``; empty when none). An index whose
    explanations live elsewhere (the shipped one) may carry its own table in its folder, written when it was
    built (the embedded default's offline explanations): read under the user's, whose rows win on the same key."""
    path = Path(index_path)
    folder = location(path)
    own = _read(folder / FILE)
    if folder == path or not (path / FILE).is_file():
        return own.reset_index(drop=True)
    shipped = _read(path / FILE)
    both = pd.concat([shipped, own], ignore_index=True) if len(own) else shipped
    return both.drop_duplicates(list(KEY), keep="last").reset_index(drop=True)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"explanations must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in KEY + ("explanation",) if c not in frame.columns]
    if missing:
        raise ValueError(f"explanations lack columns {missing} (needed: {list(KEY) + ['explanation']})")
    out = frame.copy()
    if "score" not in out:
        out["score"] = float("nan")
    if "scores" not in out:
        out["scores"] = "{}"
    out["scores"] = [s if isinstance(s, str) else json.dumps(s, default=_plain) for s in out["scores"]]
    if "date" not in out:
        out["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for c in ("explainer", "model", "prompt_version", "explanation", "date"):
        out[c] = out[c].astype(str)
    out["layer"] = out["layer"].astype("int64")
    out["feature"] = out["feature"].astype("int64")
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype("float64")
    if (out["layer"] < 0).any() or (out["feature"] < 0).any():
        raise ValueError("explanations have a negative layer or feature")
    return out[list(COLUMNS)]


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def add_explanations(index_path, frame: pd.DataFrame) -> pd.DataFrame:
    """Merge ``frame`` (``KEY`` columns and ``explanation``; ``score``, ``scores`` (dict or JSON), ``date``
    optional) into the index's table: a row replaces a stored one with the same key. Returns the table written."""
    from filelock import FileLock, Timeout

    new = _normalise(frame)
    folder = location(index_path)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK))
    try:
        lock.acquire(timeout=_LOCK_TIMEOUT_S)
    except Timeout:
        raise TimeoutError(f"another process kept {folder / LOCK} for {_LOCK_TIMEOUT_S:.0f} s") from None
    try:
        old = _read(folder / FILE)
        merged = pd.concat([old, new], ignore_index=True) if len(old) else new
        merged = merged.drop_duplicates(list(KEY), keep="last").sort_values(list(KEY), kind="stable")
        merged = merged.reset_index(drop=True)
        buffer = io.BytesIO()
        merged.to_parquet(buffer, index=False)
        write_atomic(folder / FILE, buffer.getvalue())
    finally:
        lock.release()
    return merged


def explained(index_path, explainer: str, model: str, prompt_version: str, layer: int) -> set[int]:
    """Features of ``layer`` already explained by this explainer, model and prompt version."""
    table = read_explanations(index_path)
    pick = ((table.explainer == explainer) & (table.model == model) & (table.prompt_version == prompt_version)
            & (table.layer == int(layer)))
    return set(table.feature[pick].astype(int).tolist())
