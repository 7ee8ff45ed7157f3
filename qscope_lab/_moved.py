"""Module paths from before the package was split into layers (``qscope_lab.features`` ...), kept importable.

Notebooks and scripts written against 0.1 import ``qscope_lab.features``, ``qscope_lab.classify`` and so on. A
meta-path finder answers those names with the module that now holds the code (the same module object, so
``monkeypatch`` and ``isinstance`` keep working); nothing is imported until an old name is asked for, and the
tree keeps one file per concept instead of a shim per old name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

MOVED = {
    "activations": "core.activations", "lab": "core.lab", "models": "core.models", "hub": "core.hub",
    "registry": "core.registry", "sae": "core.sae", "sae_io": "core.sae_formats", "sae_suite": "core.sae_suite",
    "steering": "core.steering", "generation": "core.generation", "reconstruction": "core.reconstruction",
    "textfiles": "core.textfiles", "features": ("analysis.features", "analysis.text_predicates"),
    "reference": "analysis.reference",
    "labels": "analysis.labels", "memory": "analysis.memory", "classify": "workflows.classify",
    "coverage": "workflows.coverage", "synthesis": "workflows.synthesis", "sae_training": "training.sae_training",
    "training_signals": ("training", "training.sasft"), "code_switch_experiment": "training.code_switch_experiment",
    "charts": "viz", "tiny": "testing.tiny", "standins": "testing.standins",
}


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        if isinstance(self.target, tuple):  # a module whose names now live in several modules
            return _Union(spec.name, self.target)
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):  # already executed; importlib has set __spec__ to the old name: undo it
        if not isinstance(module, _Union):
            module.__spec__ = self.spec


class _Union(types.ModuleType):
    """An old module whose names were split over several new ones: attribute lookups try each in turn."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name)
        self._targets = [importlib.import_module(t) for t in targets]

    def __getattr__(self, attr: str):
        for module in self._targets:
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "qscope_lab" or name not in MOVED:
            return None
        target = MOVED[name]
        target = tuple(f"qscope_lab.{t}" for t in target) if isinstance(target, tuple) else f"qscope_lab.{target}"
        return importlib.util.spec_from_loader(fullname, _Loader(target))


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
