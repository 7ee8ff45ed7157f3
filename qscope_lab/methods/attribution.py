"""Which SAE features made the model say that: attribution of a target metric to every (position, layer,
feature) of the chosen layers' SAEs, spliced in with their error terms (``splice.py``: the forward is exactly
the model's).

- ``grad_x_act``: one forward + backward; attribution = activation x d(metric)/d(activation), the linear
  estimate of what zeroing the feature at that position would change (attribution patching).
- ``integrated_gradients``: the same gradient averaged over ``steps`` points of the path from every chosen
  layer's activations at zero (error terms kept) to the clean ones; the attributions then add up to
  ``metric - baseline_metric`` (completeness).
- ``ablation``: exact; one re-run per feature (the ``top`` strongest by grad x act per prompt) with that feature
  zeroed at its position, everything downstream recomputed. Its frame has a ``grad_x_act`` column beside it.

Error-term rows (feature -1, activation = the error's norm) carry gradient x error (grad_x_act and integrated
gradients) or the exact effect of removing the error at that position and layer (ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..base import budget as budgets
from ..core.steering import Steer
from . import splice, targets

if TYPE_CHECKING:
    from ..core.protocol import LabLike

METHODS = ("grad_x_act", "integrated_gradients", "ablation")

# Caps on what each cost parameter may ask for, and why: past them a call runs for minutes to hours (or fills
# memory) in silence, and nothing it could show is worth that.
CAPS = {
    "steps": (1024, "each integrated-gradients step is one more forward and backward of every prompt, and the "
                    "midpoint rule's error falls as 1/steps^2: 16-64 steps already add up to metric - "
                    "baseline_metric within a few percent (see completeness()), while steps=10**6 would run for "
                    "many minutes"),
    "top": (1024, "each of the top features is one more forward (ablation, per prompt) or backward (edges), "
                  "and features past the strongest few hundred change the metric by next to nothing"),
    "batch_size": (1024, "one batch of that many rows holds the graph of every spliced layer onwards in "
                         "memory at once; larger batches are not faster, only bigger"),
}


def check_cost(value, name: str) -> int:
    """A cost parameter as an int in 1..its cap (``CAPS``); the ValueError over the cap says why it is there."""
    from ..base import validate

    value = validate.integer(value, name, minimum=1)
    cap, why = CAPS[name]
    if value > cap:
        raise ValueError(f"{name}={value} is over the cap of {cap}: {why}")
    return value


@dataclass
class Attribution:
    """What ``lab.attribute`` returns. ``metric`` / ``baseline_metric``: one float per prompt (a float for one
    prompt); ``to_frame()`` the rows; ``top_features()`` / ``by_position()`` / ``error_share()`` summaries."""

    lab: LabLike = field(repr=False)
    prompts: list[str]
    tokens: list[list[str]]
    layers: list[int]
    method: str
    target: targets.Target = field(repr=False)
    rows: dict = field(repr=False)
    metrics: np.ndarray = field(repr=False)
    probabilities: np.ndarray | None = field(repr=False)
    steers: list[Steer] = field(default_factory=list, repr=False)
    enc: dict = field(default_factory=dict, repr=False)
    clean: dict = field(default_factory=dict, repr=False)
    batch_size: int = field(default=16, repr=False)
    _baseline: np.ndarray | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ numbers
    def _one(self, values: np.ndarray):
        return float(values[0]) if len(self.prompts) == 1 else values

    @property
    def metric(self):
        """The target on the clean run (with any ``steer`` applied)."""
        return self._one(self.metrics)

    @property
    def baseline_metric(self):
        """The target with the chosen layers' feature activations at zero and their error terms kept (computed
        on first use for grad_x_act and ablation; the integrated gradients' start)."""
        if self._baseline is None:
            parts = []
            for chunk in _chunks(len(self.prompts), self.batch_size):
                logits, _ = splice.run(self.lab, _take(self.enc, chunk), self.layers, keep=self.target.keep,
                                       steers=self.steers, fixed=_take_sites(self.clean, chunk),
                                       scale=torch.zeros(len(chunk)), grad=False)
                parts.append(self.target.select(chunk)(logits).cpu().numpy())
            self._baseline = np.concatenate(parts)
        return self._one(self._baseline)

    @property
    def probability(self):
        """Probability of the target token (or of the whole continuation) on the clean run; None otherwise."""
        return None if self.probabilities is None else self._one(self.probabilities)

    @property
    def description(self) -> str:
        return self.target.describe(self.lab)

    # ------------------------------------------------------------------ tables
    def to_frame(self) -> pd.DataFrame:
        """One row per (prompt, position, layer, feature) that fired, plus error-term rows (feature -1): prompt,
        position, token, layer, feature, name (``lab.feature_names``; "error term" for feature -1), activation,
        attribution (+ grad_x_act for ablation), strongest first."""
        r = self.rows
        frame = pd.DataFrame({
            "prompt": r["prompt"], "position": r["position"],
            "token": [self.tokens[p][s] for p, s in zip(r["prompt"], r["position"])],
            "layer": r["layer"], "feature": r["feature"], "name": self._names(r["layer"], r["feature"]),
            "activation": r["activation"], "attribution": r["attribution"]})
        if "grad_x_act" in r:
            frame["grad_x_act"] = r["grad_x_act"]
        order = np.lexsort((-np.abs(frame["attribution"].to_numpy()), frame["prompt"].to_numpy()))
        return frame.iloc[order].reset_index(drop=True)

    def _names(self, layers, features) -> list[str]:
        """Display names per row (one ``lab.feature_names`` call per layer); "error term" for feature -1."""
        layers, features = np.asarray(layers, np.int64), np.asarray(features, np.int64)
        out = np.full(len(features), "error term", dtype=object)
        for layer in np.unique(layers):
            at = np.flatnonzero((layers == layer) & (features >= 0))
            if len(at):
                unique, inverse = np.unique(features[at], return_inverse=True)
                out[at] = np.asarray(self.lab.feature_names(int(layer), unique.tolist()), dtype=object)[inverse]
        return out.tolist()

    def top_features(self, n: int = 20, prompt: int = 0) -> pd.DataFrame:
        """Features summed over positions, most positive first: layer, feature, name, attribution, activation
        (max), positions (how many it fired at). Error rows left out."""
        frame = self.to_frame()
        frame = frame[(frame.prompt == prompt) & (frame.feature >= 0)]
        grouped = frame.groupby(["layer", "feature", "name"], as_index=False).agg(
            attribution=("attribution", "sum"), activation=("activation", "max"), positions=("position", "size"))
        return grouped.sort_values("attribution", ascending=False).head(n).reset_index(drop=True)

    def by_position(self, prompt: int = 0) -> pd.DataFrame:
        """Per token: the features' total attribution and the error terms' (summed over layers)."""
        frame = self.to_frame()
        frame = frame[frame.prompt == prompt]
        tokens = self.tokens[prompt]
        feats = frame[frame.feature >= 0].groupby("position")["attribution"].sum()
        errors = frame[frame.feature < 0].groupby("position")["attribution"].sum()
        return pd.DataFrame({"position": range(len(tokens)), "token": tokens,
                             "attribution": [float(feats.get(i, 0.0)) for i in range(len(tokens))],
                             "error": [float(errors.get(i, 0.0)) for i in range(len(tokens))]})

    def error_share(self) -> pd.DataFrame:
        """Per layer: sum |error attribution| / sum |all attribution| (small when the SAE explains the metric)."""
        frame = self.to_frame()
        out = []
        for layer, group in frame.groupby("layer"):
            total = group.attribution.abs().sum()
            error = group[group.feature < 0].attribution.abs().sum()
            out.append({"layer": int(layer), "error": float(error), "features": float(total - error),
                        "error_share": float(error / total) if total > 0 else float("nan")})
        return pd.DataFrame(out)

    def completeness(self) -> dict:
        """Sum of the feature attributions against ``metric - baseline_metric`` (equal for integrated gradients)."""
        frame = self.to_frame()
        total = frame[frame.feature >= 0].groupby("prompt").attribution.sum().reindex(range(len(self.prompts)),
                                                                                      fill_value=0.0)
        base = np.atleast_1d(self.baseline_metric)
        change = self.metrics - base
        return {"attribution_sum": self._one(total.to_numpy()), "metric_change": self._one(change),
                "relative_error": self._one(np.abs(total.to_numpy() - change) / np.maximum(np.abs(change), 1e-12))}

    def spearman(self) -> float:
        """Ablation results only: Spearman rank correlation of the exact effects with grad x act over the ablated
        features (how far the one-backward estimate can be trusted for ranking)."""
        frame = self.to_frame()
        if "grad_x_act" not in frame:
            raise ValueError("spearman() compares exact ablation with grad x act: use method='ablation'")
        frame = frame[frame.feature >= 0]
        return float(frame.attribution.rank().corr(frame.grad_x_act.rank()))

    def chart(self, n: int = 20, prompt: int = 0):
        """Signed bars of the ``n`` features with the largest |attribution| (altair): negative ones too, so the
        top bar is the widget's top feature."""
        from ..viz.charts import attribution_bars

        every = self.top_features(len(self.rows["feature"]) + 1, prompt)
        return attribution_bars(every, title=f"attribution to {self.description}", n=n)

    # ------------------------------------------------------------------ interventions
    def intervene(self, steer: list[Steer]) -> pd.DataFrame:
        """Re-run every prompt with ``steer`` (e.g. ``[Steer(2, f, 1.0, "ablate")]``) on top of the attribution's
        own: prompt, metric, new_metric, probability, new_probability."""
        news, new_ps = [], []
        for chunk in _chunks(len(self.prompts), self.batch_size):
            target = self.target.select(chunk)
            logits, _ = splice.run(self.lab, _take(self.enc, chunk), (), keep=target.keep, steers=self.steers,
                                   then=list(steer), grad=False)
            assert logits is not None  # no stop_at: the forward ran to the end
            news.append(target(logits).cpu().numpy())
            new_ps.append(probabilities(target, logits))
        new = np.concatenate(news)
        new_p = _join(new_ps)
        frame = pd.DataFrame({"prompt": range(len(self.prompts)), "metric": self.metrics, "new_metric": new})
        if new_p is not None:
            frame["probability"], frame["new_probability"] = self.probabilities, new_p
        return frame

    def _repr_html_(self) -> str:
        head = (f"<b>attribution</b> ({self.method}) of {self.description}, layers {self.layers}; metric "
                f"{np.round(self.metrics, 4).tolist()}")
        return f"<div>{head}</div>" + self.top_features(10)._repr_html_()


