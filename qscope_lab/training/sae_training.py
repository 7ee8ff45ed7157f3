"""Train a TopK SAE for any layer of any supported model, saved in the exact Qwen-Scope convention.

Users need this for checkpoints Qwen-Scope does not cover (their own fine-tunes). The recipe follows Gao et al.
(2024) "Scaling and evaluating sparse autoencoders": inputs scaled so E||x||^2 = d_model, unit-norm decoder
columns re-projected after every step, encoder initialised as the decoder's transpose, and an AuxK loss that
lets dead latents (silent for ``dead_after_tokens``) learn the residual error. The input scale is folded into
the weights at the end, so the returned SAE takes the raw residual with no centring, exactly like Qwen-Scope's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F

from ..base import progress as progress_bars
from ..base import validate
from ..core.hooks import edit_blocks
from ..core.scan import counted_positions, scan
from ..saes.sae import SAE

if TYPE_CHECKING:
    from ..lab import Lab


@dataclass
class TrainConfig:
    d_sae: int
    k: int
    tokens: int = 1_000_000          # training tokens seen (activations are reused for several epochs if fewer)
    batch_tokens: int = 4096
    lr: float = 2e-3                 # measured best of {5e-4, 2e-3} on the embedded model (FVE 0.95 vs 0.90)
    lr_decay_fraction: float = 0.2   # the last 20% of steps decay the lr linearly to 0 (as SAELens, Gao et al.)
    k_aux: int | None = None          # default d_model // 2
    aux_coef: float = 1 / 32
    dead_after_tokens: int = 200_000
    heldout_fraction: float = 0.05
    seed: int = 0
    log_every: int = 50
    extra: dict = field(default_factory=dict)


def collect_activations(lab: Lab, texts: list[str], layers, max_tokens: int, batch_size: int = 16,
                        max_length: int = 256, skip_first: bool = True) -> dict[int, torch.Tensor]:
    """Residuals ``[n, d_model]`` (float32, CPU) per layer, at real, non-special positions, up to ``max_tokens``
    rows; all layers come from the same traced forward passes."""
    layers = sorted(lab.check_layers(layers))
    rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    total = 0
    for batch in scan(lab, validate.texts(texts), layers, batch_size=batch_size, max_length=max_length,
                      skip_first=skip_first, desc="collect activations"):
        for layer in layers:
            rows[layer].append(batch.residuals[layer][batch.counted].float().cpu())
        total += int(batch.counted.sum())
        if total >= max_tokens:
            break
    if total == 0:
        raise ValueError("no activations collected: give at least one non-empty text")
    return {layer: torch.cat(parts)[:max_tokens] for layer, parts in rows.items()}


def fraction_of_variance_explained(sae: SAE, x: torch.Tensor, batch: int = 8192) -> float:
    err, var = 0.0, 0.0
    mean = x.mean(0)
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            err += float((sae(xb) - xb).pow(2).sum())
            var += float((xb - mean).pow(2).sum())
    return 1.0 - err / var


def train_sae_on_activations(acts: torch.Tensor, config: TrainConfig, layer: int | None = None,
                             progress: bool = True) -> tuple[SAE, pd.DataFrame]:
    """Train on cached activations ``[n, d_model]``; returns the SAE (raw-residual convention) and its log."""
    gen = torch.Generator().manual_seed(config.seed)
    n, d = acts.shape
    perm = torch.randperm(n, generator=gen)
    n_held = max(1, int(n * config.heldout_fraction))
    held, train = acts[perm[:n_held]], acts[perm[n_held:]]
    scale = math.sqrt(d / float(train.pow(2).sum(-1).mean()))
    k_aux = config.k_aux or d // 2

    W_dec = torch.randn(d, config.d_sae, generator=gen)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    b_dec = train[:65536].mean(0) * scale
    W_enc = W_dec.T.clone()
    b_enc = -(W_enc @ b_dec)  # the encoder starts out centred although the convention has no centring
    params = {name: t.requires_grad_() for name, t in
              {"W_dec": W_dec, "W_enc": W_enc, "b_enc": b_enc, "b_dec": b_dec}.items()}
    opt = torch.optim.Adam(params.values(), lr=config.lr, betas=(0.9, 0.999))
    steps = max(1, config.tokens // config.batch_tokens)
    decay_from = int(steps * (1 - config.lr_decay_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_from else max(0.0, (steps - s) / max(1, steps - decay_from)))
    since_fired = torch.zeros(config.d_sae)
    records = []
    bar = progress_bars.bar(steps, progress, f"SAE layer {layer}")
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, train.shape[0], (config.batch_tokens,), generator=gen)
        x = train[idx] * scale
        pre = F.linear(x, params["W_enc"], params["b_enc"])
        top = torch.topk(pre, config.k, dim=-1)
        vals = top.values.clamp_min(0)
        acts_b = torch.zeros_like(pre).scatter(-1, top.indices, vals)
        x_hat = F.linear(acts_b, params["W_dec"], params["b_dec"])
        err = x - x_hat
        mse = err.pow(2).sum(-1).mean() / d

        fired = torch.zeros(config.d_sae, dtype=torch.bool).scatter_(0, top.indices[vals > 0].flatten(), True)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + config.batch_tokens)
        dead = since_fired >= config.dead_after_tokens
        aux = torch.zeros(())
        if dead.any():
            masked = pre.masked_fill(~dead, float("-inf"))  # only dead latents may explain the error
            kk = min(k_aux, int(dead.sum()))
            aux_top = torch.topk(masked, kk, dim=-1)
            aux_acts = torch.zeros_like(pre).scatter(-1, aux_top.indices, aux_top.values.clamp_min(0))
            aux_hat = F.linear(aux_acts, params["W_dec"])
            target = err.detach()  # normalised by the error's own variance, as in Gao et al.
            aux = (target - aux_hat).pow(2).sum() / (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
        loss = mse + config.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder columns unit-norm: drop the gradient part along each column
            W, g = params["W_dec"], params["W_dec"].grad
            g -= W * (W * g).sum(0, keepdim=True)
        opt.step()
        schedule.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=0, keepdim=True)
        if step % config.log_every == 0 or step == steps - 1:
            records.append({"step": step, "tokens": (step + 1) * config.batch_tokens, "mse": mse.item(),
                            "aux": aux.item(), "dead_fraction": float(dead.float().mean()),
                            "seconds": round(time.time() - start, 1)})
        bar.update(1)
    bar.close()

    with torch.no_grad():  # fold the input scale: pre(s x) = (s W_enc) x + b_enc; x_hat = (W_dec a + b_dec) / s
        sae = SAE(params["W_enc"].detach() * scale, params["b_enc"].detach().clone(),
                  params["W_dec"].detach() / scale, params["b_dec"].detach() / scale, k=config.k,
                  meta={"layer": layer, "hook": "resid_post"})
    log = pd.DataFrame(records)
    sae.meta.update(train_tokens=steps * config.batch_tokens, input_scale=scale,
                    heldout_fve=round(fraction_of_variance_explained(sae, held), 4),
                    dead_fraction=round(float(dead.float().mean()), 4), **config.extra)
    return sae, log


def train_sae(lab: Lab, texts: list[str], layer: int, d_sae: int | None = None, k: int = 32,
              activation_tokens: int = 500_000, progress: bool = True, **options) -> tuple[SAE, pd.DataFrame]:
    """Train a TopK SAE on ``lab``'s layer from ``texts``. ``d_sae`` defaults to 16 x d_model.

    Activations are collected once (``activation_tokens`` rows in memory: 4 bytes x d_model each) and sampled
    for ``tokens`` training tokens. Returns the SAE, ready for ``lab`` (raw residual in), and a log table.
    """
    lab.check_layer(layer)
    acts = collect_activations(lab, list(texts), [layer], max_tokens=activation_tokens)[layer]
    config = TrainConfig(d_sae=d_sae or 16 * lab.d_model, k=k, **options)
    return train_sae_on_activations(acts, config, layer=layer, progress=progress)


def finetune_kl(lab: Lab, sae: SAE, texts: list[str], layer: int, steps: int = 600, lr: float = 2e-4,
                batch_size: int = 8, max_length: int = 128, mse_coef: float = 0.1, seed: int = 0,
                progress: bool = True) -> tuple[SAE, pd.DataFrame]:
    """End-to-end fine-tune: the model's next-token distribution with the SAE spliced in at ``layer`` is pulled
    toward the clean one (KL), with a normalised-MSE term so the features stay reconstructions.

    MSE-trained SAEs cost more CE than their FVE suggests: the error lands in directions the later layers care
    about. A short KL stage after MSE training recovers a good part of that (Karvonen et al. 2025, "Revisiting
    end-to-end SAE training"). The model is frozen; the SAE keeps the raw-residual convention. Returns a new SAE
    and a log (step, kl, mse)."""
    lab.check_layer(layer)
    model = lab.hf_model
    tuned = SAE(*(t.detach().float().clone() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)), k=sae.k,
                meta=dict(sae.meta)).to(lab.device)
    params = [tuned.W_enc, tuned.b_enc, tuned.W_dec, tuned.b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    ids = [row for row in lab.token_ids(list(texts), max_length) if len(row) > 1]
    if not ids:
        raise ValueError("finetune_kl needs texts of at least two tokens")
    gen = torch.Generator().manual_seed(seed)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    state: dict = {}

    def splice(h: torch.Tensor) -> torch.Tensor:  # counted positions become the reconstruction; the sink stays
        out = torch.where(state["counted"].unsqueeze(-1), tuned(h), h)
        state["h"], state["out"] = h, out
        return out

    records = []
    bar = progress_bars.bar(steps, progress, f"KL fine-tune layer {layer}")
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for step in range(steps):
            pick = torch.randint(0, len(ids), (batch_size,), generator=gen).tolist()
            enc = lab.pad([ids[i] for i in pick])
            counted = counted_positions(enc["attention_mask"], skip_first=True)
            state["counted"] = counted
            with torch.no_grad():
                clean = model(**enc).logits[counted].float()
            with edit_blocks(lab.blocks, {layer: splice}):
                logits = model(**enc).logits[counted].float()
            kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(clean, -1), log_target=True,
                          reduction="batchmean")
            h, out = state["h"][counted].float(), state["out"][counted].float()
            mse = (out - h).pow(2).sum() / (h - h.mean(0)).pow(2).sum().clamp_min(1e-12)
            loss = kl + mse_coef * mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 20 == 0 or step == steps - 1:
                records.append({"step": step, "kl": kl.item(), "mse": mse.item()})
            bar.update(1)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        bar.close()
    result = SAE(*(p.detach().clone() for p in params), k=sae.k, meta=dict(sae.meta, kl_finetune_steps=steps))
    return result.to(device=sae.device), pd.DataFrame(records)

