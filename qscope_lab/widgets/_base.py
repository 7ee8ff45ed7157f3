"""What every qscope-lab widget shares: its front-end files, an error line, a busy flag, binary arrays, updates
without echo, and strict constructor keywords.

Front-end code lives in ES modules under ``widgets/src`` (``src/lib`` holds the shared helpers and controls),
bundled by esbuild into one module per component in ``widgets/dist`` (committed; in a wheel:
``qscope_lab/_widgets/dist``). ``_esm`` and ``_css`` are the built files' paths, so with ``ANYWIDGET_HMR=1``
anywidget reloads a widget's front-end when ``npm run watch`` rebuilds it (see ``widgets/README.md``).

Errors raised while a widget works are shown inside it (``error`` trait) and kept on ``last_exception``: the
kernel and the widget stay usable.

Observers that run the widget's work are declared with :func:`reacts` instead of ``traitlets.observe``: they
are skipped while the widget is *quiet* — during construction (constructor values notify too, before the
subclass is set up) and inside ``with self.quietly():`` (the widget setting its own traits: reverting a bad
value, loading stored state). The front-end still receives every value; links and other observers still fire.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import traceback
from pathlib import Path

import anywidget
import numpy as np
import traitlets


def assets_dir() -> Path:
    """The folder of the built front-end files (``dist``)."""
    package = Path(__file__).resolve().parent.parent
    candidates = (package / "_widgets" / "dist", package.parent / "widgets" / "dist")
    for candidate in candidates:
        if (candidate / "qscope.css").is_file():
            return candidate
    raise FileNotFoundError("the widgets' built front-end files are missing (looked in "
                            + " and ".join(str(c) for c in candidates) + "); run `npm run build` in widgets/")


def esm(name: str) -> Path:
    """The built module of one component (``"card.js"``): a path, so anywidget can watch it."""
    path = assets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `npm run build` in widgets/")
    return path


def css() -> Path:
    return assets_dir() / "qscope.css"


def f32(array) -> bytes:
    """float32 little-endian bytes: arrives in JS as a DataView (no JSON list of floats)."""
    return np.ascontiguousarray(np.asarray(array, dtype="<f4")).tobytes()


def i32(array) -> bytes:
    return np.ascontiguousarray(np.asarray(array, dtype="<i4")).tobytes()


def reject_unknown_kwargs(widget: traitlets.HasTraits, kwargs: dict) -> None:
    """TypeError naming the keywords that are neither a constructor parameter nor a trait of ``widget``
    (traitlets would only warn, and the typo would silently do nothing)."""
    unknown = [key for key in kwargs if not widget.has_trait(key)]
    if not unknown:
        return
    cls = type(widget)
    known = [name for name, p in inspect.signature(cls.__init__).parameters.items()
             if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    known += [name for name in widget.trait_names() if not name.startswith("_") and name not in known]
    message = f"{cls.__name__}() got unexpected keyword argument(s): {', '.join(map(repr, unknown))}"
    guesses = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
    guesses = {key: found[0] for key, found in guesses.items() if found}
    if len(unknown) == 1 and guesses:
        message += f" (did you mean {guesses[unknown[0]]!r}?)"
    elif guesses:
        message += " (did you mean " + ", ".join(f"{v!r} for {k!r}" for k, v in guesses.items()) + "?)"
    raise TypeError(message)


def reacts(*names: str):
    """``traitlets.observe(*names)`` for a :class:`LabWidget` method that is skipped while the widget is quiet
    (being constructed, or inside ``self.quietly()``)."""
    def decorate(method):
        @functools.wraps(method)
        def handler(self, change):
            if not self._quiet:
                return method(self, change)
            return None
        return traitlets.observe(*names)(handler)
    return decorate


class LabWidget(anywidget.AnyWidget):
    """Base: ``error`` (shown in the widget, empty when fine) and ``busy`` (the front-end shows a spinner)."""

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, lab, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        self.lab = lab
        self.last_exception: BaseException | None = None
        self._quiet = 0  # > 0: @reacts observers skip (see quietly)
        self._depth = 0  # nesting of working() steps
        with self.quietly():  # the constructor's values notify before the subclass has set itself up
            super().__init__(**kwargs)

    @contextlib.contextmanager
    def quietly(self):
        """Set traits without the widget reacting to them: its :func:`reacts` observers skip (nestable). The
        front-end still gets the values."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    @contextlib.contextmanager
    def working(self, what: str):
        """Run a step; an exception becomes the widget's error message instead of a dead widget. Nested steps
        report to the outermost one."""
        if self._depth:
            yield  # the outer step catches and reports
            return
        self._depth, self.busy = 1, True
        try:
            yield
            self.error = ""
        except Exception as err:  # shown to the user; the traceback stays on last_exception
            self.last_exception = err
            self.last_traceback = traceback.format_exc()
            self.error = f"{what}: {err}"
        finally:
            self._depth, self.busy = 0, False
