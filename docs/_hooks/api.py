"""MkDocs hook: the API reference, generated from the package so that no public name is left out.

One page per layer of qscope_lab (a top-level module or subpackage), rendering every public module in it with
mkdocstrings (its docstrings as written); api/index.md tables every name of ``qscope_lab.__all__`` and of each
subpackage's ``__all__`` with a link to where it is documented. A module or name added to the package appears
on the next build without touching the docs; a name starting with "_" is private and left out.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qscope_lab"
# the pages in the nav, top of the architecture first (docs/architecture.md); any other layer follows by name
ORDER = ["lab", "widgets", "workflows", "training", "analysis", "explain", "steering", "methods", "index", "core",
         "saes", "base", "viz", "embedded", "testing", "teaching", "cli"]


def page(layer: str) -> str:
    """The page of a layer (not api/index.md, which is the overview, though qscope_lab.index is a layer)."""
    return f"api/qscope_lab.{layer}.md"


def public(name: str) -> bool:
    return not name.startswith("_")


def layers() -> list[str]:
    """The top-level modules and subpackages of qscope_lab, in ORDER."""
    found = [p.stem for p in PACKAGE.glob("*.py") if public(p.stem)]
    found += [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and public(p.name)]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def modules(layer: str) -> list[str]:
    """Every public module under a layer, as dotted names (the package's own __init__ first)."""
    path = PACKAGE / layer
    if path.with_suffix(".py").is_file():
        return [f"qscope_lab.{layer}"]
    names = []
    for file in sorted(path.rglob("*.py")):
        parts = file.relative_to(PACKAGE).with_suffix("").parts
        if any(not public(p) for p in parts[:-1]) or (not public(parts[-1]) and parts[-1] != "__init__"):
            continue
        if parts[-1] == "__main__":
            continue
        names.append(".".join(("qscope_lab",) + (parts[:-1] if parts[-1] == "__init__" else parts)))
    return sorted(names, key=lambda n: (n != f"qscope_lab.{layer}", n))


def declared_all(module: str) -> list[str]:
    """A module's ``__all__`` read from its source (no import), or []."""
    rel = module.split(".")[1:]
    file = PACKAGE.joinpath(*rel, "__init__.py") if PACKAGE.joinpath(*rel).is_dir() else \
        PACKAGE.joinpath(*rel).with_suffix(".py")
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "list":  # list(_EXPORTS)
                return list(importlib.import_module(module).__all__)
            return [ast.literal_eval(e) for e in value.elts]  # type: ignore[attr-defined]
    return []


def imported_from(package: str, name: str) -> str:
    """The module ``package/__init__.py`` imports ``name`` from (``from .sasft import X``), else the package."""
    init = PACKAGE.joinpath(*package.split(".")[1:], "__init__.py")
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            return ".".join(base + ([node.module] if node.module else []))
    return package


def exported(package: str) -> list[tuple[str, str, str]]:
    """``(name, identifier where documented, summary)`` for each name of ``package.__all__``."""
    rows = []
    mod = importlib.import_module(package)
    for name in declared_all(package):
        obj = getattr(mod, name)
        home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
        if home is None:  # a constant: the module it is imported from, or the one that assigns it
            home = getattr(mod, "_EXPORTS", {}).get(name)
            home = f"qscope_lab.{home}" if home else imported_from(package, name)
        doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else ""
        summary = (doc or "").strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append((name, f"{home}.{name}", summary[:160] + ("..." if len(summary) > 160 else "")))
    return rows


def layer_page(layer: str) -> str:
    names = modules(layer)
    lines = [f"# qscope_lab.{layer}", ""]
    head, rest = (names[0], names[1:]) if names[0] == f"qscope_lab.{layer}" and len(names) > 1 else (None, names)
    if head:
        lines += [f"::: {head}", "    options:", "      show_root_heading: false", "      members: false", ""]
        if declared_all(head):
            lines += [f"Exported from `{head}`: " + ", ".join(
                f"[`{n}`][{ident}]" for n, ident, _ in exported(head)), ""]
    lines += [f"::: {name}\n" for name in rest]
    return "\n".join(lines)


def index_page() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings of the package: one page per layer (see "
             "[the architecture](../architecture.md)), every public module on it. The names a notebook imports "
             "from `qscope_lab` (each loaded on first use, so `import qscope_lab` stays cheap):", "",
             "| name | documented at | what it is |", "|---|---|---|"]
    lines += [f"| [`{n}`][{ident}] | `{ident.rsplit('.', 1)[0]}` | {summary} |"
              for n, ident, summary in exported("qscope_lab")]
    for layer in layers():
        package = f"qscope_lab.{layer}"
        if (PACKAGE / layer).is_dir() and declared_all(package):
            lines += ["", f"`{package}` exports:", "", "| name | documented at | what it is |", "|---|---|---|"]
            lines += [f"| [`{n}`][{ident}] | `{ident.rsplit('.', 1)[0]}` | {summary} |"
                      for n, ident, summary in exported(package)]
    links = [f"[`qscope_lab.{layer}`]({page(layer).removeprefix('api/')})" for layer in layers()]
    lines += ["", "Pages: " + ", ".join(links), "",
              "::: qscope_lab", "    options:", "      show_root_heading: false", "      members: false", ""]
    return "\n".join(lines)


def on_config(config, **_):
    entries = ["api/index.md"] + [{f"qscope_lab.{layer}": page(layer)} for layer in layers()]
    for item in config["nav"]:
        if isinstance(item, dict) and "API reference" in item:
            item["API reference"] = entries
    return config


@event_priority(90)
def on_files(files, config, **_):
    files.append(File.generated(config, "api/index.md", content=index_page()))
    for layer in layers():
        files.append(File.generated(config, page(layer), content=layer_page(layer)))
    return files
