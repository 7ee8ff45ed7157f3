"""Readable tokens: a Han character split over byte-level tokens is shown whole, its token boundaries kept.

Each byte token of such a character decodes alone to U+FFFD. ``join_fragments`` (the one joining function:
``lab.token_pieces`` and the feature index's reader both call it) puts the whole character on the group's first
token and '' on the others; ``groups`` adds, per token, where its group starts, so a table
cell or a highlighted context token can show the whole character and a hover can say "byte token 2 of 3".
``raw_label`` names a lone byte token by its bytes (a next-token table cannot join what is not generated yet).
``TokenKeys`` gives each token a key of the text it shows, so that two windows that read the same (" Th" and "Th"
at a document's start) are known as one.
"""

from __future__ import annotations

import hashlib
import unicodedata
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .protocol import LabLike

REPLACEMENT = "\ufffd"


@lru_cache(maxsize=1)
def _byte_of() -> dict[str, int]:
    """GPT-2 / Qwen byte-level alphabet: the printable character that stands for each byte, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def piece_bytes(lab: LabLike, token_id: int) -> bytes | None:
    """A byte-level token's own bytes (its piece read through the byte alphabet); None if it is not one."""
    piece = lab.tokenizer.convert_ids_to_tokens([int(token_id)])[0] or ""
    table = _byte_of()
    return bytes(table[ch] for ch in piece) if piece and all(ch in table for ch in piece) else None


def byte_label(raw: bytes) -> str:
    """Bytes as a token label: ``⟨e7 8c⟩``."""
    return "⟨" + " ".join(f"{b:02x}" for b in raw) + "⟩"


def raw_label(lab: LabLike, token_id: int) -> str:
    """The token as shown on its own; a byte fragment of a character as its bytes, e.g. ``⟨e7 8c⟩``."""
    text = lab.token_strings([token_id])[0]
    raw = piece_bytes(lab, token_id) if REPLACEMENT in text else None
    return text if raw is None else byte_label(raw)


def fragment_bytes(lab: LabLike, ids: Sequence[int]) -> list[bytes | None]:
    """Per token, its bytes if it is a fragment of a character (alone it decodes to U+FFFD), else None: what a
    feature index stores beside the token strings, so that its reader joins characters without the tokenizer."""
    ids = [int(i) for i in ids]
    return [piece_bytes(lab, i) if REPLACEMENT in s else None for i, s in zip(ids, lab.token_strings(ids))]


def join_fragments(strings: Sequence[str], raw: Sequence[bytes | None], max_group: int = 4
                   ) -> tuple[list[str], list[int]]:
    """``groups`` without a tokenizer: (pieces, starts) from each token's string and, for a fragment, its bytes
    (``fragment_bytes``); a run of up to ``max_group`` tokens whose bytes decode together is one character."""
    pieces, starts = list(strings), list(range(len(strings)))
    start = 0
    while start < len(pieces):
        if raw[start] is None:
            start += 1
            continue
        for end in range(start + 2, min(start + max_group, len(pieces)) + 1):
            try:
                text = b"".join(r if r is not None else s.encode() for r, s in
                                zip(raw[start:end], strings[start:end])).decode("utf-8")
            except UnicodeDecodeError:
                continue
            pieces[start:end] = [text] + [""] * (end - start - 1)
            starts[start:end] = [start] * (end - start)
            start = end
            break
        else:
            start += 1
    return pieces, starts


def readable(strings: Sequence[str], raw: Sequence[bytes | None], center: int) -> tuple[list[str], str, str]:
    """A window of tokens shown as the reference contexts are: (tokens, each split character whole on the first
    token of its run, the centre's own on the centre token, '' on the rest; the centre token: its whole
    character, or its bytes ``⟨e7 8c⟩`` when the window holds only part of it; the hover text,
    'byte token 2 of 3 of 猫' or ''). Any other character the window's edge cuts is left out ('' on its
    tokens), as the reference contexts leave it out: no U+FFFD in the text."""
    pieces, starts = join_fragments(strings, raw)
    token = whole(pieces, starts, center)
    own = raw[center]
    if own is not None and starts[center] == center and pieces[center] == strings[center]:
        token = byte_label(own)  # not joined: a character cut by the window's edge
    shown = ["" if r is not None and s == i and p == t else p  # a fragment that joined nothing
             for i, (p, s, r, t) in enumerate(zip(pieces, starts, raw, strings))]
    shown[starts[center]], shown[center] = "", token
    return shown, token, hover(pieces, starts, center)


