"""One batched ``generate`` for many steering conditions: every row carries its own list of steers.

A bench needs seven conditions, an alpha sweep needs one row group per (candidate, alpha). Run one by one they
cost seven (or dozens of) generations; here they are rows of a single left-padded batch, and each decoder block
that any group steers gets one forward hook (``core.hooks.edit_blocks``) that edits each group's rows only.
Rows outside a group are left bit for bit alone, so a row steered with strength 0 equals its unsteered twin
token for token.

Sampling, when asked for, is keyed per row (``RowSampler``): each row draws from its own generator seeded by
``(seed, key)``, so rows with the same key and the same logits draw the same tokens whatever else is in the
batch (a zero-strength row stays equal to its unsteered twin under sampling too), and a run is reproducible from
its seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.hooks import edit_blocks
from ..core.steering import Steer, apply_steering, by_layer, position_mask

try:  # conditional steers (a Condition read at an earlier layer) need the per-forward state of LayerSteering
    from ..core.steering import LayerSteering  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older core without conditions
    LayerSteering = None  # type: ignore[assignment,misc]



@dataclass
class Rows:
    """What one batched run generates: the text fed for each row, its group (an index into ``groups``, the
    steer lists) and its sampling key."""

    inputs: list[str]
    group: list[int]
    keys: list[int]
    groups: list[list[Steer]]


@dataclass
class Generated:
    """Completions of a batched run: token ids and text per row, the prompt ids as fed, the seconds the
    ``generate`` call took and the seconds each group's edits took inside it."""

    prompt_ids: list[list[int]]
    ids: list[list[int]]
    texts: list[str]
    seconds: float
    edit_seconds: list[float]
    own_nll: list[list[float]] | None = None


def row_seed(seed: int, key: int) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class RowSampler:
    """A logits processor that samples each row itself (temperature, top-p) from its own keyed generator and
    leaves only the drawn token finite, so greedy decoding picks it: HF's own sampling draws the whole batch from
    one stream, and a row's tokens would then depend on its neighbours."""

    def __init__(self, keys: Sequence[int], seed: int, temperature: float = 1.0, top_p: float = 1.0):
        self.generators = [torch.Generator().manual_seed(row_seed(seed, k)) for k in keys]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keep the smallest prefix reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            probs = probs / probs.sum(-1, keepdim=True)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(probs.device)
        cdf = probs.cumsum(-1)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp_max(probs.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, picked, 0.0)


def _editor(lab: LabLike, groups: list[list[Steer]]):
    """Per group, what edits a layer's hidden state: LayerSteering (conditions included) where the core has it."""
    if LayerSteering is not None:
        return [LayerSteering(g, lab.sae) if g else None for g in groups]
    return [dict(by_layer(g)) if g else None for g in groups]


def _edit(editor, layer: int, h: torch.Tensor, where: torch.Tensor, lab: LabLike) -> torch.Tensor:
    if LayerSteering is not None:
        return editor.edit(layer, h, where)
    group = editor.get(layer)
    return apply_steering(h, lab.sae(layer), group, where) if group else h


def _layers(editor) -> list[int]:
    if editor is None:
        return []
    return list(editor.layers) if LayerSteering is not None else list(editor)


def steered_blocks(lab: LabLike, groups: list[list[Steer]], group_rows: torch.Tensor, positions,
                   attention_mask: torch.Tensor, timers: list[float]):
    """The ``edit_blocks`` context steering each group's rows (``group_rows[g]``: [batch] bool) with its steers at
    the positions ``positions`` names for each step (step 0: the prefill)."""
    editors = _editor(lab, groups)
    layers = sorted({layer for e in editors for layer in _layers(e)})

    def edit_for(layer: int):
        state = {"step": 0}

        def edit(h: torch.Tensor) -> torch.Tensor:
            step, state["step"] = state["step"], state["step"] + 1
            base = position_mask(step, positions, attention_mask, slice(None), h.shape[1])
            for g, editor in enumerate(editors):
                if editor is None or layer not in _layers(editor):
                    continue
                start = time.perf_counter()
                h = _edit(editor, layer, h, base & group_rows[g].to(base.device).unsqueeze(-1), lab)
                timers[g] += time.perf_counter() - start
            return h

        return edit

    return edit_blocks(lab.blocks, {layer: edit_for(layer) for layer in layers})


def _stop_ids(lab: LabLike) -> set[int]:
    stop = {t for t in (lab.tokenizer.eos_token_id, lab.tokenizer.pad_token_id) if t is not None}
    eos = getattr(lab.hf_model.generation_config, "eos_token_id", None)
    stop |= set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return stop


