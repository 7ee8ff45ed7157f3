"""The steering bench: a steer measured against prompting and controls, with intervals and a verdict.

Seven conditions, one batched generation (``engine``):

- ``unsteered``          the prompt alone
- ``prompt-only``        the prompt with an instruction (or a few-shot example) asking for the concept: no hook
- ``steering-only``      the prompt with the steer
- ``prompt + steering``  both
- ``zero strength``      the steer's hook at strength 0 (the machinery alone must change nothing)
- ``random feature``     the same edit on random features of matched firing density (one per prompt, drawn from
                         ``random_features`` features), the control for "any edit of that size"
- ``negative strength``  the steer with its sign flipped

Per completion: the concept score, fluency (perplexity of the completion under the unsteered model, given its
prompt), distinct-n, repetition (share of n-grams already seen in the completion) and latency (the batched run's
time shared by generated tokens, plus the condition's own edit time). Per condition: collateral, the perplexity
ratio steered / unsteered on neutral text. Means come with bootstrap 95% intervals over prompts (over neutral
texts for collateral).

Gates, strict and stated in ``result.gates``: the steer's concept interval must lie wholly above the
zero-strength and random-feature intervals (below, for ``goal="decrease"``), and its fluency perplexity must stay
within ``fluency_bound`` times the unsteered one. Verdict: "failed" when either control is not beaten,
"benchmarked" when both are but fluency is out of bound, "validated" when every gate passes. Prompt-only is
reported beside the steer whether it wins or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import html
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..base import validate
from ..core.scan import scan
from ..core.steering import Steer
from .concept import Concept, ExampleConcept, as_concept
from .engine import Rows, generate_rows, token_nll

CONDITIONS = ("unsteered", "prompt-only", "steering-only", "prompt + steering", "zero strength",
              "random feature", "negative strength")
STEERED = "steering-only"  # the condition the gates judge
VERDICTS = ("validated", "benchmarked", "failed")
GOALS = ("increase", "decrease")
ZERO_IS_NO_EDIT = ("add", "ablate", "orthogonal")  # modes whose strength 0 is no edit (cap / clamp take a target)


# ---------------------------------------------------------------------------------------------- text metrics
def distinct_n(ids: Sequence[int], n: int = 2) -> float:
    """Distinct n-grams / n-grams of one completion's tokens (NaN when it has fewer than n tokens)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition(ids: Sequence[int], n: int = 3) -> float:
    """Share of a completion's token n-grams that already occurred earlier in it (0: none repeats)."""
    seen: set[tuple] = set()
    repeats = total = 0
    for i in range(len(ids) - n + 1):
        gram = tuple(ids[i:i + n])
        repeats += gram in seen
        total += 1
        seen.add(gram)
    return repeats / total if total else float("nan")


