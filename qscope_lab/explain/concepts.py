"""How much a feature *is* what a query names, measured on reference documents rather than read from its words.

A query such as "numbers" or "Python code" names a set of tokens more than a set of words: the reference texts
(by default the held-out English, Chinese and Python documents shipped with the package, ``embedded/reference.jsonl``;
plain text, so they serve any Qwen model) are encoded once per layer, and every token gets *facets*, each with the
words a reader would use for it:

- its character class (``patterns.CLASSES``: "digits 0-9 (numbers)", "Chinese characters (Han script)"...);
- its document's language (``profile.LANGUAGE_WORDS``: "Chinese text", "Python code", "English text");
- its document's source name ("python-stdlib" -> "python stdlib");
- its own text (the token " def" is the word "def").

A facet matches a query as well as the query names it (``words.naming``: over the facet's names, the best
product of the share of the query's words the name holds and the share of the name's words the query holds:
"Python code" names the Python documents, a quarter names Python keywords and does not name indentation, though
indentation is mostly found in Python code). For each matching facet, a feature's
firings on the reference give its precision (the share of its firings on the facet's tokens) and recall (the share
of the facet's tokens it fires on); the feature's relevance is the sum over matching facets of that match times
F-beta with beta = 1/6 (precision weighs 36 times recall: a search wants features that fire on *that*, then the
broadest of them). Nothing maps queries to features: the facets' names are the explainers' own vocabulary, and
the numbers are measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from ..core.tokens import fragment_bytes, join_fragments
from . import patterns, profile
from .words import CONCEPT_WORDS, naming, words

BETA2 = 1 / 36  # F-beta's beta squared: precision weighs 1/BETA2 times recall
MAX_LENGTH = 256  # tokens per reference text
_CACHE: dict = {}
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CODE = re.compile(r"^\s*(def |class |import |from \S+ import|return\b|if .*:$|for .* in .*:$|#)", re.M)


def guess_language(text: str) -> str:
    """"zh" (Han in over a fifth of the characters that are not spaces), "code" (Python-looking lines in
    over a sixth of the lines) or "en": for reference texts given without a language."""
    chars = [c for c in text if not c.isspace()]
    if chars and len(_HAN.findall(text)) / len(chars) > 0.2:
        return "zh"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and len(_CODE.findall(text)) / len(lines) > 1 / 6:
        return "code"
    return "en"


def reference_documents(reference=None) -> list[dict]:
    """``[{"text", "source", "lang"}, ...]`` from ``reference``: None (the shipped held-out documents), a list of
    str, or a list of dicts with "text" and optionally "source" and "lang" (guessed when absent)."""
    if reference is None:
        from .. import embedded

        return embedded.reference_documents()
    if isinstance(reference, (str, bytes)) or not hasattr(reference, "__iter__"):
        raise TypeError(f"reference must be a list of texts or of dicts with 'text', got {type(reference).__name__}")
    docs = []
    for i, item in enumerate(reference):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise ValueError(f"reference[{i}] must be a non-empty str or a dict with a non-empty 'text'")
        text = item["text"]
        docs.append({"text": text, "source": str(item.get("source") or "reference"),
                     "lang": str(item.get("lang") or guess_language(text))})
    if not docs:
        raise ValueError("reference is empty: pass some texts, or None for the shipped documents")
    return docs


@dataclass
class Facets:
    """One layer's reference: per counted token, the features that fired (``rows`` into ``features``) and its
    facets; ``firings`` per feature; the measured (precision, recall) per facet, cached."""

    d_sae: int
    features: np.ndarray  # fired feature of each (token, k) firing, flattened
    token: np.ndarray  # the token row of each firing
    firings: np.ndarray  # [d_sae] counted firings per feature
    units: list[str]  # per counted token: its readable unit
    document: np.ndarray  # per counted token: its reference document
    masks: dict[str, tuple[tuple[str, ...], np.ndarray]]  # facet -> (its names, bool mask over counted tokens)
    measured: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def measure(self, name: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(precision, recall) of every feature on the tokens of ``mask``."""
        if name not in self.measured:
            hits = np.bincount(self.features, weights=mask[self.token].astype(np.float64), minlength=self.d_sae)
            precision = hits / np.maximum(self.firings, 1)
            recall = hits / max(int(mask.sum()), 1)
            self.measured[name] = (precision, recall)
        return self.measured[name]


def _words_of(text: str) -> set[str]:
    return set(words(text))


