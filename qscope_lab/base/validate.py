"""Checking what users pass in, once for every entry point: each check names the argument it refuses.

A wrong value must never turn into a silent wrong answer (a float layer truncated, NaN alpha blanking the output,
a bool taken for position 1), so every public call runs its arguments through these before any work starts.
TypeError means the kind of value is wrong, ValueError its value, IndexError a feature id out of range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

MAX_ABS_ALPHA = 1e4  # far beyond any useful steering strength (Qwen-Scope's demos use |alpha| <= 100)


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _kind(value) -> str:
    return type(value).__name__


def integer(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (numpy ints too, bools and floats refused) within [minimum, maximum]."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({_kind(value)})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def number(value, name: str, minimum: float | None = None, maximum: float | None = None,
           finite: bool = True) -> float:
    """A real number (bools refused), finite unless ``finite=False``, within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r} ({_kind(value)})")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, got {value:g}")
    return value


def alpha(value, name: str = "alpha") -> float:
    """A steering strength: finite, |alpha| <= MAX_ABS_ALPHA (larger values only blank the output)."""
    return number(value, name, minimum=-MAX_ABS_ALPHA, maximum=MAX_ABS_ALPHA)


def layer(value, n_layers: int, name: str = "layer") -> int:
    """A decoder-block index in 0..n_layers-1."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int in 0..{n_layers - 1}, got {value!r} ({_kind(value)})")
    if not 0 <= int(value) < n_layers:
        raise ValueError(f"{name} must be an int in 0..{n_layers - 1}, got {value!r}")
    return int(value)


def layers(value, n_layers: int, name: str = "layers") -> list[int]:
    """One layer or a non-empty list of distinct layers (order kept)."""
    if _is_int(value):
        return [layer(value, n_layers, name)]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an int or a list of ints, got {value!r} ({_kind(value)})")
    out = list(dict.fromkeys(layer(v, n_layers, name) for v in value))
    if not out:
        raise ValueError(f"{name} is empty: give at least one layer in 0..{n_layers - 1}")
    return out


def feature(value, d_sae: int, name: str = "feature") -> int:
    """A feature id of an SAE with ``d_sae`` features."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int feature id, got {value!r} ({_kind(value)})")
    if not 0 <= int(value) < d_sae:
        raise IndexError(f"{name} {value} is out of range: this SAE has {d_sae} features (0..{d_sae - 1})")
    return int(value)


def text(value, name: str = "text") -> str:
    """A non-empty str that can be encoded as UTF-8 (lone surrogates refused)."""
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} is bytes: decode it first (e.g. {name}.decode('utf-8'))")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {_kind(value)}")
    if not value:
        raise ValueError(f"{name} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{name} holds a character that is not valid Unicode text at index {err.start} "
                         f"({value[err.start]!r}, a lone surrogate)") from None
    return value


def texts(value, name: str = "texts") -> list[str]:
    """A str (one text), a sequence of str, or a DataFrame with a ``text`` column -> a non-empty list."""
    if value is None:
        raise TypeError(f"{name} must be a str or a list of str, got None")
    if isinstance(value, str):
        return [text(value, name)]
    if hasattr(value, "columns"):  # a DataFrame
        if "text" not in value.columns:
            raise ValueError(f"{name}: a DataFrame needs a 'text' column (has {list(value.columns)})")
        value = value["text"].tolist()
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} is bytes: decode it first (e.g. {name}.decode('utf-8'))")
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a str or a list of str, got {_kind(value)}")
    out = list(value)
    if not out:
        raise ValueError(f"no {name} given: need at least one text")
    return [text(t, f"{name}[{i}]") for i, t in enumerate(out)]


as_texts = texts


def labels(value, n: int, name: str = "labels") -> np.ndarray:
    """One bool label per text: bools, 0/1 numbers, or the strings true/false/0/1 (any case)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of bools or 0/1, got {_kind(value)}")
    out = []
    words = {"true": True, "false": False, "1": True, "0": False}
    for i, v in enumerate(value):
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif isinstance(v, (numbers.Real, np.number)) and v in (0, 1):
            out.append(bool(v))
        elif isinstance(v, str) and v.strip().lower() in words:
            out.append(words[v.strip().lower()])
        else:
            raise ValueError(f"{name}[{i}] is {v!r}: labels must be bools, 0/1 or true/false")
    if len(out) != n:
        raise ValueError(f"{n} texts but {len(out)} {name}")
    return np.asarray(out, dtype=bool)


def choice(value, options: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value
