"""The Ray Data engine of ``FeatureIndex.build``: shards computed by a pool of actors, one Lab per actor.

Each shard's documents become one row of a Ray Dataset; ``map_batches`` runs them through an actor pool
(``concurrency=workers``, one GPU per actor where there are GPUs), each actor loading its Lab once and returning
the shard's ``Partial``. The driver merges partials in shard order exactly as the local engine does, so both
build the same index. Shards go out in waves, so the driver never holds more than a wave of documents.

On a cluster: ``ray start --head`` on one node, ``ray start --address=<head>:6379`` on the others, then
``FeatureIndex.build(lab, corpus, layers, path, engine="ray", address="auto", workers=<GPUs>)``.
Requires ``pip install qscope-lab[distributed]`` (``ray[data]``).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from .corpus import Document
from .shard import compute_shard

if TYPE_CHECKING:
    from ..core.protocol import LabLike


class _ShardWorker:
    """A Ray actor: builds its Lab once, then turns rows of shards into pickled partials."""

    def __init__(self, factory, layers, params, pending_bytes=None):
        self.lab = factory()
        self.layers, self.params, self.pending_bytes = layers, params, pending_bytes
        self.saes = {layer: self.lab.sae(layer) for layer in layers}  # each read once by this actor

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard, payload in zip(batch["shard"], batch["docs"]):
            docs = [Document(*row) for row in json.loads(payload)]
            out.append(pickle.dumps(compute_shard(self.lab, int(shard), docs, self.layers, self.params,
                                                  saes=self.saes, pending_bytes=self.pending_bytes)))
        return {"shard": np.asarray(batch["shard"]), "partial": np.array(out, dtype=object)}


def ray_engine(lab: LabLike, todo: Iterator, layers: list[int], params: dict, workers: int | None = None,
               address: str | None = None, lab_factory=None, wave: int | None = None, pending_bytes=None):
    """Yield (shard, Partial) in shard order, computed on Ray Data: the unit of work is a shard at ``layers``
    (a layer group of a job under a memory budget), each actor holding that group's SAEs alone."""
    try:
        import ray
    except ImportError:
        raise ImportError("engine='ray' needs Ray Data: pip install 'qscope-lab[distributed]'") from None

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = workers or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)) - 1)
    factory = lab_factory or lab.loader()
    wave = wave or workers * 4
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    pending = []

    def run(items):
        ds = ray.data.from_items(items).map_batches(
            _ShardWorker, fn_constructor_args=(factory, layers, params, pending_bytes), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=1 if gpus else 0, num_cpus=1)
        results = {int(row["shard"]): pickle.loads(row["partial"]) for row in ds.iter_rows()}
        for item in items:
            yield item["shard"], results[item["shard"]]

    for shard, docs in todo:
        pending.append({"shard": shard, "docs": json.dumps([(d.id, d.source, d.text) for d in docs])})
        if len(pending) >= wave:
            yield from run(pending)
            pending = []
    if pending:
        yield from run(pending)
