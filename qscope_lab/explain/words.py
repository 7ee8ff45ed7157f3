"""The words of a query and of a feature's text, shared by search (BM25 tokens) and concepts (facet words):
lower-cased, stop words dropped, plurals cut, each Han character a word; the names users type for each character
class and language a feature's firings are counted in; and how well a query names a facet."""

from __future__ import annotations

import re

_STOP = {"the", "of", "a", "an", "and", "or", "in", "on", "at", "to", "for", "is", "are", "with", "by", "that",
         "this", "it", "as", "from", "be", "kinds", "all", "mostly", "text", "firings", "corpus", "fires", "features",
         "feature", "tokens", "token"}
_WORD = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_\W]|[\u3400-\u9fff\uf900-\ufaff]", re.I)
CONCEPT_WORDS = {  # the names a user types for each character class and language a feature's firings are counted in
    "class:han": ("Chinese characters", "Han characters", "Han script", "hanzi", "Chinese"),
    "class:zh_numeral": ("Chinese numerals", "Chinese number words", "numbers", "numerals"),
    "class:fullwidth_digit": ("full-width digits", "fullwidth digits", "digits", "numbers", "numerals"),
    "class:digit": ("digits", "numbers", "numerals"),
    "class:cjk_punct": ("Chinese punctuation",),
    "class:punct": ("punctuation", "symbols"),
    "class:indent": ("indentation", "indentation whitespace", "whitespace"),
    "class:keyword": ("Python keywords", "keywords"),
    "class:newline": ("newlines", "line breaks"),
    "class:word": ("English words",),
    "class:upper": ("capitalised words", "capitalized words", "capitals"),
    "class:kana": ("Japanese kana", "kana", "Japanese"),
    "lang:zh": ("Chinese text", "Chinese"),
    "lang:en": ("English text", "English"),
    "lang:code": ("Python code", "Python", "code", "source code", "programming"),
}


def words(text: str) -> list[str]:
    """Lower-cased words (ASCII runs, each other letter alone: a Han character is a word), stop words dropped,
    a plural 's' cut ("numbers" -> "number")."""
    out = []
    for w in _WORD.findall(str(text).lower()):
        if w in _STOP:
            continue
        if len(w) > 3 and w.isascii() and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def naming(query_words, names) -> float:
    """How well a query names a facet known by ``names`` (phrases): over its names, the best product of the share
    of the query's words the name holds and the share of the name's words the query holds (both must hold: a
    query names a facet when it says all of the name and nothing else). "Python code" names Python code (1.0),
    half names the token "code", a quarter Python keywords, and does not name indentation at all, though
    indentation is mostly found in Python code."""
    q = set(query_words)
    best = 0.0
    for name in names:
        n = set(words(name)) if isinstance(name, str) else set(name)
        if q and n:
            shared = len(q & n)
            best = max(best, shared * shared / (len(q) * len(n)))
    return best
