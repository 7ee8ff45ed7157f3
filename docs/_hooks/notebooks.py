"""MkDocs hook: every notebook of notebooks/ becomes a page, executed on the embedded default with its outputs.

The notebooks are committed without outputs (tests/test_notebooks.py), so the build runs them: each in its own
kernel, two at a time, offline (HF_HUB_OFFLINE=1), with labels written to a scratch home. The executed copy is
kept in build/docs-notebooks/ under a key of the notebook's bytes and the package's sources, so a rebuild with
nothing changed reuses it (QSCOPE_DOCS_REUSE=1 takes the last copy whatever changed, for edits of the pages);
`make docs` from a fresh clone runs them all. A cell that fails fails the build.

Live widgets need a kernel, which a static page does not have: each widget output is replaced by a note naming
the widget (its text fallback kept), and the widget state (which would make the page load the widget manager
from a CDN) is dropped. Progress bars keep the text they ended on.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CACHE = REPO / "build" / "docs-notebooks"
FIRST = "quickstart"  # the nav lists it first, the others by name
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PARALLEL = max(1, min(2, os.cpu_count() or 1))
# QSCOPE_DOCS_REUSE=1: take the last executed copy even if the package changed since (quick edits of the
# docs' own pages); `make docs` and CI never set it
REUSE = os.environ.get("QSCOPE_DOCS_REUSE") == "1"

# Runs one notebook in a fresh kernel and writes the executed copy (a subprocess per notebook: two run at once).
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
src, dst, cwd = sys.argv[1:4]
nb = nbformat.read(src, as_version=4)
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
nbformat.write(nb, dst)
"""


def notebook_paths() -> list[Path]:
    found = sorted(NOTEBOOKS.glob("*.ipynb"), key=lambda p: (p.stem != FIRST, p.stem))
    if not found:
        raise PluginError(f"no notebooks found in {NOTEBOOKS}")
    return found


def sources_digest() -> str:
    """What a notebook's outputs depend on besides itself: the package (code, shipped model, SAEs, index)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "qscope_lab").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes() if path.suffix in {".py", ".json", ".jsonl"} else
                          str(path.stat().st_size).encode())
    return digest.hexdigest()


def _tqdm_text(model_id: str, state: dict) -> str | None:
    """The text a tqdm bar ended on: its HTML children (description, counts) around the bar's value."""
    model = state.get(model_id, {}).get("state", {})
    parts = []
    for child in model.get("children", []):
        child_state = state.get(child.removeprefix("IPY_MODEL_"), {}).get("state", {})
        if "value" in child_state and isinstance(child_state["value"], str):
            parts.append(re.sub(r"<[^>]+>", "", html.unescape(child_state["value"])).strip())
        elif "max" in child_state:
            parts.append(f"[{child_state.get('value', 0):g}/{child_state['max']:g}]")
    return " ".join(p for p in parts if p) or None


def static_widgets(nb: dict) -> dict:
    """Widget outputs as static notes; the widget state dropped from the metadata."""
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.pop(WIDGET_VIEW, None)
            if view is None:
                continue
            plain = "".join(data.get("text/plain", "")) if data.get("text/plain") else ""
            model = state.get(view.get("model_id", ""), {})
            if model.get("model_name") == "HBoxModel" and (text := _tqdm_text(view["model_id"], state)):
                data.clear()
                data["text/plain"] = text
                continue
            name = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\(", plain)
            label = name.group(1) if name else (model.get("model_name") or "widget").removesuffix("Model")
            data.clear()
            data["text/html"] = (
                f'<div class="qs-static-widget"><strong>Interactive widget: <code>{html.escape(label)}</code></strong>'
                f" (live in JupyterLab: run this notebook with <code>make lab</code>; a static page has no kernel "
                f"to drive it)</div>")
            data["text/plain"] = f"[interactive widget: {label}]"
    return nb


def execute_all(paths: list[Path]) -> dict[Path, Path]:
    """Executed copies of ``paths`` (cached by content), run PARALLEL at a time; raises naming a failed one."""
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = sources_digest()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               QSCOPE_LAB_HOME=str(CACHE / "home"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    done: dict[Path, Path] = {}
    todo = []
    for path in paths:
        key = hashlib.sha256(path.read_bytes() + digest.encode()).hexdigest()[:16]
        out = CACHE / f"{path.stem}.{key}.ipynb"
        if not out.exists() and REUSE and (older := sorted(CACHE.glob(f"{path.stem}.*.ipynb"))):
            out = older[0]
        done[path] = out
        if not out.exists():
            todo.append((path, out))
    running: list[tuple[Path, Path, subprocess.Popen, float]] = []
    failures = []
    while todo or running:
        while todo and len(running) < PARALLEL:
            path, out = todo.pop(0)
            work = CACHE / "work" / path.stem
            work.mkdir(parents=True, exist_ok=True)
            raw = out.with_suffix(".raw")
            proc = subprocess.Popen([sys.executable, "-c", EXECUTE, str(path), str(raw), str(work)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((path, out, proc, time.time()))
        time.sleep(0.2)
        for item in list(running):
            path, out, proc, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log = proc.stdout.read() if proc.stdout else ""
            raw = out.with_suffix(".raw")
            if proc.returncode != 0:
                failures.append(f"{path.name}:\n{log[-3000:]}")
                continue
            nb = static_widgets(json.loads(raw.read_text(encoding="utf-8")))
            for stale in CACHE.glob(f"{path.stem}.*.ipynb"):
                stale.unlink()
            out.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
            raw.unlink()
            print(f"docs: executed {path.name} in {time.time() - start:.1f} s", file=sys.stderr)
    if failures:
        raise PluginError("notebooks failed to run for the docs:\n" + "\n".join(failures))
    return done


def _title(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            first = "".join(cell.get("source", "")).strip().splitlines()
            if first and first[0].startswith("# "):
                return first[0][2:].strip()
    return path.stem.replace("_", " ")


def on_config(config, **_):
    entries = ["notebooks/index.md"] + [{_title(p): f"notebooks/{p.name}"} for p in notebook_paths()]
    for item in config["nav"]:
        if isinstance(item, dict) and "Notebooks" in item:
            item["Notebooks"] = entries
    return config


def index_page() -> str:
    """notebooks/README.md with each notebook's name made a link to its page."""
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^# notebooks/\s*$", "# Notebooks", text, count=1, flags=re.M)
    text = re.sub(r"`([A-Za-z0-9_]+)\.ipynb`", r"[`\1`](\1.ipynb)", text)
    return text + ("\n\nEach page below was executed on the embedded default when this site was built; "
                   "widgets are live only in JupyterLab (`make lab`).\n")


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files it finds
def on_files(files, config, **_):
    executed = execute_all(notebook_paths())
    files.append(File.generated(config, "notebooks/index.md", content=index_page()))
    # a real File under a source folder of its own (not File.generated): mkdocs-jupyter wraps the File, and
    # the wrapper finds the path only through src_dir
    pages = CACHE / "pages"
    (pages / "notebooks").mkdir(parents=True, exist_ok=True)
    for path, out in executed.items():
        (pages / "notebooks" / path.name).write_bytes(out.read_bytes())
        files.append(File(f"notebooks/{path.name}", str(pages), config["site_dir"], config["use_directory_urls"]))
    return files
