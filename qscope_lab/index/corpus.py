"""Corpora for a feature index, streamed once: files (.txt / .jsonl / .parquet / .csv / .json), a list, a
``{source: texts}`` mapping, or any iterable (a streaming Hugging Face ``datasets.Dataset`` included).

Each document becomes ``Document(id, source, text)``: ids count from 0 in stream order, the source is the row's
``source`` field, else the file's stem, else the mapping key, else ``"corpus"``. Shards are consecutive runs of
``shard_documents`` documents, each with a fingerprint of its texts and sources, so a resumed build can tell that
it is reading the same corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class Document:
    id: int
    source: str
    text: str


def _rows_of_file(path: Path) -> Iterator[tuple[str | None, str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    yield (row.get("source"), row.get("text")) if isinstance(row, dict) else (None, row)
    elif suffix in (".parquet", ".csv", ".json"):
        from ..base.textfiles import read_texts

        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path)
            has_source = "source" in table.schema.names
            for batch in table.iter_batches(columns=["text", "source"] if has_source else ["text"]):
                texts = batch.column("text").to_pylist()
                sources = batch.column("source").to_pylist() if has_source else [None] * len(texts)
                yield from zip(sources, texts)
        else:
            for text in read_texts(path):
                yield None, text
    else:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield None, line.rstrip("\r\n")


def _rows(corpus, source: str | None) -> Iterator[tuple[str | None, str]]:
    if isinstance(corpus, (str, Path)):
        path = Path(corpus)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FILE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"no {', '.join(FILE_SUFFIXES)} files in {path}")
            for f in files:
                yield from ((s or source or f.stem, t) for s, t in _rows_of_file(f))
            return
        if not path.is_file():
            if isinstance(corpus, str) and not Path(corpus).suffix:
                yield source, corpus  # a single text
                return
            raise FileNotFoundError(f"no such corpus file: {path}")
        yield from ((s or source or path.stem, t) for s, t in _rows_of_file(path))
        return
    if isinstance(corpus, Mapping):
        for name, part in corpus.items():
            yield from _rows(part, str(name))
        return
    if not isinstance(corpus, Iterable):
        raise TypeError(f"corpus must be a file, a folder, a list of texts, a {{source: texts}} mapping or an "
                        f"iterable of texts / {{'text': ...}} rows, got {type(corpus).__name__}")
    for item in corpus:
        if isinstance(item, Path) or (isinstance(item, str) and Path(item).suffix.lower() in FILE_SUFFIXES
                                      and Path(item).is_file()):
            yield from _rows(item, source)
        elif isinstance(item, Mapping):
            yield item.get("source") or source, item.get("text")
        else:
            yield source, item


def documents(corpus, first_id: int = 0) -> Iterator[Document]:
    """The corpus's documents in stream order, ids from ``first_id`` (empty texts skipped, a non-text refused
    naming its position)."""
    n = first_id
    for i, (source, text) in enumerate(_rows(corpus, None)):
        if not isinstance(text, str):
            raise TypeError(f"corpus item {i} has no text (got {type(text).__name__})")
        if not text.strip():
            continue
        yield Document(n, str(source) if source is not None else "corpus", text)
        n += 1


def fingerprint(docs: Iterable[Document]) -> str:
    h = hashlib.sha256()
    for doc in docs:
        h.update(doc.source.encode("utf-8", "replace") + b"\x00" + doc.text.encode("utf-8", "replace") + b"\x01")
    return h.hexdigest()[:16]


def shards(corpus, shard_documents: int, first_shard: int = 0, first_id: int = 0):
    """(shard id, its documents): consecutive runs of ``shard_documents`` documents."""
    shard, part = first_shard, []
    for doc in documents(corpus, first_id):
        part.append(doc)
        if len(part) == shard_documents:
            yield shard, part
            shard, part = shard + 1, []
    if part:
        yield shard, part
