"""Building a feature index: one streaming pass over a corpus, shard by shard, resumable, extendable.

Each shard (``shard_documents`` consecutive documents, chunked to ``context_length`` tokens) is encoded through
the one scan loop into a ``Partial``, written atomically to ``shards/NNNNN`` and folded into the running state;
every ``checkpoint_every`` shards (and after the last) the state is written as the readable index and folded
shards are deleted (a shard checkpointed as it arrives is not written on its own first).
A killed build rerun with the same arguments reads the state and the shards written after it, checks each
skipped shard's fingerprint against the corpus, and continues: the result equals an uninterrupted build, because
shards merge exactly and always in shard order. Engines (local, Ray) only decide where shards are computed.

Every write (build, add) holds the index's cross-process lock (``schema.LOCK``, a ``filelock``): a second writer
waits until the first has finished (``lock_timeout`` seconds at most, then TimeoutError; default: as long as it
takes; a killed writer's lock is released by the operating system). Before any work, the manifest records what is
under way (``pending``: a build, or an add with its first shard and document id), so a build or add rerun after a
kill resumes it: shards recorded are checked against the corpus by fingerprint and those already folded are
skipped, so nothing is indexed twice. An add whose documents begin as the build's or an earlier add's did (the
fingerprint of its first shard) is refused: the same documents are not added twice. Each checkpoint writes a new
``state/`` (tokens included) with the next generation, then the manifest with it: a reader sees one generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import progress as progress_bars
from ..base import validate
from ..base.atomic import write_atomic
from ..core.tokens import fragment_bytes
from . import corpus as corpora
from . import schema
from .hashes import sae_fingerprint
from .partial import Partial
from .shard import compute_shard

if TYPE_CHECKING:
    from ..core.protocol import LabLike

DEFAULTS = dict(schema.PARAMS)  # capped by schema.PARAM_RANGES


def local_engine(lab: LabLike, todo: Iterator, layers: list[int], params: dict) -> Iterator[tuple[int, Partial]]:
    for shard, docs in todo:
        yield shard, compute_shard(lab, shard, docs, layers, params)


def _write_manifest(path: Path, manifest: dict) -> None:
    """The manifest, with its checksum, replaced atomically (``base.atomic``)."""
    write_atomic(path / schema.MANIFEST, json.dumps(schema.sealed(manifest), indent=1))


@contextlib.contextmanager
def locked(path: Path, timeout: float | None = None):
    """Hold the writer lock of the index at ``path``: another process's writer waits until it is released, for
    ``timeout`` seconds at most (None: as long as it takes), then TimeoutError naming the lock."""
    from filelock import FileLock, Timeout

    if timeout is not None:
        timeout = validate.number(timeout, "lock_timeout", minimum=0)
    lock = FileLock(str(path / schema.LOCK), timeout=-1 if timeout is None else timeout)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"another process is writing the index at {path} (it holds {path / schema.LOCK}); "
                           f"waited {timeout:g} s for it to finish (lock_timeout)") from None
    except PermissionError:
        raise PermissionError(f"cannot write the index at {path}: permission denied (a read-only index, such as "
                              f"the shipped one, can be copied elsewhere and extended there)") from None
    try:
        yield
    finally:
        lock.release()


def _refuse_foreign(path: Path, overwrite: bool) -> None:
    """Refuse a folder that is not a feature index (its manifest lacks the format marker, or it holds other
    files), and with ``overwrite`` an index beside files no index writer puts there: nothing else is deleted."""
    if not path.exists():
        return
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder for a feature index")
    foreign = schema.foreign_entries(path)
    if (path / schema.MANIFEST).exists():
        if not schema.is_index_manifest(path / schema.MANIFEST):
            raise FileExistsError(f"{path} is not a feature index: its {schema.MANIFEST} has no "
                                  f"\"format\": \"{schema.FORMAT}\"; refusing to "
                                  f"{'delete' if overwrite else 'write into'} it (choose an empty or new folder)")
        if overwrite and foreign:
            raise FileExistsError(f"{path} holds a feature index and also {foreign[:5]}, which no index writes: "
                                  f"overwrite=True deletes only an index; move them away or choose another folder")
    elif [p.name for p in path.iterdir() if p.name != schema.LOCK and not p.name.startswith(schema.TEMP_PREFIX)]:
        raise FileExistsError(f"{path} exists and is not a feature index (no {schema.MANIFEST}); choose an empty "
                              f"or new folder")


def _clear(path: Path) -> None:
    """Delete the index at ``path`` (only what an index writer puts there; the manifest last, the lock kept)."""
    for name in schema.INDEX_ENTRIES:
        if name not in (schema.MANIFEST, schema.LOCK):
            entry = path / name
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
    for entry in path.glob(schema.TEMP_PREFIX + "*" + schema.TEMP_SUFFIX):
        entry.unlink(missing_ok=True)
    (path / schema.MANIFEST).unlink()


def build_params(options: dict) -> dict:
    """``DEFAULTS`` updated by ``options``, checked (an unknown option is refused, naming the known ones)."""
    params = dict(DEFAULTS)
    unknown = set(options) - set(params)
    if unknown:
        raise TypeError(f"unknown index option(s) {sorted(unknown)}; options: {sorted(params)}")
    params.update(options)
    for name, (lo, hi) in schema.PARAM_RANGES.items():
        try:
            params[name] = validate.integer(params[name], name, minimum=lo, maximum=hi)
        except ValueError as err:
            raise ValueError(f"{err} (the cap on {name}, see index.schema.PARAM_RANGES)") from None
    for name in schema.BOOL_PARAMS:
        if not isinstance(params[name], bool):
            raise TypeError(f"{name} must be True or False, got {params[name]!r}")
    return schema.check_params(params)


def build(lab: LabLike, corpus, layers, path, *, engine: str = "local", workers: int | None = None,
          address: str | None = None, lab_factory=None, checkpoint_every: int = 8, resume: bool = True,
          overwrite: bool = False, progress: bool | None = None, lock_timeout: float | None = None,
          **options) -> Path:
    """Index ``corpus`` at ``layers`` into the folder ``path`` (what ``FeatureIndex.build`` runs; its docstring
    says what the arguments mean); returns the folder."""
    if path is None:
        raise TypeError("FeatureIndex.build needs a path: the folder the index is written to")
    if lab.saes is None:
        raise ValueError("this Lab has no SAEs to index")
    layers = lab.check_layers(range(lab.n_layers) if layers is None else layers)
    path = Path(path)
    params = build_params(options)
    limit = lab.max_positions
    if limit is not None and params["context_length"] > limit:
        raise ValueError(f"context_length={params['context_length']} is longer than the {limit} positions "
                         f"{lab.name} reads: documents are chunked to context_length, use at most {limit}")
    manifest = schema.manifest(
        model=lab.name, architecture=lab.architecture, sae_suite=lab.saes.name,
        sae_fingerprints={str(x): sae_fingerprint(lab.sae(x)) for x in sorted(layers)},
        d_sae=int(lab.sae(layers[0]).d_sae), k=int(lab.sae(layers[0]).k), layers=sorted(layers), params=params,
        qscope_lab_version=_version(), corpus={}, shards=[], created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _refuse_foreign(path, overwrite)  # before the folder or its lock is created
    path.mkdir(parents=True, exist_ok=True)
    with locked(path, lock_timeout):
        _refuse_foreign(path, overwrite)  # again: another writer may have been first
        if (path / schema.MANIFEST).is_file():
            if overwrite:
                _clear(path)
            else:
                old = schema.read_manifest(path)
                differ = [key for key in schema.MATCHING_FIELDS if old.get(key) != manifest[key]]
                if differ:
                    raise ValueError(f"{path} holds an index built with other {', '.join(differ)} "
                                     f"({ {k: old.get(k) for k in differ} }); pass overwrite=True to replace it")
                if not resume:
                    raise FileExistsError(f"{path} already holds an index; resume=True continues it, "
                                          f"overwrite=True replaces it")
                pending = old.get("pending")
                if pending is not None and pending["kind"] == "add":
                    raise ValueError(f"an add into the index at {path} was interrupted (documents from id "
                                     f"{pending['first_document']}): rerun that add to finish it")
                manifest = schema.upgraded(old)
        manifest["pending"] = {"kind": "build", "first_shard": 0, "first_document": 0}
        _write_manifest(path, manifest)
        _run(lab, path, corpus, first_shard=0, first_id=0, engine=engine, workers=workers, address=address,
             lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress)
    return path


def add(lab: LabLike, path, corpus, *, engine: str = "local", workers: int | None = None,
        address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
        progress: bool | None = None, lock_timeout: float | None = None) -> None:
    """Index more documents into the (finished, checked) index at ``path``: ids continue after the last one.

    Under the writer lock. An add interrupted before (killed, disk full) is resumed when rerun with the same
    documents (refused, naming it, with others); documents whose first shard matches the first shard of the
    build or of an earlier add are refused (already indexed)."""
    path = Path(path)
    schema.read_manifest(path)  # no lock file is created in a folder that is not an index
    with locked(path, lock_timeout):
        manifest = schema.upgraded(schema.read_manifest(path))
        pending = manifest["pending"]
        if pending is not None and pending["kind"] == "build":
            raise ValueError(f"the build of the index at {path} has not finished: rerun FeatureIndex.build with "
                             f"the same corpus to finish it before adding documents")
        shards = manifest["shards"]
        if pending is None:
            pending = {"kind": "add", "first_shard": shards[-1]["id"] + 1 if shards else 0,
                       "first_document": shards[-1]["first_document"] + shards[-1]["documents"] if shards else 0}
        first_shard, first_id = pending["first_shard"], pending["first_document"]
        params = manifest["params"]
        stream = corpora.shards(corpus, params["shard_documents"], first_shard, first_id)
        first = next(stream, None)
        if first is None:
            raise ValueError("the corpus has no documents to add")
        fingerprint = corpora.fingerprint(first[1])
        recorded = {s["id"]: s for s in shards}
        if first_shard in recorded:  # an interrupted add: the same documents finish it
            if recorded[first_shard]["fingerprint"] != fingerprint:
                raise ValueError(f"an add into the index at {path} was interrupted (documents from id {first_id}), "
                                 f"and these documents are not the ones it was adding (shard {first_shard}'s "
                                 f"fingerprint {fingerprint} vs {recorded[first_shard]['fingerprint']}): rerun "
                                 f"that add with the same documents to finish it")
        else:
            starts = [0] + [a["first_shard"] for a in manifest["adds"]]
            for i, start in enumerate(starts):
                if start in recorded and recorded[start]["fingerprint"] == fingerprint:
                    what = ("the build" if i == 0 else
                            f"add {i} (documents from id {manifest['adds'][i - 1]['first_document']})")
                    raise ValueError(f"these documents are already in the index at {path}: they begin as {what} "
                                     f"did (shard fingerprint {fingerprint}); adding the same documents twice is "
                                     f"refused")
        if manifest["pending"] is None:
            manifest["pending"] = pending
            _write_manifest(path, manifest)  # before any work: a rerun after a kill resumes this add
        _run(lab, path, corpus, first_shard=first_shard, first_id=first_id, engine=engine, workers=workers,
             address=address, lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress,
             stream=itertools.chain([first], stream))


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
    """The state as the readable index (its tokens with it), at the next generation; then the manifest."""
    ids = state.token_ids().tolist()
    generation = manifest["generation"] + 1
    state.write(path / schema.STATE, tokens=(ids, lab.token_strings(ids), fragment_bytes(lab, ids)),
                state={"generation": generation, "index": schema.fixed_fields(manifest)})
    manifest["generation"] = generation
    fingerprints = "".join(s["fingerprint"] for s in manifest["shards"])
    manifest["corpus"] = {"fingerprint": corpora.fingerprint([]) if not fingerprints else
                          hashlib.sha256(fingerprints.encode()).hexdigest()[:16],
                          "documents": state.documents, "chunks": state.chunks,
                          "tokens": int(sum(state.tokens_by_source)),
                          "sources": dict(zip(state.sources, state.tokens_by_source))}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_manifest(path, manifest)
    (path / schema.TOKENS).unlink(missing_ok=True)  # format 1 kept it beside the manifest
    for shard in state.shards:
        shutil.rmtree(schema.shard_folder(path, shard), ignore_errors=True)
    if (path / schema.SHARDS).is_dir() and not any((path / schema.SHARDS).iterdir()):
        (path / schema.SHARDS).rmdir()


def _run(lab: LabLike, path: Path, corpus, first_shard: int, first_id: int, engine: str, workers, address,
         lab_factory, checkpoint_every: int, progress, stream=None) -> None:
    manifest = schema.upgraded(schema.read_manifest(path))
    params, layers, d_sae = manifest["params"], manifest["layers"], manifest["d_sae"]
    engine = validate.choice(engine, ("local", "ray"), "engine")
    checkpoint_every = validate.integer(checkpoint_every, "checkpoint_every", minimum=1)
    state_dir = path / schema.STATE
    if not state_dir.is_dir() and state_dir.with_name(schema.STATE + ".old").is_dir():  # killed between two renames
        os.replace(state_dir.with_name(schema.STATE + ".old"), state_dir)
    state = Partial.read(state_dir, d_sae, params) if state_dir.is_dir() else None
    if state is not None:  # a writer killed between the state and the manifest left the state a generation ahead
        generation = schema.load_json(state_dir / schema.PARTIAL, "partial").get("generation", 0)
        manifest["generation"] = max(manifest["generation"], generation)
    for shard in _pending(path, state):  # written after the last checkpoint: folded in shard order
        part = Partial.read(schema.shard_folder(path, shard), d_sae, params)
        state = part if state is None else (state.merge(part) or state)
    recorded = {s["id"]: s for s in manifest["shards"]}
    done = set(state.shards) if state is not None else set()

    total = len(corpus) if hasattr(corpus, "__len__") and not isinstance(corpus, (str, Path)) else 0
    bar_ctx = progress_bars.bar(total, progress, desc="index", threshold=progress_bars.THRESHOLD)

    def todo():
        for shard, docs in stream or corpora.shards(corpus, params["shard_documents"], first_shard, first_id):
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
            _write_manifest(path, manifest)
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
    pending = manifest["pending"]
    if pending is not None:  # finished: nothing under way
        if pending["kind"] == "add":
            mine = [s for s in manifest["shards"] if s["id"] >= pending["first_shard"]]
            manifest["adds"].append({"first_shard": pending["first_shard"],
                                     "first_document": pending["first_document"],
                                     "documents": sum(s["documents"] for s in mine), "shards": len(mine)})
        manifest["pending"] = None
        _write_manifest(path, manifest)


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
