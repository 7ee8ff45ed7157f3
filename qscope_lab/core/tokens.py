"""Readable tokens: a Han character split over byte-level tokens is shown whole, its token boundaries kept.

Each byte token of such a character decodes alone to U+FFFD. ``lab.token_pieces`` puts the whole character on
the group's first token and '' on the others; ``groups`` adds, per token, where its group starts, so a table
cell or a highlighted context token can show the whole character and a hover can say "byte token 2 of 3".
``raw_label`` names a lone byte token by its bytes (a next-token table cannot join what is not generated yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

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


def raw_label(lab, token_id: int) -> str:
    """The token as shown on its own; a byte fragment of a character as its bytes, e.g. ``⟨e7 8c⟩``."""
    text = lab.token_strings([token_id])[0]
    if REPLACEMENT not in text:
        return text
    piece = lab.tokenizer.convert_ids_to_tokens([int(token_id)])[0] or ""
    table = _byte_of()
    if piece and all(ch in table for ch in piece):
        return "⟨" + " ".join(f"{table[ch]:02x}" for ch in piece) + "⟩"
    return text


def join_split_characters(lab, ids: Sequence[int], max_group: int = 4) -> list[str]:
    """``lab.token_strings(ids)`` with each character split over up to ``max_group`` byte-level tokens shown
    whole on its first token and '' on the others (one entry per token, so per-token flags still line up)."""
    ids = list(ids)
    out = lab.token_strings(ids)
    start = 0
    while start < len(ids):
        if REPLACEMENT not in out[start]:
            start += 1
            continue
        for end in range(start + 2, min(start + max_group, len(ids)) + 1):
            joined = lab.tokenizer.decode(ids[start:end])
            if REPLACEMENT not in joined:
                out[start:end] = [joined] + [""] * (end - start - 1)
                start = end
                break
        else:
            start += 1
    return out


def groups(lab, ids: Sequence[int]) -> tuple[list[str], list[int]]:
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