@torch.no_grad()
def generate_rows(lab: LabLike, rows: Rows, positions="all", max_new_tokens: int = 32, do_sample: bool = False,
                  temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int | None = None,
                  own_nll: bool = False, **generate_kwargs) -> Generated:
    """Generate every row (``batch_size`` rows per ``generate`` call, default all at once), each group's rows
    steered with its steers. ``own_nll``: also keep each generated token's negative log-likelihood under the
    raw logits it was generated from (for an unedited row: the unsteered model's, at no extra forward)."""
    from transformers import LogitsProcessorList

    n = len(rows.inputs)
    batch_size = batch_size or n
    prompt_ids = lab.token_ids(rows.inputs)
    out_ids: list[list[int]] = []
    nlls: list[list[float]] = []
    seconds = 0.0
    timers = [0.0] * len(rows.groups)
    stop = _stop_ids(lab)
    for start in range(0, n, batch_size):
        part = range(start, min(n, start + batch_size))
        enc = lab.pad([prompt_ids[i] for i in part])
        member = torch.zeros(len(rows.groups), len(part), dtype=torch.bool)
        for j, i in enumerate(part):
            member[rows.group[i], j] = True
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=lab.tokenizer.pad_token_id)
        if do_sample:
            kwargs["logits_processor"] = LogitsProcessorList(
                [RowSampler([rows.keys[i] for i in part], seed, temperature, top_p)])
        if own_nll:
            kwargs.update(return_dict_in_generate=True, output_logits=True)
        kwargs.update(generate_kwargs)
        begin = time.perf_counter()
        with steered_blocks(lab, rows.groups, member, positions, enc["attention_mask"], timers):
            result = lab.hf_model.generate(**enc, **kwargs)
        seconds += time.perf_counter() - begin
        ids = result.sequences if own_nll else result
        width = enc["input_ids"].shape[1]
        new = ids[:, width:]
        if own_nll:
            logits = torch.stack(result.logits, dim=1).float()  # [batch, steps, vocab], before any processor
            token_nll_ = -torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for j, row in enumerate(new.tolist()):
            cut = next((t for t, tok in enumerate(row) if tok in stop), len(row))
            out_ids.append(row[:cut])
            if own_nll:
                nlls.append(token_nll_[j, :cut].tolist())
    texts = [lab.tokenizer.decode(ids, skip_special_tokens=True) for ids in out_ids]
    return Generated(prompt_ids, out_ids, texts, seconds, timers, nlls if own_nll else None)


@torch.no_grad()
def token_nll(lab: LabLike, sequences: Sequence[Sequence[int]], starts: Sequence[int],
              groups: list[list[Steer]] | None = None, group_of: Sequence[int] | None = None, batch_size: int = 64,
              max_tokens: int = 4096) -> list[list[float]]:
    """Per sequence, the negative log-likelihood (nats) of each token from ``starts[i]`` on (``starts[i] >= 1``),
    under the model with each row's group of steers on every position (none: the unsteered model). Rows go
    longest first in batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens, so a few long
    rows do not pad every short one; only the scored positions go through the log-softmax."""
    out: list[list[float]] = [[] for _ in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    batches: list[list[int]] = []
    for i in order:  # longest first; a batch closes at batch_size rows or max_tokens padded tokens
        if not batches or len(batches[-1]) >= batch_size or \
                (len(batches[-1]) + 1) * len(sequences[batches[-1][0]]) > max_tokens:
            batches.append([])
        batches[-1].append(i)
    for part in batches:
        enc = lab.pad([list(sequences[i]) for i in part])
        width = enc["input_ids"].shape[1]
        timers = [0.0] * (len(groups) if groups else 0)
        if groups and group_of is not None:
            member = torch.zeros(len(groups), len(part), dtype=torch.bool)
            for j, i in enumerate(part):
                member[group_of[i], j] = True
            context = steered_blocks(lab, groups, member, "all", enc["attention_mask"], timers)
        else:
            context = edit_blocks(lab.blocks, {})
        with context:
            logits = lab.hf_model(**enc).logits
        scored = max(len(sequences[i]) - starts[i] for i in part)  # the last `scored` tokens of the widest row
        if scored <= 0:
            continue
        logp = torch.log_softmax(logits[:, width - scored - 1:-1].float(), dim=-1)
        target = enc["input_ids"][:, width - scored:]
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [batch, scored]
        for j, i in enumerate(part):
            n = len(sequences[i]) - starts[i]
            out[i] = nll[j, scored - n:].tolist() if n > 0 else []
    return out
