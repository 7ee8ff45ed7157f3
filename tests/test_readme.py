"""Every Python and shell snippet of the README and of the documentation site runs verbatim on the embedded default.

One test per file (README.md, each page under docs/): its Python blocks run in order in one namespace (as a
reader pastes them into one notebook), then its shell blocks with bash, all in one scratch folder holding a copy
of the shipped ``examples/`` (as the repository root does), with the venv's ``qscope-lab`` first on PATH. A block
that cannot run here (it needs a GPU, the Hub, a remote machine, or starts a server) says so on its first line,
where the reader sees it too::

    # skip-test: needs a GPU and the Hub

Nothing else skips a block: an invisible marker (an HTML comment) is refused, and so is a fence language that
would slip past the test (``py``, ``sh``, ``console``...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README] + sorted(p for p in (REPO / "docs").rglob("*.md") if "_hooks" not in p.parts)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"\A(?:#|//)\s*skip-test:\s*(?P<why>\S.*)$", re.M)
RUN = {"python", "bash"}
NEVER_RUN = {"text", "yaml", "toml", "json", "ini", "csv", "diff", "html", "javascript", "js", "css", "jinja", ""}


def blocks(path: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, why it is skipped or None) of every fenced block of ``path``."""
    found = []
    for m in FENCE.finditer(path.read_text(encoding="utf-8")):
        code = "\n".join(line[len(m["indent"]):] for line in m["code"].splitlines()) + "\n"
        skip = SKIP.match(code)
        found.append((m["lang"], code, skip["why"].strip() if skip else None))
    return found


def name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_block_is_run_or_says_why_not():
    total, skipped = 0, []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        hidden = re.search(r"<!--\s*skip-test", text)
        assert not hidden, f"{name(path)}: a hidden skip; put '# skip-test: why' on the block's first line"
        for lang, _code, why in blocks(path):
            assert lang in RUN | NEVER_RUN, f"{name(path)}: a ```{lang} block would be neither run nor declared text"
            if lang in RUN:
                total += 1
                if why is not None:
                    assert len(why) > 10, f"{name(path)}: say why the block is skipped: {why!r}"
                    skipped.append((name(path), why))
    assert total - len(skipped) >= 3 * len(skipped), (total, skipped)  # most snippets run
    readme = [why for lang, _, why in blocks(README) if lang in RUN]
    assert sum(why is None for why in readme) >= 2 and sum(why is not None for why in readme) <= 3, readme


def test_a_skip_marker_is_seen_only_on_the_first_line(tmp_path):
    sample = "```python\n# skip-test: needs a GPU and the Hub\nx = 1\n```\n```bash\necho ok  # skip-test: no\n```\n"
    target = tmp_path / "sample.md"
    target.write_text(sample, encoding="utf-8")
    (lang1, _, why1), (lang2, _, why2) = blocks(target)
    assert (lang1, why1, lang2, why2) == ("python", "needs a GPU and the Hub", "bash", None)


@pytest.mark.parametrize("path", PAGES, ids=[name(p) for p in PAGES])
def test_snippets_run_verbatim(path, tmp_path):
    run = [(lang, code) for lang, code, why in blocks(path) if lang in RUN and why is None]
    if not run:
        pytest.skip(f"{name(path)} has no snippet to run")
    shutil.copytree(REPO / "examples", tmp_path / "examples")  # the files the shell examples read
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               QSCOPE_LAB_HOME=str(tmp_path / "home"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    python = [code for lang, code in run if lang == "python"]
    if python:
        script = tmp_path / "snippets.py"
        script.write_text("\n\n".join(f"# --- {name(path)} python block {i}\n{code}" for i, code in enumerate(python)),
                          encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
    for lang, code in run:
        if lang != "bash":
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"
        assert "Loading weights" not in done.stderr  # no stray progress bars from the CLI
        if "qscope-lab info" in code:
            assert "None" not in done.stdout.split("decoder norm")[0]


def test_the_readme_gets_out_of_the_way():
    """At most 150 lines, one picture, and every link into the repository (the site's pages, the notebooks)
    points at a file that exists."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert len(re.findall(r"!\[[^\]]*\]\(", text)) == 1
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    assert len(targets) >= 15 and all((REPO / t).exists() for t in targets), [t for t in targets
                                                                              if not (REPO / t).exists()]