def _facet_names(name: str, text: str) -> tuple[str, ...]:
    """A facet's names: what users type for it (``words.CONCEPT_WORDS``), else its description without the
    context in brackets ("indentation whitespace (Python code)" names indentation, not Python code)."""
    return tuple(CONCEPT_WORDS.get(name, ())) or (re.sub(r"\([^)]*\)", " ", text),)


def facets(lab: LabLike, layer: int, reference=None) -> Facets:
    """The reference encoded at ``layer`` with its facets (cached per Lab, SAE suite and reference)."""
    docs = reference_documents(reference)
    digest = hashlib.blake2b(digest_size=16)
    for d in docs:
        digest.update(f"{d['source']}\0{d['lang']}\0{d['text']}\0".encode())
    key = (lab.name, getattr(lab.saes, "name", None), layer, digest.hexdigest())
    if key in _CACHE:
        return _CACHE[key]
    acts = lab.encode([d["text"] for d in docs], layer, batch_size=16, max_length=MAX_LENGTH)
    counted = acts.mask.bool().numpy()
    units: list[str] = []
    documents: list[int] = []
    langs: list[str] = []
    sources: list[str] = []
    for number, (doc, ids) in enumerate(zip(docs, acts.token_ids)):
        pieces, starts = join_fragments(lab.token_strings(ids), fragment_bytes(lab, ids))
        units += [pieces[s] for s in starts]  # a byte token stands for its whole character
        documents += [number] * len(ids)
        langs += [doc["lang"]] * len(ids)
        sources += [doc["source"]] * len(ids)
    keep = np.flatnonzero(counted)
    units = [units[i] for i in keep]
    lang = np.asarray(langs, dtype=object)[keep]
    source = np.asarray(sources, dtype=object)[keep]
    values = acts.values.numpy()[keep]
    indices = acts.indices.numpy()[keep]
    fired = values > 0
    token = np.broadcast_to(np.arange(len(keep))[:, None], fired.shape)[fired]
    features = indices[fired].astype(np.int64)
    masks: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    unit_classes = [patterns.classes(u) for u in units]
    for c, text in patterns.CLASSES.items():
        member = np.fromiter((c in k for k in unit_classes), bool, len(units))
        masks[f"class:{c}"] = (_facet_names(f"class:{c}", text), member)
    for lng in sorted(set(lang.tolist())):
        masks[f"lang:{lng}"] = (_facet_names(f"lang:{lng}", profile.LANGUAGE_WORDS.get(lng, lng)), lang == lng)
    for src in sorted(set(source.tolist())):
        masks[f"source:{src}"] = ((re.sub(r"[-_./]+", " ", src),), source == src)
    out = Facets(acts.d_sae, features, token, np.bincount(features, minlength=acts.d_sae).astype(np.float64),
                 units, np.asarray(documents, np.int64)[keep], masks)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = out
    return out


def relevance(lab: LabLike, layers: list[int], query_words: list[str], reference=None
              ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Per feature of ``layers`` (layer-major): relevance to the query, and the facet that gave most of it with
    that facet's precision and recall (``""`` and NaN where no facet matched)."""
    q = set(query_words)
    parts, best_name, best_p, best_r = [], [], [], []
    for layer in layers:
        ref = facets(lab, layer, reference)
        score = np.zeros(ref.d_sae)
        top = np.zeros(ref.d_sae)
        name = np.full(ref.d_sae, "", dtype=object)
        prec = np.full(ref.d_sae, np.nan)
        rec = np.full(ref.d_sae, np.nan)
        candidates = dict(ref.masks)
        for w in q:  # the query's words as tokens of their own: "def", "the", "，"
            key = f"token:{w}"
            if key not in candidates:
                mask = np.fromiter((w in _words_of(u) for u in ref.units), bool, len(ref.units))
                if mask.any():
                    candidates[key] = ((w,), mask)
        for facet, (names, mask) in candidates.items():
            share = naming(q, names)
            if not share or not mask.any():
                continue
            p, r = ref.measure(facet, mask)
            f = (1 + BETA2) * p * r / np.maximum(BETA2 * p + r, 1e-12)
            part = share * f
            score += part
            better = part > top
            top[better], name[better], prec[better], rec[better] = part[better], facet, p[better], r[better]
        parts.append(score)
        best_name += name.tolist()
        best_p.append(prec)
        best_r.append(rec)
    return np.concatenate(parts), best_name, np.concatenate(best_p), np.concatenate(best_r)
