"""Scores of an explanation by a judge LLM, as Delphi defines them, with the same ``Chat`` as the explainer.

*Detection*: the judge reads the explanation and whole contexts, a mix of ones where the feature fires (its stored
windows) and ones where it does not (other features' windows that hold none of the units it fires on; with
``lab``, checked by encoding them), and says which fire: accuracy, precision, recall, F1 against the truth.
*Fuzzing*: the judge reads contexts where the feature fires with tokens highlighted ``<<like this>>``, correctly
(the units it fires on) or wrongly (as many other units), and says whether the highlighting fits the explanation:
token-level specificity as accuracy / F1. Examples go ``per_prompt`` to a prompt; the judge answers with a JSON
list of 0/1, one per example; a reply that is not one is malformed (retried, then counted in ``failures``).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import numpy as np
import pandas as pd

from ..base import validate
from .chat import Chat, Malformed
from .windows import Window, feature_windows

PROMPT_VERSION = "delphi-scorers-1"
SCORERS = ("detection", "fuzzing")
COLUMNS = ("layer", "feature", "scorer", "accuracy", "precision", "recall", "f1", "n", "answered", "failures")

DETECTION = ("You are an intelligent and meticulous linguistics researcher. You are given an explanation of a feature "
             "of a language model and {n} text examples. For each example, say whether the feature activates "
             "anywhere in it, given the explanation: 1 if it does, 0 if not. Reply with a JSON list of {n} numbers, "
             "for example [1, 0, ...], and nothing else.")
FUZZING = ("You are an intelligent and meticulous linguistics researcher. You are given an explanation of a feature "
           "of a language model and {n} text examples in which some tokens are highlighted <<like this>>. For each "
           "example, say whether the highlighted tokens are the ones the explanation describes: 1 if they are, 0 "
           "if not. Reply with a JSON list of {n} numbers, for example [1, 0, ...], and nothing else.")


def parser(n: int):
    """A parser of a reply that must hold a JSON list of ``n`` 0/1 values (the last such list in it)."""
    def parse(reply: str) -> list[int]:
        for found in reversed(re.findall(r"\[[^\[\]]*\]", str(reply))):
            try:
                values = json.loads(found)
            except ValueError:
                continue
            if isinstance(values, list) and len(values) == n and all(v in (0, 1) and not isinstance(v, float)
                                                                     for v in values):
                return [int(v) for v in values]
        raise Malformed(f"no JSON list of {n} zeros and ones in the reply")
    return parse


def messages(kind: str, explanation: str, texts: list[str]) -> list[dict]:
    system = (DETECTION if kind == "detection" else FUZZING).format(n=len(texts))
    body = "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(texts))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{body}\n\nAnswer (a JSON list of "
                                        f"{len(texts)} numbers):"}]


def _firing_units(windows: list[Window]) -> set[str]:
    return {u for w in windows for u, v in zip(w.units, w.values) if v > 0 and u.strip()}


def _negatives(index, layer: int, feature: int, windows: list[Window], n: int, rng: random.Random,
               lab: Any = None) -> list[str]:
    """Texts where ``feature`` does not fire: other features' windows holding none of its firing units
    (checked by encoding with ``lab`` when given)."""
    banned = _firing_units(windows)
    others = rng.sample([f for f in range(index.d_sae) if f != feature], min(index.d_sae - 1, 6 * n + 6))
    pool = [w.text for ws in feature_windows(index, layer, others).values() for w in ws
            if w.text.strip() and banned.isdisjoint(u for u in w.units if u.strip())]
    rng.shuffle(pool)
    pool = list(dict.fromkeys(pool))[:3 * n]
    if lab is not None and pool:
        acts = lab.encode(pool, layer)
        fires = np.zeros(len(pool), bool)
        hit = ((acts.indices == feature) & (acts.values > 0)).any(dim=1).numpy()
        np.logical_or.at(fires, acts.text_index.numpy(), hit)
        pool = [t for t, f in zip(pool, fires) if not f]
    return pool[:n]


def _wrong(w: Window, rng: random.Random) -> str | None:
    """The window with as many non-firing units highlighted as it has firing ones (None if it cannot be)."""
    fired = [i for i, (u, v) in enumerate(zip(w.units, w.values)) if v > 0 and u.strip()]
    quiet = [i for i, (u, v) in enumerate(zip(w.units, w.values)) if v <= 0 and u.strip()]
    if not fired or not quiet:
        return None
    marks = set(rng.sample(quiet, min(len(fired), len(quiet))))
    return "".join(f"<<{u}>>" if i in marks else u for i, u in enumerate(w.units))


def metrics(truth: list[int], said: list[int]) -> dict:
    t, s = np.asarray(truth, bool), np.asarray(said, bool)
    if not len(t):
        return {"accuracy": np.nan, "precision": np.nan, "recall": np.nan, "f1": np.nan}
    tp = int((t & s).sum())
    precision = tp / s.sum() if s.sum() else 0.0
    recall = tp / t.sum() if t.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((t == s).mean()), "precision": float(precision), "recall": float(recall),
            "f1": float(f1)}


def score(index, layer: int, explanations: dict[int, str], judge: Chat, scorers=SCORERS, n_examples: int = 10,
          per_prompt: int = 5, lab: Any = None, seed: int = 0, progress: bool | None = None) -> pd.DataFrame:
    """Detection and / or fuzzing scores of ``explanations`` ({feature: text}) of ``layer``: one row per feature
    and scorer (``COLUMNS``; ``answered`` examples the judge answered, ``failures`` prompts it did not)."""
    if isinstance(scorers, str):
        scorers = (scorers,)
    scorers = [validate.choice(s, SCORERS, "scorers") for s in scorers]
    n_examples = validate.integer(n_examples, "n_examples", minimum=1, maximum=200)
    per_prompt = validate.integer(per_prompt, "per_prompt", minimum=1, maximum=50)
    rng = random.Random(seed)
    feats = [int(f) for f in explanations]
    wins = feature_windows(index, layer, feats)
    jobs: list[tuple[int, str, list[int], list[dict]]] = []
    counts: dict[tuple[int, str], int] = {}
    for f in feats:
        ws = wins.get(f, [])[: n_examples]
        for kind in scorers:
            if kind == "detection":
                neg = _negatives(index, layer, f, wins.get(f, []), len(ws), rng, lab)
                items = [(w.text, 1) for w in ws] + [(t, 0) for t in neg]
            else:
                items = []
                for w in ws:
                    if rng.random() < 0.5:
                        items.append((w.marked(), 1))
                    else:
                        wrong = _wrong(w, rng)
                        items.append((wrong, 0) if wrong is not None else (w.marked(), 1))
            rng.shuffle(items)
            counts[(f, kind)] = len(items)
            for start in range(0, len(items), per_prompt):
                chunk = items[start:start + per_prompt]
                jobs.append((f, kind, [y for _, y in chunk],
                             messages(kind, explanations[f], [t for t, _ in chunk])))
    results = _ask(judge, jobs, progress)
    truth: dict[tuple[int, str], list[int]] = {}
    said: dict[tuple[int, str], list[int]] = {}
    failures: dict[tuple[int, str], int] = {}
    for (f, kind, ys, _), r in zip(jobs, results):
        if r.ok:
            truth.setdefault((f, kind), []).extend(ys)
            said.setdefault((f, kind), []).extend(r.value)
        else:
            failures[(f, kind)] = failures.get((f, kind), 0) + 1
    rows = []
    for f in feats:
        for kind in scorers:
            t, s = truth.get((f, kind), []), said.get((f, kind), [])
            rows.append({"layer": layer, "feature": f, "scorer": kind, **metrics(t, s), "n": counts[(f, kind)],
                         "answered": len(t), "failures": failures.get((f, kind), 0)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _ask(judge: Chat, jobs, progress):
    """Every prompt of ``jobs`` in one concurrent batch, each parsed by a parser of its own length."""
    by_size: dict[int, list[int]] = {}
    for i, (_, _, ys, _) in enumerate(jobs):
        by_size.setdefault(len(ys), []).append(i)
    results: list = [None] * len(jobs)
    for n, where in by_size.items():
        for i, r in zip(where, judge.batch([jobs[i][3] for i in where], parse=parser(n),
                                           prompt_version=PROMPT_VERSION, progress=progress, desc="score")):
            results[i] = r
    return results