# ---------------------------------------------------------------------------------------------- controls
def firing_rates(lab: LabLike, layer: int, reference: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Each feature's firing rate at ``layer`` (share of counted tokens where it is active) and where it came
    from: ``lab.index`` when it covers the layer, else measured on ``reference`` texts."""
    index = getattr(lab, "index", None)
    if index is not None and layer in getattr(index, "layers", []):
        stats = index.stats(layer)
        rates = np.zeros(index.d_sae)
        rates[stats["feature"].to_numpy()] = stats["firing_rate"].to_numpy()
        return rates, f"index ({index.tokens} tokens)"
    if not reference:
        raise ValueError("matching the random control's firing density needs lab.index or reference texts")
    sae = lab.sae(layer)
    counts = torch.zeros(sae.d_sae)
    tokens = 0
    for batch in scan(lab, list(reference), [layer], batch_size=8):
        _, values, indices = batch.sparse(layer, sae)
        active = indices[values > 0]
        counts += torch.bincount(active.reshape(-1), minlength=sae.d_sae).float()
        tokens += int(batch.counted.sum())
    return (counts / max(tokens, 1)).numpy(), f"measured on {len(reference)} reference texts ({tokens} tokens)"


def matched_features(rates: np.ndarray, feature: int, count: int, rng: np.random.Generator,
                     pool: int = 32) -> list[int]:
    """``count`` distinct features (not ``feature``) drawn at random among the ``pool`` whose firing rate is
    closest to ``feature``'s on a log scale; silent features are left out unless the steered one is silent."""
    target = rates[feature]
    eps = 1e-7
    candidates = np.flatnonzero((rates > 0) if target > 0 else np.ones_like(rates, dtype=bool))
    candidates = candidates[candidates != feature]
    if candidates.size == 0:
        raise ValueError(f"no other feature to draw a random control from (feature {feature})")
    distance = np.abs(np.log(rates[candidates] + eps) - np.log(target + eps))
    near = candidates[np.argsort(distance, kind="stable")[:max(pool, count)]]
    return [int(f) for f in rng.choice(near, size=min(count, near.size), replace=False)]


def zero_strength(s: Steer) -> Steer:
    """The same hook doing nothing: strength 0 (cap / clamp take a target, so their zero is an add of 0)."""
    if s.mode in ZERO_IS_NO_EDIT:
        return _with_value(s, 0.0)
    return Steer(s.layer, s.feature, 0.0, "add", **_extra(s))


def _extra(s: Steer) -> dict:
    return {k: getattr(s, k) for k in ("vector", "when") if getattr(s, k, None) is not None}


def _with_value(s: Steer, value: float) -> Steer:
    with_value = getattr(s, "with_value", None)
    return with_value(value) if callable(with_value) else Steer(s.layer, s.feature, value, s.mode)


def _replace_feature(s: Steer, feature: int) -> Steer:
    return Steer(s.layer, feature, s.value, s.mode, **{k: v for k, v in _extra(s).items() if k != "vector"})


def steer_label(s: Steer) -> str:
    label = getattr(s, "label", None)
    return label if isinstance(label, str) else f"L{s.layer} f{s.feature} {s.mode} {s.value:+g}"


# ---------------------------------------------------------------------------------------------- statistics
def bootstrap_mean(values: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN ignored) and the 95% percentile interval of its mean over resamples ``idx``."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or np.isnan(values).all():
        return float("nan"), float("nan"), float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only NaN (empty completions)
        means = np.nanmean(values[idx], axis=1)
    means = means[np.isfinite(means)]
    mean = float(np.nanmean(values))
    if means.size == 0:
        return mean, mean, mean
    return mean, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------------------------------------- the result
@dataclass
class SteerBench:
    """A bench's outcome. ``to_frame()``: one row per condition with means and 95% intervals; ``rows``: every
    completion; ``gates``: each gate's rule, value and outcome; ``verdict``; ``controls``: the random features
    drawn and their densities; ``cost``: seconds per stage and the rows generated."""

    summary: pd.DataFrame
    rows: pd.DataFrame
    gates: pd.DataFrame
    verdict: str
    reason: str
    controls: pd.DataFrame
    steers: list[str]
    concept: dict
    settings: dict
    cost: dict
    collateral: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_frame(self) -> pd.DataFrame:
        return self.summary.copy()

    def condition(self, name: str) -> pd.Series:
        """One condition's summary row."""
        validate.choice(name, CONDITIONS, "condition")
        return self.summary.set_index("condition").loc[name]

    @property
    def prompt_only(self) -> dict:
        """Prompt-only against the steer: both concept intervals and which one wins (or "tie": they overlap)."""
        row = self.gates.set_index("gate").loc["prompt-only beside the steer"]
        return {"value": row["value"], "outcome": row["outcome"]}

    def examples(self, n: int = 3, conditions: Sequence[str] = CONDITIONS) -> pd.DataFrame:
        """The first ``n`` prompts' completions (first sample), one column per condition."""
        first = self.rows[self.rows["sample"] == 0]
        table = first.pivot(index="prompt_index", columns="condition", values="text")
        prompts = first.drop_duplicates("prompt_index").set_index("prompt_index")["prompt"]
        table.insert(0, "prompt", prompts)
        return table[["prompt", *[c for c in conditions if c in table.columns]]].head(n).reset_index(drop=True)

    def to_dict(self) -> dict:
        """JSON-ready (a recipe stores it); ``SteerBench.from_dict`` reads it back."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return [{k: _json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]

        return {"summary": records(self.summary), "rows": records(self.rows), "gates": records(self.gates),
                "verdict": self.verdict, "reason": self.reason, "controls": records(self.controls),
                "collateral": records(self.collateral), "steers": list(self.steers), "concept": dict(self.concept),
                "settings": {k: _json_value(v) for k, v in self.settings.items()},
                "cost": {k: _json_value(v) for k, v in self.cost.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> SteerBench:
        missing = [k for k in ("summary", "rows", "gates", "verdict") if k not in data]
        if missing:
            raise ValueError(f"a bench record needs {missing}")
        if data["verdict"] not in VERDICTS:
            raise ValueError(f"bench verdict {data['verdict']!r} is not one of {VERDICTS}")
        return cls(summary=pd.DataFrame(data["summary"]), rows=pd.DataFrame(data["rows"]),
                   gates=pd.DataFrame(data["gates"]), verdict=data["verdict"], reason=data.get("reason", ""),
                   controls=pd.DataFrame(data.get("controls", [])), steers=list(data.get("steers", [])),
                   concept=dict(data.get("concept", {})), settings=dict(data.get("settings", {})),
                   cost=dict(data.get("cost", {})), collateral=pd.DataFrame(data.get("collateral", [])))

    def __repr__(self) -> str:
        return (f"SteerBench(verdict={self.verdict!r}, steers={self.steers}, prompts={self.settings.get('prompts')}, "
                f"reason={self.reason!r})")

    def _repr_html_(self) -> str:
        colour = {"validated": "#1a7f37", "benchmarked": "#9a6700", "failed": "#cf222e"}[self.verdict]
        shown = self.summary.copy()
        for col in shown.columns:
            if shown[col].dtype.kind == "f":
                shown[col] = shown[col].map(lambda v: f"{v:.3g}")
        return (f"<div><b style='color:{colour}'>{html.escape(self.verdict)}</b>: {html.escape(self.reason)}"
                f"<br><small>steer: {html.escape(', '.join(self.steers))}; concept: "
                f"{html.escape(str(self.concept.get('name')))} ({html.escape(str(self.concept.get('scale')))})"
                f"</small>{shown.to_html(index=False)}{self.gates.to_html(index=False)}</div>")


def _json_value(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------- the bench
def _prompt_only_text(instruction: str, prompt: str) -> str:
    return instruction.replace("{prompt}", prompt) if "{prompt}" in instruction else f"{instruction}\n{prompt}"


def default_instruction(concept: Concept) -> str:
    """Without an instruction, prompt-only is a few-shot prompt: the shortest positive example (cut to 100
    characters) before the prompt, which even a base model can follow."""
    if isinstance(concept, ExampleConcept):
        return min(concept.positives, key=len)[:100]
    raise ValueError("prompt-only needs instruction= (text asking for the concept, with {prompt} where the prompt "
                     "goes, or put before it); with (positives, negatives) examples it defaults to a positive one")


def _chat(lab: LabLike, texts: list[str], chat: bool) -> list[str]:
    if not chat:
        return texts
    return [lab.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                              add_generation_prompt=True) for t in texts]


def run_bench(lab: LabLike, steers: list[Steer], prompts: Sequence[str], concept, *, instruction: str | None = None,
              neutral: Sequence[str] | None = None, positions="all", max_new_tokens: int = 32, samples: int = 1,
              seed: int = 0, n_boot: int = 1000, random_features: int = 3, fluency_bound: float = 2.0,
              neutral_tokens: int = 32, goal: str = "increase", do_sample: bool = False, temperature: float = 1.0,
              top_p: float = 1.0, chat: bool = False, judge=None, reference: Sequence[str] | None = None,
              batch_size: int | None = None, **generate_kwargs) -> SteerBench:
    """The bench (see the module docstring); ``Lab.bench_steer`` checks the arguments and calls it."""
    begin = time.perf_counter()
    prompts = validate.texts(prompts, "prompts")
    if not steers:
        raise ValueError("steer is empty: give the steer to benchmark")
    goal = validate.choice(goal, GOALS, "goal")
    samples = validate.integer(samples, "samples", minimum=1)
    n_boot = validate.integer(n_boot, "n_boot", minimum=100)
    random_features = validate.integer(random_features, "random_features", minimum=1)
    fluency_bound = validate.number(fluency_bound, "fluency_bound", minimum=1.0)
    seed = validate.integer(seed, "seed")
    if do_sample:
        temperature = validate.number(temperature, "temperature", minimum=1e-6)
        top_p = validate.number(top_p, "top_p", minimum=1e-6, maximum=1.0)
    elif samples > 1:
        raise ValueError("samples > 1 needs do_sample=True: greedy decoding gives the same completion every time")
    concept = as_concept(concept, judge)
    if instruction is None:
        instruction = default_instruction(concept)
    instruction = validate.text(instruction, "instruction")
    rng = np.random.default_rng(seed)
    cost: dict = {}

    # the random-feature control: features of matched firing density, one draw per prompt (round robin)
    t = time.perf_counter()
    neutral_texts = list(neutral) if neutral is not None else (
        [text[:400] for text in concept.negatives[:6]] if isinstance(concept, ExampleConcept) else list(prompts))
    neutral_texts = validate.texts(neutral_texts, "neutral")
    neutral_tokens = validate.integer(neutral_tokens, "neutral_tokens", minimum=2)
    control_rows, draws = [], []
    rates_cache: dict[int, tuple[np.ndarray, str]] = {}
    per_steer = []
    for s in steers:
        if s.feature is None:  # a raw vector: the control is random directions of the same norm
            gen = torch.Generator().manual_seed(seed)
            vectors = [torch.randn(s.vector.numel(), generator=gen) for _ in range(random_features)]
            per_steer.append([Steer(s.layer, None, s.value, s.mode, vector=v / v.norm() * s.vector.norm(),
                                    **{k: v for k, v in _extra(s).items() if k != "vector"}) for v in vectors])
            control_rows += [{"layer": s.layer, "feature": None, "density": None, "control_feature": None,
                              "control_density": None, "source": "random direction, same norm"}
                             for _ in vectors]
            continue
        if s.layer not in rates_cache:
            rates_cache[s.layer] = firing_rates(lab, s.layer, reference or [*neutral_texts, *prompts])
        rates, source = rates_cache[s.layer]
        picked = matched_features(rates, s.feature, random_features, rng)
        per_steer.append([_replace_feature(s, f) for f in picked])
        control_rows += [{"layer": s.layer, "feature": s.feature, "density": float(rates[s.feature]),
                          "control_feature": f, "control_density": float(rates[f]), "source": source}
                         for f in picked]
    draws = [[options[d % len(options)] for options in per_steer] for d in range(random_features)]
    cost["controls_s"] = time.perf_counter() - t

    # the rows: condition x prompt x sample, one group of steers per distinct edit
    groups: list[list[Steer]] = [[], list(steers), [zero_strength(s) for s in steers],
                                 [_with_value(s, -s.value) for s in steers], *draws]
    group_of = {"unsteered": 0, "prompt-only": 0, "steering-only": 1, "prompt + steering": 1, "zero strength": 2,
                "negative strength": 3}
    fed = _chat(lab, list(prompts), chat)
    fed_instructed = _chat(lab, [_prompt_only_text(instruction, p) for p in prompts], chat)
    meta, inputs, row_group, keys = [], [], [], []
    for c in CONDITIONS:
        for i in range(len(prompts)):
            for k in range(samples):
                g = 4 + (i % random_features) if c == "random feature" else group_of[c]
                meta.append((c, i, k))
                inputs.append(fed_instructed[i] if c in ("prompt-only", "prompt + steering") else fed[i])
                row_group.append(g)
                keys.append(i * 1_000_003 + k)  # the same prompt and sample draw alike in every condition
    t = time.perf_counter()
    out = generate_rows(lab, Rows(inputs, row_group, keys, groups), positions=positions,
                        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
                        seed=seed, batch_size=batch_size, own_nll=True, **generate_kwargs)
    cost["generate_s"] = time.perf_counter() - t

    # one more forward, unsteered and steered rows together:
    # - fluency: perplexity of each completion under the unsteered model given what it was fed. Rows generated
    #   without an edit (unsteered, prompt-only; zero strength, whose edit adds 0) already have it from their
    #   own logits; each distinct steered completion is scored once.
    # - collateral: the perplexity ratio on neutral text with each distinct edit (on every position) against
    #   none. Zero strength's is 1 by construction (an edit of 0 changes no bit) and is not re-measured.
    t = time.perf_counter()
    clean = {0, 2}
    distinct: dict[tuple, int] = {}
    seqs, starts, seq_group, where = [], [], [], []
    for p_ids, c_ids, g in zip(out.prompt_ids, out.ids, row_group):
        key = (tuple(p_ids), tuple(c_ids))
        if g not in clean and c_ids and key not in distinct:
            distinct[key] = len(seqs)
            seqs.append(list(p_ids) + list(c_ids))
            starts.append(len(p_ids))
            seq_group.append(0)
        where.append(distinct.get(key) if g not in clean else None)
    neutral_ids = [ids[:neutral_tokens] for ids in lab.token_ids(neutral_texts)]
    neutral_ids = [ids for ids in neutral_ids if len(ids) >= 2]
    if not neutral_ids:
        raise ValueError("neutral: every text has fewer than 2 tokens; collateral needs longer neutral text")
    measured = (0, 1, 3)  # none, the steer, negative; then random draws cycling over the neutral texts
    first_neutral = len(seqs)
    for g in measured:
        for ids in neutral_ids:
            seqs.append(ids)
            starts.append(1)
            seq_group.append(g)
    for j, ids in enumerate(neutral_ids):
        seqs.append(ids)
        starts.append(1)
        seq_group.append(4 + j % random_features)
    nll = token_nll(lab, seqs, starts, groups=groups, group_of=seq_group, batch_size=batch_size or 64)
    ppl = []
    for row, (j, g) in enumerate(zip(where, row_group)):
        values = out.own_nll[row] if g in clean else (nll[j] if j is not None else [])  # type: ignore[index]
        ppl.append(math.exp(float(np.mean(values))) if values else float("nan"))
    n_neutral = len(neutral_ids)
    mean_nll = np.array([np.mean(x) for x in nll[first_neutral:]]).reshape(len(measured) + 1, n_neutral)
    ratio = np.exp(mean_nll - mean_nll[0])  # [none, steer, negative, random draws; neutral text]
    collateral_of = {"unsteered": np.ones(n_neutral), "prompt-only": np.ones(n_neutral),
                     "zero strength": np.ones(n_neutral), "steering-only": ratio[1], "prompt + steering": ratio[1],
                     "negative strength": ratio[2], "random feature": ratio[3]}
    collateral = pd.DataFrame([{"condition": c, "neutral_index": j, "ppl_ratio": float(v[j])}
                               for c, v in collateral_of.items() for j in range(n_neutral)])
    cost["forward_s"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = concept(out.texts)
    cost["concept_s"] = time.perf_counter() - t

    # latency: the batched run shared by generated tokens, plus the row's group's own edit time
    total_tokens = max(1, sum(len(ids) for ids in out.ids))
    sizes = np.bincount(row_group, minlength=len(groups))
    latency = [1000 * (out.seconds * max(len(ids), 1) / total_tokens + out.edit_seconds[g] / max(sizes[g], 1))
               for ids, g in zip(out.ids, row_group)]
    rows = pd.DataFrame({
        "condition": [m[0] for m in meta], "prompt_index": [m[1] for m in meta], "sample": [m[2] for m in meta],
        "prompt": [prompts[m[1]] for m in meta], "text": out.texts, "tokens": [len(ids) for ids in out.ids],
        "concept": scores, "fluency_ppl": ppl, "distinct_2": [distinct_n(ids, 2) for ids in out.ids],
        "repetition": [repetition(ids, 3) for ids in out.ids], "latency_ms": latency,
        "steers": [", ".join(steer_label(s) for s in groups[g]) or "none" for g in row_group]})

    # summaries with bootstrap intervals (prompts resampled alike for every condition)
    boot = np.random.default_rng(seed + 1)
    idx = boot.integers(0, len(prompts), size=(n_boot, len(prompts)))
    idx_neutral = boot.integers(0, n_neutral, size=(n_boot, n_neutral))
    metrics = ["concept", "fluency_ppl", "distinct_2", "repetition", "latency_ms"]
    summary = []
    for c in CONDITIONS:
        part = rows[rows["condition"] == c]
        per_prompt = part.groupby("prompt_index")[metrics].mean().reindex(range(len(prompts)))
        entry: dict = {"condition": c}
        for m in metrics:
            mean, lo, hi = bootstrap_mean(per_prompt[m].to_numpy(), idx)
            entry.update({m: mean, f"{m}_lo": lo, f"{m}_hi": hi})
        mean, lo, hi = bootstrap_mean(collateral_of[c], idx_neutral)
        entry.update({"collateral": mean, "collateral_lo": lo, "collateral_hi": hi, "n": len(part),
                      "empty": float((part["tokens"] == 0).mean())})
        summary.append(entry)
    summary_frame = pd.DataFrame(summary)
    gates, verdict, reason = judge_gates(summary_frame, goal, fluency_bound)
    cost["total_s"] = time.perf_counter() - begin
    cost["rows"] = len(inputs)
    cost["generated_tokens"] = int(sum(len(ids) for ids in out.ids))
    settings = {"prompts": len(prompts), "samples": samples, "seed": seed, "n_boot": n_boot,
                "max_new_tokens": max_new_tokens, "positions": positions if isinstance(positions, str)
                else list(positions), "instruction": instruction, "goal": goal, "fluency_bound": fluency_bound,
                "random_features": random_features, "do_sample": do_sample, "temperature": temperature,
                "top_p": top_p, "chat": chat, "neutral_texts": len(neutral_ids),
                "generate_kwargs": {k: _json_value(v) for k, v in generate_kwargs.items()
                                    if isinstance(v, (int, float, str, bool))}}
    return SteerBench(summary=summary_frame, rows=rows, gates=gates, verdict=verdict, reason=reason,
                      controls=pd.DataFrame(control_rows), steers=[steer_label(s) for s in steers],
                      concept=concept.describe(), settings=settings, cost=cost, collateral=collateral)


def _interval(row: pd.Series, metric: str = "concept") -> str:
    return f"{row[metric]:.3g} [{row[f'{metric}_lo']:.3g}, {row[f'{metric}_hi']:.3g}]"


def judge_gates(summary: pd.DataFrame, goal: str, fluency_bound: float) -> tuple[pd.DataFrame, str, str]:
    """The gates (each with its rule, the numbers and whether it passed) and the verdict they earn."""
    by = summary.set_index("condition")
    steer = by.loc[STEERED]
    up = goal == "increase"
    rows = []

    def beats(control: str) -> bool:
        other = by.loc[control]
        if up:
            return bool(steer["concept_lo"] > other["concept_hi"])
        return bool(steer["concept_hi"] < other["concept_lo"])

    side = "above" if up else "below"
    for control in ("zero strength", "random feature"):
        rows.append({"gate": f"beats {control}",
                     "rule": f"steering-only concept interval wholly {side} the {control} interval",
                     "value": f"{_interval(steer)} vs {_interval(by.loc[control])}", "passed": beats(control),
                     "outcome": "pass" if beats(control) else "fail"})
    base = by.loc["unsteered", "fluency_ppl"]
    ppl = steer["fluency_ppl"]
    fluent = bool(np.isfinite(ppl) and np.isfinite(base) and ppl <= fluency_bound * base)
    rows.append({"gate": "fluency within bound",
                 "rule": f"steering-only perplexity <= {fluency_bound:g} x unsteered (under the unsteered model)",
                 "value": f"{ppl:.4g} vs {fluency_bound:g} x {base:.4g} = {fluency_bound * base:.4g}",
                 "passed": fluent, "outcome": "pass" if fluent else "fail"})
    prompt = by.loc["prompt-only"]
    if (prompt["concept_lo"] > steer["concept_hi"]) if up else (prompt["concept_hi"] < steer["concept_lo"]):
        outcome = "prompt-only wins"
    elif (steer["concept_lo"] > prompt["concept_hi"]) if up else (steer["concept_hi"] < prompt["concept_lo"]):
        outcome = "steering wins"
    else:
        outcome = "tie (intervals overlap)"
    rows.append({"gate": "prompt-only beside the steer", "rule": "reported, not a gate",
                 "value": f"prompt-only {_interval(prompt)} vs steering-only {_interval(steer)}",
                 "passed": None, "outcome": outcome})
    gates = pd.DataFrame(rows)
    failed = [r["gate"] for r in rows[:2] if not r["passed"]]
    if failed:
        verdict, reason = "failed", f"does not beat its controls: {' and '.join(failed)} failed"
    elif not fluent:
        verdict, reason = "benchmarked", "beats zero and random controls, but fluency is out of bound"
    else:
        verdict, reason = "validated", "beats zero and random controls beyond their intervals, fluency within bound"
    return gates, verdict, f"{reason}; {outcome}"


# ---------------------------------------------------------------------------------------------- sweep
def sweep_rows(lab: LabLike, candidates: Sequence[Sequence[Steer]], alphas, prompts: Sequence[str], concept,
               *, positions="all", max_new_tokens: int = 24, chat: bool = False, seed: int = 0,
               n_boot: int = 200, batch_size: int | None = None, **generate_kwargs) -> pd.DataFrame:
    """Each candidate (a list of steers) at each alpha (every steer's value set to it; ``alphas`` one list for
    all candidates or one list per candidate) on ``prompts``, in one batched generation with the unsteered rows
    once (candidate -1, alpha 0): candidate, alpha, concept and fluency means with 95% intervals, distinct_2,
    repetition and an example completion."""
    concept = as_concept(concept)
    prompts = validate.texts(prompts, "prompts")
    groups: list[list[Steer]] = [[]]
    spec = [(-1, 0.0)]
    per_candidate = alphas if alphas and isinstance(alphas[0], (list, tuple)) else [alphas] * len(candidates)
    if len(per_candidate) != len(candidates):
        raise ValueError(f"{len(per_candidate)} alpha lists for {len(candidates)} candidates")
    for c, steers in enumerate(candidates):
        for a in per_candidate[c]:
            if a == 0:
                continue
            groups.append([_with_value(s, float(a)) for s in steers])
            spec.append((c, float(a)))
    fed = _chat(lab, list(prompts), chat)
    inputs = [p for _ in groups for p in fed]
    row_group = [g for g in range(len(groups)) for _ in fed]
    keys = [i for _ in groups for i in range(len(fed))]
    out = generate_rows(lab, Rows(inputs, row_group, keys, groups), positions=positions,
                        max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, **generate_kwargs)
    keep = [j for j, ids in enumerate(out.ids) if ids]
    nll = token_nll(lab, [out.prompt_ids[j] + out.ids[j] for j in keep], [len(out.prompt_ids[j]) for j in keep],
                    batch_size=batch_size or 32)
    ppl = np.full(len(out.ids), np.nan)
    ppl[keep] = [math.exp(float(np.mean(x))) for x in nll]
    scores = concept(out.texts)
    idx = np.random.default_rng(seed + 1).integers(0, len(prompts), size=(n_boot, len(prompts)))
    n = len(prompts)
    table = []
    for g, (c, a) in enumerate(spec):
        sl = slice(g * n, (g + 1) * n)
        entry = {"candidate": c, "alpha": a, "steers": ", ".join(steer_label(s) for s in groups[g]) or "none"}
        for name, values in (("concept", scores[sl]), ("fluency_ppl", ppl[sl])):
            mean, lo, hi = bootstrap_mean(np.asarray(values, dtype=float), idx)
            entry.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        entry["distinct_2"] = float(np.nanmean([distinct_n(ids) for ids in out.ids[sl]] or [np.nan]))
        entry["repetition"] = float(np.nanmean([repetition(ids) for ids in out.ids[sl]] or [np.nan]))
        entry["example"] = out.texts[g * n]
        table.append(entry)
    frame = pd.DataFrame(table)
    frame.attrs["generate_s"] = out.seconds
    return frame
