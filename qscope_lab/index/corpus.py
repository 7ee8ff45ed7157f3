"""Corpora for a feature index, streamed once. Accepted kinds (anything else is refused, naming its type):

- a path (``str`` or ``Path``) to a .txt (one document per line) / .jsonl (``{"text", "source"}`` rows or strings)
  / .parquet / .csv / .json file, or to a folder of them (read recursively, in sorted order);
- a ``str`` that does not look like a path: one document. A string that looks like a path (one line, and a file
  suffix such as .jsonl / .txt / .parquet, or a path separator and no spaces) must exist: a missing one is
  refused with FileNotFoundError naming it. To index such a string as text, pass it as a row:
  ``[{"text": "notes.txt"}]``;
- a list (or any iterable) of texts, ``{"text", "source"}`` rows, or paths (``Path`` objects, or strings that look
  like paths, which must exist); a streaming Hugging Face ``datasets.Dataset`` included;
- a ``{source: texts}`` mapping (each value any of these kinds);
- a pandas ``DataFrame`` with a ``text`` column (and optional ``source`` column; an ``id`` column is allowed and
  ignored, since document ids are stream positions). A frame without ``text`` is refused, naming the column.

Each document becomes ``Document(id, source, text)``: ids count from 0 in stream order, the source is the row's
``source`` field, else the file's stem, else the mapping key, else ``"corpus"``. A text that is not valid Unicode
(a lone surrogate such as ``"\\ud800"``) is refused naming the document. Shards are consecutive runs of
``shard_documents`` documents, each with a fingerprint of its texts and sources, so a resumed build can tell that
it is reading the same corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")
# suffixes that make a one-line string a file name rather than a text (read or not: a missing one is refused)
PATH_SUFFIXES = (*FILE_SUFFIXES, ".tsv", ".md", ".gz", ".zst", ".bz2", ".xz", ".zip", ".arrow", ".feather", ".text")
_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True)
class Document:
    id: int
    source: str
    text: str


def _rows_of_file(path: Path) -> Iterator[tuple[Any, Any]]:
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


def looks_like_path(text: str) -> bool:
    """Whether a string reads as a file or folder name rather than a document: one line, and either a file
    suffix (``PATH_SUFFIXES``) or a path separator with no whitespace."""
    if "\n" in text or len(text) > 4096 or not text.strip():
        return False
    if Path(text).suffix.lower() in PATH_SUFFIXES:
        return True
    return bool(_SEPARATORS.search(text)) and not any(c.isspace() for c in text)


def _exists(text: str) -> bool:
    """Whether a string names an existing file or folder (False for one no file system could hold)."""
    if "\n" in text or "\x00" in text or len(text) > 4096:
        return False
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def _is_frame(corpus) -> bool:
    pd = sys.modules.get("pandas")  # a DataFrame can only exist if pandas was imported
    return pd is not None and isinstance(corpus, pd.DataFrame)


def _rows_of_frame(frame) -> Iterator[tuple[Any, Any]]:
    if "text" not in frame.columns:
        raise ValueError(f"a DataFrame corpus needs a 'text' column (optional: 'source', 'id'); its columns are "
                         f"{[str(c) for c in frame.columns]}")
    texts = frame["text"].tolist()
    sources = frame["source"].tolist() if "source" in frame.columns else [None] * len(texts)
    for source, text in zip(sources, texts):
        yield (None if source is None or source != source else source), text  # NaN source: none


def _rows_of_path(path: Path, source: str | None) -> Iterator[tuple[Any, Any]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {', '.join(FILE_SUFFIXES)} files in {path}")
        for f in files:
            yield from ((s or source or f.stem, t) for s, t in _rows_of_file(f))
        return
    if not path.is_file():
        raise FileNotFoundError(f"no such corpus file or folder: {os.fspath(path)!r} (to index this string as a "
                                f"text, pass it as a row: [{{'text': ...}}])")
    yield from ((s or source or path.stem, t) for s, t in _rows_of_file(path))


def _rows(corpus, source: str | None) -> Iterator[tuple[Any, Any]]:
    if isinstance(corpus, Path) or (isinstance(corpus, os.PathLike) and not isinstance(corpus, str)):
        yield from _rows_of_path(Path(corpus), source)
        return
    if isinstance(corpus, str):
        if _exists(corpus) or looks_like_path(corpus):  # a missing one is refused, named
            yield from _rows_of_path(Path(corpus), source)
        else:
            yield source, corpus  # a single text
        return
    if isinstance(corpus, (bytes, bytearray, memoryview)):
        raise TypeError(f"corpus must be text, not {type(corpus).__name__}: decode it first (e.g. .decode('utf-8'))")
    if _is_frame(corpus):
        for s, t in _rows_of_frame(corpus):
            yield s or source, t
        return
    if isinstance(corpus, Mapping):
        for name, part in corpus.items():
            yield from _rows(part, str(name))
        return
    if not isinstance(corpus, Iterable):
        raise TypeError(f"corpus must be a file, a folder, a list of texts, a {{source: texts}} mapping, a DataFrame "
                        f"with a 'text' column or an iterable of texts / {{'text': ...}} rows, got "
                        f"{type(corpus).__name__}")
    for item in corpus:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and looks_like_path(item)):
            yield from _rows(item, source)
        elif isinstance(item, Mapping):
            yield item.get("source") or source, item.get("text")
        else:
            yield source, item


def documents(corpus, first_id: int = 0) -> Iterator[Document]:
    """The corpus's documents in stream order, ids from ``first_id`` (empty texts skipped; a non-text, or a text
    or source that is not valid Unicode, refused naming its position)."""
    n = first_id
    for i, (source, text) in enumerate(_rows(corpus, None)):
        if not isinstance(text, str):
            raise TypeError(f"corpus item {i} has no text (got {type(text).__name__})")
        if not text.strip():
            continue
        source = str(source) if source is not None else "corpus"
        for what, value in (("text", text), ("source", source)):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"corpus item {i} (document {n}, source {source!r}): its {what} is not valid "
                                 f"Unicode ({value[err.start]!r}, a lone surrogate, at character {err.start}); "
                                 f"decode the data with errors='replace'") from None
        yield Document(n, source, text)
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
