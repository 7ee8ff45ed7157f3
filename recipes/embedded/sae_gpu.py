"""TopK SAEs for every layer of the embedded model, trained where the model is (CUDA or CPU), clock-bounded.

Used by gpu_run.py. The recipe is the library's (``qscope_lab.training.sae_training``: Gao et al. 2024 -- inputs
scaled to E||x||^2 = d, unit-norm decoder re-projected each step, encoder initialised as the decoder's transpose,
AuxK for latents silent for 200k tokens, Adam with a linear lr decay over the last 20%, the scale folded into the
weights at the end so the SAE takes the raw residual, Qwen-Scope convention), but every tensor lives on one
device: the library's trainer keeps activations and its generator on the CPU, which is minutes per layer for a
16 x 384 = 6144-wide SAE, seconds on a GPU. Activations are read at the decoder blocks' outputs (resid_post)
through ``qscope_lab.core.hooks.edit_blocks``; position 0 of each window (the attention sink) and
<|endoftext|> positions are excluded, as the library's scan does. Also here: the KL fine-tune (the SAE spliced
in, pulled toward the clean next-token distribution) and the quality report per layer and language (held-out
FVE, CE with the SAE spliced in minus clean, L0).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from qscope_lab.core.hooks import edit_blocks


def blocks_of(model):
    return model.model.layers


def counted(x: torch.Tensor, eos: int) -> torch.Tensor:
    """Positions whose residuals count: not the window's first (the sink) and not <|endoftext|>."""
    mask = x != eos
    mask[:, 0] = False
    return mask


@torch.no_grad()
def collect(model, windows_fn, layers: list[int], max_tokens: int, eos: int, dtype=torch.bfloat16,
            deadline: float | None = None) -> dict[int, torch.Tensor]:
    """Residuals [n, d] per layer (stored in ``dtype`` on the model's device) from windows_fn() batches."""
    rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    state: dict = {}

    def reader(layer):
        def read(h):
            rows[layer].append(h[state["mask"]].to(dtype))
            return None
        return read

    total = 0
    model.eval()
    while total < max_tokens and (deadline is None or time.time() < deadline):
        x = windows_fn()
        state["mask"] = counted(x, eos)
        with edit_blocks(blocks_of(model), {layer: reader(layer) for layer in layers}), amp(x.device):
            model.model(x)  # the decoder stack only: no logits needed
        total += int(state["mask"].sum())
    return {layer: torch.cat(parts)[:max_tokens] for layer, parts in rows.items()}


def amp(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


def reconstruct(x: torch.Tensor, p: dict, k: int) -> torch.Tensor:
    pre = F.linear(x, p["W_enc"], p["b_enc"])
    top = torch.topk(pre, k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp_min(0))
    return F.linear(acts, p["W_dec"], p["b_dec"])


def fve(p: dict, k: int, x: torch.Tensor, batch: int = 8192) -> float:
    """Fraction of variance explained on rows ``x`` (raw residuals)."""
    err = var = 0.0
    mean = x.float().mean(0)
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].float()
            err += float((reconstruct(xb, p, k) - xb).pow(2).sum())
            var += float((xb - mean).pow(2).sum())
    return 1.0 - err / max(var, 1e-12)


