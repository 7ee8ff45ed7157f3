"""What every qscope-lab widget shares: its front-end files, an error line, a busy flag, binary arrays.

Front-end code lives in real files under ``widgets/`` (in a wheel: ``qscope_lab/_widgets``): ``common.js`` is
prepended to each component's module, so helpers are written once. Errors raised while a widget works are shown
inside it (``error`` trait) and kept on ``last_exception``: the kernel and the widget stay usable.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

import anywidget
import numpy as np
import traitlets


def assets_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_widgets", package.parent / "widgets"):
        if (candidate / "common.js").is_file():
            return candidate
    raise FileNotFoundError(f"the widgets' front-end files are missing (looked in {package / '_widgets'} and "
                            f"{package.parent / 'widgets'})")


def esm(name: str) -> str:
    folder = assets_dir()
    return (folder / "common.js").read_text(encoding="utf-8") + "\n" + (folder / name).read_text(encoding="utf-8")


def css() -> str:
    return (assets_dir() / "qscope.css").read_text(encoding="utf-8")


def f32(array) -> bytes:
    """float32 little-endian bytes: arrives in JS as a DataView (no JSON list of floats)."""
    return np.ascontiguousarray(np.asarray(array, dtype="<f4")).tobytes()


def i32(array) -> bytes:
    return np.ascontiguousarray(np.asarray(array, dtype="<i4")).tobytes()


class LabWidget(anywidget.AnyWidget):
    """Base: ``error`` (shown in the widget, empty when fine) and ``busy`` (the front-end shows a spinner)."""

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, lab, **kwargs):
        self.lab = lab
        self.last_exception: BaseException | None = None
        self.ready = False  # observers wait until the subclass has set itself up (constructor values notify too)
        super().__init__(**kwargs)

    @contextlib.contextmanager
    def working(self, what: str):
        """Run a step; an exception becomes the widget's error message instead of a dead widget. Nested steps
        report to the outermost one."""
        if getattr(self, "_depth", 0):
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

    def check_layer(self, layer: int) -> int:
        if not 0 <= int(layer) < self.lab.n_layers:
            raise ValueError(f"layer {layer} does not exist: this model has layers 0..{self.lab.n_layers - 1}")
        return int(layer)
