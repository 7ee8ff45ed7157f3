"""What every part of the seed classifier shares: the not-fitted error, the metrics and the label check."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...base import validate

STORE_LIMIT = 256  # seeds whose per-text statistics are kept; beyond, a screening pass keeps memory flat


class NotFittedError(ValueError, AttributeError):
    """Raised when a classifier is used before ``fit`` (or ``load``); like scikit-learn's, both a ValueError
    and an AttributeError, so ``hasattr``-style checks and ``except ValueError`` both work."""


def metrics(pred, truth) -> dict:
    """Accuracy, precision, recall and F1 of bool predictions (precision 0 when nothing is predicted positive)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"accuracy": float((pred == truth).mean()), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12), "n": len(truth)}


def classify_texts(value, name: str = "texts") -> list[str]:
    """``validate.texts``, and no text that is only whitespace: it holds nothing to classify (as the empty text,
    which ``validate`` already refuses)."""
    out = validate.texts(value, name)
    for i, text in enumerate(out):
        if not text.strip():
            raise ValueError(f"{name}[{i}] is only whitespace ({text!r}): there is nothing to classify")
    return out


def classify_text(value, name: str = "text") -> str:
    """One text, as ``classify_texts`` checks it."""
    text = validate.text(value, name)
    if not text.strip():
        raise ValueError(f"{name} is only whitespace ({text!r}): there is nothing to classify")
    return text


def texts_labels(texts, labels) -> tuple[list[str], np.ndarray]:
    """(texts, labels) or a DataFrame with columns text, label -> validated list and bool array."""
    if labels is None:
        if not isinstance(texts, pd.DataFrame) or not {"text", "label"} <= set(texts.columns):
            raise ValueError("give texts and labels, or one DataFrame with columns 'text' and 'label'")
        labels = texts["label"].tolist()
    texts = classify_texts(texts)
    return texts, validate.labels(labels, len(texts))