def probabilities(target: targets.Target, logits: torch.Tensor) -> np.ndarray | None:
    """Per row: the target token's probability at the last position, or exp(log p) of a continuation."""
    if isinstance(target, targets.Continuation):
        return np.exp(target(logits).cpu().numpy())
    ids = [target.token(row) for row in range(logits.shape[0])] if target.token(0) is not None else None
    if ids is None:
        return None
    probs = logits[:, -1].float().softmax(-1)
    return probs[torch.arange(len(ids)), torch.as_tensor(ids, device=probs.device)].cpu().numpy()


# ---------------------------------------------------------------------------------------------- the methods
def _chunks(n: int, size: int) -> list[range]:
    """Prompts 0..n-1 in consecutive runs of at most ``size``."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _join(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The chunks' arrays end to end (None when the target has none: every chunk's is None then)."""
    arrays = [part for part in parts if part is not None]
    return np.concatenate(arrays) if arrays else None


def _take(enc: dict, chunk: range) -> dict:
    """Rows ``chunk`` of a padded batch (views: the padding stays that of the whole batch, so every number is
    the one a single batch of all the prompts gives)."""
    return {key: value[chunk.start:chunk.stop] for key, value in enc.items()}


def _take_sites(clean: dict, chunk: range) -> dict:
    return {layer: splice.Site(s.values[chunk.start:chunk.stop], s.indices[chunk.start:chunk.stop],
                               s.error[chunk.start:chunk.stop]) for layer, s in clean.items()}


