"""The layout the README's architecture section promises, checked on the source: one hook mechanism, one
feature store class, and every ``lab`` parameter typed (the dependency the import contracts cannot see)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qscope_lab"


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "embedded/model" not in path.as_posix():
            yield path, path.read_text(encoding="utf-8")


def test_forward_hooks_are_registered_in_one_module():
    users = [p.relative_to(PACKAGE).as_posix() for p, src in _sources() if ".register_forward_hook(" in src]
    assert users == ["core/hooks.py"]


def test_one_feature_index_class():
    defined = [p.relative_to(PACKAGE).as_posix() for p, src in _sources()
               for node in ast.walk(ast.parse(src)) if isinstance(node, ast.ClassDef) and node.name == "FeatureIndex"]
    assert len(defined) == 1, defined


def test_every_lab_parameter_has_a_type():
    untyped = []
    for path, src in _sources():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                untyped += [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
                            for a in args if a.arg == "lab" and a.annotation is None]
    assert untyped == []
