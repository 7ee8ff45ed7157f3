"""Building a feature index: one streaming pass over a corpus, shard by shard, resumable, extendable.

Each shard (``shard_documents`` consecutive documents, chunked to ``context_length`` tokens) is encoded through
the one scan loop into a ``Partial``, written atomically to ``shards/NNNNN`` and folded into the running state;
every ``checkpoint_every`` shards (and after the last) the state is written as the readable index and folded
shards are deleted (a shard checkpointed as it arrives is not written on its own first).
A killed build rerun with the same arguments reads the state and the shards written after it, checks each
skipped shard's fingerprint against the corpus, and continues: the result equals an uninterrupted build, because
shards merge exactly and always in shard order. Engines (local, Ray) only decide where shards are computed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base import progress as progress_bars
from ..base import validate
from ..core.tokens import fragment_bytes
from . import corpus as corpora
from . import store as fmt
from .partial import Partial
from .shard import compute_shard

if TYPE_CHECKING:
    from ..core.protocol import LabLike

DEFAULTS = {"n_top": 20, "window": 10, "samples_per_bin": 2, "bins_per_decade": 8, "min_exponent": -3,
            "n_bins": 64, "context_length": 256, "batch_size": 16, "shard_documents": 1024, "skip_first": True,
            "skip_special": True, "seed": 0}
_MATCHING = ("model", "sae_suite", "sae_fingerprints", "layers", "d_sae", "params")


def local_engine(lab: LabLike, todo: Iterator, layers: list[int], params: dict) -> Iterator[tuple[int, Partial]]:
    for shard, docs in todo:
        yield shard, compute_shard(lab, shard, docs, layers, params)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _params(lab: LabLike, options: dict) -> dict:
    params = dict(DEFAULTS)
    unknown = set(options) - set(params)
    if unknown:
        raise TypeError(f"unknown index option(s) {sorted(unknown)}; options: {sorted(params)}")
    params.update(options)
    for name in ("n_top", "samples_per_bin", "context_length", "batch_size", "shard_documents", "bins_per_decade",
                 "n_bins"):
        params[name] = validate.integer(params[name], name, minimum=1)
    params["window"] = validate.integer(params["window"], "window", minimum=0, maximum=1000)
    return params


class FeatureIndex(fmt.FeatureIndex):
    """A per-feature index over a corpus: ``FeatureIndex.build(lab, corpus, layers, path)`` computes it,
    ``FeatureIndex.open(path)`` reads it lazily, ``index.add(lab, more_documents)`` extends it."""

    @classmethod
    def build(cls, lab: LabLike, corpus, layers=None, path=None, *, engine: str = "local", workers: int | None = None,
              address: str | None = None, lab_factory=None, checkpoint_every: int = 8, resume: bool = True,
              overwrite: bool = False, progress: bool | None = None, **options) -> FeatureIndex:
        """Index ``corpus`` (files, a folder, a list, a ``{source: texts}`` mapping, any iterable of texts or
        ``{"text", "source"}`` rows) at ``layers`` (default: all with an SAE) into the folder ``path``.

        Options (defaults in ``DEFAULTS``): ``n_top`` contexts per feature, ``window`` tokens either side,
        ``samples_per_bin`` quantile samples per histogram bin, ``context_length`` tokens per forward,
        ``shard_documents``, ``batch_size``, ``skip_first`` / ``skip_special``, ``seed``. ``engine="ray"`` runs
        shards on Ray Data (``workers`` actors, ``address="auto"`` for a running cluster). An unfinished build
        at ``path`` is resumed (``resume=False`` refuses it; ``overwrite=True`` starts afresh)."""
        if path is None:
            raise TypeError("FeatureIndex.build needs a path: the folder the index is written to")
        if lab.saes is None:
            raise ValueError("this Lab has no SAEs to index")
        layers = lab.check_layers(range(lab.n_layers) if layers is None else layers)
        path = Path(path)
        params = _params(lab, options)
        manifest = {"format": fmt.FORMAT, "format_version": fmt.FORMAT_VERSION, "model": lab.name,
                    "architecture": lab.architecture, "sae_suite": lab.saes.name,
                    "sae_fingerprints": {str(x): fmt.sae_fingerprint(lab.sae(x)) for x in sorted(layers)},
                    "d_sae": int(lab.sae(layers[0]).d_sae), "k": int(lab.sae(layers[0]).k), "layers": sorted(layers),
                    "params": params, "qscope_lab_version": _version(), "corpus": {}, "shards": [],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if (path / fmt.MANIFEST).is_file():
            if overwrite:
                shutil.rmtree(path)
            else:
                old = json.loads((path / fmt.MANIFEST).read_text(encoding="utf-8"))
                differ = [key for key in _MATCHING if old.get(key) != manifest[key]]
                if differ:
                    raise ValueError(f"{path} holds an index built with other {', '.join(differ)} "
                                     f"({ {k: old.get(k) for k in differ} }); pass overwrite=True to replace it")
                if not resume:
                    raise FileExistsError(f"{path} already holds an index; resume=True continues it, "
                                          f"overwrite=True replaces it")
                manifest = old
        elif path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a feature index; choose an empty or new folder")
        path.mkdir(parents=True, exist_ok=True)
        _write_json(path / fmt.MANIFEST, manifest)
        _run(lab, path, corpus, first_shard=0, first_id=0, engine=engine, workers=workers, address=address,
             lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress)
        return cls(path)

    def export_neuronpedia(self, out, **options):
        """The Neuronpedia bulk-import layout of this index (``index.export.export_neuronpedia``)."""
        from .export import export_neuronpedia

        return export_neuronpedia(self, out, **options)

    def add(self, lab: LabLike, corpus, *, engine: str = "local", workers: int | None = None,
            address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
            progress: bool | None = None) -> FeatureIndex:
        """Index more documents into this index (ids continue after the last one); returns the index reopened."""
        self.check(lab)
        shards = self.manifest["shards"]
        first_shard = shards[-1]["id"] + 1 if shards else 0
        first_id = shards[-1]["first_document"] + shards[-1]["documents"] if shards else 0
        _run(lab, self.path, corpus, first_shard=first_shard, first_id=first_id, engine=engine, workers=workers,
             address=address, lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress)
        return type(self)(self.path)


def _version() -> str:
    from .. import __version__

    return __version__


def _pending(path: Path, state: Partial | None) -> list[int]:
    """Complete shard folders not yet folded into the state; incomplete ones (a killed write) are removed."""
    done = set(state.shards) if state is not None else set()
    out = []
    for folder in sorted((path / fmt.SHARDS).glob("*")) if (path / fmt.SHARDS).is_dir() else []:
        if folder.name.endswith((".tmp", ".old")) or not (folder / fmt.PARTIAL).is_file():
            shutil.rmtree(folder, ignore_errors=True)
        elif int(folder.name) in done:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            out.append(int(folder.name))
    return out


def _checkpoint(lab: LabLike, path: Path, state: Partial, manifest: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = state.token_ids()
    tmp = path / (fmt.TOKENS + ".tmp")
    pq.write_table(pa.table({"id": ids.astype(np.int64), "string": lab.token_strings(ids.tolist()),
                             "bytes": pa.array(fragment_bytes(lab, ids.tolist()), pa.binary())}), tmp)
    os.replace(tmp, path / fmt.TOKENS)
    state.write(path / fmt.STATE)
    fingerprints = "".join(s["fingerprint"] for s in manifest["shards"])
    manifest["corpus"] = {"fingerprint": corpora.fingerprint([]) if not fingerprints else
                          __import__("hashlib").sha256(fingerprints.encode()).hexdigest()[:16],
                          "documents": state.documents, "chunks": state.chunks,
                          "tokens": int(sum(state.tokens_by_source)),
                          "sources": dict(zip(state.sources, state.tokens_by_source))}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(path / fmt.MANIFEST, manifest)
    for shard in state.shards:
        shutil.rmtree(path / fmt.SHARDS / f"{shard:05d}", ignore_errors=True)
    if (path / fmt.SHARDS).is_dir() and not any((path / fmt.SHARDS).iterdir()):
        (path / fmt.SHARDS).rmdir()


def _run(lab: LabLike, path: Path, corpus, first_shard: int, first_id: int, engine: str, workers, address,
         lab_factory, checkpoint_every: int, progress) -> None:
    manifest = json.loads((path / fmt.MANIFEST).read_text(encoding="utf-8"))
    params, layers, d_sae = manifest["params"], manifest["layers"], manifest["d_sae"]
    engine = validate.choice(engine, ("local", "ray"), "engine")
    checkpoint_every = validate.integer(checkpoint_every, "checkpoint_every", minimum=1)
    state_dir = path / fmt.STATE
    if not state_dir.is_dir() and state_dir.with_name(fmt.STATE + ".old").is_dir():  # killed between two renames
        os.replace(state_dir.with_name(fmt.STATE + ".old"), state_dir)
    state = Partial.read(state_dir, d_sae, params) if state_dir.is_dir() else None
    for shard in _pending(path, state):  # written after the last checkpoint: folded in shard order
        part = Partial.read(path / fmt.SHARDS / f"{shard:05d}", d_sae, params)
        state = part if state is None else (state.merge(part) or state)
    recorded = {s["id"]: s for s in manifest["shards"]}
    done = set(state.shards) if state is not None else set()

    total = len(corpus) if hasattr(corpus, "__len__") and not isinstance(corpus, (str, Path)) else 0
    bar_ctx = progress_bars.bar(total, progress, desc="index", threshold=progress_bars.THRESHOLD)

    def todo():
        for shard, docs in corpora.shards(corpus, params["shard_documents"], first_shard, first_id):
            fingerprint = corpora.fingerprint(docs)
            if shard in recorded and recorded[shard]["fingerprint"] != fingerprint:
                raise ValueError(f"shard {shard} of the corpus differs from the one indexed at {path} (fingerprint "
                                 f"{fingerprint} vs {recorded[shard]['fingerprint']}): resume with the same corpus, "
                                 f"or add new documents with index.add")
            if shard in done:
                recorded.setdefault(shard, {"id": shard, "first_document": docs[0].id, "documents": len(docs),
                                            "fingerprint": fingerprint, "tokens": None})
                bar.update(len(docs))
                continue
            recorded[shard] = {"id": shard, "first_document": docs[0].id, "documents": len(docs),
                               "fingerprint": fingerprint}
            yield shard, docs

    feed = _Ahead(todo())
    if engine == "ray":
        from .ray_engine import ray_engine

        shards_out = ray_engine(lab, feed, layers, params, workers=workers, address=address, lab_factory=lab_factory)
    else:
        shards_out = local_engine(lab, feed, layers, params)
    started, tokens, since_checkpoint, received = time.perf_counter(), 0, 0, 0
    with bar_ctx as bar:
        for shard, part in shards_out:
            received += 1
            # a shard checkpointed at once is not written on its own too: killed before the state is renamed
            # into place, the build recomputes it
            checkpoint = since_checkpoint + 1 >= checkpoint_every or (feed.exhausted and received == feed.count)
            if not checkpoint:
                part.write(path / fmt.SHARDS / f"{shard:05d}")
            recorded[shard]["tokens"] = int(sum(part.tokens_by_source))
            manifest["shards"] = [recorded[k] for k in sorted(recorded) if k in done or k == shard]
            done.add(shard)
            _write_json(path / fmt.MANIFEST, manifest)
            if state is None:
                state = part
            else:
                state.merge(part)
            tokens += recorded[shard]["tokens"]
            bar.update(part.documents)
            bar.set_postfix(tokens_per_s=f"{tokens / max(time.perf_counter() - started, 1e-9):,.0f}")
            since_checkpoint += 1
            if checkpoint:
                _checkpoint(lab, path, state, manifest)
                since_checkpoint = 0
    if state is None:
        raise ValueError("the corpus has no documents to index")
    if since_checkpoint or not received:
        _checkpoint(lab, path, state, manifest)


class _Ahead:
    """An iterator that reads one item ahead, so that ``exhausted`` says, as its last item is handed out, that
    it is the last (``count``: the items handed out so far)."""

    def __init__(self, items):
        self.items, self.count, self.exhausted, self.next = iter(items), 0, False, None

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.items) if self.count == 0 else self.next  # StopIteration ends it either way
        if item is _Ahead:
            raise StopIteration
        self.next = next(self.items, _Ahead)
        self.count += 1
        self.exhausted = self.next is _Ahead
        return item
