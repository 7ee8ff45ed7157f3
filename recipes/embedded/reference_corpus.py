"""Pick the reference corpus that ships with the package: held-out documents, balanced over every source.

    python recipes/embedded/reference_corpus.py --corpus build/corpus --out qscope_lab/embedded/reference.jsonl

Feature cards show top activating contexts over this corpus, and feature search indexes it. It is held out from
the embedded model's and SAEs' training, small enough to encode in seconds on a CPU (about 60k tokens), and
plain text, so it serves any Qwen model. No two documents are alike and none has a twin in training
(``corpus.heldout_pool``). Each line: {"source", "lang", "text"}.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from corpus import heldout_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default="qscope_lab/embedded/reference.jsonl")
    parser.add_argument("--per-language", type=int, default=120)
    parser.add_argument("--chars", type=int, default=400)
    args = parser.parse_args()

    by_source: dict[tuple[str, str], list[str]] = defaultdict(list)
    pool, dropped = heldout_pool(Path(args.corpus), args.chars)
    print(f"held-out documents: {dropped}")
    for doc in pool:
        by_source[(doc["lang"], doc["source"])].append(doc["text"])
    rng = random.Random(0)
    rows = []
    for lang in ("en", "zh", "code"):
        sources = sorted(s for (lng, s) in by_source if lng == lang)
        for i, source in enumerate(sources):  # an equal share per source, the remainder to the first ones
            share = args.per_language // len(sources) + (i < args.per_language % len(sources))
            docs = by_source[(lang, source)]
            rows += [{"source": source, "lang": lang, "text": t} for t in rng.sample(docs, min(share, len(docs)))]
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} documents, {Path(args.out).stat().st_size / 1e3:.0f} kB -> {args.out}")


if __name__ == "__main__":
    main()
