"""The documentation site in a real browser: built as `make docs` builds it (--strict, offline), served on a
loopback port, every page opened in headless Chromium with every request to another host blocked and recorded.

The site is built once per session (the notebooks it renders are executed by the build, cached by content in
build/docs-notebooks, so `make docs` after the suite reuses them).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would bury pytest's output
        pass


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory):
    """(base URL, site folder) of the site built with --strict and served on 127.0.0.1."""
    site = tmp_path_factory.mktemp("docs") / "site"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-5000:]
    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site_page(browser, docs_site):
    """A page whose requests outside the site are aborted; ``page.outside`` lists their URLs."""
    base, _ = docs_site
    host = urlparse(base).netloc
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    outside: list[str] = []

    def handle(route):
        url = route.request.url
        if urlparse(url).netloc == host or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", handle)
    page = context.new_page()
    page.outside = outside  # type: ignore[attr-defined]
    yield page
    context.close()


def pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site).parent).replace("\\", "/") + "/" for p in site.rglob("index.html")
                  if "assets" not in p.parts)


def test_no_page_requests_anything_outside_the_site(site_page, docs_site):
    base, site = docs_site
    found = pages(site)
    assert len(found) >= 30, found
    for path in found:
        response = site_page.goto(base + path.removeprefix("./"), wait_until="networkidle")
        assert response is not None and response.ok, path
        expect(site_page.locator("article.md-content__inner")).to_be_visible()
    # the search runs in a web worker on the site's own index
    site_page.goto(base, wait_until="networkidle")
    site_page.locator("label.md-search__icon, .md-search__input").first.click()
    # typed key by key, as a user does: Material's search answers keyboard events (fill() sets the value with
    # one input event, which it does not always pick up: "Type to start searching" stays)
    site_page.locator("input.md-search__input").press_sequentially("steering", delay=30)
    expect(site_page.locator(".md-search-result__item").first).to_be_visible(timeout=30_000)
    assert site_page.outside == [], f"requests left the site: {site_page.outside[:10]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_page_is_rendered_with_its_outputs(site_page, docs_site, path):
    base, _ = docs_site
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    title = next("".join(c["source"]).splitlines()[0][2:] for c in nb["cells"] if c["cell_type"] == "markdown")
    site_page.goto(f"{base}notebooks/{path.stem}/", wait_until="networkidle")
    notebook = site_page.locator(".jupyter-wrapper .jp-Notebook")
    expect(notebook).to_be_visible()
    expect(notebook.locator("h1").first).to_contain_text(title.strip())
    assert notebook.locator(".jp-CodeCell .jp-InputArea-editor").count() == len(code)  # each code cell once
    outputs = notebook.locator(".jp-OutputArea-output")
    assert outputs.count() >= len(code) // 2, f"{path.stem}: {outputs.count()} outputs for {len(code)} code cells"
    assert "Traceback (most recent call last)" not in notebook.inner_text()
    # charts are SVG drawn in the kernel; tables are HTML: both arrive as rendered elements, not text
    if path.stem in {"steering", "evaluation_coverage", "attribution"}:
        expect(notebook.locator(".jp-OutputArea-output svg, .jp-OutputArea-output img").first).to_be_visible()
    assert notebook.locator(".jp-OutputArea-output table").count() >= 1 or path.stem == "saes_from_scratch"
    assert site_page.outside == [], site_page.outside[:5]


def public_names() -> dict[str, str]:
    """name -> where it is exported from: qscope_lab.__all__ and each subpackage's __all__."""
    import qscope_lab

    names = {name: "qscope_lab" for name in qscope_lab.__all__}
    for package in ("widgets", "training"):
        module = __import__(f"qscope_lab.{package}", fromlist=["__all__"])
        names.update({name: f"qscope_lab.{package}" for name in module.__all__})
    return names


def public_modules() -> list[str]:
    found = []
    for file in (REPO / "qscope_lab").rglob("*.py"):
        parts = file.relative_to(REPO).with_suffix("").parts
        if any(p.startswith("_") for p in parts[:-1]) or parts[-1] == "__main__" or \
                (parts[-1].startswith("_") and parts[-1] != "__init__"):
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(found)


def test_api_pages_list_every_public_name_and_module(site_page, docs_site):
    base, site = docs_site
    documented: dict[str, str] = {}
    for path in sorted((site / "api").glob("*/index.html")):
        site_page.goto(f"{base}api/{path.parent.name}/", wait_until="domcontentloaded")
        for ident in site_page.locator(".doc-heading[id]").evaluate_all("els => els.map(e => e.id)"):
            documented.setdefault(ident, path.parent.name)
        documented.setdefault(site_page.locator("article h1").first.inner_text().strip(" ¶\n"), path.parent.name)
    documented["qscope_lab"] = "index"  # the package's own docstring opens the overview
    assert len(documented) > 200
    missing_modules = [m for m in public_modules() if m not in documented]
    assert not missing_modules, missing_modules
    missing = [f"{home}.{name}" for name, home in public_names().items()
               if not any(ident.endswith(f".{name}") for ident in documented)]
    assert not missing, missing
    # the overview links each exported name to where it is documented
    site_page.goto(f"{base}api/", wait_until="domcontentloaded")
    overview = site_page.locator("article").inner_text()
    for name in public_names():
        assert name in overview, name
    site_page.locator("article a", has_text=re.compile(r"^Lab$")).first.click()
    expect(site_page.locator("[id='qscope_lab.lab.Lab']")).to_be_visible()
    assert site_page.outside == []
