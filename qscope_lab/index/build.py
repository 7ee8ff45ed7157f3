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

Memory: a build or add obeys ``memory_budget`` (default: the Lab's, else half of what the device has free).
``plan`` bounds what indexing one layer holds (its SAE, its per-feature tables and rows, proposed rows capped in
bytes) and cuts the layers into consecutive groups that fit; a budget too small for one layer is refused before
any work (``MemoryBudgetError``, with the numbers). With one group the build is as above. With several, the job
runs one pass per group over the same shards (the documents are kept in ``work/docs``), each SAE read once, each
group's state checkpointed and resumed in ``work/group{G}``; a pass saves the block outputs at its last layer so
the next pass runs only its own layers' blocks (``shard.residuals_from``; the Ray engine runs the forward again
instead); when every group is done their layer folders become ``state/`` at the next generation. Shards merge
in the same order for every layer, so the index is the same, file for file, whatever the budget.
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

from ..base import budget as budgets
from ..base import progress as progress_bars
from ..base import validate
from ..base.atomic import write_atomic
from ..core.tokens import TokenKeys, fragment_bytes
from . import corpus as corpora
from . import schema
from .hashes import sae_fingerprint
from .partial import Partial, assemble, layer_bytes, window_token_ids
from .shard import compute_shard

if TYPE_CHECKING:
    from ..core.protocol import LabLike

DEFAULTS = dict(schema.PARAMS)  # capped by schema.PARAM_RANGES


UNKNOWN = "?"  # a layer's SAE fingerprint in the manifest of a build by groups, until its group loads that SAE
PENDING_PER_FEATURE = 2048  # bytes of proposed rows a layer holds per feature before a flush, under a budget


def local_engine(lab: LabLike, todo: Iterator, layers: list[int], params: dict, **options
                 ) -> Iterator[tuple[int, Partial]]:
    boundary_in, boundary_out = options.pop("boundary_in", None), options.pop("boundary_out", None)
    for shard, docs in todo:
        yield shard, compute_shard(lab, shard, docs, layers, params,
                                   boundary_in=boundary_in and boundary_in / f"{shard:05d}",
                                   boundary_out=boundary_out and boundary_out / f"{shard:05d}", **options)


def sae_bytes(lab: LabLike, layer: int, d_sae: int) -> int:
    """What one layer's SAE holds: its own size when it is loaded, else float32 encoder, decoder and biases."""
    if lab.saes is not None and layer in lab.saes.cached_layers:
        return int(lab.sae(layer).nbytes)
    return 4 * (2 * lab.d_model * d_sae + d_sae + lab.d_model)


def plan(lab: LabLike, layers: list[int], params: dict, memory_budget=None, d_sae: int | None = None,
         job: str = "FeatureIndex.build") -> budgets.LayerPlan:
    """The layer groups of an index job within ``memory_budget`` (bytes or '6GB'; None: the Lab's, else half of
    what the device has free): ``plan_for`` with this Lab's widths and its first SAE's size. MemoryBudgetError,
    with the numbers, when one layer does not fit."""
    if memory_budget is None:
        memory_budget = getattr(lab, "memory_budget", None)
    budget = budgets.resolve(memory_budget, lab.device)
    if d_sae is None:
        d_sae = int((lab.saes.d_sae if lab.saes is not None else None) or lab.sae(layers[0]).d_sae)
    return plan_for(layers, lab.d_model, d_sae, params, budget, sae=sae_bytes(lab, layers[0], d_sae), job=job)


