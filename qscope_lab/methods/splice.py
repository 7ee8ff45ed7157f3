"""The model's own forward with SAEs spliced in *with their error terms*, so feature activations become inputs
a gradient can reach while the output stays exactly the model's.

At a spliced layer the block output h becomes ``h + W_dec (f - V)``: V are the SAE's activations of h (top-k,
fixed indices), f a leaf tensor equal to V (or scaled along an integrated-gradients path, or edited), and the
error term ``e = h - x_hat(V)`` rides along untouched. With f = V that is h to the last bit, so everything
downstream is the unmodified model; d(metric)/d(h') is the error term's gradient and ``W_dec^T`` of it is the
features'. The gradient passes through h unchanged, so upstream layers see the true derivative.

Plain forward hooks on the decoder blocks (``core.hooks.edit_blocks``); autograd is switched on only from the
first spliced layer, with the model's parameters frozen meanwhile, so the graph holds the chosen layers onwards
and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.hooks import edit_blocks
from ..core.protocol import LabLike
from ..core.steering import Steer, apply_steering, by_layer


@dataclass
class Site:
    """One spliced layer in one run: ``values`` / ``indices`` ``[rows, seq, k]`` (the SAE's clean top-k),
    ``leaf`` (the activations on this run's path; requires grad when the run is differentiable), ``error``
    ``[rows, seq, d_model]``, ``h`` the block output before the splice and ``out`` after it."""

    values: torch.Tensor
    indices: torch.Tensor
    error: torch.Tensor
    leaf: torch.Tensor | None = None
    h: torch.Tensor | None = None
    out: torch.Tensor | None = None

    def spliced(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(leaf, h, out) of a site a run has spliced: what gradients are taken against."""
        if self.leaf is None or self.h is None or self.out is None:
            raise RuntimeError("this Site holds clean activations only: it was not spliced into a run")
        return self.leaf, self.h, self.out


class _Stop(Exception):
    """Raised by the hook of ``stop_at``: the rest of the forward is not needed."""


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Parameters without requires_grad for the duration: gradients reach the spliced activations only."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _DecodeDelta(torch.autograd.Function):
    """``embedding_bag`` of k decoder rows weighted by ``delta``, whose graph keeps the indices only: the backward
    reads the SAE's own ``W_dec`` again (``decoder_rows`` is a view of it), so no decoder copy lives as long as the
    graph does (``F.embedding_bag`` saves its weight: a second decoder per spliced layer while the graph lives)."""

    @staticmethod
    def forward(ctx, delta, indices, sae):
        ctx.sae = sae
        ctx.save_for_backward(indices)
        return F.embedding_bag(indices, sae.decoder_rows(), per_sample_weights=delta, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        rows = ctx.sae.decoder_rows()
        # the output is linear in delta, so embedding_bag's own backward at any delta is the gradient: the same
        # kernel (and bits) as when the graph held the decoder, here only for the length of this call
        with torch.enable_grad():
            weights = torch.zeros(indices.shape, dtype=rows.dtype, device=rows.device, requires_grad=True)
            out = F.embedding_bag(indices, rows, per_sample_weights=weights, mode="sum")
            (result,) = torch.autograd.grad(out, weights, grad)
        return result, None, None


def decode_delta(sae, delta: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``sum_k delta_k W_dec[:, idx_k]`` per position (no bias): gathers k decoder rows, differentiable in delta
    (the graph holds the indices, not the decoder)."""
    lead = delta.shape[:-1]
    flat_idx = indices.reshape(-1, indices.shape[-1])
    flat = delta.reshape(-1, delta.shape[-1]).to(sae.dtype)
    out = _DecodeDelta.apply(flat, flat_idx, sae)
    return out.view(*lead, sae.d_model)


def encode_site(sae, h: torch.Tensor) -> Site:
    """The SAE's clean top-k of ``h`` and its error term, without a graph."""
    with torch.no_grad():
        values, indices = sae.encode_sparse(h)
        error = h.to(sae.dtype) - sae.decode_sparse(values, indices)
    return Site(values=values, indices=indices, error=error)


def repeat_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """Each row ``times`` times in a row (prompt-major order, as the batched runs lay rows out)."""
    return tensor if times == 1 else tensor.repeat_interleave(times, dim=0)


def run(lab: LabLike, enc: dict, layers=(), *, keep: int = 1, steers: Sequence[Steer] = (), then: Sequence[Steer] = (),
        fixed: dict[int, Site] | None = None, scale: torch.Tensor | None = None,
        edits: dict[int, Callable] | None = None, grad: bool = True,
        stop_at: int | None = None, saes: Mapping | None = None) -> tuple[torch.Tensor | None, dict[int, Site]]:
    """One forward of ``enc``: (logits of the last ``keep`` positions (0: all), {layer: Site}).

    ``steers`` edit every real position first, ``then`` after them (an ablation of a steered feature sees its
    steered activation); ``edits[layer](h) -> h`` run next (ablations); then each of
    ``layers`` is spliced. ``fixed``: clean Sites to splice against (rows of ``enc`` repeat each prompt
    ``rows // prompts`` times), else the SAE encodes this run's h. ``scale`` ``[rows]``: the leaf is
    ``scale * V`` (integrated-gradient steps; 0 is the baseline). ``stop_at``: return after that block
    (logits None). ``saes``: {layer: SAE} a caller holds for its whole job (each read once), else ``lab.sae``."""
    layers = sorted(set(layers))
    stages = [dict(by_layer(list(group))) for group in (steers, then) if group]
    edits = edits or {}
    where = enc["attention_mask"].bool()
    first = layers[0] if grad and layers else None
    sites: dict[int, Site] = {}

    def sae_of(layer: int):
        return saes[layer] if saes is not None and layer in saes else lab.sae(layer)

    def edit_for(layer: int):
        def edit(h: torch.Tensor) -> torch.Tensor:
            for stage in stages:
                if layer in stage:
                    h = apply_steering(h, sae_of(layer), stage[layer], where)
            if layer in edits:
                h = edits[layer](h)
            if layer == first:
                torch.set_grad_enabled(True)  # undone when run()'s no_grad block exits
            if layer in layers:
                h = _splice(sae_of(layer), h, layer, fixed, scale, grad, sites)
            if layer == stop_at:
                raise _Stop
            return h
        return edit

    steered = {layer for stage in stages for layer in stage}
    hooked = sorted(set(layers) | steered | set(edits) | ({stop_at} if stop_at is not None else set()))
    logits = None
    with edit_blocks(lab.blocks, {layer: edit_for(layer) for layer in hooked}), frozen(lab.hf_model), \
            torch.no_grad():
        try:
            out = lab.hf_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False,
                               logits_to_keep=keep)
            logits = out.logits
        except _Stop:
            pass
    return logits, sites


def _splice(sae, h, layer, fixed, scale, grad, sites) -> torch.Tensor:
    if fixed is None:
        site = encode_site(sae, h.detach())
    else:
        clean = fixed[layer]
        times = h.shape[0] // clean.values.shape[0]
        site = Site(values=repeat_rows(clean.values, times), indices=repeat_rows(clean.indices, times),
                    error=repeat_rows(clean.error, times))
    leaf = site.values if scale is None else site.values * scale.to(site.values)[:, None, None]
    leaf = leaf.detach().clone().requires_grad_(grad)
    site.leaf, site.h = leaf, h
    if scale is None and not grad:
        site.out = h  # f = V exactly: nothing to add
    else:
        site.out = h + decode_delta(sae, leaf - site.values, site.indices).to(h.dtype)
    sites[layer] = site
    return site.out
