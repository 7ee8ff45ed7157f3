"""Autopilot: from positive / negative example texts to a benchmarked steering recipe.

1. Candidates by contrast across layers, of two kinds. Input features: one scan of the examples through every
   layer; ``delta = P(fires | positive) - P(fires | negative)`` (a text "fires" a feature when any counted token
   does; the seed-data rule of the Qwen-Scope report), ties broken by the mean activation difference. Output
   features: decoder columns pointing along ``(p_pos - p_neg) @ W_U``, the direction that raises the tokens the
   positives use (features that fire on a concept often do not steer toward it; output features do more
   often). Half of ``per_layer`` of each kind per layer, interleaved, then the first ``candidates``.
2. A sweep on a dev split of the prompts: every candidate, and ``controls`` random features per layer (of the
   candidates' median firing density), at strengths set relative to the layer's residual norm (``ratios`` x median |h| /
   |d_f|, so one default fits any model), all in one batched generation. The best (candidate, strength): the
   largest concept margin (its interval's low end over the highest control's high end) over the random
   features of its layer at the same relative strength (on a small model any strong push yields garbage,
   which a concept scorer may half-credit); among those within 0.05 of it, the lowest perplexity.
3. The bench (``bench.run_bench``) of that steer on the held-out prompts, never seen by steps 1-2.

The recipe's status is the held-out bench's verdict ("validated", "benchmarked" or "failed").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..base import validate
from ..core.scan import scan
from ..core.steering import Steer
from .bench import firing_rates, matched_features, run_bench, sweep_rows
from .concept import ExampleConcept, as_concept
from .recipe import Recipe

RATIOS = (0.5, 1.0, 2.0, 3.0)


def split_prompts(prompts: list[str], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded shuffle cut into dev (at least 1) and held-out (at least 2) prompts."""
    if len(prompts) < 3:
        raise ValueError(f"autopilot needs at least 3 prompts (1 to sweep on, 2 held out), got {len(prompts)}")
    order = np.random.default_rng(seed).permutation(len(prompts))
    n_dev = min(max(1, round(len(prompts) * dev_fraction)), len(prompts) - 2)
    return [prompts[i] for i in order[:n_dev]], [prompts[i] for i in order[n_dev:]]