def plan_for(layers, d_model: int, d_sae: int, params: dict, budget, sae: int | None = None,
             job: str = "FeatureIndex.build") -> budgets.LayerPlan:
    """The layer groups of an index job for SAEs ``d_model`` x ``d_sae`` (``sae`` bytes each; default float32)
    within ``budget``. Per layer: its SAE, ``partial.layer_bytes`` (an upper bound of its state) and a batch's
    block output; held whatever the layers: one batch's dense encode, the forward's activations and the token
    windows of the batches whose proposals wait for a flush. ``notes``: the parts."""
    budget = budgets.parse_bytes(budget)
    sae = 4 * (2 * d_model * d_sae + d_sae + d_model) if sae is None else int(sae)
    pending = PENDING_PER_FEATURE * d_sae
    state = layer_bytes(d_sae, params, pending)
    tokens = params["batch_size"] * params["context_length"]
    residual = tokens * d_model * 4  # a batch's block output at each layer of the group
    per_layer = sae + state["total"] + residual
    encode = 2 * tokens * d_sae * 4  # one layer's dense pre-activations and their top-k, one batch at a time
    forward = 8 * tokens * d_model * 4  # the forward's own activations for a batch (beyond the weights)
    windows = 256 * tokens * (2 * params["window"] + 1 + 4) * 4  # batches' token windows kept for their tables
    fixed = encode + forward + windows
    out = budgets.plan_layers(list(layers), per_layer, budget, fixed=fixed, job=job)
    out.notes.update({"sae": sae, "state": state, "residual": residual, "encode": encode, "forward": forward,
                      "windows": windows, "pending_bytes": pending, "d_sae": d_sae})
    return out


def _load_group(lab: LabLike, group: list[int], manifest: dict, path: Path) -> dict:
    """The SAEs of ``group``, each read once and held for the group's pass; their fingerprints checked against
    those the manifest records (ValueError naming the layer) and recorded where it has none yet."""
    saes, changed = {}, False
    for layer in group:
        saes[layer] = sae = lab.sae(layer)
        digest, known = sae_fingerprint(sae), manifest["sae_fingerprints"].get(str(layer), UNKNOWN)
        if known == UNKNOWN:
            manifest["sae_fingerprints"][str(layer)] = digest
            changed = True
        elif known != digest:
            raise ValueError(f"the SAE of layer {layer} is not the one the index at {path} was built with "
                             f"(fingerprint {digest} vs {known}): index with the same SAEs, or build a new index")
    if changed:
        _write_manifest(path, manifest)
    return saes


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
          memory_budget=None, **options) -> Path:
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
    layers = sorted(layers)
    groups = plan(lab, layers, params, memory_budget).groups  # before any work: refused when one layer won't fit
    first = {layer: lab.sae(layer) for layer in groups[0]}  # the first group's SAEs: read once, held for its pass
    fingerprints = {str(x): sae_fingerprint(first[x]) if x in first else UNKNOWN for x in layers}
    manifest = schema.manifest(
        model=lab.name, architecture=lab.architecture, sae_suite=lab.saes.name, sae_fingerprints=fingerprints,
        d_sae=int(first[layers[0]].d_sae), k=int(first[layers[0]].k), layers=layers, params=params,
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
                differ = [key for key in schema.MATCHING_FIELDS if key != "sae_fingerprints"
                          and old.get(key) != manifest[key]]
                old_fps = old.get("sae_fingerprints") or {}
                if any(old_fps.get(x, UNKNOWN) not in (UNKNOWN, v) for x, v in fingerprints.items()
                       if v != UNKNOWN) or set(old_fps) != set(fingerprints):
                    differ.append("sae_fingerprints")
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
                manifest["sae_fingerprints"].update({x: v for x, v in fingerprints.items() if v != UNKNOWN})
        manifest["pending"] = {"kind": "build", "first_shard": 0, "first_document": 0}
        _write_manifest(path, manifest)
        _run(lab, path, corpus, first_shard=0, first_id=0, engine=engine, workers=workers, address=address,
             lab_factory=lab_factory, checkpoint_every=checkpoint_every, progress=progress, groups=groups,
             saes=first)
    return path


def add(lab: LabLike, path, corpus, *, engine: str = "local", workers: int | None = None,
        address: str | None = None, lab_factory=None, checkpoint_every: int = 8,
        progress: bool | None = None, lock_timeout: float | None = None, memory_budget=None) -> None:
    """Index more documents into the (finished, checked) index at ``path``: ids continue after the last one.

    Under the writer lock. An add interrupted before (killed, disk full) is resumed when rerun with the same
    documents (refused, naming it, with others); documents whose first shard matches the first shard of the
    build or of an earlier add are refused (already indexed)."""
    path = Path(path)
    known = schema.read_manifest(path)  # no lock file is created in a folder that is not an index
    groups = plan(lab, known["layers"], known["params"], memory_budget, d_sae=known["d_sae"],
                  job="FeatureIndex.add").groups  # before any work
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
             stream=itertools.chain([first], stream), groups=groups)


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
    _record(path, manifest, state.meta(), generation)