def memory_plan(lab: LabLike, layers: Sequence[int], rows: int, seq: int, budget: int,
                held: dict | None = None) -> budgets.LayerPlan:
    """What attribution holds per spliced layer (its SAE, read once for the call, plus the spliced state of
    ``rows`` x ``seq`` positions: h, its edit, the error term and their gradients, the top-k values, indices, leaf
    and gradient) and once (one encode chunk): the plan, or MemoryBudgetError before any forward when all
    ``layers`` (spliced into one forward and backward) do not fit. The model's own activations are not counted."""
    held = held if held is not None else {}
    saes = lab.saes
    sizes, widths = [], []
    for layer in layers:
        size = saes.layer_nbytes(layer) if saes is not None else None
        if size is None:  # a suite that cannot tell a layer's size from its files: read it now (held for the call)
            held[layer] = lab.sae(layer)
            size = held[layer].nbytes
        sizes.append(size)
        width = saes.d_sae if saes is not None and saes.d_sae else held[layer].d_sae if layer in held else 0
        widths.append(width)
    k = (saes.k if saes is not None else None) or 64
    state = rows * seq * (4 * lab.d_model * 4 + k * (4 + 8 + 4 + 4))
    per_layer = max(sizes) + state
    fixed = max(min(rows * seq, max(1, budgets.ENCODE_CHUNK_BYTES // (4 * max(w, 1)))) * 4 * w * 2 for w in widths)
    plan = budgets.plan_layers(layers, per_layer, budget, fixed=fixed, job="lab.attribute")
    if len(plan.groups) > 1:
        total = fixed + sum(sizes) + len(sizes) * state
        raise budgets.MemoryBudgetError(
            f"lab.attribute splices all {len(sizes)} layers {list(layers)} into one forward and backward: it needs "
            f"{budgets.describe(total)} ({budgets.describe(sum(sizes))} of SAEs + {budgets.describe(state)} of "
            f"spliced state a layer for {rows} rows x {seq} positions + {budgets.describe(fixed)} to encode) but "
            f"memory_budget is {budgets.describe(budget)}: attribute fewer layers at once, lower batch_size, or raise "
            f"memory_budget to at least {budgets.describe(total)}")
    return plan


def attribute(lab: LabLike, prompts: list[str], target, layers: list[int], method: str, steps: int = 16, top: int = 20,
              steers: Sequence[Steer] = (), batch_size: int = 16, memory_budget: int | None = None) -> Attribution:
    """Prompts are run ``batch_size`` at a time (rows of one forward and backward: memory follows it), each
    chunk against its own prompts' target; the chunks' numbers are those of one batch of all the prompts.

    ``memory_budget`` (bytes; default ``lab.memory_budget``) bounds the SAEs and spliced state (``memory_plan``):
    refused before any forward when it is too small. Each needed SAE (spliced and steered layers) is read once
    for the whole call and held until it returns, whatever the SAE cache's size."""
    target = targets.resolve(lab, target).check(len(prompts))
    ids = targets.sequences(lab, prompts, target)
    enc = lab.pad(ids)
    steers = list(steers)
    rows = batch_size if method == "integrated_gradients" else min(batch_size, len(prompts))
    saes: dict = {}
    memory_plan(lab, layers, rows, int(enc["input_ids"].shape[1]),
                lab.memory_budget if memory_budget is None else int(memory_budget), held=saes)
    for layer in sorted(set(layers) | {steer.layer for steer in steers}):
        if layer not in saes:
            saes[layer] = lab.sae(layer)
    differentiable = method != "integrated_gradients"  # its path starts from the stored activations instead
    metrics, probs, parts, top_ids, baselines = [], [], [], [], []
    sites_by_chunk: list[dict] = []
    for chunk in _chunks(len(prompts), batch_size):
        sub = _take(enc, chunk)
        mine = target.select(chunk)
        logits, sites = splice.run(lab, sub, layers, keep=mine.keep, steers=steers, grad=differentiable, saes=saes)
        assert logits is not None  # no stop_at: the forward ran to the end
        if isinstance(mine, targets.TopToken):
            top_ids += logits[:, -1].argmax(-1).tolist()
            mine = targets.NextToken(ids=top_ids[chunk.start:])
        metric = mine(logits)
        clean = {layer: splice.Site(s.values, s.indices, s.error) for layer, s in sites.items()}
        metrics.append(metric.detach().cpu().numpy())
        probs.append(probabilities(mine, logits.detach()))
        if not differentiable:
            feature_grads, error_grads, baseline = _integrated(lab, sub, mine, layers, clean, steers, steps,
                                                               batch_size, saes)
            baselines.append(baseline)
        else:
            leaves = [sites[layer].spliced()[0] for layer in layers]
            outs = [sites[layer].spliced()[2] for layer in layers]
            grads = torch.autograd.grad(metric.sum(), leaves + outs)
            feature_grads = dict(zip(layers, grads[:len(layers)]))
            error_grads = dict(zip(layers, grads[len(layers):]))
        parts.append(_rows(sub, clean, feature_grads, error_grads, first=chunk.start))
        sites_by_chunk.append(clean)
        del logits, sites, metric, feature_grads, error_grads  # the chunk's graph goes before the next one
    if isinstance(target, targets.TopToken):
        target = targets.NextToken(ids=top_ids)
    clean = {layer: splice.Site(*(torch.cat([getattr(c[layer], name) for c in sites_by_chunk])
                                  for name in ("values", "indices", "error"))) for layer in layers}
    result = Attribution(lab=lab, prompts=prompts, tokens=[lab.token_strings(row) for row in ids], layers=layers,
                         method=method, target=target, rows={}, metrics=np.concatenate(metrics),
                         probabilities=_join(probs), steers=steers, enc=enc,
                         clean=clean, batch_size=batch_size)
    if baselines:
        result._baseline = np.concatenate(baselines)
    result.rows = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    if method == "ablation":
        result.rows = _ablate(lab, result, top, batch_size, saes)
    return result


def _rows(enc: dict, clean: dict, feature_grads: dict, error_grads: dict, first: int = 0) -> dict:
    """Flat arrays of every fired feature and every error term at real positions (positions counted from each
    prompt's first real token; prompts numbered from ``first``)."""
    mask = enc["attention_mask"].bool()
    pad = (~mask).sum(-1)
    cols: dict[str, list] = {k: [] for k in ("prompt", "position", "layer", "feature", "activation", "attribution")}
    for layer, site in clean.items():
        values = site.values.float()
        attr = (values * feature_grads[layer].float()).detach()
        fired = (values > 0) & mask[..., None]
        p, s, j = fired.nonzero(as_tuple=True)
        err_attr = (error_grads[layer].float() * site.error.to(error_grads[layer].device).float()).sum(-1).detach()
        ep, es = mask.nonzero(as_tuple=True)
        cols["prompt"] += [p, ep]
        cols["position"] += [s - pad[p], es - pad[ep]]
        cols["layer"] += [torch.full_like(p, layer), torch.full_like(ep, layer)]
        cols["feature"] += [site.indices[p, s, j], torch.full_like(ep, -1)]
        cols["activation"] += [values[p, s, j], site.error[ep, es].float().norm(dim=-1)]
        cols["attribution"] += [attr[p, s, j], err_attr[ep, es]]
    cols["prompt"] = [p + first for p in cols["prompt"]]
    return {k: torch.cat([t.cpu() for t in v]).numpy() for k, v in cols.items()}


def _integrated(lab: LabLike, enc, target, layers, clean, steers, steps: int, batch_size: int, saes=None):
    """Midpoint-rule integrated gradients over ``steps`` points, plus the path's two ends (0: the baseline
    metric; 1: the clean gradient the error terms are measured with). Rows are chunked ``batch_size`` at a time."""
    prompts = enc["input_ids"].shape[0]
    alphas = torch.cat([torch.tensor([0.0, 1.0]), (torch.arange(steps) + 0.5) / steps])
    per_chunk = max(1, batch_size // prompts)
    feature_sum = {layer: torch.zeros_like(clean[layer].values, dtype=torch.float32) for layer in layers}
    error_grads: dict[int, torch.Tensor] = {}
    baseline = None
    for start in range(0, len(alphas), per_chunk):
        chunk = alphas[start:start + per_chunk]
        rows = {key: splice.repeat_rows(value, len(chunk)) for key, value in enc.items()}
        scale = chunk.repeat(prompts)
        logits, sites = splice.run(lab, rows, layers, keep=target.keep, steers=steers, fixed=clean, scale=scale,
                                   saes=saes)
        metric = target.select(np.repeat(np.arange(prompts), len(chunk)))(logits)  # prompt-major rows
        grads = torch.autograd.grad(metric.sum(), [sites[x].spliced()[0] for x in layers]
                                    + [sites[x].spliced()[2] for x in layers])
        for i, alpha in enumerate(chunk.tolist()):
            pick = slice(i, None, len(chunk))  # this alpha's row of every prompt
            if alpha == 0.0 and start == 0:
                baseline = metric[pick].detach().cpu().numpy()
                continue
            if alpha == 1.0 and start <= 1 < start + len(chunk):
                error_grads = {x: grads[len(layers) + n][pick] for n, x in enumerate(layers)}
                continue
            for n, x in enumerate(layers):
                feature_sum[x] += grads[n][pick].float() / steps
    return feature_sum, error_grads, baseline


def _ablate(lab: LabLike, result: Attribution, top: int, batch_size: int, saes=None) -> dict:
    """Exact effects of the ``top`` features with the largest |grad x act| per prompt and of every error term:
    one row of a batched forward each, with that activation (or error) removed at its position and layer."""
    r = result.rows
    enc = result.enc
    pad = (~enc["attention_mask"].bool()).sum(-1).cpu().numpy()
    chosen: list[int] = []
    for p in range(len(result.prompts)):
        rows = np.flatnonzero((r["prompt"] == p) & (r["feature"] >= 0))
        chosen += list(rows[np.argsort(-np.abs(r["attribution"][rows]), kind="stable")[:top]])
        chosen += list(np.flatnonzero((r["prompt"] == p) & (r["feature"] < 0)))
    picked = np.asarray(chosen, dtype=int)
    exact = np.zeros(len(picked))
    for start in range(0, len(picked), batch_size):
        chunk = picked[start:start + batch_size]
        batch = {key: value[torch.as_tensor(r["prompt"][chunk], device=value.device)] for key, value in enc.items()}
        edits = {}
        for layer in sorted(set(r["layer"][chunk].tolist())):
            mine = np.flatnonzero(r["layer"][chunk] == layer)
            vectors = torch.stack([_removed(lab, result, layer, chunk[i], pad, saes) for i in mine])
            cols = torch.as_tensor(r["position"][chunk[mine]] + pad[r["prompt"][chunk[mine]]])
            edits[layer] = _subtract(torch.as_tensor(mine), cols, vectors)
        logits, _ = splice.run(lab, batch, (), keep=result.target.keep, steers=result.steers, edits=edits,
                               grad=False, saes=saes)
        assert logits is not None  # no stop_at: the forward ran to the end
        own = result.target.select(r["prompt"][chunk].tolist())  # row i: the ablation of one of prompt p's
        exact[start:start + len(chunk)] = result.metrics[r["prompt"][chunk]] - own(logits).cpu().numpy()
    out = {key: value[picked] for key, value in r.items()}
    out["grad_x_act"], out["attribution"] = out["attribution"], exact
    return out


def _removed(lab: LabLike, result: Attribution, layer: int, row: int, pad, saes=None) -> torch.Tensor:
    """The vector a feature (activation x decoder column) or an error term adds at its position."""
    r = result.rows
    p, col = int(r["prompt"][row]), int(r["position"][row] + pad[r["prompt"][row]])
    if r["feature"][row] < 0:
        return result.clean[layer].error[p, col]
    sae = saes[layer] if saes and layer in saes else lab.sae(layer)
    return float(r["activation"][row]) * sae.W_dec[:, int(r["feature"][row])]


def _subtract(rows: torch.Tensor, cols: torch.Tensor, vectors: torch.Tensor):
    def edit(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[rows.to(h.device), cols.to(h.device)] -= vectors.to(device=h.device, dtype=h.dtype)
        return h
    return edit
