"""Real-browser test harness: run notebook cells in a real JupyterLab, driven by headless Chromium.

Typical use (see ``conftest.py`` for the pytest fixtures built on top of this)::

    with JupyterLabServer() as server:
        write_notebook(server.root_dir / "demo.ipynb", ["import ipywidgets as w", "w.IntSlider(7)"])
        page = browser.new_page()
        open_notebook(page, server, "demo.ipynb")
        run_all(page, timeout=120)
        page.locator(".widget-slider").wait_for()

How things are detected (JupyterLab 4.6):

* The server is started with ``--LabApp.expose_app_in_browser=True`` so the page has ``window.jupyterapp``. All
  readiness checks go through the application model rather than through CSS classes: the notebook panel is
  found by path among ``app.shell.widgets('main')``; "kernel ready" is ``panel.sessionContext.isReady`` plus
  ``kernel.status == 'idle'`` and ``kernel.connectionStatus == 'connected'``.
* "Run all" is the ``notebook:run-all-cells`` command executed with ``{widgetId: panel.id}`` (so it targets the
  right notebook whatever has focus). The command returns ``NotebookActions.runAll``'s promise, which resolves
  once every execute reply has arrived (``false`` when a cell failed); the harness stores its outcome in
  ``window.__qscopeRunAll`` and waits on it, then waits for the kernel to be idle again.
* Errors are collected from the notebook model (``output_type == 'error'``) and from the DOM (stderr output
  containing ``Traceback``), so a failing cell raises :class:`NotebookError` with the traceback text.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nbformat

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "JupyterLabServer",
    "NotebookError",
    "notebook_errors",
    "assert_no_errors",
    "open_notebook",
    "run_all",
    "write_notebook",
]

CHROMIUM = os.environ.get("QSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

# User settings written into the isolated JUPYTER_CONFIG_DIR: no news/update toasts, and no notebook
# windowing, so every cell (and its widget outputs) is attached to the DOM even when scrolled out of view.
LAB_USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(AssertionError):
    """A notebook run failed: a cell raised, the kernel died, or the run timed out."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