def train_sae(acts: torch.Tensor, d_sae: int, k: int, tokens: int, seconds: float, batch_tokens: int = 4096,
              lr: float = 2e-3, decay_fraction: float = 0.2, aux_coef: float = 1 / 32,
              dead_after_tokens: int = 200_000, seed: int = 0, log_every: int = 50) -> tuple[dict, list[dict]]:
    """Train on ``acts`` [n, d] (on any device) for ``tokens`` or ``seconds``, whichever comes first; the lr
    decays linearly to 0 over the last ``decay_fraction`` of that budget. Returns raw-convention weights."""
    device = acts.device
    gen = torch.Generator(device=device).manual_seed(seed)
    n, d = acts.shape
    scale = math.sqrt(d / float(acts[:262144].float().pow(2).sum(-1).mean()))
    k_aux = d // 2
    W_dec = torch.randn(d, d_sae, generator=gen, device=device)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    b_dec = acts[:65536].float().mean(0) * scale
    W_enc = W_dec.T.clone()
    b_enc = -(W_enc @ b_dec)
    params = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    for t in params.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=lr, betas=(0.9, 0.999),
                           fused=device.type == "cuda")
    max_steps = max(1, tokens // batch_tokens)
    since_fired = torch.zeros(d_sae, device=device)
    records = []
    start = time.time()
    step = 0
    while True:
        progress = max(step / max_steps, (time.time() - start) / max(seconds, 1e-9))
        if progress >= 1:
            break
        factor = 1.0 if progress < 1 - decay_fraction else max(0.0, (1 - progress) / decay_fraction)
        for group in opt.param_groups:
            group["lr"] = lr * factor
        idx = torch.randint(0, n, (batch_tokens,), generator=gen, device=device)
        x = acts[idx].float() * scale
        pre = F.linear(x, params["W_enc"], params["b_enc"])
        top = torch.topk(pre, k, dim=-1)
        vals = top.values.clamp_min(0)
        acts_b = torch.zeros_like(pre).scatter(-1, top.indices, vals)
        x_hat = F.linear(acts_b, params["W_dec"], params["b_dec"])
        err = x - x_hat
        mse = err.pow(2).sum(-1).mean() / d
        fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
        fired[top.indices[vals > 0]] = True
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + batch_tokens)
        dead = since_fired >= dead_after_tokens
        aux = torch.zeros((), device=device)
        if (step + 1) * batch_tokens > dead_after_tokens:  # no sync: with fewer than k_aux dead, -inf picks add 0
            masked = pre.masked_fill(~dead, float("-inf"))
            aux_top = torch.topk(masked, k_aux, dim=-1)
            picked = torch.where(torch.isfinite(aux_top.values), aux_top.values, 0.0).clamp_min(0)
            aux_acts = torch.zeros_like(pre).scatter(-1, aux_top.indices, picked)
            target = err.detach()
            aux_hat = F.linear(aux_acts, params["W_dec"])
            aux = (target - aux_hat).pow(2).sum() / (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
        loss = mse + aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            W, g = params["W_dec"], params["W_dec"].grad
            g -= W * (W * g).sum(0, keepdim=True)
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=0, keepdim=True)
        if step % log_every == 0:
            records.append({"step": step, "tokens": (step + 1) * batch_tokens, "mse": round(mse.item(), 6),
                            "aux": round(float(aux.detach()), 6), "dead_fraction": round(float(dead.float().mean()), 4),
                            "seconds": round(time.time() - start, 2)})
        step += 1
    records.append({"step": step - 1, "tokens": step * batch_tokens, "mse": round(mse.item(), 6),
                    "aux": round(float(aux.detach()), 6), "dead_fraction": round(float(dead.float().mean()), 4),
                    "seconds": round(time.time() - start, 2)})
    with torch.no_grad():
        folded = {"W_enc": params["W_enc"].detach() * scale, "b_enc": params["b_enc"].detach().clone(),
                  "W_dec": params["W_dec"].detach() / scale, "b_dec": params["b_dec"].detach() / scale}
    return folded, records


