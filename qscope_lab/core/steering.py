"""Steering specs and the edit they make to a layer's output.

- ``add``:    h' = h + alpha * W_dec[:, f]                 (alpha < 0 suppresses; Qwen-Scope's steering)
- ``clamp``:  h' = h + (value - a_f(h)) * W_dec[:, f]       (the feature's activation is set to ``value``)
- ``ablate``: h' = h - lambda * a_f(h) * W_dec[:, f]        (lambda = 1 removes the feature's contribution)

a_f(h) is the SAE's own TopK activation at that position. Edits apply to the chosen positions of the chosen
batch rows only; every other entry of the layer output is left bit-for-bit alone.

Traces (``Lab.residuals``, ``next_tokens``) make the edit through nnsight; generation makes the same edit with
plain forward hooks (``core.hooks``) held for the whole ``generate`` call (``hooked``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..base import validate
from .hooks import edit_blocks

if TYPE_CHECKING:
    from ..saes.sae import SAE

MODES = ("add", "clamp", "ablate")
POSITIONS = ("all", "prompt", "generated")


@dataclass(frozen=True)
class Steer:
    """One feature edit at one layer. ``value`` is alpha (add), the target activation (clamp) or lambda (ablate)."""

    layer: int
    feature: int
    value: float
    mode: str = "add"

    def __post_init__(self):  # no silent coercion: 3.9 is not feature 3, "2" is not layer 2, NaN is no strength
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: use one of {MODES}")
        object.__setattr__(self, "layer", validate.integer(self.layer, "steer layer", minimum=0))
        object.__setattr__(self, "feature", validate.integer(self.feature, "steer feature", minimum=0))
        name = {"add": "alpha", "clamp": "clamp value", "ablate": "ablation lambda"}[self.mode]
        object.__setattr__(self, "value", validate.alpha(self.value, f"steering {name} of feature {self.feature}"))


SteerSpec = Mapping | Iterable[Steer] | None


def parse_steer(steer: SteerSpec, layer: int | None = None, mode: str = "add") -> list[Steer]:
    """Normalise ``{feature: alpha}`` (needs ``layer``), ``{(layer, feature): alpha}`` or a list of Steer."""
    if steer is None:
        return []
    if isinstance(steer, Steer):
        return [steer]
    if isinstance(steer, Mapping):
        out = []
        for key, value in steer.items():
            if isinstance(key, tuple):
                if len(key) != 2:
                    raise ValueError(f"steer key {key!r}: use feature or (layer, feature)")
                out.append(Steer(key[0], key[1], value, mode))
            else:
                if layer is None:
                    raise ValueError("steer={feature: alpha} needs layer=; or key the dict by (layer, feature)")
                out.append(Steer(layer, key, value, mode))
        return out
    if isinstance(steer, (str, bytes)) or not isinstance(steer, Iterable):
        raise TypeError(f"steer must be {{feature: alpha}}, {{(layer, feature): alpha}} or a list of Steer, "
                        f"got {type(steer).__name__}")
    out = list(steer)
    bad = [s for s in out if not isinstance(s, Steer)]
    if bad:
        raise TypeError(f"steer list items must be qscope_lab.Steer, got {type(bad[0]).__name__}")
    return out


def by_layer(steers: list[Steer]) -> list[tuple[int, list[Steer]]]:
    """Grouped and sorted by layer: nnsight needs modules visited in forward order."""
    layers = sorted({s.layer for s in steers})
    return [(layer, [s for s in steers if s.layer == layer]) for layer in layers]


def steering_delta(h: torch.Tensor, sae, steers: list[Steer]) -> torch.Tensor:
    """The vector each position of ``h`` ([..., d_model]) gets added, in the SAE's dtype."""
    delta = torch.zeros(*h.shape[:-1], sae.d_model, dtype=sae.dtype, device=sae.device)
    needs_acts = any(s.mode != "add" for s in steers)
    if needs_acts:
        values, indices = sae.encode_sparse(h)
    for s in steers:
        direction = sae.direction(s.feature)
        if s.mode == "add":
            delta += s.value * direction
            continue
        act = (values * (indices == s.feature)).sum(-1, keepdim=True)
        coeff = (s.value - act) if s.mode == "clamp" else (-s.value * act)
        delta += coeff * direction
    return delta