class JupyterLabServer:
    """A throw-away JupyterLab server on a free loopback port, rooted at a temporary directory.

    Only the *config* and *runtime* dirs (and IPYTHONDIR) are isolated; the data dirs are left alone so the
    ``python3`` kernel spec and the ipywidgets/anywidget labextensions in the venv's ``share/jupyter`` are found.
    """

    def __init__(self, root_dir: str | os.PathLike | None = None, startup_timeout: float = 60.0,
                 extra_args: list[str] | None = None, app: str = "jupyterlab"):
        self._own_tmp = tempfile.mkdtemp(prefix="qscope-jlab-")
        self.tmp = Path(self._own_tmp)
        self.root_dir = Path(root_dir) if root_dir is not None else self.tmp / "root"
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.app = app  # "jupyterlab", or "notebook" for Notebook 7 (same server options, its own app class)
        self.port = 0
        self.token = secrets.token_hex(24)
        self.log_path = self.tmp / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- URLs and REST ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, **query: str) -> str:
        q = "&".join([f"token={self.token}", *(f"{k}={v}" for k, v in query.items())])
        return f"{self.base_url}/{path.lstrip('/')}?{q}"

    def api(self, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}/api/{path.lstrip('/')}", data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log_path, n)

    def shutdown_sessions(self, path: str | None = None) -> None:
        """Delete the sessions (and so shut their kernels down) of one notebook path, or of all."""
        try:
            sessions = self.api("sessions")
        except (urllib.error.URLError, OSError):
            return
        for s in sessions:
            if path is None or s.get("path") == path:
                try:
                    self.api(f"sessions/{s['id']}", method="DELETE")
                except (urllib.error.URLError, OSError):
                    pass

    # -- lifecycle -------------------------------------------------------------------------------------
    def _write_settings(self, config_dir: Path) -> None:
        for plugin, values in LAB_USER_SETTINGS.items():
            pkg, name = plugin.rsplit("/", 1)
            target = config_dir / "lab" / "user-settings" / pkg / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values, indent=2))

    def start(self) -> JupyterLabServer:
        config_dir, runtime_dir = self.tmp / "config", self.tmp / "runtime"
        for d in (self.root_dir, config_dir, runtime_dir, self.tmp / "ipython"):
            d.mkdir(parents=True, exist_ok=True)
        self._write_settings(config_dir)
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            JUPYTER_CONFIG_DIR=str(config_dir),
            JUPYTER_RUNTIME_DIR=str(runtime_dir),
            IPYTHONDIR=str(self.tmp / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_TOKEN", None)
        self.port = _free_port()
        cmd = [
            sys.executable, "-m", self.app,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.collaborative=False",
            "--ServerApp.terminals_enabled=False",
            "--MappingKernelManager.cull_idle_timeout=0",
            *self.extra_args,
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.root_dir, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.stop()
                raise RuntimeError(f"JupyterLab exited with code {rc} during startup; "
                                   f"log tail ({self.log_path}):\n{self.log_tail()}")
            try:
                self.api("status", timeout=2)
                return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not answer /api/status on port {self.port} within "
                                   f"{self.startup_timeout:.0f} s; log tail ({self.log_path}):\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.shutdown_sessions()  # kernels run in their own process groups: ask the server to stop them
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:  # the server runs in its own session: signal the whole group (kernels included)
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        shutil.rmtree(self._own_tmp, ignore_errors=True)

    def __enter__(self) -> JupyterLabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if os.environ.get("QSCOPE_KEEP_JLAB_TMP") != "1":
            self.cleanup()


# ------------------------------------------------------------------------------------------------------
# notebooks
# ------------------------------------------------------------------------------------------------------
def write_notebook(path: str | os.PathLike, cells: list[str]) -> Path:
    """Write a notebook of code cells (sources only, no outputs) with the ``python3`` kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# JS helpers, evaluated in the page. `name` is the notebook path relative to the server root.
_JS_FIND = """
window.__qscopeFind = (name) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of app.shell.widgets('main')) {
    if (w && w.context && w.context.path === name && w.content && w.sessionContext) return w;
  }
  return null;
};
"""

_JS_STATE = """(name) => {
  const app = window.jupyterapp;
  const out = {app: !!app, panel: false, contextReady: false, sessionReady: false, kernel: null,
               connection: null, dialogs: []};
  for (const d of document.querySelectorAll('.jp-Dialog')) out.dialogs.push(d.innerText.slice(0, 500));
  if (!app) return out;
  const panel = window.__qscopeFind ? window.__qscopeFind(name) : null;
  if (!panel) return out;
  out.panel = true;
  out.contextReady = panel.context.isReady;
  const sc = panel.sessionContext;
  out.sessionReady = sc.isReady;
  const k = sc.session && sc.session.kernel;
  out.kernel = k ? k.status : null;
  out.connection = k ? k.connectionStatus : null;
  out.kernelName = k ? k.name : null;
  out.run = window.__qscopeRunAll || null;
  return out;
}"""

_JS_READY = """(name) => {
  const panel = window.__qscopeFind && window.__qscopeFind(name);
  if (!panel || !panel.context.isReady || !panel.sessionContext.isReady) return false;
  if (document.querySelector('.jp-Dialog')) return false;
  const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}"""

_JS_RUN_ALL = """(name) => {
  const app = window.jupyterapp;
  const panel = window.__qscopeFind(name);
  if (!panel) throw new Error('notebook panel not found: ' + name);
  app.shell.activateById(panel.id);
  const run = {done: false, ok: null, error: null, started: Date.now()};
  window.__qscopeRunAll = run;
  Promise.resolve(app.commands.execute('notebook:run-all-cells', {widgetId: panel.id})).then(
    (ok) => { run.ok = ok !== false; run.done = true; },
    (err) => { run.ok = false; run.error = String(err && err.stack || err); run.done = true; });
}"""

_JS_RUN_DONE = """(name) => {
  const run = window.__qscopeRunAll;
  if (!run || !run.done) return false;
  const panel = window.__qscopeFind(name);
  const k = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (k && k.status === 'dead') return true;
  if (!k || k.status !== 'idle') return false;
  for (const cell of panel.content.widgets) {
    if (cell.model.type === 'code' && cell.model.executionState === 'running') return false;
  }
  return true;
}"""

_JS_CELLS = """(name) => {
  const panel = window.__qscopeFind(name);
  if (!panel) return null;
  const strip = (s) => String(s).replace(/\\x1b\\[[0-9;]*[A-Za-z]/g, '');
  const cells = [];
  panel.content.widgets.forEach((cell, i) => {
    const m = cell.model;
    if (m.type !== 'code') return;
    const errors = [];
    const outputs = m.outputs.toJSON();
    for (const o of outputs) {
      if (o.output_type === 'error') {
        errors.push(strip([o.ename + ': ' + o.evalue, ...(o.traceback || [])].join('\\n')));
      }
    }
    for (const el of cell.node.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
      const text = el.innerText || '';
      if (text.includes('Traceback') && !errors.some((e) => e.includes(text.trim().slice(0, 60)))) {
        errors.push(text);
      }
    }
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    cells.push({index: i, count: m.executionCount, state: m.executionState || null,
                prompt: prompt ? prompt.innerText.trim() : '', source: m.sharedModel.getSource().slice(0, 300),
                errors});
  });
  const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {kernel: k ? k.status : null, cells};
}"""


def _ensure_helpers(page) -> None:
    page.evaluate(f"() => {{ {_JS_FIND} }}")


def _describe_state(page, name: str) -> str:
    try:
        _ensure_helpers(page)
        return json.dumps(page.evaluate(_JS_STATE, name), indent=1)
    except Exception as exc:  # the page itself may be broken
        return f"<could not read page state: {exc}>"


def dismiss_dialogs(page) -> list[str]:
    """Close any modal ``.jp-Dialog`` (reject/cancel button, else Escape); returns the dialogs' texts."""
    texts = []
    for _ in range(5):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() == 0:
            break
        texts.append(dialog.first.inner_text()[:500])
        reject = dialog.first.locator("button.jp-mod-reject")
        if reject.count():
            reject.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(200)
    return texts


def open_notebook(page, server: JupyterLabServer, name: str, timeout: float = 60.0,
                  workspace: str | None = None, collapse_left: bool = True) -> None:
    """Open ``name`` (relative to the server root) in a fresh workspace; wait until its kernel is idle.

    A unique workspace per page keeps pages independent (the default workspace would re-open every notebook
    opened earlier in the session). ``collapse_left`` closes the file-browser sidebar so widgets get the
    page's width (and screenshots show them, not the file list).
    """
    workspace = workspace or f"qs-{uuid.uuid4().hex[:10]}"
    page.goto(server.url(f"lab/workspaces/{workspace}/tree/{name}"), wait_until="domcontentloaded")
    deadline = time.monotonic() + timeout
    try:
        page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)",
                               timeout=max(1.0, deadline - time.monotonic()) * 1000)
    except Exception as exc:
        raise NotebookError(f"JupyterLab did not load (no window.jupyterapp; was the server started with "
                            f"--LabApp.expose_app_in_browser=True?): {exc}\nserver log:\n{server.log_tail()}") from exc
    _ensure_helpers(page)
    dialogs: list[str] = []
    while True:
        dialogs += dismiss_dialogs(page)
        try:
            page.wait_for_function(_JS_READY, arg=name, timeout=1000)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise NotebookError(
                    f"notebook {name!r} not ready (kernel idle) within {timeout:.0f} s.\n"
                    f"state: {_describe_state(page, name)}\ndialogs dismissed: {dialogs}\n"
                    f"server log tail:\n{server.log_tail(30)}") from None
    if collapse_left:
        page.evaluate("() => window.jupyterapp.shell.collapseLeft && window.jupyterapp.shell.collapseLeft()")
    page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=10_000)
    dismiss_dialogs(page)


