"""Steered generation: one batched ``generate`` holds the baseline rows and the steered rows.

The prompt batch is ``[baseline prompts..., steered prompts...]``; edits touch the steered rows only, at every
generation step the chosen ``positions`` cover (step 0 is the prefill of all prompt positions). The edits are
forward hooks on the steered decoder blocks for the length of the call (``steering.hooked``), not nnsight
interventions: the same edit, bit for bit, at the cost of plain ``generate`` (``benchmarks/speed_bench.py``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core import tokens
from ..core.steering import Steer, apply_steering, by_layer, check_positions, hooked

if TYPE_CHECKING:
    from ..core.protocol import LabLike


@dataclass
class Generation:
    """Completions for each prompt, steered and (optionally) baseline, with the token ids behind them."""

    prompts: list[str]
    steered: list[str]
    baseline: list[str] | None
    steered_ids: list[list[int]]
    baseline_ids: list[list[int]] | None
    steers: list[Steer] = field(default_factory=list)
    positions: object = "all"

    @property
    def text(self) -> str:
        """The (first) steered completion."""
        return self.steered[0]

    def __str__(self) -> str:
        return self.text

    def first_difference(self, i: int = 0) -> int | None:
        """Index of the first generated token where steered and baseline differ (None if identical)."""
        if self.baseline_ids is None:
            return None
        a, b = self.baseline_ids[i], self.steered_ids[i]
        for j, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return j
        return None if len(a) == len(b) else min(len(a), len(b))

    def to_frame(self) -> pd.DataFrame:
        data: dict[str, list] = {"prompt": self.prompts, "steered": self.steered}
        if self.baseline is not None:
            data["baseline"] = self.baseline
            data["same"] = [b == s for b, s in zip(self.baseline, self.steered)]
        return pd.DataFrame(data)

    def _repr_html_(self) -> str:
        edits = ", ".join(f"L{s.layer} f{s.feature} {s.mode} {s.value:+g}" for s in self.steers) or "none"
        rows = []
        for i, prompt in enumerate(self.prompts):
            base = html.escape(self.baseline[i]) if self.baseline is not None else "<i>not run</i>"
            rows.append(f"<tr><td>{html.escape(prompt)}</td><td>{base}</td>"
                        f"<td>{html.escape(self.steered[i])}</td></tr>")
        return (f"<div><b>steering:</b> {html.escape(edits)} (positions: {html.escape(str(self.positions))})"
                "<table><tr><th>prompt</th><th>baseline</th><th>steered</th></tr>" + "".join(rows) + "</table></div>")


def _prompt_texts(lab: LabLike, prompt, chat: bool) -> list[str]:
    from ..base.validate import as_texts

    prompts = as_texts(prompt)
    if not chat:
        return prompts
    return [lab.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]


def _completions(lab: LabLike, ids: torch.Tensor, prompt_len: int) -> tuple[list[str], list[list[int]]]:
    """Cut each row after the prompt and at its first end-of-text / pad token."""
    stop = {t for t in (lab.tokenizer.eos_token_id, lab.tokenizer.pad_token_id) if t is not None}
    stop |= set(_as_list(getattr(lab.hf_model.generation_config, "eos_token_id", None)))
    texts, all_ids = [], []
    for row in ids[:, prompt_len:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stop), len(row))
        all_ids.append(row[:cut])
        texts.append(lab.tokenizer.decode(row[:cut], skip_special_tokens=True))
    return texts, all_ids


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@torch.no_grad()
def generate(lab: LabLike, prompt, steers: list[Steer], positions="all", max_new_tokens: int = 32,
             baseline: bool = True, do_sample: bool = False, seed: int | None = None, chat: bool = False,
             **generate_kwargs) -> Generation:
    check_positions(positions)  # steers and max_new_tokens are checked by Lab.generate / Lab.sweep
    prompts = _prompt_texts(lab, prompt, chat)
    with_baseline = baseline and bool(steers)
    rows = prompts + prompts if with_baseline else prompts
    enc = lab.tokenize(rows)
    attention = enc["attention_mask"]
    steered_rows = slice(len(prompts) if with_baseline else 0, len(rows))
    edits = [(layer, lab.sae(layer), group) for layer, group in by_layer(steers)]
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=lab.tokenizer.pad_token_id)
    kwargs.update(generate_kwargs)

    with hooked(lab.blocks, edits, positions, attention, steered_rows):
        ids = lab.hf_model.generate(**enc, **kwargs)

    prompt_len = enc["input_ids"].shape[1]
    steered, steered_ids = _completions(lab, ids[steered_rows], prompt_len)
    base, base_ids = (None, None)
    if with_baseline:
        base, base_ids = _completions(lab, ids[:len(prompts)], prompt_len)
    elif not steers:
        base, base_ids = steered, steered_ids
    return Generation(prompts=prompts, steered=steered, baseline=base, steered_ids=steered_ids,
                      baseline_ids=base_ids, steers=steers, positions=positions)


def sweep(lab: LabLike, prompt: str, layer: int, feature: int, alphas=(-16, -8, -4, 0, 4, 8, 16), positions="all",
          mode: str = "add", max_new_tokens: int = 32, metric=None, **generate_kwargs) -> pd.DataFrame:
    """One greedy completion per alpha (feature ``feature`` at ``layer``), the unsteered one computed once:
    alpha, text, same (as unsteered), first_difference, and ``metric(text)`` when given (e.g. ``han_share``).
    ``generate_kwargs`` go to every generation (e.g. ``repetition_penalty=1.3``)."""
    base = generate(lab, prompt, [], positions=positions, max_new_tokens=max_new_tokens, **generate_kwargs)
    rows = []
    for alpha in alphas:
        if alpha == 0:
            out = base
        else:
            out = generate(lab, prompt, [Steer(layer, feature, float(alpha), mode)], positions=positions,
                           max_new_tokens=max_new_tokens, baseline=False, **generate_kwargs)
            out.baseline, out.baseline_ids = base.steered, base.steered_ids
        row = {"alpha": alpha, "text": out.text, "same": out.text == base.text,
               "first_difference": out.first_difference()}
        if metric is not None:
            row[getattr(metric, "__name__", "metric")] = metric(out.text)
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def next_token_table(lab: LabLike, prompt: str, steers: list[Steer], top: int = 10) -> pd.DataFrame:
    """The next token after ``prompt``, clean and with every prompt position steered, side by side: the top
    ``top`` tokens of each distribution (rank, baseline_token, baseline_p, steered_token, steered_p).

    One traced forward on [prompt, prompt] with the edit on the second row only, so the two columns differ by
    the steering and nothing else."""
    enc = lab.tokenize([prompt, prompt])  # top and steers are checked by Lab.next_tokens
    where = enc["attention_mask"].bool().clone()
    where[0] = False
    with lab.model.trace(dict(enc)):
        for layer, group in by_layer(steers):
            envoy = lab.layers[layer]
            envoy.output = apply_steering(envoy.output, lab.sae(layer), group, where)
        logits = lab.model.output.logits[:, -1].save()
    probs = logits.float().softmax(-1)
    best = torch.topk(probs, min(top, probs.shape[-1]), dim=-1)
    names = [[tokens.raw_label(lab, t) for t in row] for row in best.indices.tolist()]  # byte tokens: ⟨e7 8c⟩
    return pd.DataFrame({"rank": range(1, best.indices.shape[1] + 1),
                         "baseline_token": names[0], "baseline_p": best.values[0].tolist(),
                         "steered_token": names[1], "steered_p": best.values[1].tolist()})
