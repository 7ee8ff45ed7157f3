"""Render qscope_lab/embedded/MODEL_CARD.md from the recipe's own outputs (nothing typed by hand is a number).

    python recipes/embedded/model_card.py --corpus build/corpus          # after installing a gpu_run.py run

Reads the installed assets (model/, saes/, training/pretrain_log.jsonl, training/sae_layer*.csv, evaluation.json)
of ``--embedded`` (the package's folder by default) and the corpus's sources.json / dedup.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

EMBEDDED = Path(__file__).resolve().parents[2] / "qscope_lab" / "embedded"


def _numel(shape) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def cell(value) -> str:
    """One markdown table cell: newlines and pipes escaped so generated text cannot break the table."""
    return str(value).replace("\n", "\\n").replace("|", "\\|")


def table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def over_text(quality: pd.DataFrame) -> str:
    over = quality[quality.ce_delta > 0.10]
    if over.empty:
        return ""
    pairs = ", ".join(f"layer {r.layer} {r.language} {r.ce_delta:.3f}" for r in over.itertuples())
    return f" (over: {pairs})"


def k_sweep_text(sweep: pd.DataFrame, k: int, width: int, d_model: int) -> str:
    """The evidence for k, in words computed from the sweep (train_saes.py --sweep-k)."""
    sweep = sweep.sort_values("k").round(4)
    ce_cols = [c for c in sweep.columns if c.startswith("ce_delta_")]
    text = (f"Why k = {k}: at the middle layer, k = {' / '.join(map(str, sweep.k))} trained the same way (MSE stage "
            f"only, {sweep.tokens.iloc[0] / 1e6:.0f}M tokens, no KL stage), scored by held-out FVE and by the CE "
            f"cost of splicing each in, per language:\n\n{table(sweep)}\n\n")
    if ce_cols:
        first, last = sweep.iloc[0], sweep.iloc[-1]
        falls = all((sweep[c].diff().dropna() < 0).all() for c in ce_cols)
        text += (f"The CE cost {'falls with every step up in k' if falls else 'does not fall at every step'} "
                 f"(worst language: {max(first[c] for c in ce_cols):.3f} at k = {int(first.k)}, "
                 f"{max(last[c] for c in ce_cols):.3f} at k = {int(last.k)}). ")
    text += (f"k = {k} is {k / width:.1%} of the width (Qwen-Scope's k = 50 of 32K is 0.15%): a {d_model}-wide "
             "residual packs more into fewer directions, and the CE bar is what needs the larger k here; the "
             "features below show that it stays interpretable.")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--pretrain-log", help="default: <embedded>/training/pretrain_log.jsonl")
    parser.add_argument("--embedded", type=Path, default=EMBEDDED, help="the assets folder the card describes")
    args = parser.parse_args()
    render(Path(args.corpus), args.embedded, Path(args.pretrain_log) if args.pretrain_log else None)


def training_records(path: Path) -> tuple[list[dict], dict, dict]:
    """(step records, the start event, the final event) of a pretrain log (older logs have no events)."""
    rows = [json.loads(line) for line in open(path)]
    steps = [r for r in rows if "step" in r and "loss" in r]
    start = next((r for r in rows if r.get("event") == "start"), {})
    final = next((r for r in reversed(rows) if r.get("event") == "final"), {})
    return steps, start, final


def render(corpus: Path, EMBEDDED: Path, log_path: Path | None = None) -> None:  # noqa: N803 - the folder
    sources = pd.DataFrame(json.loads((corpus / "sources.json").read_text()))
    sources["MB"] = (sources.pop("bytes") / 1e6).round(2)
    dedup_path = corpus / "dedup.json"
    dedup = json.loads(dedup_path.read_text()) if dedup_path.is_file() else None
    log, start, final = training_records(log_path or EMBEDDED / "training" / "pretrain_log.jsonl")
    every = max(1, len(log) // 12)
    curve = pd.DataFrame([{"step": r["step"], "tokens (M)": round(r["tokens"] / 1e6, 1), "train loss": r["loss"],
                           "minutes": r["minutes"]} for i, r in enumerate(log) if i % every == 0 or r is log[-1]])
    final_bpc = final.get("heldout_bpc") or next(r["heldout_bpc"] for r in reversed(log) if "heldout_bpc" in r)
    bpc = pd.DataFrame([{"source": k, "held-out bits/char": v} for k, v in final_bpc.items()])
    config = json.loads((EMBEDDED / "model" / "config.json").read_text())
    ev = json.loads((EMBEDDED / "evaluation.json").read_text())
    quality = pd.DataFrame(ev["sae_quality"])
    sae_logs = []
    for path in sorted((EMBEDDED / "training").glob("sae_layer*.csv")):
        frame = pd.read_csv(path)
        last = frame.iloc[-1]
        sae_logs.append({"layer": int(path.stem.removeprefix("sae_layer")), "steps": int(last.step) + 1,
                         "final mse (scaled)": round(float(last.mse), 5),
                         "dead fraction": round(float(last.dead_fraction), 4), "seconds": last.seconds})
    from qscope_lab.saes.formats import read_qscope_meta

    metas = [read_qscope_meta(EMBEDDED / "saes" / f"layer{n}.sae.safetensors")
             for n in range(config["num_hidden_layers"])]
    k, width = metas[0]["k"], metas[0]["d_sae"]
    kl_steps = ", ".join(f"layer {m['layer']}: {m.get('kl_finetune_steps', 0)}" for m in metas)
    sweep_path = EMBEDDED / "training" / "k_sweep.jsonl"
    k_text = (k_sweep_text(pd.read_json(sweep_path, lines=True), k, width, config["hidden_size"])
              if sweep_path.exists() else "")
    tr = {"lr": 3e-3, "weight_decay": 0.1, "min_lr_fraction": 0.1, "seq": 256, "batch": 16, "seed": 0,
          **start.get("train", {})}
    device = start.get("device", "2 CPU cores")
    trained_tokens, trained_minutes = final.get("tokens", log[-1]["tokens"]), final.get("minutes", log[-1]["minutes"])
    sae_tokens = ", ".join(f"layer {m['layer']}: {int(m['train_tokens']) / 1e6:.1f}M" for m in metas
                           if "train_tokens" in m)
    corpus_cols = [c for c in ("source", "language", "licence", "MB", "documents", "documents_before_dedup",
                               "removed_fraction") if c in sources.columns]
    dedup_text = (f"Before the split, {dedup['exact_duplicates']} exact duplicates (same text after NFKC, case "
                  f"folding and whitespace removal) and {dedup['near_duplicates']} near duplicates (MinHash over "
                  f"{dedup['shingle']}-character shingles, {dedup['perms']} permutations in {dedup['bands']} LSH "
                  f"bands, estimated Jaccard >= {dedup['threshold']}) were removed of {dedup['documents']} "
                  "documents (recipes/embedded/dedup.py)." if dedup else "")
    features = ev["features"]
    steer = ev["steering"]
    sweep = pd.DataFrame([{k: v for k, v in r.items()} for r in steer["sweep"]])
    from safetensors import safe_open

    with safe_open(str(EMBEDDED / "model" / "model.safetensors"), framework="pt") as handle:
        n_params = sum(_numel(handle.get_slice(name).get_shape()) for name in handle.keys())
        stored = {str(handle.get_slice(name).get_dtype()) for name in handle.keys()}
    stored_text = {"F32": "float32", "F16": "float16 (computed in float32)", "BF16": "bfloat16"}.get(
        "/".join(sorted(stored)), "/".join(sorted(stored)))
    feature_blocks = []
    for name, title in (("han", "Han script"), ("digit", "digits"), ("code", "Python code context")):
        f = features[name]
        contexts = "\n".join(f"  - `{c}`".replace("\n", "\\n") for c in f["top_contexts"])
        feature_blocks.append(
            f"- **{title}**: layer {f['layer']}, feature {f['feature']}: precision {f['precision']:.3f}, recall "
            f"{f['recall']:.3f} over {f['fires']} firings on held-out tokens. Top contexts:\n{contexts}")
    text = f"""# qscope-embedded: model card

