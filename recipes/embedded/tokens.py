"""Tokenize the corpus once into per-(language, source, split) token streams, and load them back.

    python recipes/embedded/tokens.py --corpus build/corpus --tokenizer build/tokenizer --out build/tokens

Each stream is the stream's documents joined by <|endoftext|> (uint16 when the vocabulary fits, else uint32),
saved as ``{lang}__{source}__{split}.npy`` with ``index.json`` (tokens, characters, documents per stream), so
bits per character (nats/token / ln 2 x tokens/char) can be reported per source. ``docs.jsonl`` may be
xz-compressed (``docs.jsonl.xz``): that is the form carried to the GPU machine, where this runs in seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from pathlib import Path

import numpy as np


def read_docs(corpus: Path):
    """Documents of ``corpus/docs.jsonl`` or ``corpus/docs.jsonl.xz`` (dicts: source, lang, split, text)."""
    corpus = Path(corpus)
    plain, packed = corpus / "docs.jsonl", corpus / "docs.jsonl.xz"
    if plain.is_file():
        handle = open(plain, encoding="utf-8")
    elif packed.is_file():
        try:
            import lzma

            handle = lzma.open(packed, "rt", encoding="utf-8")
        except ImportError:  # a Python built without _lzma: the xz program does the same
            data = subprocess.run(["xz", "-dc", str(packed)], capture_output=True, check=True).stdout
            handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    else:
        raise FileNotFoundError(f"no docs.jsonl or docs.jsonl.xz in {corpus} (build it with corpus.py)")
    with handle:
        for line in handle:
            yield json.loads(line)


def tokenize_corpus(corpus: Path, tokenizer, out: Path, batch: int = 2048) -> dict:
    """Write the token streams of every (lang, source, split) and ``index.json``; returns the index."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for doc in read_docs(corpus):
        groups.setdefault((doc["lang"], doc["source"], doc["split"]), []).append(doc["text"])
    eos = tokenizer.eos_token_id
    dtype = np.uint16 if len(tokenizer) <= 65536 else np.uint32
    index = {}
    for (lang, source, split), texts in sorted(groups.items()):
        parts = []
        for i in range(0, len(texts), batch):
            for ids in tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"]:
                parts.append(np.asarray(ids + [eos], dtype=dtype))
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        name = f"{lang}__{source}__{split}"
        np.save(out / f"{name}.npy", flat)
        index[name] = {"lang": lang, "source": source, "split": split, "tokens": int(flat.size),
                       "chars": sum(len(t) + 1 for t in texts), "documents": len(texts)}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def load_tokens(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(name -> token stream, index) of a folder written by ``tokenize_corpus``."""
    folder = Path(folder)
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} is missing: run tokens.py (or gpu_run.py --corpus) first")
    index = json.loads(index_path.read_text())
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in index}, index


def summary(index: dict) -> list[dict]:
    """Per source: documents, characters and tokens of train + held-out."""
    rows: dict[str, dict] = {}
    for meta in index.values():
        row = rows.setdefault(meta["source"], {"source": meta["source"], "lang": meta["lang"], "documents": 0,
                                               "chars": 0, "tokens": 0, "heldout_tokens": 0})
        row["documents"] += meta["documents"]
        row["chars"] += meta["chars"]
        row["tokens"] += meta["tokens"]
        if meta["split"] == "heldout":
            row["heldout_tokens"] += meta["tokens"]
    return sorted(rows.values(), key=lambda r: (r["lang"], r["source"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--tokenizer", default="build/tokenizer")
    parser.add_argument("--out", default="build/tokens")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    index = tokenize_corpus(Path(args.corpus), AutoTokenizer.from_pretrained(args.tokenizer), Path(args.out))
    for row in summary(index):
        print(f"{row['source']:22s} {row['lang']:5s} {row['documents']:7d} docs {row['chars'] / 1e6:7.2f}M chars "
              f"{row['tokens'] / 1e6:7.2f}M tokens ({row['chars'] / max(1, row['tokens']):.2f} chars/token)")
    print(f"total {sum(m['tokens'] for m in index.values()) / 1e6:.1f}M tokens")


if __name__ == "__main__":
    main()
