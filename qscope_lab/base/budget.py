"""One memory budget for every corpus-scale job, and the layer plan that keeps a job inside it.

A Qwen-Scope group is 24-64 layers of SAEs of 0.5-5 GB each: no job may hold them all. A job states what one
layer costs it (its SAE plus its per-layer state) and what it holds whatever the layers (``fixed``), and
``plan_layers`` cuts the layers into consecutive groups that fit; the job loops over the groups outermost, so each
SAE file is read once per job. When not even one layer fits, the plan says so before any work, with the numbers.

Budgets are bytes or strings ("6GB", "512 MiB", "1.5e9"); the default is a share of what the device has free
(CUDA's free memory on a GPU, the kernel's MemAvailable on the CPU).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DEFAULT_SHARE = 0.5  # of the device's free memory: the rest is for the model's activations and everyone else
ENCODE_CHUNK_BYTES = 64 * 2**20  # dense pre-activations one SAE.encode_sparse holds at once (W64K: 256 rows)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


class MemoryBudgetError(ValueError):
    """The job cannot run inside the budget (raised before any work starts)."""


def parse_bytes(value, name: str = "memory_budget") -> int:
    """``value`` as a positive number of bytes: an int, a float, or a string with a unit (GB = 10**9, GiB =
    2**30). TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a string like '8GB', got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{name} must look like '8GB', '512MiB' or a number of bytes, got {value!r}")
        number = float(match.group(1)) * _UNITS[unit]
    else:
        raise TypeError(f"{name} must be a number of bytes or a string like '8GB', got {type(value).__name__}")
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{name} must be a positive, finite number of bytes, got {value!r}")
    return int(number)


def free_bytes(device=None) -> int:
    """What ``device`` has free now: CUDA's free memory on a GPU, MemAvailable (Linux) on the CPU."""
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def resolve(value, device=None, name: str = "memory_budget") -> int:
    """A budget in bytes: ``value`` parsed, or (None) ``DEFAULT_SHARE`` of what ``device`` has free."""
    if value is None:
        return max(1, int(DEFAULT_SHARE * free_bytes(device)))
    return parse_bytes(value, name)


def describe(n: float) -> str:
    """Bytes for a message: '6.00 GB', '512.0 MB', '48.0 KB'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


@dataclass(frozen=True)
class LayerPlan:
    """Consecutive groups of layers, each within the budget: ``groups[i]`` is run as one pass of the job."""

    groups: list[list[int]]
    per_layer: int
    fixed: int
    budget: int
    notes: dict = field(default_factory=dict)

    @property
    def layers_per_group(self) -> int:
        return max(len(g) for g in self.groups) if self.groups else 0

    def __str__(self) -> str:
        return (f"{sum(len(g) for g in self.groups)} layers in {len(self.groups)} group(s) of <= "
                f"{self.layers_per_group}: {describe(self.per_layer)} a layer + {describe(self.fixed)} fixed, "
                f"budget {describe(self.budget)}")


def plan_layers(layers, per_layer: int, budget: int, fixed: int = 0, job: str = "this job",
                max_group: int | None = None) -> LayerPlan:
    """Cut ``layers`` (kept in order) into consecutive groups with ``fixed + len(group) * per_layer <= budget``.

    Refuses (MemoryBudgetError, before any work) when one layer does not fit, saying what it needs and what the
    budget is. ``max_group`` caps a group's size whatever the budget (a job that gains nothing from more)."""
    layers = list(layers)
    if per_layer < 0 or fixed < 0:
        raise ValueError("per_layer and fixed must be >= 0 bytes")
    room = budget - fixed
    if layers and room < per_layer:
        raise MemoryBudgetError(
            f"{job} needs {describe(fixed + per_layer)} for one layer ({describe(per_layer)} a layer + "
            f"{describe(fixed)} it holds whatever the layers) but memory_budget is {describe(budget)}: "
            f"raise memory_budget to at least {describe(fixed + per_layer)}")
    if not layers:
        return LayerPlan(groups=[], per_layer=per_layer, fixed=fixed, budget=budget)
    size = len(layers) if per_layer == 0 else max(1, min(len(layers), room // per_layer))
    if max_group is not None:
        size = max(1, min(size, max_group))
    groups = [layers[i:i + size] for i in range(0, len(layers), size)]
    return LayerPlan(groups=groups, per_layer=per_layer, fixed=fixed, budget=budget)
