"""``explain(lab, layer, ...)``: words for a layer's features by one explainer, stored with the index and resumed.

Features already explained by the same explainer, model and prompt version are read back, not redone (a rerun
of a layer costs a table read); new explanations are added to the index's table as each batch finishes
(``index.explanations``), so an interrupted run keeps what it finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import pandas as pd

from ..base import validate
from ..index.explanations import add_explanations

EXPLAINERS = ("offline", "llm")
OUT_COLUMNS = ("layer", "feature", "explanation", "score", "explainer", "model", "prompt_version", "scores")


def check_features(features, d_sae: int) -> list[int] | None:
    """None (every feature) or a non-empty list of distinct feature ids (order kept)."""
    if features is None:
        return None
    if validate._is_int(features):
        return [validate.feature(features, d_sae)]
    if isinstance(features, (str, bytes, dict)) or not hasattr(features, "__iter__"):
        raise TypeError(f"features must be an int, a list of ints or None, got {type(features).__name__}")
    out = list(dict.fromkeys(validate.feature(f, d_sae, "features") for f in features))
    if not out:
        raise ValueError("features is empty: give at least one feature id, or None for all")
    return out


def _index(lab: LabLike):
    if lab.index is None:
        raise ValueError("this Lab has no feature index: lab.use_index(folder) (FeatureIndex.build makes one)")
    return lab.index


def explain(lab: LabLike, layer, features=None, explainer: str = "offline", chat=None, *, overwrite: bool = False,
            batch: int = 64, progress: bool | None = None, **options) -> pd.DataFrame:
    """Explain ``features`` (default: all) of ``layer`` with ``explainer`` ("offline": patterns from the index,
    no LLM; "llm": ``chat`` writes them, Delphi's way, ``llm.explain``'s options) and store them with the index.
    Returns ``OUT_COLUMNS``, one row per feature asked (stored ones included; ``overwrite=True`` redoes them)."""
    index = _index(lab)
    layer = lab.check_layer(layer)
    if layer not in index.layers:
        raise ValueError(f"layer {layer} is not in the index (layers: {index.layers})")
    explainer = validate.choice(explainer, EXPLAINERS, "explainer")
    features = check_features(features, index.d_sae)
    batch = validate.integer(batch, "batch", minimum=1)
    wanted = list(range(index.d_sae)) if features is None else features
    if explainer == "offline":
        from . import offline

        model, version = offline.MODEL, offline.PROMPT_VERSION
        if chat is not None:
            raise ValueError("the offline explainer takes no chat; use explainer='llm' for a chat model")

        def run(fs):
            return offline.explain(index, layer, fs, **options)
    else:
        from .chat import as_chat
        from .llm import PROMPT_VERSION, explain_features

        if chat is None:
            raise ValueError("explainer='llm' needs chat= (an OpenAI-compatible endpoint, a transformers chat "
                             "model or a function messages -> str; explain.chat.Chat)")
        chat = as_chat(chat)
        model, version = chat.model, PROMPT_VERSION

        scorers = options.pop("scorers", ("detection",))
        judge = as_chat(options.pop("judge", None) or chat)
        score_options = {k: options.pop(k) for k in ("n_examples", "per_prompt", "seed") if k in options}

        def run(fs):
            rows = explain_features(index, layer, fs, chat, progress=progress, **options)
            return _scored(lab, index, layer, rows, judge, scorers, progress, score_options)
    done = set() if overwrite else _done(index, explainer, model, version, layer)
    todo = [f for f in wanted if f not in done]
    failures: list[dict] = []
    for start in range(0, len(todo), batch):
        rows = run(todo[start:start + batch])
        good = [r for r in rows if r.get("explanation") is not None]
        failures += [r for r in rows if r.get("explanation") is None]
        if good:
            frame = pd.DataFrame(good)
            frame["explainer"], frame["model"], frame["prompt_version"] = explainer, model, version
            add_explanations(index.path, frame)
    table = index.explanations()
    pick = ((table.explainer == explainer) & (table.model == model) & (table.prompt_version == version)
            & (table.layer == layer) & table.feature.isin(wanted))
    out = table[pick].set_index("feature").reindex(wanted).reset_index()
    out["layer"], out["explainer"], out["model"], out["prompt_version"] = layer, explainer, model, version
    out = out[list(OUT_COLUMNS)]
    out.attrs["failures"] = failures
    return out


def _scored(lab: LabLike, index, layer, rows, judge, scorers, progress, options) -> list[dict]:
    """Rows of the LLM explainer with their judge scores: ``score`` is the mean F1 over ``scorers`` (NaN when the
    judge answered none), every metric kept in ``scores``."""
    from .scorers import score

    good = {r["feature"]: r["explanation"] for r in rows if r.get("explanation") is not None}
    if not scorers or not good:
        return rows
    table = score(index, layer, good, judge, scorers=scorers, lab=lab, progress=progress, **options)
    for r in rows:
        if r["feature"] not in good:
            continue
        mine = table[table.feature == r["feature"]]
        r["scores"] = {**r["scores"], **{f"{row.scorer}.{m}": (None if pd.isna(getattr(row, m)) else
                                                               float(getattr(row, m)))
                                         for row in mine.itertuples() for m in ("accuracy", "f1", "answered",
                                                                               "failures")}}
        f1 = mine.f1[mine.answered > 0]
        r["score"] = float(f1.mean()) if len(f1) else float("nan")
    return rows


def _done(index, explainer, model, version, layer) -> set[int]:
    from ..index.explanations import explained

    return explained(index.path, explainer, model, version, layer)