A tiny `Qwen3ForCausalLM` (same class and config fields as the Qwen3 family, scaled down) with a TopK SAE on
the residual stream of every layer, trained by this project from text that package registries serve. It ships
inside the package so that `Lab.load()` works offline on a CPU. Rebuild everything with `recipes/embedded/`
(corpus.py, tokenizer.py, gpu_run.py -- pre-training and SAEs in one run on a GPU -- evaluate.py, then this
card's model_card.py; recipes/embedded/GPU_RUN.md).

## Model
hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, {config['num_attention_heads']} heads \
({config['num_key_value_heads']} KV, head_dim {config['head_dim']}), MLP {config['intermediate_size']}, \
vocab {config['vocab_size']}, tied embeddings, {n_params / 1e6:.2f} M parameters, {stored_text} safetensors.
Tokenizer: byte-level BPE trained with `tokenizers` on an equal-bytes en / zh / code sample, with Qwen's own
pipeline (NFC, the Qwen split regex, byte-level), Qwen's special tokens and the Qwen3 chat template; loads as
`Qwen2Tokenizer`. Pre-training: AdamW (lr {tr['lr']:g}, betas 0.9/0.95, wd {tr['weight_decay']:g}, warm-up,
cosine to {tr['min_lr_fraction']:.0%}), windows of {tr['seq']} tokens, batch {tr['batch']}, en / zh / code drawn
40 / 35 / 25 %, seed {tr['seed']}, on {device}: {trained_tokens / 1e6:.0f}M tokens in {trained_minutes:.1f} minutes.

## Corpus
Debian's manpages*, fortunes-de are not used (kept out of training for evaluation). About 2% of each source's
documents are held out by a hash of the text. {dedup_text}

{table(sources[corpus_cols])}

## Training curve

{table(curve)}

Held-out loss at the end, bits per character (nats/token / ln 2 x tokens/char):

{table(bpc)}

## SAEs
One per layer, `saes/layer{{n}}.sae.safetensors`, Qwen-Scope orientation and convention (raw residual in,
no b_dec centring, topk of relu, `x_hat = acts @ W_dec.T + b_dec`), bfloat16 storage, upcast to float32 at load.
Width 16 x d_model = {width}, k = {k}. Trained with the recipe of `qscope_lab.training.sae_training` (on a GPU
by `recipes/embedded/sae_gpu.py`; MSE-stage tokens per layer: {sae_tokens or 'see the table'}): inputs scaled to
E||x||^2 = d during training and the scale folded into the weights, unit-norm decoder, encoder initialised as
its transpose with the bias centring the mean, AuxK (k_aux = d/2, coefficient 1/32) for latents silent for
200k tokens, Adam lr 2e-3 decayed linearly to 0 over the last 20% of steps, sampled from cached activations
(position 0 and special tokens excluded). Then a KL fine-tune (`sae_training.finetune_kl`): the SAE
spliced in at its layer, trained so the model's next-token distribution matches the clean one (KL + 0.1 x
normalised MSE, Adam lr 2e-4, batches of 8 x 128 tokens, model frozen); KL steps per layer ({kl_steps}; more
with `train_saes.py --kl-more N --layers ...`). The KL stage lowers the CE cost for a little FVE: compare the
k sweep's MSE-only rows below (where there is one) with the quality table.

