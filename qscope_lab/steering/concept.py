"""Concept scorers: what a steering bench measures a completion by. One score per text, higher = more of the
concept. ``as_concept`` turns what a user has into one:

- a fitted classifier (a ``SeedClassifier`` or anything with ``predict_proba`` / ``decision_function``),
- a callable ``texts -> scores``,
- ``(positives, negatives)`` example texts: a character n-gram naive Bayes scorer built from them (it knows
  nothing of the model or its SAEs, so it cannot be fooled by the very features being steered),
- ``Judge(chat, "writes in Chinese")``: an LLM judge through a chat callable (``explain.chat.Chat`` or any
  ``messages -> str``), rating 0-2 as AxBench does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ..base import validate


class Concept:
    """Scores texts for a concept. ``name`` says what it measures; ``kind`` how (classifier, callable,
    examples, judge); ``scale`` the score's range as words (the bench's tables quote it)."""

    name: str = "concept"
    kind: str = "callable"
    scale: str = "higher = more of the concept"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        scores = np.asarray(self.score(texts), dtype=float).reshape(-1)
        if scores.shape[0] != len(texts):
            raise ValueError(f"concept {self.name!r} returned {scores.shape[0]} scores for {len(texts)} texts")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"concept {self.name!r} returned a non-finite score ({scores[bad[0]]}) for text "
                             f"{bad[0]} ({texts[bad[0]][:60]!r})")
        return scores

    def score(self, texts: list[str]):  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "scale": self.scale}


class CallableConcept(Concept):
    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def score(self, texts):
        return self.fn(texts)


class ClassifierConcept(Concept):
    """A fitted classifier: P(positive) from ``predict_proba`` when it has one, else ``decision_function``."""

    kind = "classifier"

    def __init__(self, clf, name: str | None = None):
        self.clf = clf
        self.name = name or type(clf).__name__
        self.proba = callable(getattr(clf, "predict_proba", None))
        self.scale = "P(positive), 0..1" if self.proba else "decision function (> 0: positive)"

    def score(self, texts):
        # a completion can be empty (the model stopped at once): a classifier of texts cannot read it
        out = np.full(len(texts), np.nan)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            part = [texts[i] for i in keep]
            if self.proba:
                values = np.asarray(self.clf.predict_proba(part), dtype=float)
                values = values[:, -1] if values.ndim == 2 else values
            else:
                values = np.asarray(self.clf.decision_function(part), dtype=float)
            out[keep] = values
        empty = 0.0 if self.proba else float(np.nanmin(out)) if keep else 0.0
        return np.where(np.isnan(out), empty, out)


_SPACES = re.compile(r"\s+")


def _grams(text: str, n_max: int) -> list[str]:
    text = _SPACES.sub(" ", text)
    return [text[i:i + n] for n in range(1, n_max + 1) for i in range(len(text) - n + 1)]


class ExampleConcept(Concept):
    """Naive Bayes over character 1..``n``-grams of positive vs negative example texts (Laplace smoothing).

    A text's score is the logistic of the mean log-likelihood ratio of its grams that either side has seen, in
    0..1 (0.5 when it has none: no evidence either way); an empty text scores 0 (it shows no concept).
    Characters, not words, so scripts without spaces (Chinese) score as well as English. ``accuracy`` is its
    leave-one-out accuracy on the examples: a scorer that cannot tell its own examples apart makes every bench
    meaningless, so it is reported beside the bench."""

    kind = "examples"
    scale = "P(positive) from character n-grams, 0..1"

    def __init__(self, positives, negatives, n: int = 3, name: str | None = None):
        self.positives = validate.texts(positives, "positives")
        self.negatives = validate.texts(negatives, "negatives")
        self.n = validate.integer(n, "n", minimum=1, maximum=8)
        self.name = name or "examples"
        self._counts = [Counter(g for t in self.positives for g in _grams(t, self.n)),
                        Counter(g for t in self.negatives for g in _grams(t, self.n))]
        self._totals = [sum(c.values()) for c in self._counts]
        self._vocab = len(set(self._counts[0]) | set(self._counts[1])) + 1
        self.accuracy = self._leave_one_out()

    def _ratio(self, gram: str, drop: tuple[int, Counter] | None = None) -> float:
        counts, totals = [], []
        for side in (0, 1):
            count, total = self._counts[side].get(gram, 0), self._totals[side]
            if drop is not None and drop[0] == side:
                count -= drop[1].get(gram, 0)
                total -= sum(drop[1].values())
            counts.append(count)
            totals.append(total)
        if counts[0] == counts[1] == 0:
            return 0.0  # a gram neither side has seen is no evidence either way
        pos, neg = ((counts[side] + 1) / (totals[side] + self._vocab) for side in (0, 1))
        return math.log(pos) - math.log(neg)

    def _one(self, text: str, drop=None) -> float:
        grams = _grams(text, self.n)
        if not grams:
            return 0.0
        ratios = [r for r in (self._ratio(g, drop) for g in grams) if r != 0.0]
        if not ratios:
            return 0.5  # nothing either side has seen: no evidence either way
        mean = sum(ratios) / len(ratios)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, 4.0 * mean))))

    def _leave_one_out(self) -> float:
        right = 0
        for side, texts in ((0, self.positives), (1, self.negatives)):
            for t in texts:
                p = self._one(t, drop=(side, Counter(_grams(t, self.n))))
                right += (p > 0.5) == (side == 0)
        return right / (len(self.positives) + len(self.negatives))

    def score(self, texts):
        return [self._one(t) for t in texts]

    def describe(self) -> dict:
        return {**super().describe(), "positives": len(self.positives), "negatives": len(self.negatives),
                "n": self.n, "leave_one_out_accuracy": round(self.accuracy, 4)}


JUDGE_PROMPT = ("Rate how strongly the text below shows this concept: {concept}\n"
                "Answer with one digit: 0 (not at all), 1 (somewhat) or 2 (clearly).\n\nText:\n{text}")


def parse_rating(reply: str) -> float:
    """The first 0 / 1 / 2 digit of a judge's reply; ValueError (retried by explain.chat) when there is none."""
    found = re.search(r"[012]", reply)
    if found is None:
        raise ValueError(f"no 0-2 rating in the reply {reply[:80]!r}")
    return float(found.group())


