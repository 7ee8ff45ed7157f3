"""The one timing rule of the benchmarks: medians of interleaved rounds (a, b, a, b, ...), so background load on a
shared machine hits every method alike and the ratios printed side by side stay fair."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def medians(*fns: Callable[[], object], repeats: int, warmup: int = 1,
            between: Callable[[], object] | None = None) -> list[float]:
    """Median seconds of each fn over ``repeats`` interleaved rounds, after ``warmup`` calls each; ``between``
    runs after every call, untimed (e.g. clearing a cache)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
            if between:
                between()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
            if between:
                between()
    return [statistics.median(ts) for ts in times]
