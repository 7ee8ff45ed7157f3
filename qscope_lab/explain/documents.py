"""What is known about each feature in words, one text per feature: the user's label, the stored explanations
(best score first), the top tokens and the words of their character classes, and the source profile when it is
telling. Search ranks these texts; display names take the first thing known."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import patterns, profile
from .windows import feature_windows


def file_stamp(path) -> tuple:
    """(mtime, size) of a file, (None, None) if absent: what the name and search caches key on."""
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return (None, None)


def user_labels(lab: LabLike) -> dict[tuple[int, int], str]:
    """``{(layer, feature): label}`` of the labels a user typed for this Lab's model and SAE suite
    (``$QSCOPE_LAB_HOME/labels.json``, written by ``analysis.labels.FeatureLabels``; read here, below it, by
    its documented key ``"<model>|<suite>/<layer>/<feature>"``). A missing or unreadable file: none."""
    path = Path(os.environ.get("QSCOPE_LAB_HOME", Path.home() / ".qscope-lab")) / "labels.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    namespace = f"{lab.name}|{lab.saes.name}" if lab.saes is not None else lab.name
    out = {}
    for key, entry in data.items():
        ns, _, rest = str(key).rpartition("/")
        ns, _, layer = ns.rpartition("/")
        if ns == namespace and layer.isdigit() and rest.isdigit() and isinstance(entry, dict) and entry.get("label"):
            out[(int(layer), int(rest))] = str(entry["label"])
    return out


def best_explanations(index) -> pd.DataFrame:
    """Stored explanations, best first per feature (score, then newest; NaN scores last)."""
    table = index.explanations()
    if table.empty:
        return table
    return table.sort_values(["layer", "feature", "score", "date"], ascending=[True, True, False, False],
                             na_position="last", kind="stable")


def token_words(tokens: list[str]) -> str:
    """The top tokens and the words of their character classes: '"0" "1" digits 0-9 (numbers)'."""
    words = []
    seen = set()
    for t in tokens:
        for c in patterns.classes(t):
            if c not in seen:
                seen.add(c)
                words.append(patterns.CLASSES[c])
    return " ".join([" ".join(repr(t.strip() or t) for t in tokens), *words])


def documents(lab: LabLike, layers: list[int], labels: dict | None = None) -> pd.DataFrame:
    """One row per feature of ``layers``: layer, feature, label, explanation (the best stored), score,
    explainer, top_tokens, density (firing rate), firings, concepts (``{"class:<c>" | "lang:<l>": share of the
    feature's firings}``), text (everything above in words, for search)."""
    index = lab.index
    labels = user_labels(lab) if labels is None else labels
    best = best_explanations(index)
    frames = []
    for layer in layers:
        stats = index.stats(layer)
        tops = index.top_tokens(layer, 5)
        prof = profile.profiles(index, layer)
        shares = profile.language_shares(index, layer)
        wins = feature_windows(index, layer)
        mine = best[best.layer == layer] if len(best) else best
        all_text = mine.groupby("feature").explanation.apply(lambda s: " ".join(dict.fromkeys(s))) \
            if len(mine) else pd.Series(dtype=object)
        first = mine.drop_duplicates("feature").set_index("feature") if len(mine) else None
        rows = []
        for f in range(index.d_sae):
            label = labels.get((layer, f), "")
            tokens = tops.get(f, [])
            expl, score, who = "", np.nan, ""
            if first is not None and f in first.index:
                expl, score, who = first.at[f, "explanation"], first.at[f, "score"], first.at[f, "explainer"]
            prof_words = profile.describe(prof.iloc[f]) if prof.at[f, "firings"] > 0 else ""
            text = " ".join([(label + " ") * 3, str(all_text.get(f, "")), token_words(tokens), prof_words])
            concepts = {f"class:{c}": v for c, v in patterns.class_shares(wins.get(f, [])).items()}
            concepts.update({f"lang:{lang}": float(v[f]) for lang, v in shares.items()})
            rows.append((layer, f, label, expl, score, who, tokens, float(stats.at[f, "firing_rate"]),
                         int(prof.at[f, "firings"]), concepts, text))
        frames.append(pd.DataFrame(rows, columns=["layer", "feature", "label", "explanation", "score", "explainer",
                                                  "top_tokens", "density", "firings", "concepts", "text"]))
    return pd.concat(frames, ignore_index=True)
