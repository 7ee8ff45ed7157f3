"""Steered generation: one batched ``generate`` holds the baseline rows and the steered rows.

The prompt batch is ``[baseline prompts..., steered prompts...]``; edits touch the steered rows only, at every
generation step the chosen ``positions`` cover (step 0 is the prefill of all prompt positions). The edits are
forward hooks on the steered decoder blocks for the length of the call (``steering.hooked``), not nnsight
interventions: the same edit, bit for bit, at the cost of plain ``generate`` (``benchmarks/speed_bench.py``).

Decoding is greedy unless sampling is asked for (``temperature`` / ``top_p`` / ``do_sample``). Sampling is
Gumbel-max on the temperature-scaled, top-p-filtered logits with noise drawn per prompt from ``seed`` (a valid
sample of the same distribution as ``transformers``' sampling, not its draws): a prompt's baseline row and
steered row share their noise, so a steer of zero strength gives the unsteered text token for token even when
sampling, a seed reproduces a result whatever else is in the batch, and a steered-minus-unsteered difference is
the steer's, not the dice's. ``DEFAULT_REPETITION_PENALTY`` applies to every generation unless overridden
(``repetition_penalty=1.0`` turns it off): small models loop under plain greedy decoding. It is transformers'
penalty except that special tokens (padding, end of text, chat markers) are never penalised (``RepetitionPenalty``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..base import validate
from ..base.defaults import DEFAULT_REPETITION_PENALTY
from ..core import tokens
from ..core.steering import LayerSteering, Steer, check_positions, hooked

if TYPE_CHECKING:
    from ..core.protocol import LabLike

# The library-wide default against loops (base.defaults: measured on the embedded default by
# benchmarks/repetition_default.py); repetition_penalty=1.0 turns it off.
SAMPLING_ONLY = ("top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


@dataclass(frozen=True)
class Decoding:
    """How the next token is chosen, checked: greedy (``do_sample=False``) or sampled at ``temperature`` within
    the ``top_p`` nucleus from ``seed``; ``repetition_penalty`` in both cases (1.0: none)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY

    def to_dict(self) -> dict:
        return {"do_sample": self.do_sample, "temperature": self.temperature if self.do_sample else None,
                "top_p": self.top_p if self.do_sample else None, "seed": self.seed,
                "repetition_penalty": self.repetition_penalty}


def decoding(do_sample: bool | None = None, temperature=None, top_p=None, seed=None,
             repetition_penalty=DEFAULT_REPETITION_PENALTY) -> Decoding:
    """Check the decoding options (errors name the argument). Sampling is on when ``do_sample`` is True, or
    when it is None and ``temperature`` or ``top_p`` is given; a sampled run without a seed gets one drawn
    (from torch's global generator) and recorded, so it can be repeated."""
    if do_sample is not None and not isinstance(do_sample, bool):
        raise TypeError(f"do_sample must be True, False or None, got {do_sample!r}")
    if temperature is not None:
        temperature = validate.number(temperature, "temperature")
        if not temperature > 0:
            raise ValueError(f"temperature must be more than 0, got {temperature:g} (for greedy decoding leave "
                             f"temperature out, or do_sample=False)")
    if top_p is not None:
        top_p = validate.number(top_p, "top_p")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p:g}")
    if seed is not None:
        seed = validate.integer(seed, "seed", minimum=0, maximum=2**63 - 1)
    repetition_penalty = validate.number(repetition_penalty, "repetition_penalty")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be more than 0 (1.0: none), got {repetition_penalty:g}")
    sample = (temperature is not None or top_p is not None) if do_sample is None else do_sample
    if not sample and (temperature is not None or top_p is not None):
        given = ", ".join(f"{n}={v:g}" for n, v in (("temperature", temperature), ("top_p", top_p)) if v is not None)
        raise ValueError(f"{given} with do_sample=False: greedy decoding ignores them (drop do_sample=False "
                         f"to sample)")
    if sample and seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    return Decoding(sample, 1.0 if temperature is None else temperature, 1.0 if top_p is None else top_p,
                    seed, repetition_penalty)