def apply_steering(h: torch.Tensor, sae, steers: list[Steer], where: torch.Tensor) -> torch.Tensor:
    """h with the edits added at ``where`` ([batch, seq] bool, broadcastable); a new tensor, h untouched."""
    rows = where.any(dim=-1).nonzero().squeeze(-1)
    if rows.numel() == 0:
        return h
    out = h.clone()
    sub = h[rows]
    delta = steering_delta(sub, sae, steers).to(device=h.device, dtype=h.dtype)
    keep = where[rows].unsqueeze(-1).expand_as(sub)
    out[rows] = torch.where(keep, sub + delta, sub)
    return out


def position_mask(step: int, positions, attention_mask: torch.Tensor, steered_rows: slice,
                  seq_len: int) -> torch.Tensor:
    """[batch, seq] bool mask of what to steer at this generation step (step 0 = the prompt's prefill)."""
    batch = attention_mask.shape[0]
    where = torch.zeros(batch, seq_len, dtype=torch.bool, device=attention_mask.device)
    if step == 0:
        if positions in ("all", "prompt"):
            where[steered_rows] = attention_mask[steered_rows].bool()
        elif not isinstance(positions, str):
            lengths = attention_mask.sum(-1)
            for row in range(batch)[steered_rows]:
                start = seq_len - int(lengths[row])  # left padding
                for p in positions:
                    idx = start + p if p >= 0 else seq_len + p
                    if not start <= idx < seq_len:
                        raise IndexError(f"positions: {p} is outside a prompt of {int(lengths[row])} tokens")
                    where[row, idx] = True
    elif positions in ("all", "generated"):
        where[steered_rows] = True
    return where


def check_positions(positions) -> None:
    if isinstance(positions, str):
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}: use one of {POSITIONS} or a list of prompt positions")
        return
    if not isinstance(positions, Iterable) or isinstance(positions, (bytes, bytearray)):
        raise TypeError(f"positions must be 'all', 'prompt', 'generated' or a list of int prompt positions, "
                        f"got {type(positions).__name__}")
    positions = list(positions)
    if not positions:
        raise ValueError("positions is an empty list: it would steer nothing (use 'all', 'prompt' or 'generated')")
    for i, p in enumerate(positions):
        validate.integer(p, f"positions[{i}]")


@contextlib.contextmanager
def hooked(blocks: torch.nn.ModuleList | Sequence[torch.nn.Module], edits: list[tuple[int, SAE, list[Steer]]],
           positions, attention_mask: torch.Tensor, steered_rows: slice) -> Iterator[None]:
    """Steer ``generate`` calls inside the block: each edited decoder block's output gets ``apply_steering``
    with the mask ``position_mask`` gives for that step (the n-th call of a block is step n; step 0 is the
    prefill), through ``hooks.edit_blocks`` (this thread's forwards only, removed on exit)."""

    def edit_for(sae: SAE, group: list[Steer]):
        state: dict = {"step": 0, "masks": {}}

        def edit(h: torch.Tensor) -> torch.Tensor:
            step, state["step"] = state["step"], state["step"] + 1
            key = (min(step, 1), h.shape[1])  # every step after the prefill is steered alike
            where = state["masks"].get(key)
            if where is None:
                where = state["masks"][key] = position_mask(step, positions, attention_mask, steered_rows, h.shape[1])
            return apply_steering(h, sae, group, where)

        return edit

    with edit_blocks(blocks, {layer: edit_for(sae, group) for layer, sae, group in edits}):
        yield
