"""Per-text feature statistics from one scan: the largest activation, the number of firing tokens and the sum
of activations of every (text, feature) pair that fires, plus each text's count of counted tokens.

``"any"`` reads the largest activation, ``"rate"`` the firing count over the counted tokens, ``"mean"`` the sum
over the counted tokens. Per batch the pairs are summed into a dense ``[batch, width]`` buffer (bincount /
index_add / scatter amax) and only the non-zero cells kept: no sort or ``torch.unique`` over all pairs.
``summaries`` keeps per-class sums only, so its memory is flat in the number of texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...core import jobs
from ...core.scan import scan

if TYPE_CHECKING:
    from ...lab import Lab


def _entries(batch, layer: int, sae, eps: float, columns: torch.Tensor | None):
    """(row in batch, column, firing count, activation sum, largest activation) of each firing pair."""
    rows, values, indices = batch.sparse(layer, sae)
    keep = values > eps
    r, c, v = rows.unsqueeze(1).expand_as(indices)[keep], indices[keep], values[keep]
    width = sae.d_sae
    if columns is not None:
        c = columns[c]
        r, c, v = r[c >= 0], c[c >= 0], v[c >= 0]
        width = int(columns.max()) + 1 if len(columns) else 0
    slot = r * width + c
    size = len(batch) * width
    count = torch.bincount(slot, minlength=size)
    nz = count.nonzero().squeeze(1)
    total = torch.zeros(size).index_add_(0, slot, v)[nz]
    peak = torch.zeros(size).scatter_reduce_(0, slot, v, "amax")[nz]
    return nz // max(width, 1), nz % max(width, 1), count[nz].float(), total, peak


@dataclass
class TextStats:
    """Sparse per-text statistics at some layers. ``entries[layer]``: (text, feature, count, total, peak)
    arrays; ``n_counted``: counted tokens per text; ``residual_means[layer]``: ``[n, d_model]`` if asked."""

    n_texts: int
    n_counted: np.ndarray
    entries: dict = field(default_factory=dict)
    residual_means: dict = field(default_factory=dict)

    def take(self, rows) -> TextStats:
        """The statistics of ``rows`` (in that order), renumbered 0..len(rows)-1."""
        rows = np.asarray(rows, int)
        where = np.full(self.n_texts, -1)
        where[rows] = np.arange(len(rows))
        out = TextStats(len(rows), self.n_counted[rows],
                        residual_means={k: v[rows] for k, v in self.residual_means.items()})
        for layer, (text, feat, count, total, peak) in self.entries.items():
            keep = where[text] >= 0
            out.entries[layer] = (where[text[keep]], feat[keep], count[keep], total[keep], peak[keep])
        return out

    def features(self, layer: int) -> np.ndarray:
        """Every feature id that fires in some text at ``layer``."""
        return np.unique(self.entries[layer][1])

    def matrix(self, layer: int, statistic: str, features, dtype=np.float64) -> np.ndarray:
        """``[n_texts, len(features)]`` of ``statistic`` ("any"/"peak": largest activation, "rate", "mean"); the
        fit builds them in float32, one layer at a time (the statistics are float32 sums to begin with)."""
        text, feat, count, total, peak = self.entries[layer]
        features = np.asarray(features, int)
        column = np.full(int(max(feat.max(initial=-1), features.max(initial=-1))) + 1, -1)
        column[features] = np.arange(len(features))
        col = column[feat] if len(feat) else feat
        keep = col >= 0
        value = {"any": peak, "peak": peak, "rate": count, "mean": total}[statistic][keep]
        if statistic in ("rate", "mean"):
            value = value / np.maximum(self.n_counted[text[keep]], 1)
        out = np.zeros((self.n_texts, len(features)), dtype)
        out[text[keep], col[keep]] = value
        return out


def collect_plan(lab: Lab, n_texts: int, layers, features: dict | None = None, residual_layers=(),
                 max_length: int | None = None, memory_budget=None):
    """(layer plan, SAEs already read) of ``collect``: per layer its SAE plus the (text, feature) pairs it can
    keep (int64 text and feature, three float32: at most k x ``max_length`` pairs a text, or the features asked
    for); held once: the residual means and one encode chunk. MemoryBudgetError before any work when one layer
    does not fit."""
    feature_layers = [layer for layer in dict.fromkeys(layers) if features is None or len(features.get(layer, ()))]
    k = (lab.saes.k if lab.saes is not None else None) or 64
    width = (lab.saes.d_sae if lab.saes is not None else None) or k * (max_length or 512)
    per_text = (min(k * (max_length or 512), width) if features is None
                else max((len(f) for f in features.values()), default=0))
    fixed = n_texts * lab.d_model * 4 * len(set(residual_layers))
    return jobs.plan_job(lab, feature_layers, n_texts * per_text * 28, fixed, memory_budget,
                            job="the classifier statistics")


def collect(lab: Lab, texts: list[str], layers, features: dict | None = None, residual_layers=(),
            eps: float = 0.0, memory_budget=None, **scan_options) -> TextStats:
    """Statistics of every firing feature at ``layers`` (or only ``features[layer]``), and the mean residual over
    counted tokens at ``residual_layers``.

    Layers are taken in groups that fit ``memory_budget`` (``core.jobs.plan_job``; default the Lab's), the groups
    outermost: one scan of the texts per group, each SAE read once for the whole call. The numbers are those of
    one scan of every layer (the same batches; a forward stopped after a group's last layer computes that
    layer exactly as a longer one does)."""
    feature_layers = [layer for layer in dict.fromkeys(layers)
                      if features is None or len(features.get(layer, ()))]
    residual_layers = list(dict.fromkeys(residual_layers))
    layer_plan, held = collect_plan(lab, len(texts), feature_layers, features, residual_layers,
                                    scan_options.get("max_length"), memory_budget)
    stats = TextStats(len(texts), np.zeros(len(texts), int))
    parts: dict[int, list] = {layer: [] for layer in feature_layers}
    means = {layer: np.zeros((len(texts), lab.d_model), np.float32) for layer in residual_layers}
    groups = layer_plan.groups or [[]]
    desc = scan_options.pop("desc", "scan")
    for g, group in enumerate(groups):
        saes = {layer: held.pop(layer) if layer in held else lab.sae(layer) for layer in group}
        columns = {}
        if features is not None:
            for layer in group:
                ids = torch.as_tensor(sorted(set(int(f) for f in features.get(layer, ()))), dtype=torch.long)
                col = torch.full((saes[layer].d_sae,), -1, dtype=torch.long)
                col[ids] = ids  # keep the feature id as the column: entries stay in feature ids
                columns[layer] = col
        res = residual_layers if g == 0 else []
        label = desc if len(groups) == 1 else f"{desc} (layers {group[0]}-{group[-1]})"
        for batch in scan(lab, texts, sorted(set(group) | set(res)), desc=label, **scan_options):
            idx = batch.index
            stats.n_counted[idx.numpy()] = batch.counted.sum(1).cpu().numpy()
            for layer in group:
                row, feat, count, total, peak = _entries(batch, layer, saes[layer], eps, columns.get(layer))
                parts[layer].append((idx[row].numpy(), feat.numpy(), count.numpy(), total.numpy(), peak.numpy()))
            for layer in res:
                h = batch.residuals[layer]
                m = batch.counted.unsqueeze(-1).to(h.dtype)
                means[layer][idx.numpy()] = ((h * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu().numpy()
        del saes
    for layer, chunks in parts.items():
        stats.entries[layer] = tuple(np.concatenate([c[i] for c in chunks]) if chunks else np.zeros(0)
                                     for i in range(5))
        stats.entries[layer] = (stats.entries[layer][0].astype(int), stats.entries[layer][1].astype(int),
                                *stats.entries[layer][2:])
    stats.residual_means = means
    return stats


def summaries(lab: Lab, texts: list[str], y: np.ndarray, layers, eps: float = 0.0, memory_budget=None,
              **scan_options) -> dict:
    """Per layer ``[2 classes, d_sae]`` sums of: texts firing, rate, rate², mean, mean² (memory flat in the
    number of texts): enough to screen features when there are too many seeds to keep per-text statistics.
    Layer groups within ``memory_budget`` as in ``collect``."""
    layers = list(dict.fromkeys(layers))
    width = (lab.saes.d_sae if lab.saes is not None else None) or 0
    layer_plan, held = jobs.plan_job(lab, layers, 2 * 5 * 2 * width * 8, 0, memory_budget,
                                        job="the classifier screening")
    out = {}
    y_t = torch.as_tensor(np.asarray(y, bool))
    desc = scan_options.pop("desc", "scan")
    groups = layer_plan.groups
    for group in groups:
        saes = {layer: held.pop(layer) if layer in held else lab.sae(layer) for layer in group}
        for layer in group:
            out[layer] = np.zeros((5, 2, saes[layer].d_sae))
        label = desc if len(groups) == 1 else f"{desc} (layers {group[0]}-{group[-1]})"
        for batch in scan(lab, texts, group, desc=label, **scan_options):
            n = batch.counted.sum(1).clamp_min(1).float()
            for layer in group:
                d_sae = saes[layer].d_sae
                row, feat, count, total, _ = _entries(batch, layer, saes[layer], eps, None)
                rate, mean = count / n[row], total / n[row]
                cls = (~y_t[batch.index[row]]).long()  # 0: positive, 1: negative
                for i, value in enumerate((torch.ones_like(rate), rate, rate ** 2, mean, mean ** 2)):
                    acc = torch.zeros(2 * d_sae, dtype=torch.float64)
                    acc.index_add_(0, cls * d_sae + feat, value.double())
                    out[layer][i] += acc.view(2, -1).numpy()
        del saes
    return {layer: out[layer] for layer in layers}