class RepetitionPenalty:
    """transformers' repetition penalty (a seen token's logit divided by ``penalty`` when positive, multiplied
    when negative) except on special tokens: padding, end of text and chat-template markers are not repeats,
    and penalising them would make a padded row (or a chat prompt, which holds ``<|im_end|>``) stop less often
    than the same prompt alone."""

    def __init__(self, penalty: float, exempt: Sequence[int]):
        self.penalty = penalty
        self.exempt = torch.tensor(sorted(set(exempt)), dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = torch.gather(scores, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        out = scores.scatter(1, input_ids, seen)
        if len(self.exempt):
            exempt = self.exempt.to(scores.device)
            exempt = exempt[exempt < scores.shape[-1]]
            out[:, exempt] = scores[:, exempt]
        return out


class SharedNoiseSampler:
    """A logits processor that makes greedy decoding draw a sample: temperature, top-p, then Gumbel noise
    from one generator per prompt (row ``r`` reads prompt ``r % n_prompts``'s noise), so rows of one prompt
    share their draws. The token it leaves on top is the sample; everything else is -inf."""

    def __init__(self, settings: Decoding, n_prompts: int):
        if settings.seed is None:
            raise ValueError("sampling needs a seed: build the settings with decoding(), which draws one")
        self.seed: int = settings.seed
        self.settings, self.n_prompts = settings, n_prompts
        self.generators: dict[int, torch.Generator] = {}

    def _noise(self, prompt: int, size: int, device: torch.device) -> torch.Tensor:
        g = self.generators.get(prompt)
        if g is None:
            g = self.generators[prompt] = torch.Generator(device=device)
            g.manual_seed((self.seed * 1_000_003 + prompt) % (2**63 - 1))
        u = torch.rand(size, generator=g, device=device, dtype=torch.float32)
        return -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.settings.temperature
        if self.settings.top_p < 1.0:
            ordered, order = logits.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) >= self.settings.top_p  # keep the smallest set reaching top_p
            drop[..., 0] = False
            logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
        noise = torch.stack([self._noise(prompt, logits.shape[-1], logits.device)
                             for prompt in range(self.n_prompts)])
        rows = torch.arange(logits.shape[0], device=logits.device) % self.n_prompts
        choice = (logits + noise[rows]).argmax(-1)
        out = torch.full_like(scores, -math.inf)
        return out.scatter(-1, choice.unsqueeze(-1), 0.0)


@dataclass
class Generation:
    """Completions for each prompt, steered and (optionally) baseline, with the token ids behind them, and the
    ``settings`` that made them (decoding, max_new_tokens, chat, positions)."""

    prompts: list[str]
    steered: list[str]
    baseline: list[str] | None
    steered_ids: list[list[int]]
    baseline_ids: list[list[int]] | None
    steers: list[Steer] = field(default_factory=list)
    positions: object = "all"
    settings: dict = field(default_factory=dict)

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
        """One row per prompt (prompt, steered, baseline, same); ``attrs['settings']`` holds the settings."""
        data: dict[str, list] = {"prompt": self.prompts, "steered": self.steered}
        if self.baseline is not None:
            data["baseline"] = self.baseline
            data["same"] = [b == s for b, s in zip(self.baseline, self.steered)]
        frame = pd.DataFrame(data)
        frame.attrs["settings"] = dict(self.settings)
        return frame

    def _repr_html_(self) -> str:
        edits = ", ".join(s.label for s in self.steers) or "none"
        shown = {k: v for k, v in self.settings.items() if v is not None and k not in ("positions",)}
        decoding_text = ", ".join(f"{k}={v}" for k, v in shown.items())
        rows = []
        for i, prompt in enumerate(self.prompts):
            base = html.escape(self.baseline[i]) if self.baseline is not None else "<i>not run</i>"
            rows.append(f"<tr><td>{html.escape(prompt)}</td><td>{base}</td>"
                        f"<td>{html.escape(self.steered[i])}</td></tr>")
        return (f"<div><b>steering:</b> {html.escape(edits)} (positions: {html.escape(str(self.positions))})"
                f"<br><b>decoding:</b> {html.escape(decoding_text)}"
                "<table><tr><th>prompt</th><th>baseline</th><th>steered</th></tr>" + "".join(rows) + "</table></div>")


def _conversations(prompt) -> list[list[dict]]:
    """A str, a list of str, one conversation (a list of {"role", "content"} dicts) or a list of them."""
    def is_message(m) -> bool:
        return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)

    if isinstance(prompt, str):
        return [[{"role": "user", "content": validate.text(prompt, "prompt")}]]
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt):
        if not all(is_message(m) for m in prompt):
            raise ValueError("chat prompt: every message must be a dict with str 'role' and 'content'")
        return [list(prompt)]
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)) and prompt:
        out = []
        for i, item in enumerate(prompt):
            if isinstance(item, str):
                out.append([{"role": "user", "content": validate.text(item, f"prompt[{i}]")}])
            elif isinstance(item, Sequence) and item and all(is_message(m) for m in item):
                out.append(list(item))
            else:
                raise TypeError(f"chat prompt[{i}]: give a str or a list of {{'role', 'content'}} messages")
        return out
    raise TypeError(f"chat prompt must be a str, a list of str or of messages, got {type(prompt).__name__}")


