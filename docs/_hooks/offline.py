"""MkDocs hook: the built site requests nothing outside itself.

The notebook template of mkdocs-jupyter (nbconvert's lab template) always adds MathJax 2 and Mermaid from a
CDN; no notebook here uses LaTeX or Mermaid, so both tags are removed from the pages. After the build every
HTML, CSS and JS file is scanned for a resource the browser would fetch from another host (script, stylesheet,
image, frame, font, CSS url() / @import, ES import); one found fails the build with its file and address.
Plain links (<a href="https://...">) are navigation, not requests, and stay.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

EXTERNAL = r"(?:https?:)?//"
CDN_SCRIPTS = [
    # <script src="https://cdnjs.../mathjax/..."> </script> and its x-mathjax-config block
    re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S),
    re.compile(rf"<script[^>]*\ssrc=\"{EXTERNAL}[^\"]*\"[^>]*>\s*</script>", re.S),
    # nbconvert's mermaid loader: <script type="module"> import mermaid from "https://..." ... </script>
    re.compile(r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*?</script>", re.S),
    re.compile(r"<style[^>]*>(?:(?!</style>).)*?\.mermaid(?:(?!</style>).)*?</style>", re.S),
]
# what a browser fetches by itself when the page loads
FETCHED = [
    re.compile(rf"<(?:script|img|iframe|source|audio|video|embed|track)\b[^>]*\ssrcset?=[\"']?{EXTERNAL}", re.I),
    re.compile(rf"<link\b(?=[^>]*\srel=[\"']?(?:stylesheet|preload|modulepreload|icon|prefetch|manifest))"
               rf"[^>]*\shref=[\"']?{EXTERNAL}", re.I),
    re.compile(rf"<object\b[^>]*\sdata=[\"']?{EXTERNAL}", re.I),
    re.compile(rf"url\(\s*[\"']?{EXTERNAL}", re.I),
    re.compile(rf"@import\s+(?:url\()?[\"']?{EXTERNAL}", re.I),
    re.compile(rf"\bimport\s*(?:[\w{{}}*\s,]+from\s*)?[\"']{EXTERNAL}", re.I),
]


def on_post_page(output, page, config, **_):
    if page.file.src_uri.endswith(".ipynb"):
        for pattern in CDN_SCRIPTS:
            output = pattern.sub("", output)
    return output


def external_requests(site: Path) -> list[str]:
    """``file: snippet`` for every outside resource a page, stylesheet or script of ``site`` would load."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in {".html", ".css", ".js", ".mjs"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in FETCHED if path.suffix != ".js" else FETCHED[3:]:
            for match in pattern.finditer(text):
                snippet = text[match.start(): match.end() + 80].splitlines()[0]
                found.append(f"{path.relative_to(site)}: {snippet}")
    return found


def on_post_build(config, **_):
    found = external_requests(Path(config["site_dir"]))
    if found:
        raise PluginError("the site would request resources from outside itself:\n" + "\n".join(found[:20]))
