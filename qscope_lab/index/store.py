"""The feature index: every feature's top contexts, quantile samples, firing statistics, activation histogram and
per-source firing counts over a corpus, computed once in a streaming pass and read lazily from disk.

``FeatureIndex.build(lab, corpus, layers, path)`` computes one (``build``: shards, resumable, local or Ray),
``FeatureIndex.open(path)`` reads it, ``index.add(lab, more)`` extends it and ``index.export_neuronpedia(out)``
writes Neuronpedia's layout (``export``). The files are ``schema``'s. A partial (``state/`` or a shard) is the
mergeable statistics of some documents; the index is the merge of all of them, so a killed build resumes from
its last complete shard and documents can be added later. Reading a feature decompresses one record batch: a card
opens without loading the layer. The index is a ``source.FeatureSource``.

Safety (issue 29): writers hold the index's cross-process lock (``build``); an open index reads one generation
at a time: before each read it compares the manifest's and ``state/partial.json``'s (inode, size, mtime) with
what it loaded (two ``stat`` calls) and reloads when a writer (this process or another) committed since; a file
opened lazily is checked to belong to that generation, else the read starts again. Opening checks the files
(``open``'s ``verify``).
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..base import validate
from ..core.tokens import byte_label, readable, visible
from . import schema
from .hashes import priority, sae_fingerprint
from .schema import CONTEXTS, HISTOGRAM, PARTIAL, SAMPLE, SOURCES, STATE, STATS, TOP, CorruptIndexError
from .source import CONTEXT_COLUMNS, context_string, quantile_frame, quantile_pick, stat_frame, top_tokens

if TYPE_CHECKING:
    from ..core.protocol import LabLike

__all__ = ["CorruptIndexError", "FeatureIndex"]

_TRIES = 60  # loads / reads tried while writers commit, up to 20 ms apart (about a second in all)


class _Stale(Exception):
    """A file read lazily belongs to a newer generation than the one loaded: the read starts again."""


def _snapshot(method):
    """A public read of one generation: reload first if a writer committed since; start again if a file it
    opens lazily turns out newer (or vanished with the old generation)."""

    @functools.wraps(method)
    def read(self, *args, **kwargs):
        with self._lock:  # one read at a time per object (threads): a reload never lands inside another's read
            if self._depth:  # called by another read: its generation
                return method(self, *args, **kwargs)
            for attempt in range(_TRIES):
                self._refresh()
                self._depth += 1
                try:
                    return method(self, *args, **kwargs)
                except _Stale:
                    pass
                except (CorruptIndexError, OSError):
                    if schema.stamp(self.path)[1] == self._stamp[1]:
                        raise
                finally:
                    self._depth -= 1
                time.sleep(min(0.001 * 2 ** attempt, 0.02))
        raise CorruptIndexError(f"{self.path} kept changing while it was read ({_TRIES} tries)")

    return read


class FeatureIndex:
    """A per-feature index over a corpus: ``FeatureIndex.build(lab, corpus, layers, path)`` computes it,
    ``FeatureIndex.open(path)`` reads it lazily (nothing is loaded until asked, and a feature's rows are read
    without loading its layer), ``index.add(lab, more_documents)`` extends it."""

    def __init__(self, path, verify="cheap"):
        self.path = Path(path)
        self.verify = schema.verify_level(verify)
        self._depth = 0
        self._lock = threading.RLock()
        self._stamp: tuple = (None, None)
        self._cache: dict = {}
        self._load()

    @classmethod
    def open(cls, path, verify="cheap") -> FeatureIndex:
        """Open an index folder lazily, its files checked first; CorruptIndexError naming a damaged file and what
        is wrong with it (a manifest field: its name).

        ``verify="cheap"`` (the default) checks the manifest (every field's type and range; format 2: its
        checksum) and ``state/partial.json`` (the same, and that both agree), that every file it lists is there at
        its recorded size, the sha256 of every file up to ``schema.SMALL_FILE`` (8 MiB), the columns and dtypes
        of every Parquet / Arrow file from its footer, d_sae rows of stats, the windows' width and the number of
        record batches: a few ms for the shipped index (it hashes all of its 6.5 MB), a footer read per file and
        8 MiB at most per file for a large one. A larger file damaged inside (same size) is found by
        ``verify="full"`` (also ``True``), which hashes every file once (about a second per GB), or when the
        damaged part is read (Parquet pages carry checksums). An index written before format 2 has no checksums of
        its JSON files: only their types and ranges are checked."""
        return cls(path, verify=verify)

    def _load(self) -> None:
        """Read the manifest and state/partial.json (checked as ``open`` says) as one generation: again while a
        writer commits between them; the cache is kept when only the manifest changed."""
        for attempt in range(_TRIES):
            before = schema.stamp(self.path)
            try:
                manifest = schema.read_manifest(self.path)
                if before[1] is None and not (self.path / STATE / PARTIAL).is_file():
                    if not (self.path / (STATE + ".old")).is_dir():
                        raise CorruptIndexError(f"{self.path / STATE} is missing: the build has not finished a "
                                                f"shard yet")
                    raise _Stale  # a writer is between two renames (or was killed there: its rerun repairs it)
                if before[1] is not None and before[1] == self._stamp[1]:
                    meta = schema.check_fixed(self.path, manifest, self._meta)
                else:
                    meta = schema.check_state(self.path, manifest, self.verify)
            except (_Stale, CorruptIndexError, OSError) as err:
                if attempt + 1 < _TRIES and (isinstance(err, _Stale) or schema.stamp(self.path) != before):
                    time.sleep(min(0.001 * 2 ** attempt, 0.02))
                    continue
                if isinstance(err, _Stale):
                    raise CorruptIndexError(f"{self.path / STATE} is missing and {STATE}.old is there: a write "
                                            f"was interrupted; rerun it (the build or add) to repair it") from None
                raise
            if schema.stamp(self.path) == before:
                break
        else:
            raise CorruptIndexError(f"{self.path} kept changing while it was opened ({_TRIES} tries)")
        if before[1] != self._stamp[1]:
            self._cache = {}
        self._manifest, self._meta, self._stamp = manifest, meta, before

    def _refresh(self) -> None:
        """Reload if a writer committed since the last load (two ``stat`` calls when none did)."""
        if schema.stamp(self.path) != self._stamp:
            self._load()

    def _same_generation(self) -> None:
        """Raise _Stale if state/ was replaced since the load (called after a file is opened lazily, within a
        read: it then starts again)."""
        if self._depth and schema.stamp(self.path)[1] != self._stamp[1]:
            raise _Stale

    def _fresh(self):
        with self._lock:
            if not self._depth:
                self._refresh()
        return self

    @property
    def manifest(self) -> dict:
        """The manifest (of the generation read now)."""
        return self._fresh()._manifest

    @property
    def meta(self) -> dict:
        """state/partial.json: sources, tokens per source, documents, chunks, files (of the generation read now)."""
        return self._fresh()._meta

    @property
    def params(self) -> dict:
        """The build's parameters."""
        return self._fresh()._manifest["params"]

    @property
    def generation(self) -> int:
        """The generation read now: +1 per committed write (0: an index written before generations)."""
        return int(self._fresh()._meta.get("generation", 0))

    @classmethod
    def build(cls, lab: LabLike, corpus, layers=None, path=None, *, engine: str = "local",
              workers: int | None = None, address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
              resume: bool = True, overwrite: bool = False, progress: bool | None = None,
              lock_timeout: float | None = None, memory_budget=None, **options) -> FeatureIndex:
        """Index ``corpus`` at ``layers`` (default: all with an SAE) into the folder ``path``. The corpus is a
        .txt / .jsonl / .parquet / .csv / .json file or a folder of them (``str`` or ``Path``; a string that looks
        like a path but does not exist is refused, named), one text (a ``str`` that does not look like a path), a
        list or any iterable of texts, ``{"text", "source"}`` rows or paths, a ``{source: texts}`` mapping, or a
        pandas DataFrame read by its ``text`` (and optional ``source``) column; anything else is refused by name
        (``index.corpus`` lists the kinds). To index a string that looks like a file name as a text, pass
        ``[{"text": s}]``. Long documents are chunked to ``context_length``, never cut.

        Options (defaults in ``index.build.DEFAULTS``): ``n_top`` contexts per feature, ``window`` tokens either
        side, ``samples_per_bin`` quantile samples per histogram bin, ``context_length`` tokens per forward,
        ``shard_documents``, ``batch_size``, ``skip_first`` (default True: position 0, the attention sink, is not
        counted) / ``skip_special``, ``seed``, ``distinct_contexts`` (default True: a feature's top contexts are
        distinct windows of text, the strongest firing of each, so a repeated document, boilerplate or a phrase
        repeated within a text shows once; an index built before this option reads as False). ``engine="ray"``
        runs shards on Ray Data (``workers`` actors, ``address="auto"`` for a running cluster). An unfinished
        build at ``path`` is resumed (``resume=False`` refuses it; ``overwrite=True`` starts afresh, deleting
        only a feature index: a folder whose manifest lacks the index's format marker, or that holds other files,
        is refused). Costly options are capped (``index.schema.PARAM_RANGES``). The build holds the index's
        writer lock: another writer waits for it, ``lock_timeout`` seconds at most (None: as long as it takes),
        then TimeoutError.

        ``memory_budget`` (bytes or a string like ``"6GB"``; default the Lab's ``memory_budget``, else half of
        what the device has free) bounds what the build holds beyond the model: the layers are indexed in groups
        that fit (``index.build.plan`` shows them), each SAE read once, and a budget too small for one layer is
        refused before any work (``MemoryBudgetError``, with the numbers). The index is the same whatever the
        budget."""
        from .build import build

        return cls(build(lab, corpus, layers, path, engine=engine, workers=workers, address=address,
                         lab_factory=lab_factory, checkpoint_every=checkpoint_every, resume=resume,
                         overwrite=overwrite, progress=progress, lock_timeout=lock_timeout,
                         memory_budget=memory_budget, **options))

    def add(self, lab: LabLike, corpus, *, engine: str = "local", workers: int | None = None,
            address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
            progress: bool | None = None, lock_timeout: float | None = None, memory_budget=None) -> FeatureIndex:
        """Index more documents into this index (ids continue after the last one); returns the index (this
        object, and any other open on the folder, reads the new generation from its next read).

        Writers are serialised by the index's lock (a second waits, ``lock_timeout`` seconds at most; None: as
        long as it takes). An add killed (SIGKILL, full disk) is finished by rerunning it with the same
        documents, without indexing any twice; other documents are refused until it is. Documents whose first
        shard (``shard_documents`` documents) is the first shard of the build or of an earlier add are refused:
        adding the same documents twice is not allowed. ``memory_budget``: as for ``build``."""
        from .build import add

        self.check(lab)
        add(lab, self.path, corpus, engine=engine, workers=workers, address=address, lab_factory=lab_factory,
            checkpoint_every=checkpoint_every, progress=progress, lock_timeout=lock_timeout,
            memory_budget=memory_budget)
        self._refresh()
        return self

    def export_neuronpedia(self, out, **options) -> list[Path]:
        """The Neuronpedia bulk-import layout of this index (``index.export.export_neuronpedia``'s options)."""
        from .export import export_neuronpedia

        return export_neuronpedia(self, out, **options)

    def __repr__(self) -> str:  # what was read last: no file is read
        m, meta = self._manifest, self._meta
        return (f"FeatureIndex({str(self.path)!r}, model={m['model']!r}, saes={m['sae_suite']!r}, "
                f"layers={m['layers']}, documents={meta['documents']:,}, tokens={sum(meta['tokens_by_source']):,})")

    # ------------------------------------------------------------------ facts
    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def d_sae(self) -> int:
        return int(self.manifest["d_sae"])

    @property
    def sources(self) -> list[str]:
        return list(self.meta["sources"])

    @property
    def tokens(self) -> int:
        """Counted tokens (sink and special tokens skipped) in the index."""
        return int(sum(self.meta["tokens_by_source"]))

    @property
    def documents(self) -> int:
        return int(self.meta["documents"])

    @_snapshot
    def info(self) -> pd.DataFrame:
        """Manifest facts as a two-column table."""
        m = self.manifest
        facts = {"path": str(self.path), "model": m["model"], "sae_suite": m["sae_suite"], "layers": self.layers,
                 "d_sae": self.d_sae, "documents": self.documents, "chunks": self.meta["chunks"],
                 "tokens": self.tokens, "sources": ", ".join(self.sources), "shards": len(m["shards"]),
                 "corpus_fingerprint": m["corpus"]["fingerprint"], "qscope_lab_version": m["qscope_lab_version"],
                 **{f"param.{k}": v for k, v in self.params.items()},
                 "disk_bytes": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())}
        return pd.DataFrame({"field": list(facts), "value": [str(v) for v in facts.values()]})

    @property
    def name(self) -> str:
        return "indexed"

    @_snapshot
    def counted_tokens(self, layer: int) -> int:
        """Counted tokens of the corpus (the same at every layer)."""
        self._layer(layer)
        return self.tokens

    @_snapshot
    def check(self, lab: LabLike) -> None:
        """Refuse an index built for another model or SAE suite, naming both (and a layer whose SAE weights
        differ when that layer is already loaded)."""
        m = self.manifest
        suite = lab.saes.name if lab.saes is not None else None
        if m["model"] != lab.name or m["sae_suite"] != suite:
            raise ValueError(f"the index at {self.path} was built for model {m['model']!r} with SAEs "
                             f"{m['sae_suite']!r}, but this Lab is model {lab.name!r} with SAEs {suite!r}")
        if lab.saes is None:
            return
        if lab.saes.d_sae not in (None, self.d_sae):
            raise ValueError(f"the index at {self.path} has d_sae={self.d_sae} but {suite!r} has {lab.saes.d_sae}")
        for layer, digest in m.get("sae_fingerprints", {}).items():
            if int(layer) in lab.saes.cached_layers and sae_fingerprint(lab.sae(int(layer))) != digest:
                raise ValueError(f"the index at {self.path} was built with other weights for layer {layer} of "
                                 f"{suite!r} (fingerprint {digest} differs): rebuild it")

    # ------------------------------------------------------------------ files
    def _layer(self, layer) -> int:
        if not validate._is_int(layer) or int(layer) not in self.layers:
            raise ValueError(f"layer {layer!r} is not in this index (layers: {self.layers})")
        return int(layer)

    def _feature(self, feature) -> int:
        return validate.feature(feature, self.d_sae)

    def _file(self, layer: int, name: str) -> Path:
        return schema.layer_folder(self.path / STATE, layer) / name

    def _stats_arrays(self, layer: int) -> dict:
        key = ("stats", layer)
        if key not in self._cache:
            table = schema.read_table(self._file(layer, STATS))
            self._same_generation()
            self._cache[key] = {c: table.column(c).to_numpy() for c in table.column_names}
        return self._cache[key]

    def _long(self, layer: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(feature-sorted start offsets, x values, counts) of a long (feature, x, count) table."""
        key = (name, layer)
        if key not in self._cache:
            feature, x, counts = schema.read_long(schema.layer_folder(self.path / STATE, layer), name)
            self._same_generation()
            self._cache[key] = (np.searchsorted(feature, np.arange(self.d_sae + 1)), x, counts)
        return self._cache[key]

    def _contexts(self, layer: int):
        """The layer's contexts file, memory-mapped (once per generation)."""
        reader = self._cache.get(("contexts", layer))
        if reader is None:
            reader = schema.open_contexts(self._file(layer, CONTEXTS))
            self._same_generation()
            self._cache[("contexts", layer)] = reader
        return reader

    def _block(self, layer: int, block: int, reader=None) -> pd.DataFrame:
        """The stored rows of one block of features (one record batch decompressed), window and values as
        arrays."""
        reader = reader or self._contexts(layer)
        try:
            batch = reader.get_batch(block)
        except Exception as err:
            raise CorruptIndexError(f"{self._file(layer, CONTEXTS)} is corrupt ({type(err).__name__}: {err})") \
                from None
        frame = batch.drop_columns(["window", "values"]).to_pandas()
        frame["priority"] = priority(frame.document.to_numpy(), frame.position.to_numpy(), frame.feature.to_numpy(),
                                     self.params["seed"])  # the quantile samples' hash, not stored
        width = batch.column("window").type.list_size
        frame["window"] = list(batch.column("window").flatten().to_numpy().reshape(-1, width))
        frame["values"] = list(batch.column("values").flatten().to_numpy().reshape(-1, width))
        return frame

    def blocks(self, layer: int):
        """Every stored row of a layer, one block of features at a time (for exports and bulk reads)."""
        layer = self._layer(layer)
        reader = self._contexts(layer)  # this generation's file, kept open (mapped) while the blocks are read
        for b in range(reader.num_record_batches):
            yield self._block(layer, b, reader)

    def _rows(self, layer: int, feature: int) -> pd.DataFrame:
        """All stored context rows of one feature (its block decompressed, nothing else of the layer read)."""
        stats = self._stats_arrays(layer)
        start, length = int(stats["offset"][feature]), int(stats["length"][feature])
        if not length:
            return pd.DataFrame(columns=["priority", *schema.STORED_CONTEXT_COLUMNS])
        b = int(stats["batch"][feature])
        last = self._cache.get("block")  # the last block read, kept: a sweep over features decompresses each once
        if last is not None and last[:2] == (layer, b):
            block = last[2]
        else:
            block = self._block(layer, b)
            self._cache["block"] = (layer, b, block)
        rows = block.iloc[start:start + length]
        if len(rows) != length or (rows.feature.to_numpy() != feature).any():  # never another feature's rows
            raise CorruptIndexError(f"{self._file(layer, CONTEXTS)} does not hold the rows that "
                                    f"{self._file(layer, STATS)} points to for feature {feature}")
        return rows

    def _strings(self) -> tuple[dict[int, str], dict[int, bytes]]:
        """Token id -> string, and -> bytes for the fragments of characters (none in an index built before)."""
        if "tokens" not in self._cache:
            tokens = schema.read_tokens(schema.tokens_folder(self.path, self.meta))
            self._same_generation()
            self._cache["tokens"] = tokens
        return self._cache["tokens"]

    @_snapshot
    def _records(self, rows: pd.DataFrame) -> list[dict]:
        """Stored rows as readers show them: the window's tokens as strings, a character split over byte tokens
        whole (``core.tokens.readable``; ``boundary`` says which byte token of it fired), its values, the context
        with the centre in [[ ]], the source's name."""
        (strings, raw), sources = self._strings(), self.sources
        out = []
        for activation, document, position, source, center, window, values in zip(
                rows.activation.tolist(), rows.document.tolist(), rows.position.tolist(), rows.source.tolist(),
                rows.center.tolist(), rows.window, rows["values"]):
            keep = window >= 0
            ids = window[keep].tolist()
            center -= int((~keep[:center]).sum())
            shown, token, boundary = readable([strings.get(t, "?") for t in ids], [raw.get(t) for t in ids], center)
            out.append({"activation": activation, "document": document, "position": position, "token": token,
                        "context": context_string(shown, center), "boundary": boundary, "source": sources[source],
                        "tokens": shown, "values": values[keep].tolist(), "center": center})
        return out

    def _present(self, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self._records(rows), columns=list(CONTEXT_COLUMNS))

    # ------------------------------------------------------------------ readers
    @_snapshot
    def top_contexts(self, layer: int, feature: int, n: int | None = None) -> pd.DataFrame:
        """The feature's strongest activations over the corpus, strongest first: activation, document, position,
        token, context (the token in [[ ]]), boundary, source, and the window's tokens / values / center. With
        ``distinct_contexts`` no text shows twice: the build keeps one firing per window of token keys, and a
        window that reads like a stronger one all the same (other tokens for the same text, a character cut at
        its edge) is left out here."""
        layer, feature = self._layer(layer), self._feature(feature)
        n = self.params["n_top"] if n is None else validate.integer(n, "n", minimum=0)
        rows = self._rows(layer, feature)
        if not self.params["distinct_contexts"]:
            return self._present(rows[rows.kind == TOP].head(n)).reset_index(drop=True)
        frame = self._present(rows[rows.kind == TOP])
        shown = frame.tokens.map(lambda pieces: visible("".join(pieces)))
        return frame[~shown.duplicated()].head(n).reset_index(drop=True)

    @_snapshot
    def histogram(self, layer: int, feature: int) -> pd.DataFrame:
        """The feature's activation histogram over log-spaced bins (``schema.bin_edges``): bin, lower, upper,
        count (nonzero bins)."""
        layer, feature = self._layer(layer), self._feature(feature)
        starts, bins, counts = self._long(layer, HISTOGRAM)
        part = slice(starts[feature], starts[feature + 1])
        edges = schema.bin_edges(self.params)
        b = bins[part].astype(int)
        return pd.DataFrame({"bin": b, "lower": edges[b], "upper": edges[b + 1], "count": counts[part]})

    @_snapshot
    def quantile_samples(self, layer: int, feature: int, intervals: int = 5,
                         per_interval: int | None = None) -> pd.DataFrame:
        """Random firings from each of ``intervals`` activation quantile intervals (cut at histogram bins, so weak
        firings show too, not only the peaks): interval 0 is the weakest. ``per_interval`` at most the build's
        ``samples_per_bin``; the samples are uniform within an interval (bottom-k of a hash)."""
        layer, feature = self._layer(layer), self._feature(feature)
        intervals = validate.integer(intervals, "intervals", minimum=1)
        cap = self.params["samples_per_bin"]
        per = cap if per_interval is None else validate.integer(per_interval, "per_interval", minimum=0, maximum=cap)
        return self._quantiles(self.histogram(layer, feature), self._rows(layer, feature), intervals, per)

    @_snapshot
    def _quantile_records(self, hist: pd.DataFrame, rows: pd.DataFrame, intervals: int, per: int) -> list[dict]:
        rows = rows[rows.kind == SAMPLE]
        pick, interval, lower, upper = quantile_pick(hist, rows.bin.to_numpy(), rows.priority.to_numpy(), intervals,
                                                     per)
        return [{"interval": int(q), "lower": float(lo), "upper": float(hi), **record} for q, lo, hi, record in
                zip(interval, lower, upper, self._records(rows.iloc[pick]))]

    def _quantiles(self, hist: pd.DataFrame, rows: pd.DataFrame, intervals: int, per: int) -> pd.DataFrame:
        return quantile_frame(self._quantile_records(hist, rows, intervals, per))

    @_snapshot
    def stats(self, layer: int) -> pd.DataFrame:
        """One row per feature: ``source.STAT_COLUMNS`` (feature, firing_count, firing_rate over counted tokens,
        max_activation, mean_activation when firing), then ``firing_rate:<source>`` per corpus source."""
        layer = self._layer(layer)
        key = ("stats_frame", layer)
        if key not in self._cache:
            s = self._stats_arrays(layer)
            frame = stat_frame(self.d_sae, s["count"], s["total"], s["peak"], self.tokens)
            starts, source, counts = self._long(layer, SOURCES)
            feature = np.repeat(np.arange(self.d_sae), np.diff(starts))
            for i, name in enumerate(self.sources):
                rate = np.zeros(self.d_sae)
                pick = source == i
                rate[feature[pick]] = counts[pick] / max(self.meta["tokens_by_source"][i], 1)
                frame[f"firing_rate:{name}"] = rate
            self._cache[key] = frame
        return self._cache[key]

    @_snapshot
    def feature_stats(self, layer: int, feature: int) -> dict:
        """One feature's row of ``stats`` as a dict."""
        feature = self._feature(feature)
        return self.stats(layer).iloc[feature].to_dict()

    @_snapshot
    def source_rates(self, layer: int, feature: int) -> pd.DataFrame:
        """The feature's firing rate per corpus source (its language / genre profile): source, firing_count,
        tokens, firing_rate."""
        layer, feature = self._layer(layer), self._feature(feature)
        starts, source, counts = self._long(layer, SOURCES)
        part = slice(starts[feature], starts[feature + 1])
        fired = dict(zip(source[part].tolist(), counts[part].tolist()))
        tokens = self.meta["tokens_by_source"]
        return pd.DataFrame([{"source": name, "firing_count": fired.get(i, 0), "tokens": tokens[i],
                              "firing_rate": fired.get(i, 0) / max(tokens[i], 1)}
                             for i, name in enumerate(self.sources)])

    def explanations(self) -> pd.DataFrame:
        """The explanations stored with this index (``index.explanations``: explainer, model, prompt_version,
        layer, feature, explanation, score, scores, date; empty when none), wherever they live."""
        from .explanations import read_explanations

        return read_explanations(self.path)

    @_snapshot
    def top_tokens(self, layer: int, n: int = 3) -> dict[int, list[str]]:
        """Per feature that fired, the ``n`` tokens carrying most of its top-context activation (feature search
        and hover labels read this); a fragment of a character is named by its bytes, ``⟨e7 8c⟩``."""
        layer = self._layer(layer)
        key = ("top_tokens", layer, n)
        if key not in self._cache:
            import pyarrow.compute as pc

            reader = self._contexts(layer)
            feature, token, activation = [], [], []
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                batch = batch.filter(pc.equal(batch.column("kind"), TOP))
                width = batch.column("window").type.list_size
                window = batch.column("window").flatten().to_numpy().reshape(-1, width)
                center = batch.column("center").to_numpy().astype(int)
                feature.append(batch.column("feature").to_numpy())
                token.append(window[np.arange(len(center)), center])
                activation.append(batch.column("activation").to_numpy())
            strings, raw = self._strings()
            tops = top_tokens(*(np.concatenate(x) if x else np.zeros(0) for x in (feature, token, activation)), n)
            self._cache[key] = {f: [byte_label(raw[t]) if t in raw else strings.get(t, "?") for t in ids]
                                for f, ids in tops.items()}
        return self._cache[key]
