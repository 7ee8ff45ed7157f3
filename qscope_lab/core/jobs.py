"""A corpus job's layer plan over a Lab's SAEs: what each layer costs (its SAE, read from the suite's metadata
when it can tell) plus the job's own state, cut into groups that fit the Lab's memory budget
(``base.budget.plan_layers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base.budget import ENCODE_CHUNK_BYTES, LayerPlan, parse_bytes, plan_layers, resolve

if TYPE_CHECKING:
    from .protocol import LabLike


def sae_bytes(lab: LabLike, layer: int, held: dict) -> int:
    """Bytes of one layer's SAE, from the suite's metadata (``SAESuite.layer_nbytes``) when it can tell, else by
    reading that layer (then kept in ``held`` for the job, so it is still read once)."""
    suite = getattr(lab, "saes", None)
    size = suite.layer_nbytes(layer) if suite is not None else None
    if size is None:
        held[layer] = lab.sae(layer)
        size = held[layer].nbytes
    return int(size)


def plan_job(lab: LabLike, layers, per_layer_state: int, fixed: int = 0, memory_budget=None,
             job: str = "this job") -> tuple[LayerPlan, dict]:
    """(layer plan, SAEs already read) for a job over ``lab``'s SAEs: each layer costs its SAE plus
    ``per_layer_state``; ``fixed`` plus one encode chunk (``2 * ENCODE_CHUNK_BYTES``: pre-activations and top-k
    scratch) is held whatever the layers. ``memory_budget``: the job's own (bytes or "8GB"), else
    ``lab.memory_budget``. Refused (MemoryBudgetError, with the numbers) before any work when one layer does not
    fit. A job reads ``held[layer]`` instead of reading that layer again."""
    default = getattr(lab, "memory_budget", None)
    budget = parse_bytes(memory_budget) if memory_budget is not None else resolve(default, lab.device)
    layers = list(layers)
    held: dict = {}
    sizes = [sae_bytes(lab, layer, held) for layer in layers]
    encode = 2 * ENCODE_CHUNK_BYTES if layers else 0
    return plan_layers(layers, max(sizes, default=0) + per_layer_state, budget, fixed=fixed + encode, job=job), held