def notebook_errors(page, name: str | None = None) -> list[str]:
    """Error texts shown by the notebook's cells (error outputs and stderr tracebacks), one per error."""
    name = name or _current_name(page)
    _ensure_helpers(page)
    info = page.evaluate(_JS_CELLS, name) or {"cells": []}
    return [f"cell {c['index']} ({c['source'][:80]!r}):\n{e}" for c in info["cells"] for e in c["errors"]]


def assert_no_errors(page, name: str | None = None) -> None:
    """Raise :class:`NotebookError` if any cell shows an error (use after interacting with widgets)."""
    errors = notebook_errors(page, name)
    if errors:
        raise NotebookError("notebook shows errors:\n\n" + "\n\n".join(errors))


def _current_name(page) -> str:
    name = page.evaluate("""() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                                    return w && w.context ? w.context.path : null; }""")
    if not name:
        raise NotebookError("no current notebook in the page; pass the notebook name explicitly")
    return name


def run_all(page, timeout: float = 120.0, name: str | None = None) -> None:
    """Run every cell of the (current) notebook and wait for the kernel to finish.

    Raises :class:`NotebookError` (with error texts and per-cell state) when a cell raised, the kernel died,
    a cell was left unexecuted, or the run did not finish within ``timeout`` seconds.
    """
    _ensure_helpers(page)
    name = name or _current_name(page)
    page.wait_for_function(_JS_READY, arg=name, timeout=30_000)
    page.evaluate(_JS_RUN_ALL, name)
    timed_out = False
    try:
        page.wait_for_function(_JS_RUN_DONE, arg=name, timeout=timeout * 1000, polling=100)
    except Exception:
        timed_out = True
    info = page.evaluate(_JS_CELLS, name) or {"cells": [], "kernel": None}
    errors = [f"cell {c['index']} ({c['source'][:80]!r}):\n{e}" for c in info["cells"] for e in c["errors"]]
    summary = "\n".join(f"  [{c['index']}] count={c['count']} state={c['state']} prompt={c['prompt']!r} "
                        f"source={c['source'][:60]!r}" for c in info["cells"])
    if timed_out:
        raise NotebookError(f"run_all({name!r}) did not finish within {timeout:.0f} s "
                            f"(kernel={info.get('kernel')}).\ncells:\n{summary}\n"
                            + ("errors:\n" + "\n\n".join(errors) if errors else "no error output"))
    if errors:
        raise NotebookError(f"run_all({name!r}): {len(errors)} error(s) in the notebook:\n\n"
                            + "\n\n".join(errors))
    if info.get("kernel") == "dead":
        raise NotebookError(f"run_all({name!r}): the kernel died.\ncells:\n{summary}")
    run = page.evaluate("() => window.__qscopeRunAll")
    not_run = [c for c in info["cells"] if c["count"] is None]
    if not_run or not run.get("ok"):
        raise NotebookError(f"run_all({name!r}): run failed (command result {run}); cells without an execution "
                            f"count: {[c['index'] for c in not_run]}\ncells:\n{summary}")
