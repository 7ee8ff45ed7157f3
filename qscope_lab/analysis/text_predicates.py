"""What a text or a token is, judged from its characters: Han script, digits, code-switching, repetition.

The workflows, the model card and the training demo all ask these questions; they live once, here, and need no
model. ``is_han`` / ``is_digit`` take one token's string, the others whole texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_FOREIGN = {"en": _CJK, "code": _CJK, "zh": _LATIN}


def is_cjk_char(ch: str) -> bool:
    """A CJK unified ideograph (the basic block or extension A)."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def is_han(token: str) -> bool:
    """True if the token contains a CJK unified ideograph and no Latin letter."""
    return any(is_cjk_char(ch) for ch in token) and not any(
        ch.isascii() and ch.isalpha() for ch in token)


def is_digit(token: str) -> bool:
    stripped = token.strip()
    return bool(stripped) and stripped.isdigit()


def han_share(text: str) -> float:
    """Share of non-space characters that are CJK ideographs or CJK / full-width punctuation."""
    chars = [c for c in text if not c.isspace()]
    han = [c for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef"]
    return len(han) / max(len(chars), 1)


def code_switched(text: str, target: str = "en", min_chars: int = 1) -> bool:
    """True if ``text`` holds at least ``min_chars`` characters of a script foreign to ``target``: CJK
    ideographs for ``"en"`` (and ``"code"``), Latin letters for ``"zh"``."""
    if target not in _FOREIGN:
        raise ValueError(f"target must be one of {sorted(_FOREIGN)}, got {target!r}")
    return len(_FOREIGN[target].findall(text)) >= min_chars


def code_switch_ratio(texts: Sequence[str] | str, target: str = "en", min_chars: int = 1) -> float:
    """Code-switch ratio (the SASFT paper's metric): the share of answers, to prompts in language ``target``,
    that contain another script at all (``code_switched``). An answer with one Chinese character counts as
    switched; for the amount of foreign text use ``foreign_share`` (``features.han_share`` for English)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    return float(np.mean([code_switched(t, target, min_chars) for t in texts]))


def foreign_share(texts: Sequence[str] | str, target: str = "en") -> float:
    """Mean over answers of the share of non-space characters in a script foreign to ``target``."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    shares = []
    for text in texts:
        chars = [c for c in text if not c.isspace()]
        shares.append(len(_FOREIGN[target].findall(text)) / max(len(chars), 1))
    return float(np.mean(shares)) if shares else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """1 - distinct / total word n-grams (characters when the text has too few words, e.g. Chinese):
    0 for no repeated n-gram, near 1 for a loop."""
    units = text.split()
    if len(units) < n + 1:
        units = [c for c in text if not c.isspace()]
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


