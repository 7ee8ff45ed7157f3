"""The hashes a feature index relies on: the SAE fingerprint that tells suites apart, the priority that picks the
uniform quantile samples (split so a batch hashes each token's (document, position) once), the window key that
keeps a feature's top contexts distinct, and file digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def sae_fingerprint(sae) -> str:
    """A short hash of an SAE's weights (shape, a strided sample of W_enc rows, b_enc): tells two suites with the
    same name apart without reading gigabytes."""
    w = sae.W_enc
    stride = max(1, w.shape[0] // 64)
    h = hashlib.sha256(repr((tuple(w.shape), sae.k)).encode())
    h.update(w[::stride].detach().float().cpu().contiguous().numpy().tobytes())
    h.update(sae.b_enc.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def priority(document: np.ndarray, position: np.ndarray, feature: np.ndarray, seed: int) -> np.ndarray:
    """A splitmix64 hash of (document, position, feature): the key of the uniform quantile samples."""
    return priority_at(position_key(document, position), feature, seed)


def position_key(document: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The (document, position) part of ``priority``: computed once per token for all its features."""
    return (document.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (position.astype(np.uint64) << np.uint64(40))


def priority_at(key: np.ndarray, feature: np.ndarray, seed: int) -> np.ndarray:
    """``priority`` of ``feature`` at positions whose ``position_key`` is ``key``."""
    x = key ^ (feature.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93) + np.uint64(seed))
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def window_keys(tokens: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of token keys (``[n, 2w + 1]``: ``core.tokens.TokenKeys`` of a window, or its raw
    ids; keys < 0, whitespace and padding, left out): two top contexts of a feature with the same hash show the
    same text, so only the stronger is kept. A function of the window alone: a partial read back from disk, or
    merged from another worker, gets the same hashes."""
    x = np.full(len(tokens), 0x243F6A8885A308D3, np.uint64)
    for column in np.asarray(tokens, np.int64).T:
        y = (x ^ column.astype(np.uint64)) * np.uint64(0x100000001B3)  # FNV-style over whole keys
        y ^= y >> np.uint64(29)
        x = np.where(column < 0, x, y)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(32))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
