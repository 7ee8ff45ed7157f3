"""What an attribution explains: a scalar per prompt computed from the model's logits.

``lab.attribute(prompt, target)`` takes a token (str or id: its logit after the prompt), a pair ``(a, b)`` (the
logit difference a - b), ``Continuation(" text")`` (the summed log-probability of the continuation's tokens,
appended to the prompt), ``NextToken(t, "logprob")``, any callable ``fn(logits) -> [batch]`` (logits
``[batch, seq, vocab]``, left-padded so position -1 is every prompt's last token), or None (the token the model
itself ranks first after each prompt: "why did it say that").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..base import validate

if TYPE_CHECKING:
    from ..core.protocol import LabLike

KINDS = ("logit", "logprob", "prob")


def token_id(lab: LabLike, token, name: str = "target") -> int:
    """A token id from an id or a string that is exactly one token (else a ValueError naming its pieces)."""
    vocab = len(lab.tokenizer)
    if isinstance(token, str):
        ids = lab.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = lab.token_strings(ids)
            raise ValueError(f"{name} {token!r} is {len(ids)} tokens {pieces}, not one: give a single token, or "
                             f"Continuation({token!r}) for the log-probability of all of them")
        return ids[0]
    return validate.integer(token, name, minimum=0, maximum=vocab - 1)


@dataclass
class Target:
    """Base: ``keep`` last positions of logits are enough (0: all); ``suffix`` token ids follow each prompt."""

    keep: int = field(default=1, kw_only=True)
    suffix: list[int] = field(default_factory=list, kw_only=True)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # [batch, keep, vocab] -> [batch]
        raise NotImplementedError

    def token(self, row: int) -> int | None:
        """The single token whose probability a widget shows (None when the target is not one token)."""
        return None

    def describe(self, lab: LabLike) -> str:
        return type(self).__name__

    def check(self, prompts: int) -> Target:
        """This target if its per-prompt data (if any) fits ``prompts`` prompts; a ValueError naming ``target``
        and both counts otherwise (a silent mismatch would attribute to the wrong token, or to nothing)."""
        return self

    def select(self, prompts: Sequence[int]) -> Target:
        """The target of a batch whose row i is prompt ``prompts[i]`` (the same target when nothing in it is
        per prompt). Every batched run (chunks of prompts, ablation rows, integrated-gradient steps) goes
        through this, so row i is always measured against its own prompt's target."""
        return self


@dataclass
class NextToken(Target):
    """The next token's logit (or ``"logprob"`` / ``"prob"``); one id for every prompt or one per prompt."""

    ids: Sequence[int] | int = 0
    kind: str = "logit"

    def __post_init__(self):
        validate.choice(self.kind, KINDS, "kind")

    def _ids(self, logits: torch.Tensor) -> torch.Tensor:
        rows = logits.shape[0]
        ids = list(self.ids) if isinstance(self.ids, Sequence) else [self.ids]
        if len(ids) == 1:
            ids = ids * rows
        if len(ids) != rows:  # select() lines ids up with rows: anything else is a bug, never a guess
            raise ValueError(f"target has {len(ids)} token ids for a batch of {rows} rows: use select()")
        return torch.as_tensor(ids, device=logits.device)

    def check(self, prompts: int) -> NextToken:
        if isinstance(self.ids, Sequence) and len(self.ids) not in (1, prompts):
            raise ValueError(f"target NextToken has {len(self.ids)} token ids for {prompts} prompt"
                             f"{'s' if prompts != 1 else ''}: give one id for every prompt, or one per prompt")
        return self

    def select(self, prompts: Sequence[int]) -> NextToken:
        if not isinstance(self.ids, Sequence) or len(self.ids) == 1:
            return self
        return dataclasses.replace(self, ids=[self.ids[int(p)] for p in prompts])

    def __call__(self, logits):
        last = logits[:, -1].float()
        if self.kind == "logprob":
            last = last.log_softmax(-1)
        elif self.kind == "prob":
            last = last.softmax(-1)
        return last.gather(-1, self._ids(logits)[:, None])[:, 0]

    def token(self, row: int) -> int:
        if isinstance(self.ids, Sequence):
            return int(self.ids[row if len(self.ids) > 1 else 0])
        return int(self.ids)

    def describe(self, lab: LabLike) -> str:
        ids = self.ids if isinstance(self.ids, Sequence) else [self.ids]
        names = ", ".join(repr(t) for t in lab.token_strings(list(dict.fromkeys(ids))))
        return f"{self.kind} of {names}"


@dataclass
class TopToken(NextToken):
    """Placeholder for ``target=None``: resolved to the clean run's top token per prompt before any gradient."""