def finetune_kl(model, p: dict, k: int, layer: int, windows_fn, eos: int, steps: int, seconds: float,
                lr: float = 2e-4, mse_coef: float = 0.1) -> tuple[dict, list[dict]]:
    """The SAE spliced in at ``layer`` (counted positions), trained so next-token distributions match the clean
    model's (KL + ``mse_coef`` x normalised MSE); the model stays frozen. As qscope_lab's ``finetune_kl``."""
    tuned = {name: t.detach().clone().float().requires_grad_(True) for name, t in p.items()}
    opt = torch.optim.Adam(tuned.values(), lr=lr)
    state: dict = {}

    def splice(h):
        out = torch.where(state["mask"].unsqueeze(-1), reconstruct(h.float(), tuned, k).to(h.dtype), h)
        state["h"], state["out"] = h, out
        return out

    frozen = [(q, q.requires_grad) for q in model.parameters()]
    records, start = [], time.time()
    try:
        for q, _ in frozen:
            q.requires_grad_(False)
        for step in range(steps):
            if time.time() - start > seconds:
                break
            x = windows_fn()
            mask = counted(x, eos)
            state["mask"] = mask
            with torch.no_grad(), amp(x.device):
                clean = model(x).logits[mask].float()
            with edit_blocks(blocks_of(model), {layer: splice}), amp(x.device):
                logits = model(x).logits[mask].float()
            kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(clean, -1), log_target=True,
                          reduction="batchmean")
            h, out = state["h"][mask].float(), state["out"][mask].float()
            mse = (out - h).pow(2).sum() / (h - h.mean(0)).pow(2).sum().clamp_min(1e-12)
            loss = kl + mse_coef * mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 20 == 0:
                records.append({"step": step, "kl": round(kl.item(), 5), "mse": round(mse.item(), 5)})
    finally:
        for q, flag in frozen:
            q.requires_grad_(flag)
    return {name: t.detach() for name, t in tuned.items()}, records


@torch.no_grad()
def ce_with_splice(model, x: torch.Tensor, eos: int, splice: dict | None) -> tuple[float, int]:
    """Summed next-token CE over counted target positions of windows ``x`` [b, T+1], and their count."""
    inputs, targets = x[:, :-1], x[:, 1:]
    mask = counted(inputs, eos)
    edits = {}
    if splice is not None:
        layer, p, k = splice

        def edit(h):
            return torch.where(mask.unsqueeze(-1), reconstruct(h.float(), p, k).to(h.dtype), h)
        edits = {layer: edit}
    with edit_blocks(blocks_of(model), edits), amp(x.device):
        logits = model(inputs).logits.float()
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    return float(ce[mask].sum()), int(mask.sum())


def quality(model, saes: dict[int, dict], k: int, heldout: dict[str, torch.Tensor], eos: int, seq: int,
            windows: int = 32, batch: int = 16) -> list[dict]:
    """Per layer and language, on held-out windows: FVE, CE clean / spliced / delta (nats per token), L0."""
    model.eval()
    rows = []
    for lang, stream in sorted(heldout.items()):
        length = min(seq, stream.numel() - 1)
        n = max(1, min(windows, (stream.numel() - 1) // length))
        device = next(model.parameters()).device
        x = torch.stack([stream[i * length:i * length + length + 1] for i in range(n)]).to(device)
        acts: dict[int, list[torch.Tensor]] = {layer: [] for layer in saes}
        clean_sum = clean_n = 0
        for i in range(0, n, batch):
            xb = x[i:i + batch]
            s, c = ce_with_splice(model, xb, eos, None)
            clean_sum += s
            clean_n += c
            mask = counted(xb[:, :-1], eos)

            def reader(layer, mask=mask, store=acts):
                def read(h):
                    store[layer].append(h[mask].float())
                return read
            with torch.no_grad(), edit_blocks(blocks_of(model), {layer: reader(layer) for layer in saes}), \
                    amp(device):
                model.model(xb[:, :-1])
        for layer, p in sorted(saes.items()):
            rows_l = torch.cat(acts[layer])
            spliced_sum = spliced_n = 0
            for i in range(0, n, batch):
                s, c = ce_with_splice(model, x[i:i + batch], eos, (layer, p, k))
                spliced_sum += s
                spliced_n += c
            with torch.no_grad():
                pre = F.linear(rows_l, p["W_enc"], p["b_enc"])
                l0 = float((torch.topk(pre, k, dim=-1).values > 0).float().sum(-1).mean())
            clean, spliced = clean_sum / max(1, clean_n), spliced_sum / max(1, spliced_n)
            rows.append({"layer": layer, "language": lang, "tokens": int(rows_l.shape[0]),
                         "fve": round(fve(p, k, rows_l), 4), "ce_clean": round(clean, 4),
                         "ce_spliced": round(spliced, 4), "ce_delta": round(spliced - clean, 4), "l0": round(l0, 2)})
    return rows