{table(pd.DataFrame(sae_logs))}

{k_text}

### Quality on held-out documents, per language
FVE = fraction of variance explained; ce_delta = next-token CE (nats/token) with the SAE spliced in minus clean.

{table(quality)}

Targets: FVE >= 0.88 is met in {int((quality.fve >= 0.88).sum())} of {len(quality)} (layer, language) pairs;
ce_delta <= 0.10 in {int((quality.ce_delta <= 0.10).sum())} of {len(quality)}{over_text(quality)}.

## Interpretable features (found with `qscope_lab.analysis.features`)
{chr(10).join(feature_blocks)}

## Steering
Feature {steer['feature']} at layer {steer['layer']}: of the features `features.contrast` ranks highest on
Chinese vs English held-out documents, the one whose addition at alpha {steer.get('probe_alpha', 32):g} turns
the English prompts most Chinese:

{table(pd.DataFrame(steer['contrast']).round(3))}

It is added (`h + alpha * W_dec[:, f]` at every prompt and generated position) to four English prompts,
and subtracted from four Chinese prompts; han_share is the share of CJK characters in 32 greedy tokens.

{table(sweep)}

## Loading
`Lab.load()` cold start in a fresh interpreter (imports included): {ev['cold_start_s']} s (median of 3).
"""
    (EMBEDDED / "MODEL_CARD.md").write_text(text)
    print(f"wrote {EMBEDDED / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
