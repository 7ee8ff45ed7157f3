"""Checks for the exercises of ``notebooks/saes_from_scratch.ipynb``.

Each check runs the learner's answer on fixed inputs, compares it with the library's own computation and says
what is wrong in words a learner can act on (forgot the ReLU, subtracted ``b_dec``, used the encoder row...),
never just "no". A check returns a ``Check`` that shows as one line in a notebook and is truthy when passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .saes.sae import SAE

PASSED, FAILED, UNANSWERED = "passed", "failed", "not answered yet"
_ICONS = {PASSED: "✅", FAILED: "❌", UNANSWERED: "⏳"}


@dataclass
class Check:
    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == PASSED

    def __repr__(self) -> str:
        return f"{_ICONS[self.status]} {self.exercise}: {self.status}. {self.message}"


def _run(exercise: str, answer: Callable | None, *args):
    """The answer's output, or a Check saying why there is none."""
    if answer is None:
        return Check(exercise, UNANSWERED, "Fill in the cell above and run it again.")
    try:
        out = answer(*args)
    except Exception as error:  # the learner's code: report, never crash the notebook
        return Check(exercise, FAILED, f"your function raised {type(error).__name__}: {error}")
    if out is None:
        return Check(exercise, UNANSWERED, "your function returned None: finish it and run again.")
    return torch.as_tensor(out)


def check_encode(encode: Callable[[torch.Tensor, SAE], torch.Tensor] | None, sae: SAE, x: torch.Tensor) -> Check:
    """``encode(x, sae)`` must give the dense Qwen-Scope activations: topk(relu(x @ W_enc.T + b_enc), k)."""
    name = "encode by hand"
    got = _run(name, encode, x, sae)
    if isinstance(got, Check):
        return got
    want = sae.encode(x).float()
    if got.shape != want.shape:
        return Check(name, FAILED, f"expected shape {tuple(want.shape)} ([tokens, d_sae]), got {tuple(got.shape)}: "
                                   "scatter the top-k values back into a zero vector of width d_sae")
    got = got.float()
    if (got < 0).any():
        return Check(name, FAILED, "some activations are negative: apply the ReLU before (or after) the top-k")
    most = int((got != 0).sum(-1).max())
    if most > sae.k:
        return Check(name, FAILED, f"a token has {most} non-zero features but k = {sae.k}: keep only the top k")
    centred = sae.encode(x - sae.b_dec).float()
    if torch.allclose(got, centred, atol=1e-4) and not torch.allclose(centred, want, atol=1e-4):
        return Check(name, FAILED, "you subtracted b_dec first: Qwen-Scope SAEs encode the raw residual")
    diff = float((got - want).abs().max())
    if diff > 1e-4:
        return Check(name, FAILED, f"values differ from sae.encode by up to {diff:.3g}: pre = x @ W_enc.T + b_enc")
    return Check(name, PASSED, f"matches sae.encode on {x.shape[0]} tokens (max difference {diff:.1e}).")


def check_fve(fve: Callable[[torch.Tensor, torch.Tensor], float] | None, sae: SAE, x: torch.Tensor) -> Check:
    """``fve(x, x_hat)`` must be 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over tokens."""
    from .training.sae_training import fraction_of_variance_explained

    name = "fraction of variance explained"
    with torch.no_grad():
        x_hat = sae(x)
    got = _run(name, fve, x, x_hat)
    if isinstance(got, Check):
        return got
    if got.numel() != 1:
        return Check(name, FAILED, f"return one number for all tokens, got shape {tuple(got.shape)}")
    got = float(got)
    want = fraction_of_variance_explained(sae, x)
    uncentred = 1 - float((x_hat - x).pow(2).sum() / x.pow(2).sum())
    if abs(got - want) <= 1e-3:
        return Check(name, PASSED, f"{got:.4f}, as the library measures it.")
    if abs(got - uncentred) <= 1e-3:
        return Check(name, FAILED, f"{got:.4f} divides by sum ||x||^2: the variance is around the mean, "
                                   f"sum ||x - x.mean(0)||^2 (answer {want:.4f})")
    return Check(name, FAILED, f"got {got:.4f}, expected {want:.4f}: 1 - squared error / centred variance")


def check_feature(acts, feature: int | None, in_class: Callable[[str], bool], what: str,
                  min_precision: float = 0.8, min_fires: int = 10) -> Check:
    """``feature`` must fire mostly on tokens of a class (precision) and on enough of them to be a pattern."""
    from .analysis.features import token_class_table

    name = f"a {what} feature"
    if feature is None:
        return Check(name, UNANSWERED, "set the feature id and run again.")
    if not 0 <= int(feature) < acts.d_sae:
        return Check(name, FAILED, f"feature {feature} is out of range 0..{acts.d_sae - 1}")
    table = token_class_table(acts, in_class, min_count=1)
    row = table[table.feature == int(feature)]
    if row.empty or int(row.fires.iloc[0]) < min_fires:
        fires = 0 if row.empty else int(row.fires.iloc[0])
        return Check(name, FAILED, f"feature {feature} fires on {fires} tokens of these texts: pick one that "
                                   f"fires at least {min_fires} times")
    precision, recall = float(row.precision.iloc[0]), float(row.recall.iloc[0])
    if precision < min_precision:
        return Check(name, FAILED, f"feature {feature} has precision {precision:.2f} (< {min_precision}): it fires "
                                   f"on many tokens that are not {what}")
    return Check(name, PASSED, f"feature {feature}: precision {precision:.2f}, recall {recall:.2f}.")


def check_steer(steer: Callable[[torch.Tensor, SAE, int, float], torch.Tensor] | None, sae: SAE,
                feature: int = 7, alpha: float = 3.0) -> Check:
    """``steer(h, sae, feature, alpha)`` must add alpha times the raw decoder column to every position."""
    name = "steer by hand"
    h = torch.randn(2, 5, sae.d_model, generator=torch.Generator().manual_seed(0))
    got = _run(name, steer, h.clone(), sae, feature, alpha)
    if isinstance(got, Check):
        return got
    column = sae.W_dec[:, feature].detach().float()
    want = h + alpha * column
    if got.shape != want.shape:
        return Check(name, FAILED, f"expected the residual's shape {tuple(want.shape)}, got {tuple(got.shape)}")
    got = got.float()
    if torch.allclose(got, h + alpha * sae.W_enc[feature].detach().float(), atol=1e-4):
        return Check(name, FAILED, "you added the encoder row W_enc[f]: steering writes the decoder column W_dec[:, f]")
    if torch.allclose(got, h + alpha * column / column.norm(), atol=1e-4) and abs(float(column.norm()) - 1) > 1e-3:
        return Check(name, FAILED, "you normalised the direction: Qwen-Scope steering adds the raw column")
    diff = float((got - want).abs().max())
    if diff > 1e-4:
        return Check(name, FAILED, f"differs from h + alpha * W_dec[:, f] by up to {diff:.3g}")
    return Check(name, PASSED, "h + alpha * W_dec[:, f] at every position.")
