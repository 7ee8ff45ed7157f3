"""One rule for progress bars: shown for long work (more than ``THRESHOLD`` items) unless the caller says."""

from __future__ import annotations

THRESHOLD = 500  # texts; below it a bar only flickers


def bar(total: int, progress: bool | None = None, desc: str = "", threshold: int = THRESHOLD):
    """A tqdm bar (notebook or terminal) over ``total`` items: on if ``progress`` is True, off if False, and
    for None on when ``total`` exceeds ``threshold``. Use it as a context manager."""
    from tqdm.auto import tqdm

    show = total > threshold if progress is None else bool(progress)
    return tqdm(total=total, disable=not show, desc=desc, leave=False)