def groups(lab: LabLike, ids: Sequence[int]) -> tuple[list[str], list[int]]:
    """``(pieces, starts)``: ``lab.token_pieces(ids)`` and, per token, the index of the first token of the
    character it belongs to (its own index for an ordinary token)."""
    ids = list(ids)
    pieces = lab.token_pieces(ids)
    raw = lab.token_strings(ids)
    starts, current = [], 0
    for i, (piece, alone) in enumerate(zip(pieces, raw)):
        if piece != "" or REPLACEMENT not in alone or i == 0:
            current = i
        starts.append(current)
    return pieces, starts


def whole(pieces: list[str], starts: list[int], i: int) -> str:
    """Token ``i`` shown whole: the character its group forms, or the token itself."""
    return pieces[starts[i]]


def hover(pieces: list[str], starts: list[int], i: int) -> str:
    """What a hover says about token ``i``'s boundaries: '' for an ordinary token, else 'byte token 2 of 3 of 猫'."""
    start = starts[i]
    size = 1
    while start + size < len(starts) and starts[start + size] == start:
        size += 1
    return "" if size == 1 else f"byte token {i - start + 1} of {size} of {pieces[start]}"


def readable_tokens(lab: LabLike, token_ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Per text, each token as a reader sees it: a character split over byte-level tokens (each alone decodes
    to U+FFFD) shown whole on every one of its tokens (``core.tokens.groups``), other tokens as they are."""
    out = []
    for ids in token_ids:
        pieces, starts = groups(lab, ids)
        out.append([pieces[s] for s in starts])
    return out


SKIP = -1  # the key of a token that shows nothing (whitespace; -1 also marks a window's padding)


def visible(text: str) -> str:
    """The form in which two texts read the same: NFKC, whitespace removed."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def text_key(string: str, raw: bytes | None) -> int:
    """A stable 63-bit key of what a token shows: its text under NFKC with whitespace removed (so " Th" and "Th"
    agree), a fragment of a character by its bytes, ``SKIP`` for whitespace alone. The same in every process."""
    if raw is not None:
        data = b"\x01" + raw
    else:
        text = visible(string)
        if not text:
            return SKIP
        data = b"\x00" + text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


class TokenKeys:
    """Token ids -> ``text_key`` (ids < 0 -> ``SKIP``), each id decoded once: one tokenizer's, through its Lab."""

    def __init__(self, lab: LabLike):
        self._lab = lab
        self._ids = np.zeros(0, np.int64)  # sorted
        self._keys = np.zeros(0, np.int64)

    @classmethod
    def of(cls, lab: LabLike) -> TokenKeys:
        """The Lab's own (kept while the Lab lives)."""
        keys = _KEYS.get(lab)
        if keys is None:
            keys = _KEYS[lab] = cls(lab)
        return keys

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        seen = np.unique(ids[ids >= 0])
        new = seen[~np.isin(seen, self._ids)]
        if len(new):
            listed = new.tolist()
            keys = [text_key(s, r) for s, r in zip(self._lab.token_strings(listed), fragment_bytes(self._lab, listed))]
            ids_all = np.concatenate([self._ids, new])
            order = np.argsort(ids_all, kind="stable")
            self._ids, self._keys = ids_all[order], np.concatenate([self._keys, np.array(keys, np.int64)])[order]
        at = np.clip(np.searchsorted(self._ids, ids), 0, max(len(self._ids) - 1, 0))
        return np.where(ids >= 0, self._keys[at] if len(self._ids) else SKIP, SKIP)


_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