def _record(path: Path, manifest: dict, meta: dict, generation: int) -> None:
    """The manifest of the state just written (``meta``: its partial.json fields), then folded shards deleted."""
    manifest["generation"] = generation
    fingerprints = "".join(s["fingerprint"] for s in manifest["shards"])
    manifest["corpus"] = {"fingerprint": corpora.fingerprint([]) if not fingerprints else
                          hashlib.sha256(fingerprints.encode()).hexdigest()[:16],
                          "documents": meta["documents"], "chunks": meta["chunks"],
                          "tokens": int(sum(meta["tokens_by_source"])),
                          "sources": dict(zip(meta["sources"], meta["tokens_by_source"]))}
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_manifest(path, manifest)
    (path / schema.TOKENS).unlink(missing_ok=True)  # format 1 kept it beside the manifest
    for shard in meta["shards"]:
        shutil.rmtree(schema.shard_folder(path, shard), ignore_errors=True)
    if (path / schema.SHARDS).is_dir() and not any((path / schema.SHARDS).iterdir()):
        (path / schema.SHARDS).rmdir()


def _run(lab: LabLike, path: Path, corpus, first_shard: int, first_id: int, engine: str, workers, address,
         lab_factory, checkpoint_every: int, progress, stream=None, groups=None, saes=None) -> None:
    manifest = schema.upgraded(schema.read_manifest(path))
    params, layers, d_sae = manifest["params"], manifest["layers"], manifest["d_sae"]
    engine = validate.choice(engine, ("local", "ray"), "engine")
    checkpoint_every = validate.integer(checkpoint_every, "checkpoint_every", minimum=1)
    pending_bytes = PENDING_PER_FEATURE * d_sae
    groups = groups or [layers]
    if len(groups) > 1:
        _run_groups(lab, path, corpus, groups, manifest, first_shard=first_shard, first_id=first_id, engine=engine,
                    workers=workers, address=address, lab_factory=lab_factory, checkpoint_every=checkpoint_every,
                    progress=progress, stream=stream, saes=saes or {}, pending_bytes=pending_bytes)
        return
    state_dir = path / schema.STATE
    if not state_dir.is_dir() and state_dir.with_name(schema.STATE + ".old").is_dir():  # killed between two renames
        os.replace(state_dir.with_name(schema.STATE + ".old"), state_dir)
    keys = TokenKeys.of(lab)  # a window's text, for distinct top contexts (read back as the shards made them)
    state = Partial.read(state_dir, d_sae, params, token_keys=keys) if state_dir.is_dir() else None
    if state is not None:  # a writer killed between the state and the manifest left the state a generation ahead
        generation = schema.load_json(state_dir / schema.PARTIAL, "partial").get("generation", 0)
        manifest["generation"] = max(manifest["generation"], generation)
    for shard in _pending(path, state):  # written after the last checkpoint: folded in shard order
        part = Partial.read(schema.shard_folder(path, shard), d_sae, params, token_keys=keys)
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

        if saes is None:
            _load_group(lab, layers, manifest, path)  # the SAEs are checked here, read by the workers
        else:
            saes.clear()  # read here for their fingerprints; the workers read their own
        shards_out = ray_engine(lab, feed, layers, params, workers=workers, address=address, lab_factory=lab_factory,
                                pending_bytes=pending_bytes)
    else:
        saes = saes or _load_group(lab, layers, manifest, path)
        shards_out = local_engine(lab, feed, layers, params, saes=saes, pending_bytes=pending_bytes)
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
    _finish(path, manifest)


def _spooled(work: Path, done: set) -> Iterator[tuple[int, list]]:
    """The shards of a job kept by its first group's pass (``work/docs``), in order, but those in ``done``."""
    from .corpus import Document

    for file in sorted((work / "docs").glob("*.json")):
        if int(file.stem) not in done:
            yield int(file.stem), [Document(*row) for row in json.loads(file.read_text())]