@torch.no_grad()
def contrast(lab: LabLike, positives: list[str], negatives: list[str], layers: Sequence[int], per_layer: int = 6,
             batch_size: int = 16) -> tuple[pd.DataFrame, dict[int, float]]:
    """Features by contrast at each layer (see the module docstring), best first: layer, feature, delta,
    pos_rate, neg_rate, pos_mean, neg_mean; and each layer's median residual norm over the examples' counted
    tokens (what the sweep's strengths are relative to)."""
    texts = positives + negatives
    fired: dict[int, torch.Tensor] = {}
    means: dict[int, torch.Tensor] = {}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for batch in scan(lab, texts, layers, batch_size=batch_size):
        rows = batch.index
        for layer in layers:
            sae = lab.sae(layer)
            if layer not in fired:
                fired[layer] = torch.zeros(len(texts), sae.d_sae, dtype=torch.bool)
                means[layer] = torch.zeros(len(texts), sae.d_sae)
            row, values, indices = batch.sparse(layer, sae)
            best = torch.zeros(len(rows), sae.d_sae)
            best.view(-1).scatter_reduce_(0, (row.unsqueeze(1) * sae.d_sae + indices).reshape(-1),
                                          values.clamp_min(0).reshape(-1), "amax")
            fired[layer][rows] = best > 0
            means[layer][rows] = best
            h = batch.residuals[layer][batch.counted]
            norms[layer].append(h.float().norm(dim=-1).cpu())
    pos = torch.zeros(len(texts), dtype=torch.bool)
    pos[:len(positives)] = True
    toward = output_direction(lab, positives, negatives)
    frames = []
    for layer in layers:
        f, m = fired[layer].float(), means[layer]
        pos_rate, neg_rate = f[pos].mean(0), f[~pos].mean(0)
        pos_mean, neg_mean = m[pos].mean(0), m[~pos].mean(0)
        delta = pos_rate - neg_rate
        w = lab.sae(layer).W_dec.detach().float().cpu()  # [d_model, d_sae]
        output = (toward @ w) / w.norm(dim=0).clamp_min(1e-12)
        key = delta + 1e-6 * torch.tanh(pos_mean - neg_mean)  # ties: the larger activation difference
        by_input = torch.topk(key, min(per_layer - per_layer // 2, key.numel())).indices.tolist()
        by_output = [f_ for f_ in torch.topk(output, min(per_layer, key.numel())).indices.tolist()
                     if f_ not in by_input][:per_layer // 2]
        top = torch.tensor(by_input + by_output, dtype=torch.long)
        frames.append(pd.DataFrame({"layer": layer, "feature": top.numpy(),
                                    "found_by": ["input"] * len(by_input) + ["output"] * len(by_output),
                                    "delta": delta[top].numpy(), "output_score": output[top].numpy(),
                                    "pos_rate": pos_rate[top].numpy(), "neg_rate": neg_rate[top].numpy(),
                                    "pos_mean": pos_mean[top].numpy(), "neg_mean": neg_mean[top].numpy()}))
    table = pd.concat(frames, ignore_index=True)
    # rank within each kind and layer, then interleave: the best input and output features of every layer first
    table["rank"] = table.groupby(["layer", "found_by"]).cumcount()
    table = table.sort_values(["rank", "found_by", "layer"], kind="stable").drop(columns="rank")
    median = {layer: float(torch.cat(norms[layer]).median()) if norms[layer] else 1.0 for layer in layers}
    return table.reset_index(drop=True), median


def output_direction(lab: LabLike, positives: list[str], negatives: list[str]) -> torch.Tensor:
    """The residual direction that raises the logits of tokens the positives use more than the negatives:
    ``(p_pos - p_neg) @ W_U``, times the final norm's weight ([d_model], on the CPU). A feature whose decoder
    column points along it is an *output* feature for the concept, the kind that steers (input features, which
    fire on the concept, often do not)."""
    unembed = lab.hf_model.get_output_embeddings().weight.detach().float().cpu()  # [vocab, d_model]

    def distribution(texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(unembed.shape[0])
        for ids in lab.token_ids(texts):
            ids_t = torch.tensor([i for i in ids if i < unembed.shape[0]], dtype=torch.long)
            counts += torch.bincount(ids_t, minlength=unembed.shape[0]).float()
        return counts / counts.sum().clamp_min(1.0)

    toward = (distribution(positives) - distribution(negatives)) @ unembed
    body = getattr(lab.hf_model, "model", None)
    norm = getattr(body, "norm", None) or getattr(getattr(body, "language_model", None), "norm", None)
    weight = getattr(norm, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.shape == toward.shape:
        toward = toward * weight.detach().float().cpu()
    return toward


def autopilot(lab: LabLike, positives, negatives, prompts, *, layers=None, candidates: int = 16, per_layer: int = 4,
              ratios: Sequence[float] = RATIOS, alphas: Sequence[float] | None = None, dev_fraction: float = 0.5,
              concept=None, instruction: str | None = None, positions="all", max_new_tokens: int = 24,
              sweep_tokens: int | None = None, fluency_bound: float = 2.0, seed: int = 0, name: str | None = None,
              goal: str = "increase", controls: int = 3, **bench_options) -> Recipe:
    """The whole loop (module docstring); ``Lab.autopilot`` checks the arguments and calls it."""
    begin = time.perf_counter()
    positives = validate.texts(positives, "positives")
    negatives = validate.texts(negatives, "negatives")
    prompts = validate.texts(prompts, "prompts")
    candidates = validate.integer(candidates, "candidates", minimum=1)
    controls = validate.integer(controls, "controls", minimum=1)
    per_layer = validate.integer(per_layer, "per_layer", minimum=1)
    dev_fraction = validate.number(dev_fraction, "dev_fraction", minimum=0.05, maximum=0.95)
    if goal not in ("increase", "decrease"):
        raise ValueError(f"goal must be 'increase' or 'decrease', got {goal!r}")
    ratios = [validate.number(r, f"ratios[{i}]", minimum=1e-6) for i, r in enumerate(ratios)]
    if alphas is not None:
        alphas = [validate.alpha(a, f"alphas[{i}]") for i, a in enumerate(alphas)]
        if not alphas:
            raise ValueError("alphas is empty: give strengths to sweep, or leave it None for ratios")
    if not ratios:
        raise ValueError("ratios is empty: give strengths relative to the residual norm to sweep")
    layers = lab.check_layers(list(lab.saes.layers) if layers is None and lab.saes is not None else layers)
    concept = as_concept((positives, negatives) if concept is None else concept)
    dev, held = split_prompts(prompts, dev_fraction, seed)

    table, norm = contrast(lab, positives, negatives, layers, per_layer=per_layer)
    chosen = table.head(candidates).reset_index(drop=True)
    sign = 1.0 if goal == "increase" else -1.0
    cand_steers, cand_alphas, kinds = [], [], []

    def strengths(layer: int, feature: int) -> list[float]:
        d_norm = float(lab.sae(layer).direction(feature).float().norm())
        scale = norm[layer] / max(d_norm, 1e-6)
        values = alphas if alphas is not None else [round(sign * r * scale, 3) for r in ratios]
        return [validate.alpha(a, "alpha") for a in values]

    for row in chosen.itertuples():
        cand_steers.append([Steer(int(row.layer), int(row.feature), 1.0)])
        cand_alphas.append(strengths(int(row.layer), int(row.feature)))
        kinds.append(("candidate", int(row.layer), int(row.feature)))
    # ``controls`` random features per layer, of the candidates' median firing density, swept at the same
    # relative strengths: what a generic edit of that size does to the concept on the dev prompts
    rng = np.random.default_rng(seed + 7)
    for layer in sorted(set(chosen.layer.astype(int))):
        rates, _ = firing_rates(lab, layer, [*positives[:8], *negatives[:8]])
        mine = chosen.feature[chosen.layer == layer].astype(int).tolist()
        target = int(sorted(mine, key=lambda f: rates[f])[len(mine) // 2])
        picks = [f for f in matched_features(rates, target, len(mine) + controls, rng) if f not in mine]
        for pick in picks[:controls]:
            cand_steers.append([Steer(layer, pick, 1.0)])
            cand_alphas.append(strengths(layer, pick))
            kinds.append(("random control", layer, pick))
    sweep = sweep_rows(lab, cand_steers, cand_alphas, dev, concept, positions=positions,
                       max_new_tokens=sweep_tokens or max_new_tokens, seed=seed)
    sweep.insert(1, "kind", ["unsteered" if c < 0 else kinds[c][0] for c in sweep.candidate])
    sweep.insert(2, "layer", [kinds[c][1] if c >= 0 else None for c in sweep.candidate])
    sweep.insert(3, "feature", [kinds[c][2] if c >= 0 else None for c in sweep.candidate])
    # the strength's rank in its row's list: the same rank is the same ratio of the residual norm
    sweep.insert(4, "strength", [None if c < 0 else cand_alphas[c].index(a) for c, a in zip(sweep.candidate,
                                                                                             sweep.alpha)])

    # the largest margin over the random control of the same layer at the same relative strength, interval end
    # against interval end; among those within 0.05 of it, the most fluent (perplexity alone would prefer a
    # degenerate repeat: "iiii" is very predictable)
    # margin of the interval ends: the candidate's low end over the highest control's high end (reversed to
    # decrease), the controls of its layer at the same relative strength
    near = "concept_lo" if sign > 0 else "concept_hi"
    far = "concept_hi" if sign > 0 else "concept_lo"
    random_rows = sweep[sweep.kind == "random control"]
    worst = (random_rows.groupby(["layer", "strength"])[far].max() if sign > 0
             else random_rows.groupby(["layer", "strength"])[far].min())
    tried = sweep[sweep.kind == "candidate"].copy()
    tried["margin"] = [sign * (c - worst.get((layer, k), 0.0))
                       for c, layer, k in zip(tried[near], tried.layer, tried.strength)]
    sweep["margin"] = tried["margin"]
    top = tried["margin"].max()
    best = tried[tried["margin"] >= top - 0.05].sort_values(["fluency_ppl", "alpha"]).iloc[0]
    steer = Steer(int(best.layer), int(best.feature), float(best.alpha))

    bench = run_bench(lab, [steer], held, concept, instruction=instruction, positions=positions,
                      max_new_tokens=max_new_tokens, seed=seed, fluency_bound=fluency_bound, goal=goal,
                      **bench_options)
    recipe = Recipe.create(lab, [steer], name=name or "autopilot", positions=positions, status=bench.verdict,
                           concept=bench.concept, bench=bench, sweep=sweep, candidates=chosen,
                           settings={"seed": seed, "dev_prompts": dev, "held_out_prompts": held,
                                     "fluency_bound": fluency_bound, "goal": goal, "ratios": list(ratios),
                                     "alphas": alphas, "layers": layers, "median_residual_norm": norm,
                                     "seconds": round(time.perf_counter() - begin, 3)})
    if isinstance(concept, ExampleConcept):
        recipe.settings["concept_leave_one_out_accuracy"] = concept.accuracy
    return recipe
