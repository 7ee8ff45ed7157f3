"""Fixtures for real-browser widget tests: one JupyterLab + one headless Chromium per test session.

    def test_my_widget(notebook_page, screenshots_dir):
        page = notebook_page("my_widget.ipynb", ["from qscope_lab import ...", "w = MyWidget(); w"])
        expect(page.locator(".qs-my-widget")).to_contain_text("hello")
        page.screenshot(path=screenshots_dir / "my_widget.png")

Set ``QSCOPE_SKIP_BROWSER=1`` to skip these tests; otherwise a missing ``/usr/bin/chromium`` is an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .harness import CHROMIUM, CHROMIUM_ARGS, JupyterLabServer, open_notebook, run_all, write_notebook

REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1400, "height": 1000}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("QSCOPE_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="QSCOPE_SKIP_BROWSER=1")
        here = Path(__file__).parent
        for item in items:
            if Path(str(item.fspath)).is_relative_to(here):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's chromium "
                    f"(`apt-get install -y chromium`), or set QSCOPE_SKIP_BROWSER=1 to skip them.",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("jlab-root")
    with JupyterLabServer(root_dir=root) as server:
        yield server


@pytest.fixture
def screenshots_dir() -> Path:
    d = Path(os.environ.get("QSCOPE_SCREENSHOTS") or REPO / "build" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def notebook_page(request, browser, jupyter_server, screenshots_dir):
    """A callable ``run_notebook(name, cells, timeout=120) -> page``.

    Writes the cells as ``name`` into the server root, opens it in a new 1400x1000 page, runs all cells
    (raising :class:`harness.NotebookError` if a cell fails) and returns the Playwright page. Pages are closed
    and their kernels shut down after the test; on failure a screenshot ``FAILED-<test>.png`` is saved.
    """
    opened: list[tuple[object, object, str]] = []

    def run_notebook(name: str, cells: list[str], timeout: float = 120.0):
        if not name.endswith(".ipynb"):
            name += ".ipynb"
        write_notebook(jupyter_server.root_dir / name, cells)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        opened.append((context, page, name))
        open_notebook(page, jupyter_server, name)
        run_all(page, timeout=timeout, name=name)
        return page

    yield run_notebook

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for context, page, name in opened:
        if failed:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                page.screenshot(path=str(screenshots_dir / f"FAILED-{safe}.png"), full_page=True)
            except Exception:
                pass
        context.close()
        jupyter_server.shutdown_sessions(name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