def _run_groups(lab: LabLike, path: Path, corpus, groups: list[list[int]], manifest: dict, *, first_shard: int,
                first_id: int, engine: str, workers, address, lab_factory, checkpoint_every: int, progress,
                stream, saes: dict, pending_bytes: int) -> None:
    """A build or add by layer groups (see the module docstring): one pass per group, each resumable in
    ``work/group{G}``, then their layer folders assembled into ``state/`` at the next generation."""
    params, d_sae = manifest["params"], manifest["d_sae"]
    keys = TokenKeys.of(lab)  # a window's text, for distinct top contexts (read back as the shards made them)
    work = path / schema.WORK
    key = {"groups": groups, "pending": manifest["pending"], "engine": engine}
    if work.is_dir():
        try:
            same = json.loads((work / "plan.json").read_text()) == key
        except (OSError, ValueError):
            same = False
        if not same:  # another budget or job: its groups are of no use
            shutil.rmtree(work)
    (work / "docs").mkdir(parents=True, exist_ok=True)
    if not (work / "plan.json").is_file():
        write_atomic(work / "plan.json", json.dumps(key))
    state_dir = path / schema.STATE
    if not state_dir.is_dir() and state_dir.with_name(schema.STATE + ".old").is_dir():  # killed between renames
        os.replace(state_dir.with_name(schema.STATE + ".old"), state_dir)
    base = state_dir if (state_dir / schema.PARTIAL).is_file() else None  # an add's index, a resumed build's state
    base_shards = set(schema.check_partial(base)["shards"]) if base is not None else set()
    loose = [int(f.name) for f in sorted((path / schema.SHARDS).glob("*")) if f.name.isdigit()
             and (f / schema.PARTIAL).is_file() and int(f.name) not in base_shards] \
        if (path / schema.SHARDS).is_dir() else []
    recorded = {s["id"]: s for s in manifest["shards"]}
    total = len(corpus) if hasattr(corpus, "__len__") and not isinstance(corpus, (str, Path)) else 0
    last = len(groups) - 1
    for g, group in enumerate(groups):
        folder = work / f"group{g}"
        if g and saes:  # the first group's SAEs (the caller holds them too), not needed from here on
            saes.clear()
            if lab.saes is not None:
                lab.saes.clear()
        if (folder / "done").is_file():
            continue
        group_saes = saes if g == 0 and saes else _load_group(lab, group, manifest, path)
        if engine == "ray":
            group_saes = {}  # read here for their fingerprints; the workers read their own
        gstate, gshards = folder / schema.STATE, folder / schema.SHARDS
        if (gstate / schema.PARTIAL).is_file():
            state = Partial.read(gstate, d_sae, params, token_keys=keys)
        else:
            state = Partial.read(base, d_sae, params, layers=group, token_keys=keys) if base is not None \
                else None
            for shard in loose:  # shards of the earlier run not folded into its state yet
                part = Partial.read(schema.shard_folder(path, shard), d_sae, params, layers=group, token_keys=keys)
                state = part if state is None else (state.merge(part) or state)
        for sub in sorted(gshards.glob("*")) if gshards.is_dir() else []:
            complete = sub.name.isdigit() and (sub / schema.PARTIAL).is_file()
            if not complete or (state is not None and int(sub.name) in state.shards):
                shutil.rmtree(sub, ignore_errors=True)
            else:
                part = Partial.read(sub, d_sae, params, token_keys=keys)
                state = part if state is None else (state.merge(part) or state)
        done = set(state.shards) if state is not None else set()

        def todo(done=done):
            for shard, docs in stream or corpora.shards(corpus, params["shard_documents"], first_shard, first_id):
                fingerprint = corpora.fingerprint(docs)
                if shard in recorded and recorded[shard]["fingerprint"] != fingerprint:
                    raise ValueError(f"shard {shard} of the corpus differs from the one indexed at {path} "
                                     f"(fingerprint {fingerprint} vs {recorded[shard]['fingerprint']}): resume "
                                     f"with the same corpus, or add new documents with index.add")
                spool = work / "docs" / f"{shard:05d}.json"
                if not spool.is_file():
                    write_atomic(spool, json.dumps([(d.id, d.source, d.text) for d in docs]))
                if shard in done:
                    recorded.setdefault(shard, {"id": shard, "first_document": docs[0].id, "documents": len(docs),
                                                "fingerprint": fingerprint, "tokens": None})
                    continue
                recorded[shard] = {"id": shard, "first_document": docs[0].id, "documents": len(docs),
                                   "fingerprint": fingerprint}
                yield shard, docs

        feed = _Ahead(todo() if g == 0 else _spooled(work, done))
        if engine == "ray":
            from .ray_engine import ray_engine

            out = ray_engine(lab, feed, group, params, workers=workers, address=address, lab_factory=lab_factory,
                             pending_bytes=pending_bytes)
        else:
            out = local_engine(lab, feed, group, params, saes=group_saes, pending_bytes=pending_bytes,
                               boundary_in=work / f"boundary{g - 1}" if g else None,
                               start=groups[g - 1][-1] if g else None,
                               boundary_out=work / f"boundary{g}" if g < last else None)
        since, received = 0, 0
        with progress_bars.bar(total, progress, desc=f"index layers {group[0]}-{group[-1]} ({g + 1}/{last + 1})",
                               threshold=progress_bars.THRESHOLD) as bar:
            for shard, part in out:
                received += 1
                checkpoint = since + 1 >= checkpoint_every or (feed.exhausted and received == feed.count)
                if not checkpoint:
                    part.write(gshards / f"{shard:05d}")
                if g == 0:
                    recorded[shard]["tokens"] = int(sum(part.tokens_by_source))
                    manifest["shards"] = [recorded[k] for k in sorted(recorded) if k in done or k == shard]
                    done.add(shard)
                    _write_manifest(path, manifest)
                state = part if state is None else (state.merge(part) or state)
                bar.update(part.documents)
                since += 1
                if checkpoint:
                    state.write(gstate)
                    for sub in state.shards:
                        shutil.rmtree(gshards / f"{sub:05d}", ignore_errors=True)
                    since = 0
        if state is None:
            raise ValueError("the corpus has no documents to index")
        if since or not received:
            state.write(gstate)
        shutil.rmtree(gshards, ignore_errors=True)
        (folder / "done").touch()
        if g:
            shutil.rmtree(work / f"boundary{g - 1}", ignore_errors=True)
        del state, group_saes, out
        saes.clear()  # the first group's SAEs, held by the caller too
        if lab.saes is not None:
            lab.saes.clear()  # the cache would keep the group's SAEs beyond the budget
    # every group done: their layer folders become state/, at the next generation
    folders = {g: work / f"group{g}" / schema.STATE for g in range(len(groups))}
    meta = {name: schema.check_partial(folders[last])[name] for name in schema.PARTIAL_FIELDS[:-1]}
    layer_folders = {layer: schema.layer_folder(folders[g], layer) for g, group in enumerate(groups) for layer in group}
    generation = manifest["generation"]
    if base is not None:
        generation = max(generation, schema.load_json(base / schema.PARTIAL, "partial").get("generation", 0))
    generation += 1
    ids = window_token_ids(layer_folders.values()).tolist()
    assemble(state_dir, layer_folders, meta, tokens=(ids, lab.token_strings(ids), fragment_bytes(lab, ids)),
             state={"generation": generation, "index": schema.fixed_fields(manifest)})
    _record(path, manifest, meta, generation)
    for shard in loose:
        shutil.rmtree(schema.shard_folder(path, shard), ignore_errors=True)
    if (path / schema.SHARDS).is_dir() and not any((path / schema.SHARDS).iterdir()):
        (path / schema.SHARDS).rmdir()
    shutil.rmtree(work, ignore_errors=True)
    _finish(path, manifest)


def _finish(path: Path, manifest: dict) -> None:
    """Nothing under way any more: an add is recorded among the adds, ``pending`` cleared."""
    pending = manifest["pending"]
    if pending is not None:
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