def render_prompts(lab: LabLike, prompt, chat) -> tuple[list[str], list[list[int]] | None]:
    """(prompt texts, their token ids or None): with ``chat`` (True, or a dict of ``apply_chat_template``
    options such as ``{"enable_thinking": False}``) each prompt is a user turn (or a whole conversation)
    rendered with the tokenizer's chat template and the assistant's generation prompt, and tokenized without
    adding special tokens again (the template holds them)."""
    if not chat:
        return validate.texts(prompt, "prompt"), None
    if chat is not True and not isinstance(chat, dict):
        raise TypeError(f"chat must be True, False or a dict of chat template options, got {chat!r}")
    options = {} if chat is True else dict(chat)
    if not getattr(lab.tokenizer, "chat_template", None):
        raise ValueError(f"chat=True: the tokenizer of {lab.name} has no chat template (a base model; use a "
                         f"plain prompt)")
    texts, ids = [], []
    for conversation in _conversations(prompt):
        text = lab.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **options)
        texts.append(text)
        ids.append(lab.tokenizer(text, add_special_tokens=False)["input_ids"])
    return texts, ids


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
             baseline: bool = True, decode: Decoding | None = None, chat=False, rendered=None,
             **generate_kwargs) -> Generation:
    """``Lab.generate``'s work (steers and max_new_tokens checked there). ``rendered``: ``render_prompts``'s
    output when the caller already has it."""
    check_positions(positions)
    decode = decoding() if decode is None else decode
    bad = [k for k in SAMPLING_ONLY + ("do_sample", "temperature", "top_p") if k in generate_kwargs]
    if bad:
        raise ValueError(f"{bad[0]} is not a generate option here: use temperature=, top_p=, seed=, do_sample=")
    prompts, ids = rendered if rendered is not None else render_prompts(lab, prompt, chat)
    with_baseline = baseline and bool(steers)
    if ids is None:
        ids = lab.token_ids(prompts)
    enc = lab.pad(ids + ids if with_baseline else ids)
    attention = enc["attention_mask"]
    rows = attention.shape[0]
    steered_rows = slice(len(prompts) if with_baseline else 0, rows)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=lab.tokenizer.pad_token_id,
                  repetition_penalty=1.0, temperature=None, top_p=None, top_k=None)  # ours below, not the config's
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList(generate_kwargs.pop("logits_processor", None) or [])
    if decode.repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(decode.repetition_penalty, lab.tokenizer.all_special_ids or []))
    if decode.do_sample:
        processors.append(SharedNoiseSampler(decode, len(prompts)))
    if processors:
        kwargs["logits_processor"] = processors
    kwargs.update(generate_kwargs)

    with hooked(lab.blocks, LayerSteering(steers, lab.sae), positions, attention, steered_rows):
        out = lab.hf_model.generate(**enc, **kwargs)

    prompt_len = enc["input_ids"].shape[1]
    steered, steered_ids = _completions(lab, out[steered_rows], prompt_len)
    base, base_ids = (None, None)
    if with_baseline:
        base, base_ids = _completions(lab, out[:len(prompts)], prompt_len)
    elif not steers:
        base, base_ids = steered, steered_ids
    settings = {**decode.to_dict(), "max_new_tokens": max_new_tokens, "chat": chat, "positions": positions}
    return Generation(prompts=prompts, steered=steered, baseline=base, steered_ids=steered_ids,
                      baseline_ids=base_ids, steers=steers, positions=positions, settings=settings)


