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

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import progress as progress_bars
from ..base import validate
from ..core.tokens import fragment_bytes
from . import corpus as corpora
from . import schema
from .hashes import sae_fingerprint
from .partial import Partial
from .shard import compute_shard

if TYPE_CHECKING:
    from ..core.protocol import LabLike

DEFAULTS = {"n_top": 20, "window": 10, "samples_per_bin": 2, **schema.HISTOGRAM_BINS, "context_length": 256,
            "batch_size": 16, "shard_documents": 1024, "skip_first": True, "skip_special": True, "seed": 0}


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


def build_params(options: dict) -> dict:
    """``DEFAULTS`` updated by ``options``, checked (an unknown option is refused, naming the known ones)."""
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


def build(lab: LabLike, corpus, layers, path, *, engine: str = "local", workers: int | None = None,
          address: str | None = None, lab_factory=None, checkpoint_every: int = 8, resume: bool = True,
          overwrite: bool = False, progress: bool | None = None, **options) -> Path:
    """Index ``corpus`` at ``layers`` into the folder ``path`` (what ``FeatureIndex.build`` runs; its docstring
    says what the arguments mean); returns the folder."""
    if path is None:
        raise TypeError("FeatureIndex.build needs a path: the folder the index is written to")
    if lab.saes is None:
        raise ValueError("this Lab has no SAEs to index")
    layers = lab.check_layers(range(lab.n_layers) if layers is None else layers)
    path = Path(path)
    params = build_params(options)
    manifest = schema.manifest(
        model=lab.name, architecture=lab.architecture, sae_suite=lab.saes.name,
        sae_fingerprints={str(x): sae_fingerprint(lab.sae(x)) for x in sorted(layers)},
        d_sae=int(lab.sae(layers[0]).d_sae), k=int(lab.sae(layers[0]).k), layers=sorted(layers), params=params,
        qscope_lab_version=_version(), corpus={}, shards=[], created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if (path / schema.MANIFEST).is_file():
        if overwrite:
            shutil.rmtree(path)
        else:
            old = json.loads((path / schema.MANIFEST).read_text(encoding="utf-8"))
            differ = [key for key in schema.MATCHING_FIELDS if old.get(key) != manifest[key]]
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
    _write_json(path / schema.MANIFEST, manifest)
    _run(lab, path, corpus, first_shard=0, first_id=0, engine=engine, workers=workers, address=address,
         lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress)
    return path


def add(lab: LabLike, path, corpus, *, engine: str = "local", workers: int | None = None,
        address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
        progress: bool | None = None) -> None:
    """Index more documents into the (finished, checked) index at ``path``: ids continue after the last one."""
    path = Path(path)
    shards = schema.read_manifest(path)["shards"]
    first_shard = shards[-1]["id"] + 1 if shards else 0
    first_id = shards[-1]["first_document"] + shards[-1]["documents"] if shards else 0
    _run(lab, path, corpus, first_shard=first_shard, first_id=first_id, engine=engine, workers=workers,
         address=address, lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress)


def _version() -> str:
    from .. import __version__

    return __version__


def _pending(path: Path, state: Partial | None) -> list[int]:
    """Complete shard folders not yet folded into the state; incomplete ones (a killed write) are removed."""
    done = set(state.shards) if state is not None else set()
    out = []
    for folder in sorted((path / schema.SHARDS).glob("*")) if (path / schema.SHARDS).is_dir() else []:
        if folder.name.endswith((".tmp", ".old")) or not (folder / schema.PARTIAL).is_file():
            shutil.rmtree(folder, ignore_errors=True)
        elif int(folder.name) in done:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            out.append(int(folder.name))
    return out


def _checkpoint(lab: LabLike, path: Path, state: Partial, manifest: dict) -> None:
    ids = state.token_ids().tolist()
    schema.write_tokens(path, ids, lab.token_strings(ids), fragment_bytes(lab, ids))
    state.write(path / schema.STATE)
    fingerprints = "".join(s["fingerprint"] for s in manifest["shards"])
    manifest["corpus"] = {"fingerprint": corpora.fingerprint([]) if not fingerprints else
                          hashlib.sha256(fingerprints.encode()).hexdigest()[:16],
                          "documents": state.documents, "chunks": state.chunks,
                          "tokens": int(sum(state.tokens_by_source)),
                          "sources": dict(zip(state.sources, state.tokens_by_source))}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(path / schema.MANIFEST, manifest)
    for shard in state.shards:
        shutil.rmtree(schema.shard_folder(path, shard), ignore_errors=True)
    if (path / schema.SHARDS).is_dir() and not any((path / schema.SHARDS).iterdir()):
        (path / schema.SHARDS).rmdir()


def _run(lab: LabLike, path: Path, corpus, first_shard: int, first_id: int, engine: str, workers, address,
         lab_factory, checkpoint_every: int, progress) -> None:
    manifest = schema.read_manifest(path)
    params, layers, d_sae = manifest["params"], manifest["layers"], manifest["d_sae"]
    engine = validate.choice(engine, ("local", "ray"), "engine")
    checkpoint_every = validate.integer(checkpoint_every, "checkpoint_every", minimum=1)
    state_dir = path / schema.STATE
    if not state_dir.is_dir() and state_dir.with_name(schema.STATE + ".old").is_dir():  # killed between two renames
        os.replace(state_dir.with_name(schema.STATE + ".old"), state_dir)
    state = Partial.read(state_dir, d_sae, params) if state_dir.is_dir() else None
    for shard in _pending(path, state):  # written after the last checkpoint: folded in shard order
        part = Partial.read(schema.shard_folder(path, shard), d_sae, params)
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
                part.write(schema.shard_folder(path, shard))
            recorded[shard]["tokens"] = int(sum(part.tokens_by_source))
            manifest["shards"] = [recorded[k] for k in sorted(recorded) if k in done or k == shard]
            done.add(shard)
            _write_json(path / schema.MANIFEST, manifest)
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
