"""Data synthesis toward inactive features (REFERENCE section 2): find the target features no seed text fires,
generate candidates aimed at each of them, and keep a candidate only if it really fires its target.

- coverage ``c_f = 1`` if any seed text fires f (max over counted tokens > 0); ``Cov(D)`` = share of targets hit;
- targets: given as a list, or found contrastively (features firing on goal texts more than on the seeds);
- candidates: by default the project's own model continues short seed prefixes with the target feature added at
  ``layer`` (``h + alpha * W_dec[:, f]``), alpha escalated over a schedule until a candidate fires; or any
  ``generator(feature, n) -> list[str]`` (an external LLM, a retrieval step, templates);
- verification: every candidate is encoded *unsteered* at ``layer``; it is kept only if the target's largest
  activation over its counted tokens is above 0, and (``fluency=True``) it passes a fluency check: distinct
  token bigrams at least ``min_distinct`` of all (no loops) and the model's own perplexity at most
  ``max_perplexity_ratio`` times the seeds' 90th percentile (``analysis.fluency``); the report counts the
  firing candidates dropped for it (``n_dropped_fluency``).

Memory stays flat in the number of texts: texts are scanned in batches and only per-target counters (coverage)
or per-text maxima of the few features asked for (verification) are kept, never a FeatureActs of all texts.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..analysis.fluency import fluency as fluency_table
from ..analysis.fluency import perplexity_limit
from ..base import progress as progress_bars
from ..base.validate import as_texts
from ..core.scan import CHUNK, scan

if TYPE_CHECKING:
    from ..lab import Lab

_REPLACEMENT = "\ufffd"


# ---------------------------------------------------------------------------------------------- inputs
def as_targets(lab: Lab, targets, layer: int) -> list[int]:
    """Validated target features: ints in range for ``layer``'s SAE, duplicates dropped (order kept). Accepts a
    list, a Series, a DataFrame with a ``feature`` column (e.g. a ``contrast`` table) or ``"12,45,..."``."""
    layer = lab.check_layer(layer)
    if isinstance(targets, pd.DataFrame):
        if "feature" not in targets.columns:
            raise ValueError("targets: a DataFrame needs a 'feature' column")
        targets = targets["feature"].tolist()
    elif isinstance(targets, str):
        targets = [t for t in targets.replace(" ", "").split(",") if t]
        try:
            targets = [int(t) for t in targets]
        except ValueError:
            raise ValueError("targets: use comma-separated feature ids, e.g. '12,45,301'") from None
    elif isinstance(targets, numbers.Integral):
        targets = [targets]
    elif targets is None:
        targets = []
    out = list(dict.fromkeys(lab.check_feature(layer, t, "target feature") for t in targets))
    if not out:
        raise ValueError("no target features: pass a list of feature ids, or use targets_from_contrast")
    return out


# ---------------------------------------------------------------------------------------------- scanning
def _max_batches(lab: Lab, texts: list[str], layer: int, features: Sequence[int], skip_first: bool = True,
                 skip_special: bool = True, batch_size: int = 16, max_length: int | None = None,
                 progress: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (text indices, ``[batch, len(features)]`` largest activation over counted tokens) per batch."""
    sae = lab.sae(layer)
    for batch in scan(lab, texts, [layer], batch_size, max_length, skip_first, skip_special, progress=progress,
                      desc="coverage"):
        yield batch.index, batch.feature_max(layer, sae, features)


def max_activations(lab: Lab, texts, features: Sequence[int], layer: int, skip_first: bool = True,
                    skip_special: bool = True, batch_size: int = 16, max_length: int | None = None) -> np.ndarray:
    """``[n_texts, n_features]``: each feature's largest activation over each text's counted tokens (0 if it
    never fires). Meant for a few features (verification), not all of them."""
    texts = as_texts(texts)
    layer = lab.check_layer(layer)
    out = torch.zeros(len(texts), len(features))
    if len(features):
        for idx, best in _max_batches(lab, texts, layer, features, skip_first, skip_special, batch_size,
                                      max_length):
            out[idx] = best
    return out.numpy()