@dataclass
class LogitDiff(Target):
    """logit(a) - logit(b) at the last position: the classic "which of two answers" metric (str or ids)."""

    a: int | str = 0
    b: int | str = 0

    def __call__(self, logits):
        last = logits[:, -1].float()
        return last[:, self.a] - last[:, self.b]

    def token(self, row: int) -> int:
        return int(self.a)  # ids by now: resolve() turns strings into ids

    def describe(self, lab: LabLike) -> str:
        a, b = lab.token_strings([int(self.a), int(self.b)])
        return f"logit({a!r}) - logit({b!r})"


@dataclass
class Continuation(Target):
    """Summed log-probability of ``text``'s tokens after the prompt (they are appended to it)."""

    text: str = ""

    def __call__(self, logits):
        n = len(self.suffix)
        logp = logits[:, -(n + 1):-1].float().log_softmax(-1)
        ids = torch.as_tensor(self.suffix, device=logits.device).expand(logits.shape[0], n)
        return logp.gather(-1, ids[..., None])[..., 0].sum(-1)

    def token(self, row: int) -> int | None:
        return self.suffix[0] if len(self.suffix) == 1 else None

    def describe(self, lab: LabLike) -> str:
        return f"log p({self.text!r} | prompt)"


@dataclass
class LogitsFn(Target):
    """Any ``fn(logits [batch, seq, vocab]) -> [batch]``."""

    fn: Callable | None = None

    def __call__(self, logits):
        assert self.fn is not None  # resolve() builds a LogitsFn from a callable only
        out = self.fn(logits)
        if not isinstance(out, torch.Tensor) or out.shape != (logits.shape[0],):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"a callable target must return one number per row, shape ({logits.shape[0]},); "
                             f"got {got}")
        bad = ~torch.isfinite(out.detach())
        if bad.any():
            rows = bad.nonzero()[:, 0].tolist()
            shown = ", ".join(f"{out[i].item()}" for i in rows[:3])
            raise ValueError(f"the callable target returned non-finite values ({shown}) for "
                             f"{len(rows)} of {len(out)} rows (rows {rows[:5]}): attributions of NaN / inf mean "
                             f"nothing; return a finite number per row (e.g. a logit or log-probability)")
        return out.float()

    def describe(self, lab: LabLike) -> str:
        return getattr(self.fn, "__name__", "callable")


def sequences(lab: LabLike, prompts: Sequence[str], target: Target) -> list[list[int]]:
    """Token ids of each prompt followed by the target's suffix (a continuation's tokens). A prompt the model
    cannot read whole with it (more than ``lab.max_positions``) is refused naming the lengths: past its context
    the model's positions are out of range and every number after them would be wrong in silence."""
    ids = lab.tokenizer(list(prompts))["input_ids"]
    limit, extra = lab.max_positions, len(target.suffix)
    if limit is not None:
        for i, row in enumerate(ids):
            if len(row) + extra > limit:
                what = f"prompt {i} has {len(row)} tokens"
                if extra:
                    what += f" and the continuation {extra} more ({len(row) + extra} positions)"
                fix = "shorten the prompt" + (" or the continuation" if extra else "")
                raise ValueError(f"{what}; {lab.name} reads at most {limit} positions: {fix}")
    return [list(row) + list(target.suffix) for row in ids]


def resolve(lab: LabLike, target) -> Target:
    """Any accepted ``target`` as a Target (a Continuation gets its token ids)."""
    if target is None or type(target) is TopToken:  # TopToken is a NextToken: never resolve it to id 0
        return TopToken()
    if isinstance(target, Continuation):
        ids = lab.tokenizer(validate.text(target.text, "continuation"), add_special_tokens=False)["input_ids"]
        return Continuation(keep=len(ids) + 1, suffix=list(ids), text=target.text)
    if isinstance(target, NextToken):
        ids = target.ids if isinstance(target.ids, Sequence) and not isinstance(target.ids, str) else [target.ids]
        ids = [token_id(lab, t) for t in ids]
        return NextToken(ids=ids if len(ids) > 1 else ids[0], kind=target.kind)
    if isinstance(target, LogitDiff):
        return LogitDiff(a=token_id(lab, target.a, "target a"), b=token_id(lab, target.b, "target b"))
    if isinstance(target, Target):
        return target
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ValueError(f"a tuple target is (token a, token b) for logit(a) - logit(b), got {target!r}")
        return LogitDiff(a=token_id(lab, target[0], "target[0]"), b=token_id(lab, target[1], "target[1]"))
    if callable(target):
        return LogitsFn(keep=0, fn=target)
    return NextToken(ids=token_id(lab, target))
