"""Measure the shipped embedded model + SAEs, with the library's own tools; writes evaluation.json.

    python recipes/embedded/evaluate.py --corpus build/corpus --out qscope_lab/embedded/evaluation.json
    python recipes/embedded/evaluate.py --corpus build/carry --model build/gpu_run/model --saes build/gpu_run/saes \
        --out build/gpu_run/evaluation.json          # a fresh run's outputs, before they are installed

- per layer and language (held-out documents): FVE of the SAE, and the CE increase with the SAE spliced in;
- interpretable features: best Han-script, digit and Python-code-context latents (precision / recall over
  held-out tokens, a token labelled by the text its offsets cover) with their top activating contexts;
- steering: a Chinese feature (of the top contrastive ones, the one that writes Chinese) added to English
  prompts over an alpha sweep, and subtracted from Chinese prompts: share of Han characters in 32 greedy tokens;
- cold start of ``Lab.load()`` in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from corpus import iter_docs

EN_PROMPTS = ["The weather today is", "My favourite book is about", "In the morning I usually",
              "The history of the city"]
ZH_PROMPTS = ["今天的天气", "我最喜欢的书是", "这家酒店的服务", "中国的历史"]
ALPHAS = [0, 2, 4, 8, 16, 32, 64]


def lang_docs(corpus: Path, lang: str, n: int, chars: int = 1200) -> list[str]:
    docs = [doc["text"][:chars] for doc in iter_docs(corpus, "heldout", lang) if len(doc["text"]) > 40]
    return docs[:n]


def sae_quality(lab, corpus: Path) -> list[dict]:
    from qscope_lab.training.sae_training import collect_activations, fraction_of_variance_explained

    rows = []
    for lang in ("en", "zh", "code"):
        texts = lang_docs(corpus, lang, 120)
        acts = collect_activations(lab, texts, list(range(lab.n_layers)), max_tokens=60_000)
        report = lab.reconstruct(texts[:60], layer=list(range(lab.n_layers)), batch_size=8, max_length=256)
        for layer in range(lab.n_layers):
            r = report[report.layer == layer].iloc[0]
            rows.append({"layer": layer, "language": lang, "tokens": int(acts[layer].shape[0]),
                         "fve": round(fraction_of_variance_explained(lab.sae(layer), acts[layer]), 4),
                         "ce_clean": round(r.ce_clean, 4), "ce_spliced": round(r.ce_spliced, 4),
                         "ce_delta": round(r.ce_delta, 4), "l0": round(r.l0, 2)})
            print(rows[-1], flush=True)
    return rows


def interpretable(lab, corpus: Path) -> dict:
    from qscope_lab.analysis.features import span_labels, token_class_table, top_contexts
    from qscope_lab.analysis.text_predicates import is_digit, is_han

    texts, labels_code = [], []
    for lang in ("en", "zh", "code"):
        docs = lang_docs(corpus, lang, 80, chars=800)
        texts += docs
        labels_code += [lang == "code"] * len(docs)
    out = {}
    for layer in range(lab.n_layers):
        acts = lab.encode(texts, layer, skip_first=True, max_length=256)
        code_label = torch.tensor([labels_code[t] for t in acts.text_index.tolist()])
        # a token is Han / a digit if the text it covers is: byte tokens of a split character count too
        han, digit = span_labels(lab.tokenizer, acts, is_han), span_labels(lab.tokenizer, acts, is_digit)
        for name, cls in (("han", han), ("digit", digit), ("code", code_label)):
            table = token_class_table(acts, cls, min_count=30)
            best = table.sort_values(["precision", "recall"], ascending=False)
            best = best[best.precision >= 0.9].sort_values("recall", ascending=False)
            row = (best if len(best) else table).iloc[0]
            entry = {"layer": layer, "feature": int(row.feature), "precision": round(float(row.precision), 4),
                     "recall": round(float(row.recall), 4), "fires": int(row.fires),
                     "top_contexts": top_contexts(acts, int(row.feature), n=5, window=6).context.tolist()}
            if name not in out or (entry["precision"] >= 0.9, entry["recall"]) > (
                    out[name]["precision"] >= 0.9, out[name]["recall"]):
                out[name] = entry
        print(layer, {k: (v["layer"], v["feature"], v["precision"], v["recall"]) for k, v in out.items()}, flush=True)
    return out


def steering(lab, corpus: Path, layer: int, candidates: int = 10, probe_alpha: float = 32.0) -> dict:
    """A Chinese-language feature is one that marks Chinese text (contrast) and writes it (steering): of the
    ``candidates`` features firing most more often on Chinese than English documents, keep the one whose
    addition at ``probe_alpha`` turns the English prompts most Chinese. (At k = 64 the top contrast feature
    alone is often a detector whose decoder direction does not write Chinese.)"""
    from qscope_lab.analysis.features import contrast
    from qscope_lab.analysis.text_predicates import han_share

    zh, en = lang_docs(corpus, "zh", 60, 300), lang_docs(corpus, "en", 60, 300)
    table = contrast(lab, zh, en, layer=layer, top=candidates)
    probes = []
    for f in table.feature.tolist():
        gen = lab.generate(EN_PROMPTS, layer=layer, steer={int(f): probe_alpha}, max_new_tokens=32,
                           min_new_tokens=32, baseline=False)
        probes.append(round(sum(map(han_share, gen.steered)) / len(EN_PROMPTS), 3))
    table["han_share_at_probe"] = probes
    feature = int(table.feature[int(table.han_share_at_probe.idxmax())])
    print(table.round(3).to_string(), flush=True)
    sweep = []
    for alpha in ALPHAS:
        gen = lab.generate(EN_PROMPTS, layer=layer, steer={feature: float(alpha)}, max_new_tokens=32,
                           min_new_tokens=32, baseline=False)
        sweep.append({"alpha": alpha, "prompts": "en", "han_share": round(sum(map(han_share, gen.steered)) / 4, 3),
                      "example": gen.steered[0][:60]})
        print(sweep[-1], flush=True)
    for alpha in [0] + [-a for a in ALPHAS[1:]]:
        gen = lab.generate(ZH_PROMPTS, layer=layer, steer={feature: float(alpha)}, max_new_tokens=32,
                           min_new_tokens=32, baseline=False)
        sweep.append({"alpha": alpha, "prompts": "zh", "han_share": round(sum(map(han_share, gen.steered)) / 4, 3),
                      "example": gen.steered[0][:60]})
        print(sweep[-1], flush=True)
    return {"layer": layer, "feature": feature, "probe_alpha": probe_alpha,
            "contrast": table.round(4).to_dict("records"), "sweep": sweep}


def cold_start(model: str | None = None, saes: str | None = None) -> float:
    load = f"Lab.load({model!r}, saes={saes!r}, device='cpu')" if model else "Lab.load()"
    code = (f"import time; t = time.perf_counter(); from qscope_lab import Lab; lab = {load}; "
            "lab.sae(0); print(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout.split()[-1])
             for _ in range(3)]
    return round(sorted(times)[1], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default="qscope_lab/embedded/evaluation.json")
    parser.add_argument("--steer-layer", type=int, help="default: the middle layer")
    parser.add_argument("--model", help="a model folder to measure instead of the shipped default")
    parser.add_argument("--saes", help="its SAE folder (with --model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.saes and not args.model:
        parser.error("--saes needs --model (the shipped default brings its own SAEs)")

    from qscope_lab import Lab

    torch.set_num_threads(args.threads)
    lab = Lab.load(args.model, saes=args.saes, device="cpu", index=False) if args.model else Lab.load()
    corpus = Path(args.corpus)
    layer = lab.n_layers // 2 if args.steer_layer is None else args.steer_layer
    result = {"cold_start_s": cold_start(args.model, args.saes), "sae_quality": sae_quality(lab, corpus),
              "features": interpretable(lab, corpus), "steering": steering(lab, corpus, layer)}
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