def coverage(lab: Lab, texts, targets, layer: int, skip_first: bool = True, skip_special: bool = True,
             batch_size: int = 16, max_length: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Per target feature (with its display ``name``): ``covered`` (some text fires it: max over counted
    tokens > 0), ``n_texts`` firing it and ``max_activation`` over all texts. Streams the texts in batches;
    memory is per-target counters only."""
    texts = as_texts(texts, "texts")
    layer = lab.check_layer(layer)
    targets = as_targets(lab, targets, layer)
    n_texts = torch.zeros(len(targets), dtype=torch.long)
    peak = torch.zeros(len(targets))
    for _, best in _max_batches(lab, texts, layer, targets, skip_first, skip_special, batch_size, max_length,
                                progress):
        n_texts += (best > 0).sum(0)
        peak = torch.maximum(peak, best.max(0).values)
    return pd.DataFrame({"feature": targets, "name": lab.feature_names(layer, targets),
                         "covered": (n_texts > 0).numpy(), "n_texts": n_texts.numpy(),
                         "max_activation": peak.numpy()})


def coverage_ratio(frame_or_lab: pd.DataFrame | Lab, texts=None, targets=None, layer: int | None = None,
                   **options) -> float:
    """Cov(D) = share of targets covered: of a ``coverage`` table, or ``coverage_ratio(lab, texts, targets,
    layer)`` computed on the spot."""
    if isinstance(frame_or_lab, pd.DataFrame):
        frame = frame_or_lab
    else:
        if layer is None:
            raise ValueError("coverage_ratio(lab, texts, targets, layer) needs layer=")
        frame = coverage(frame_or_lab, texts, targets, layer, **options)
    return float(frame["covered"].mean()) if len(frame) else 0.0


# ---------------------------------------------------------------------------------------------- targets
def targets_from_contrast(lab: Lab, positive, negative, layer: int, n: int = 8, min_delta: float = 0.0,
                          max_neg_rate: float | None = None, skip_first: bool = True,
                          return_frame: bool = False):
    """The ``n`` features that fire in most more goal texts (``positive``) than ``negative`` ones (usually the
    seeds), ranked by ``features.contrast``'s delta; ``max_neg_rate=0`` keeps only features no negative text
    fires (exactly the ones synthesis must create). A list of feature ids, or the contrast rows."""
    from ..analysis.features import contrast

    layer = lab.check_layer(layer)
    positive = as_texts(positive, "positive (goal) texts")
    negative = as_texts(negative, "negative texts")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    table = contrast(lab, positive, negative, layer, top=lab.sae(layer).d_sae, skip_first=skip_first)
    table = table[(table.delta > min_delta) & (table.pos_rate > 0)]
    if max_neg_rate is not None:
        table = table[table.neg_rate <= max_neg_rate]
    table = table.head(n).reset_index(drop=True)
    if table.empty:
        raise ValueError("no feature fires more on the goal texts than on the negatives: add goal texts, "
                         "lower min_delta or raise max_neg_rate")
    return table if return_frame else [int(f) for f in table.feature]


def targets_from_texts(lab: Lab, texts, layer: int, min_texts: int = 1, max_share: float | None = 0.5,
                       skip_first: bool = True, batch_size: int = 16) -> list[int]:
    """Every feature that fires in at least ``min_texts`` of ``texts`` (goal examples), leaving out those that
    fire in more than ``max_share`` of them (always-on 'register' features), most widely firing first."""
    from ..analysis.features import texts_firing

    texts = as_texts(texts, "goal texts")
    counts = torch.zeros(lab.sae(lab.check_layer(layer)).d_sae, dtype=torch.long)
    for start in range(0, len(texts), CHUNK):
        acts = lab.encode(texts[start:start + CHUNK], layer, batch_size=batch_size, skip_first=skip_first)
        counts += texts_firing(acts)
    keep = counts >= min_texts
    if max_share is not None:
        keep &= counts <= max_share * len(texts)
    order = torch.argsort(counts, descending=True, stable=True)
    out = [int(f) for f in order if keep[f]]
    if not out:
        raise ValueError("no feature passes min_texts / max_share on these goal texts")
    return out


# ---------------------------------------------------------------------------------------------- generation
def seed_prompts(lab: Lab, seeds: Sequence[str], n_tokens: int = 6) -> list[str]:
    """Short prefixes of the seed texts (their first ``n_tokens`` tokens, cut back to whole characters),
    deduplicated: the default prompts steered generation continues."""
    out = []
    for text in seeds:
        ids = lab.tokenizer(text)["input_ids"][:n_tokens]
        while ids:
            prefix = lab.tokenizer.decode(ids)
            if _REPLACEMENT not in prefix:
                break
            ids = ids[:-1]
        if ids and prefix.strip():
            out.append(prefix)
    return list(dict.fromkeys(out))


def _pick(prompts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    if n <= len(prompts):
        return [prompts[i] for i in rng.choice(len(prompts), size=n, replace=False)]
    return [prompts[i] for i in rng.choice(len(prompts), size=n, replace=True)]


def _generator_texts(generator, feature: int, n: int) -> list[str]:
    texts = generator(feature, n)
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise ValueError(f"generator({feature}, {n}) must return a list of str, got {type(texts).__name__}")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"generator({feature}, {n}) returned a {type(bad[0]).__name__} ({bad[0]!r:.60}), "
                         f"not str")
    return list(texts)


# ---------------------------------------------------------------------------------------------- result
@dataclass
class SynthesisResult:
    """What ``synthesize`` produced.

    ``kept``: target, text, activation (the target's max over the text, unsteered), alpha (NaN for a user
    generator), source, prompt, distinct, perplexity. ``candidates``: every candidate with its activation,
    ``fluent`` and ``kept`` flags.
    ``rejected``: non-firing candidates per uncovered target. ``coverage``: per target, before / after.
    ``report``: one row, n_targets, covered_before, covered_after, ratio_before, ratio_after and counts
    (``n_dropped_fluency``: candidates that fired their target but failed the fluency check)."""

    layer: int
    targets: list[int]
    kept: pd.DataFrame
    candidates: pd.DataFrame
    rejected: pd.Series
    coverage: pd.DataFrame
    report: pd.DataFrame
    seeds: list[str] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        r = self.report.iloc[0]
        return (f"SynthesisResult(layer={self.layer}, targets={int(r.n_targets)}, coverage "
                f"{r.ratio_before:.2f} -> {r.ratio_after:.2f}, kept={len(self.kept)}, "
                f"rejected={int(self.rejected.sum())})")

    def dataset(self, seeds: Sequence[str] | None = None) -> list[str]:
        """The seeds (those given to ``synthesize`` by default) followed by the kept texts, each once."""
        seeds = self.seeds if seeds is None else list(seeds)
        return list(dict.fromkeys(list(seeds) + self.kept["text"].tolist()))

    def chart(self):
        """Bars of the target coverage before and after synthesis (altair)."""
        from ..viz import charts

        r = self.report.iloc[0]
        return charts.coverage_before_after(float(r.ratio_before), float(r.ratio_after),
                                            (int(r.covered_before), int(r.covered_after)), int(r.n_targets),
                                            self.layer)

    def _repr_html_(self) -> str:
        return (f"<div><b>{self!r}</b></div>" + self.report.to_html(index=False)
                + self.kept.head(20).to_html(index=False))


# ---------------------------------------------------------------------------------------------- synthesize
def synthesize(lab: Lab, seeds, targets, layer: int, generator: Callable[[int, int], list[str]] | None = None,
               prompts: Sequence[str] | None = None, per_target: int = 4, alphas=(4, 8, 16),
               max_new_tokens: int = 32, seed: int = 0, do_sample: bool = False, positions="all",
               prompt_tokens: int = 6, stop_at_first: bool = True, skip_first: bool = True,
               batch_size: int = 16, max_length: int | None = None, fluency: bool = True,
               min_distinct: float = 0.5, max_perplexity_ratio: float = 2.0,
               progress: bool | None = None) -> SynthesisResult:
    """Generate candidates toward every target no seed text fires, keep those that fire it.

    Default generator: ``per_target`` prompts (``prompts``, or short prefixes of the seeds, drawn with ``seed``)
    continued by ``lab``'s model with the target added at ``layer`` (``positions``: "all" steers the prompt and
    the generated tokens), greedy unless ``do_sample`` (then seeded); alphas are tried in order and escalation
    stops at the first alpha with a firing candidate (``stop_at_first=False`` tries them all). A candidate is
    the prompt plus its continuation. ``generator(feature, n) -> list[str]`` replaces that entirely. Each
    candidate is encoded unsteered at ``layer`` and kept only if the target's max activation is > 0 and, with
    ``fluency``, it passes the repetition and perplexity checks (see the module docstring)."""
    seeds = as_texts(seeds, "seeds")
    layer = lab.check_layer(layer)
    targets = as_targets(lab, targets, layer)
    if per_target < 1:
        raise ValueError(f"per_target must be at least 1, got {per_target}")
    if generator is not None and not callable(generator):
        raise ValueError(f"generator must be callable as generator(feature, n), got {type(generator).__name__}")
    alphas = [float(a) for a in ([alphas] if isinstance(alphas, numbers.Number) else alphas)]
    if generator is None:
        if not alphas:
            raise ValueError("alphas must hold at least one steering strength")
        pool = as_texts(prompts, "prompts") if prompts is not None else seed_prompts(lab, seeds, prompt_tokens)
        if not pool:
            raise ValueError("no usable prompt: the seeds are too short; pass prompts=")
    options = {"skip_first": skip_first, "batch_size": batch_size, "max_length": max_length}

    before = coverage(lab, seeds, targets, layer, progress=progress, **options)
    limit = perplexity_limit(lab, seeds, max_perplexity_ratio) if fluency else np.inf

    def fluent(texts: list[str]) -> pd.DataFrame:
        if not fluency:
            return pd.DataFrame({"distinct": np.nan, "perplexity": np.nan, "fluent": True}, index=range(len(texts)))
        return fluency_table(lab, texts, limit, min_distinct)

    uncovered = [int(f) for f in before.feature[~before.covered]]
    rng = np.random.default_rng(seed)
    rows: list[dict] = []

    def candidates_for(f: int) -> None:
        if generator is not None:
            texts = [t for t in _generator_texts(generator, f, per_target) if t]
            if texts:
                acts = max_activations(lab, texts, [f], layer, **options)[:, 0]
                flu = fluent(texts)
                rows.extend({"target": f, "text": t, "activation": float(a), "alpha": np.nan, "source": "generator",
                             "prompt": None, **q} for t, a, q in zip(texts, acts, flu.to_dict("records")))
            return
        chosen = _pick(pool, per_target, rng)
        prompt_ids = lab.tokenizer(chosen)["input_ids"]
        for alpha in alphas:
            gen = lab.generate(chosen, layer=layer, steer={f: alpha}, positions=positions,
                               max_new_tokens=max_new_tokens, do_sample=do_sample,
                               seed=seed + f if do_sample else None, baseline=False)
            # decode prompt and continuation together, so a character split across the seam stays whole
            texts = [lab.tokenizer.decode(ids + out, skip_special_tokens=True).rstrip(_REPLACEMENT)
                     for ids, out in zip(prompt_ids, gen.steered_ids)]
            acts = max_activations(lab, texts, [f], layer, **options)[:, 0]
            flu = fluent(texts)
            rows.extend({"target": f, "text": t, "activation": float(a), "alpha": alpha, "source": "steer",
                         "prompt": p, **q} for t, a, p, q in zip(texts, acts, chosen, flu.to_dict("records")))
            if stop_at_first and ((acts > 0) & flu.fluent.to_numpy()).any():
                break

    with progress_bars.bar(len(uncovered), progress, "synthesize", threshold=8) as bar:
        for f in uncovered:
            candidates_for(f)
            bar.update(1)

    candidates = pd.DataFrame(rows, columns=["target", "text", "activation", "alpha", "source", "prompt",
                                             "distinct", "perplexity", "fluent"])
    candidates["fluent"] = candidates.fluent.astype(bool)
    candidates["kept"] = (candidates.activation > 0) & candidates.fluent
    kept = candidates[candidates.kept].drop(columns=["kept", "fluent"])
    kept = kept.drop_duplicates(["target", "text"]).reset_index(drop=True)
    rejected = (candidates[candidates.activation <= 0].groupby("target").size()
                .reindex(uncovered, fill_value=0).rename("rejected"))
    rejected.index.name = "target"

    # after = before OR what the kept texts fire (measured again, so side hits on other targets count too)
    table = before.rename(columns={"covered": "covered_before", "n_texts": "n_seed_texts",
                                   "max_activation": "max_activation_before"})
    table["covered_after"] = table.covered_before
    table["n_kept"] = table.feature.map(kept.groupby("target").size()).fillna(0).astype(int)
    if len(kept):
        extra = coverage(lab, kept.text.tolist(), targets, layer, progress=False, **options)
        table["covered_after"] = table.covered_before | extra.covered.to_numpy()
        table["n_new_texts"] = extra.n_texts.to_numpy()
    else:
        table["n_new_texts"] = 0
    n = len(targets)
    report = pd.DataFrame([{
        "layer": layer, "n_targets": n, "covered_before": int(table.covered_before.sum()),
        "covered_after": int(table.covered_after.sum()), "ratio_before": float(table.covered_before.mean()),
        "ratio_after": float(table.covered_after.mean()), "n_seeds": len(seeds), "n_candidates": len(candidates),
        "n_kept": len(kept), "n_rejected": int(rejected.sum()),
        "n_dropped_fluency": int(((candidates.activation > 0) & ~candidates.fluent).sum())}])
    return SynthesisResult(layer=layer, targets=targets, kept=kept, candidates=candidates, rejected=rejected,
                           coverage=table, report=report, seeds=seeds)
