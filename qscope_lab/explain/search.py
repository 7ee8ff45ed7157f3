"""Feature search by words: BM25 (``bm25s``) over each feature's text (``documents``: label, explanations, top
tokens and their classes, source profile), optionally blended with a sentence-embedding callable, filtered by
layer, density and score. The ranked index is cached per (index generation, explanations table, labels file,
layers), so a second query costs a lookup."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..base import validate
from ..index.explanations import FILE, location
from .documents import documents, file_stamp
from .words import CONCEPT_WORDS, naming, words

RESULT_COLUMNS = ("layer", "feature", "name", "explanation", "score", "explainer", "density", "top_tokens", "match",
                  "facet", "precision", "recall")
REFERENCE_WEIGHT = 4.0  # the measured relevance (normalised to its best) against BM25 (normalised to its best)
SCORE_WEIGHT = 0.05  # how much a well scored explanation lifts its feature (a tie-break)
_CACHE: dict = {}


def _ranker(lab: LabLike, layers: list[int]):
    import bm25s

    index = lab.index
    labels_file = os.path.join(os.environ.get("QSCOPE_LAB_HOME", os.path.expanduser("~/.qscope-lab")), "labels.json")
    key = (str(index.path), index.generation, file_stamp(location(index.path) / FILE), file_stamp(labels_file),
           tuple(layers), lab.name)
    if key not in _CACHE:
        docs = documents(lab, layers)
        tokens = [words(t) or ["∅"] for t in docs.text]
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        vocab = set(w for t in tokens for w in t)
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = (docs, retriever, vocab)
    return _CACHE[key]


def concept_scores(docs: pd.DataFrame, query_words: list[str]) -> np.ndarray:
    """How much each feature *is* what the query names, for queries naming a character class or a language
    (``CONCEPT_WORDS``): per concept, how well the query names it (``words.naming``) times precision^2 x recall, where
    precision is the share of the feature's firings in the concept and recall its firings there relative to
    the feature firing there most (the corpus's count of the concept is the same for all features)."""
    out = np.zeros(len(docs))
    if not query_words:
        return out
    firings = docs.firings.to_numpy(np.float64)
    for name, names in CONCEPT_WORDS.items():
        overlap = naming(query_words, names)
        if not overlap:
            continue
        precision = np.array([c.get(name, 0.0) for c in docs.concepts], np.float64)
        mass = firings * precision
        recall = mass / max(mass.max(), 1.0)
        out += overlap * precision ** 2 * recall
    return out


def check_query(query) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: type a few words, e.g. 'Chinese' or 'Python code'")
    if len(query) > 10_000:
        raise ValueError(f"query is {len(query):,} characters long; at most 10,000")
    return query


def search(lab: LabLike, query: str, layers=None, top: int = 20, min_score: float | None = None,
           max_density: float | None = None, embed: Callable[[list[str]], np.ndarray] | None = None,
           embed_weight: float = 0.5, reference=None) -> pd.DataFrame:
    """Features whose words match ``query``, best first (``RESULT_COLUMNS``): BM25 over each feature's text,
    times (1 + ``SCORE_WEIGHT`` x its explanation score) so that a well scored explanation wins a tie;
    ``embed`` (texts -> one vector per text) adds ``embed_weight`` x the cosine between the query and each
    feature's text (BM25 normalised to its best hit). ``layers`` (default: the index's), ``min_score``
    (explanations scored below it, or unscored, are dropped), ``max_density`` (features firing on more than
    this share of tokens dropped).

    ``reference`` (default: the shipped held-out documents; a list of texts or of ``{"text", "source", "lang"}``
    dicts; False: none) adds how much each feature *is* what the query names, measured on those documents
    (``concepts``: precision-weighted F of its firings on the tokens whose class, language, source or text the
    query's words name), ``REFERENCE_WEIGHT`` times; ``facet``, ``precision`` and ``recall`` say which tokens and
    how well. Without it, the share of each feature's stored samples in the classes the query names stands in."""
    query = check_query(query)
    index = lab.index
    if index is None:
        raise ValueError("this Lab has no feature index: lab.use_index(folder) (FeatureIndex.build makes one)")
    layers = index.layers if layers is None else [int(x) for x in lab.check_layers(layers)]
    for layer in layers:
        if layer not in index.layers:
            raise ValueError(f"layer {layer} is not in the index (layers: {index.layers})")
    top = validate.integer(top, "top", minimum=1)
    if min_score is not None:
        min_score = validate.number(min_score, "min_score")
    if max_density is not None:
        max_density = validate.number(max_density, "max_density", minimum=0.0)
    embed_weight = validate.number(embed_weight, "embed_weight", minimum=0.0)
    docs, retriever, vocab = _ranker(lab, layers)
    q = [w for w in words(query) if w in vocab]
    match = np.zeros(len(docs))
    if q:
        match = np.asarray(retriever.get_scores(q), np.float64)
    if embed is not None:
        vectors = np.asarray(embed([query] + docs.text.tolist()), np.float64)
        if vectors.shape[0] != len(docs) + 1:
            raise ValueError(f"embed returned {vectors.shape[0]} vectors for {len(docs) + 1} texts")
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosine = vectors[1:] @ vectors[0]
        match = match / max(match.max(), 1e-12) + embed_weight * np.maximum(cosine, 0)
    score = docs.score.to_numpy(np.float64)
    if match.max() > 0:
        match = match / match.max()
    n = len(docs)
    facet, precision, recall = np.full(n, "", dtype=object), np.full(n, np.nan), np.full(n, np.nan)
    if reference is False:
        measured = 2 * concept_scores(docs, words(query))
    else:
        from .concepts import relevance

        measured, names, precision, recall = relevance(lab, layers, words(query),
                                                       None if reference is True else reference)
        facet[:] = names
        measured = REFERENCE_WEIGHT * measured / max(measured.max(), 1e-12)
    rank = (match + measured) * (1 + SCORE_WEIGHT * np.nan_to_num(score, nan=0.0))
    keep = rank > 0
    if min_score is not None:
        keep &= ~np.isnan(score) & (score >= min_score)
    if max_density is not None:
        keep &= docs.density.to_numpy() <= max_density
    pick = np.flatnonzero(keep)
    pick = pick[np.lexsort((pick, -rank[pick]))][:top]
    out = docs.iloc[pick].copy()
    out["match"] = rank[pick]
    out["facet"], out["precision"], out["recall"] = facet[pick], precision[pick], recall[pick]
    out["name"] = [lbl or expl or ", ".join(t) for lbl, expl, t in zip(out.label, out.explanation, out.top_tokens)]
    return out[list(RESULT_COLUMNS)].reset_index(drop=True)