def sweep(lab: LabLike, prompt: str, layer: int, feature: int | Steer, alphas=(-16, -8, -4, 0, 4, 8, 16),
          positions="all", mode: str = "add", max_new_tokens: int = 32, metric=None, decode: Decoding | None = None,
          chat=False, when=None, **generate_kwargs) -> pd.DataFrame:
    """One completion per alpha (feature ``feature`` at ``layer``, or a ``Steer`` at its strengths), the
    unsteered one computed once: alpha, text, same (as unsteered), first_difference, and ``metric(text)`` when
    given (e.g. ``han_share``). Decoding (``decode``) is the same for every alpha, its seed included, so
    sampled rows differ by the steer only. ``attrs['settings']`` records it."""
    decode = decoding() if decode is None else decode
    rendered = render_prompts(lab, prompt, chat)
    common = dict(positions=positions, max_new_tokens=max_new_tokens, decode=decode, chat=chat, rendered=rendered,
                  **generate_kwargs)
    base = generate(lab, prompt, [], **common)
    rows = []
    for alpha in alphas:
        if alpha == 0:
            out = base
        else:
            steer = (feature.with_value(float(alpha)) if isinstance(feature, Steer)
                     else Steer(layer, feature, float(alpha), mode, when=when))
            out = generate(lab, prompt, [steer], baseline=False, **common)
            out.baseline, out.baseline_ids = base.steered, base.steered_ids
        row = {"alpha": alpha, "text": out.text, "same": out.text == base.text,
               "first_difference": out.first_difference()}
        if metric is not None:
            row[getattr(metric, "__name__", "metric")] = metric(out.text)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["settings"] = dict(base.settings)
    return frame


@torch.no_grad()
def next_token_table(lab: LabLike, prompt: str, steers: list[Steer], top: int = 10) -> pd.DataFrame:
    """The next token after ``prompt``, clean and with every prompt position steered, side by side: the top
    ``top`` tokens of each distribution (rank, baseline_token, baseline_p, steered_token, steered_p).

    One traced forward on [prompt, prompt] with the edit on the second row only, so the two columns differ by
    the steering and nothing else."""
    enc = lab.tokenize([prompt, prompt])  # top and steers are checked by Lab.next_tokens
    where = enc["attention_mask"].bool().clone()
    where[0] = False
    steering = LayerSteering(steers, lab.sae)
    with lab.model.trace(dict(enc)):
        for layer in steering.layers:
            envoy = lab.layers[layer]
            envoy.output = steering.edit(layer, envoy.output, where)
        logits = lab.model.output.logits[:, -1].save()
    probs = logits.float().softmax(-1)
    best = torch.topk(probs, min(top, probs.shape[-1]), dim=-1)
    names = [[tokens.raw_label(lab, t) for t in row] for row in best.indices.tolist()]  # byte tokens: ⟨e7 8c⟩
    return pd.DataFrame({"rank": range(1, best.indices.shape[1] + 1),
                         "baseline_token": names[0], "baseline_p": best.values[0].tolist(),
                         "steered_token": names[1], "steered_p": best.values[1].tolist()})
