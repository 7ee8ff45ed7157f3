"""The words of a query and of a feature's text, shared by search (BM25 tokens) and concepts (facet words):
lower-cased, stop words dropped, plurals cut, each Han character a word; and what users type for each
character class and language a feature's firings are counted in."""

from __future__ import annotations

import re

_STOP = {"the", "of", "a", "an", "and", "or", "in", "on", "at", "to", "for", "is", "are", "with", "by", "that",
         "this", "it", "as", "from", "be", "kinds", "all", "mostly", "text", "firings", "corpus", "fires", "features",
         "feature", "tokens", "token"}
_WORD = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_\W]|[\u3400-\u9fff\uf900-\ufaff]", re.I)
CONCEPT_WORDS = {  # what a user types for each character class and language a feature's firings are counted in
    "class:han": "chinese han character hanzi script",
    "class:zh_numeral": "chinese number numeral",
    "class:fullwidth_digit": "digit number numeral fullwidth",
    "class:digit": "digit number numeral",
    "class:cjk_punct": "chinese punctuation",
    "class:punct": "punctuation symbol",
    "class:indent": "indentation whitespace python code",
    "class:keyword": "python keyword code",
    "class:newline": "newline line break",
    "class:word": "english word",
    "class:upper": "capital capitalised capitalized word",
    "class:kana": "japanese kana",
    "lang:zh": "chinese",
    "lang:en": "english",
    "lang:code": "python code programming",
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