class Judge(Concept):
    """An LLM judge: asks ``chat`` to rate each text 0-2 for ``concept`` (AxBench's concept score). ``chat`` is an
    ``explain.chat.Chat`` (its ``batch`` runs the prompts concurrently, cached and retried) or any callable
    ``messages -> str``."""

    kind = "judge"
    scale = "LLM rating 0..2"

    def __init__(self, chat, concept: str, prompt: str = JUDGE_PROMPT):
        if not callable(chat) and not callable(getattr(chat, "batch", None)):
            raise TypeError(f"chat must be a chat callable (messages -> str) or an explain.chat.Chat, got "
                            f"{type(chat).__name__}")
        self.chat = chat
        self.concept = validate.text(concept, "concept")
        self.prompt = prompt
        self.name = f"judge: {concept}"

    def _messages(self, text: str) -> list[dict]:
        return [{"role": "user", "content": self.prompt.format(concept=self.concept, text=text or "(empty)")}]

    def score(self, texts):
        items = [self._messages(t) for t in texts]
        if callable(getattr(self.chat, "batch", None)):
            results = self.chat.batch(items, parse=parse_rating, prompt_version="steer-judge-1", progress=False)
            bad = [i for i, r in enumerate(results) if not r.ok]
            if bad:
                raise RuntimeError(f"the judge failed on text {bad[0]}: {results[bad[0]].error}")
            return [float(r.value) for r in results]
        return [parse_rating(str(self.chat(m))) for m in items]


def as_concept(concept, judge=None) -> Concept:
    """A ``Concept`` from a classifier, a callable, ``(positives, negatives)``, a ``Concept``, or a description
    str together with ``judge`` (a chat callable)."""
    if isinstance(concept, Concept):
        return concept
    if isinstance(concept, str):
        if judge is None:
            raise ValueError("concept is a description: pass judge=<a chat callable> to rate texts by it, or give "
                             "a classifier, a callable texts -> scores or (positives, negatives) example texts")
        return Judge(judge, concept)
    if callable(getattr(concept, "predict_proba", None)) or callable(getattr(concept, "decision_function", None)):
        return ClassifierConcept(concept)
    if isinstance(concept, tuple) and len(concept) == 2:
        return ExampleConcept(concept[0], concept[1])
    if callable(concept):
        return CallableConcept(concept)
    raise TypeError(f"concept must be a classifier (predict_proba / decision_function), a callable texts -> "
                    f"scores, (positives, negatives) example texts or a description with judge=, got "
                    f"{type(concept).__name__}")
