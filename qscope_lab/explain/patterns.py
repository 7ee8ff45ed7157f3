"""Token patterns a feature fires on, learnt from its windows without an LLM: a union of *elements*, each a
character class ("Chinese characters", "digits"), an exact unit (" if") or a bigram (the unit after another),
chosen greedily for precision on the windows it is learnt from; ``evaluate`` measures a pattern's precision and
recall on other windows (every unit of a window labelled fired or not by the feature's stored values)."""

from __future__ import annotations

import keyword
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .windows import Window

# class name -> words a reader (and a search) sees
CLASSES: dict[str, str] = {
    "han": "Chinese characters (Han script)",
    "zh_numeral": "Chinese numerals and number words (numbers)",
    "fullwidth_digit": "full-width digits ０-９ (numbers in Chinese text)",
    "digit": "digits 0-9 (numbers)",
    "cjk_punct": "Chinese punctuation (，。、)",
    "punct": "punctuation and symbols",
    "indent": "indentation whitespace (Python code)",
    "newline": "line breaks",
    "keyword": "Python keywords (code)",
    "upper": "capitalised words",
    "word": "English words",
    "kana": "Japanese kana",
}
_ZH_NUMERALS = set("〇零一二三四五六七八九十百千万萬亿億兩两")
_CJK_PUNCT = set("，。、；：？！「」『』（）《》〈〉【】“”‘’—…·％～")


def _is_han(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


@lru_cache(maxsize=65536)
def classes(unit: str) -> tuple[str, ...]:
    """The character classes a unit belongs to (several may hold: "万" is Han and a Chinese numeral)."""
    s = unit.strip()
    out = []
    if not unit:
        return ()
    if not s:
        if "\n" in unit:
            out.append("newline")
        elif unit.startswith((" ", "\t")):
            out.append("indent")
        return tuple(out)
    if "\n" in unit and all(not c.isalnum() for c in s):
        out.append("newline")
    if all(_is_han(c) for c in s):
        out.append("han")
    if all(c in _ZH_NUMERALS for c in s):
        out.append("zh_numeral")
    if all("０" <= c <= "９" for c in s):
        out.append("fullwidth_digit")
    if s.isascii() and s.isdigit():
        out.append("digit")
    if all(c in _CJK_PUNCT for c in s):
        out.append("cjk_punct")
    elif all(unicodedata.category(c)[0] in "PS" for c in s):
        out.append("punct")
    if s.isascii() and keyword.iskeyword(s):
        out.append("keyword")
    if s.isascii() and s.isalpha():
        out.append("upper" if s[0].isupper() else "word")
    if all(0x3040 <= ord(c) <= 0x30FF for c in s):
        out.append("kana")
    return tuple(out)


@dataclass(frozen=True)
class Element:
    """One part of a pattern: ``("class", name)``, ``("unit", text)`` or ``("bigram", (before, text))``."""

    kind: str
    value: Any

    def describe(self) -> str:
        if self.kind == "class":
            return CLASSES[str(self.value)]
        if self.kind == "unit":
            return repr(str(self.value))
        pair: tuple = self.value
        return f"{pair[1]!r} after {pair[0]!r}"


def _keys(units: list[str], i: int) -> list[Element]:
    u = units[i]
    keys = [Element("class", c) for c in classes(u)]
    if u.strip() or u:
        keys.append(Element("unit", u))
    if i > 0:
        keys.append(Element("bigram", (units[i - 1], u)))
    return keys


def _matches(windows: list[Window]) -> tuple[list[list[Element]], np.ndarray]:
    keys, labels = [], []
    for w in windows:
        for i in range(len(w.units)):
            if not w.units[i]:
                continue
            keys.append(_keys(w.units, i))
            labels.append(w.values[i] > 0)
    return keys, np.asarray(labels, bool)


def learn(windows: list[Window], max_elements: int = 6, min_precision: float = 0.75) -> list[Element]:
    """A pattern (a union of elements) for the fired units of ``windows``: elements by precision on them
    (smoothed: tp / (tp + fp + 1)) times the fired units they cover, each kept while it adds covered firings at
    ``min_precision`` or better; the single best element when none reaches it."""
    keys, labels = _matches(windows)
    if not labels.any():
        return []
    tp: Counter = Counter()
    fp: Counter = Counter()
    for ks, y in zip(keys, labels):
        for k in ks:
            (tp if y else fp)[k] += 1
    cands = [(k, tp[k], fp[k]) for k in tp]

    def quality(c):
        k, t, f = c
        p = t / (t + f + 1)
        bonus = 1.15 if k.kind == "class" else 1.0 if k.kind == "unit" else 0.9  # general elements hold out better
        return p * p * t * bonus

    cands.sort(key=quality, reverse=True)
    chosen: list[Element] = []
    covered = np.zeros(len(labels), bool)
    for k, t, f in cands:
        if len(chosen) >= max_elements:
            break
        if t / (t + f + 1) < min_precision or t < 2:
            continue
        hit = np.fromiter((k in ks for ks in keys), bool, len(keys))
        gain = int((hit & labels & ~covered).sum())
        if gain < max(1, int(0.05 * labels.sum())) and chosen:
            continue
        chosen.append(k)
        covered |= hit
    if not chosen and cands:
        chosen = [max(cands, key=lambda c: (c[1] / (c[1] + c[2] + 1), c[1]))[0]]
    return chosen


def evaluate(pattern: list[Element], windows: list[Window]) -> dict:
    """Precision and recall of ``pattern`` over every unit of ``windows`` (fired: the feature's value > 0),
    with the counts: ``{"precision", "recall", "f1", "matched", "fired", "units"}`` (precision None when
    nothing matched, recall None when nothing fired)."""
    keys, labels = _matches(windows)
    chosen = set(pattern)
    hit = np.fromiter((not chosen.isdisjoint(ks) for ks in keys), bool, len(keys))
    tp, matched, fired = int((hit & labels).sum()), int(hit.sum()), int(labels.sum())
    precision = tp / matched if matched else None
    recall = tp / fired if fired else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched, "fired": fired,
            "units": len(labels)}


def describe(pattern: list[Element]) -> str:
    """The pattern in words: classes first, then units and bigrams, comma-separated."""
    order = {"class": 0, "unit": 1, "bigram": 2}
    return ", ".join(e.describe() for e in sorted(pattern, key=lambda e: order[e.kind]))


def class_shares(windows: list[Window]) -> dict[str, float]:
    """The share of a feature's firings in each character class, from its quantile samples' centre units (the
    samples are uniform within intervals of about equal firing counts, so each stands for as many firings);
    from its top contexts when it has no samples."""
    picked = [w for w in windows if not w.top] or windows
    counts: Counter = Counter()
    n = 0
    for w in picked:
        unit = w.units[w.center] if 0 <= w.center < len(w.units) else ""
        if not unit:
            continue
        n += 1
        for c in classes(unit):
            counts[c] += 1
    return {c: counts[c] / n for c in counts} if n else {}
