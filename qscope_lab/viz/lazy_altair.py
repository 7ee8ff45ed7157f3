"""altair imported when the first chart is built, not when the chart builders are imported.

altair's import costs ~2 s here (most of it jsonschema's format grammars), and the widgets import the chart
builders: ``import qscope_lab.widgets`` paid it before any chart was drawn. ``alt`` below is a stand-in
module whose first attribute access imports altair; ``on_import(fn)`` runs ``fn`` (the offline renderer and
theme, ``render.enable``) right after altair is imported, by whoever imports it, or now if it already is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types


class _Altair(types.ModuleType):
    """Forwards every attribute to the real altair, imported on first use."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("altair"), name)


alt = _Altair("altair (imported on first use)")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps altair's loader so that the callbacks run once altair's module has run."""

    def __init__(self, callbacks: list):
        self.callbacks = callbacks

    def find_spec(self, name, path=None, target=None):
        if name != "altair":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module, callbacks = spec.loader.exec_module, self.callbacks

        def exec_then_call(module):
            exec_module(module)
            for fn in callbacks:
                fn()

        spec.loader.exec_module = exec_then_call
        return spec


_pending: list = []


def on_import(fn) -> None:
    """``fn()`` once altair is imported (now, if it already is)."""
    if "altair" in sys.modules:
        fn()
        return
    _pending.append(fn)
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_pending))
