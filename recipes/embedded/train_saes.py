"""Train the embedded model's SAE suite: one TopK SAE per layer, saved in the Qwen-Scope convention.

The shipped suite came from two runs (one core each, in parallel; about 45 minutes):

    python recipes/embedded/train_saes.py --layers 0 1 --kl-steps 600
    python recipes/embedded/train_saes.py --layers 2 3 --kl-steps 2100

Width 16 x d_model = 2048 (Qwen-Scope's narrowest groups are 16 x 2048 = 32K) and k = 64: ``--sweep-k 16 32 48
64`` measures held-out FVE and the per-language CE cost of each k at the middle layer (MODEL_CARD.md has the
table: the CE bar of 0.10 nats is what needs k = 64 on a 128-wide residual). Activations of the chosen layers
come from the same forward passes over an en / zh / code mix of training documents; each SAE is trained by
``qscope_lab.training.sae_training`` (the public API) on 2M distinct activation rows with a linear lr decay over the
last 20%, then KL fine-tuned (``finetune_kl``: the later layers cost more CE and get more steps), and stored as
``layer{n}.sae.safetensors`` in bfloat16 with its training facts in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from corpus import iter_docs

MIX = {"en": 0.40, "zh": 0.35, "code": 0.25}


def mixed_texts(corpus: Path, split: str, n: int, seed: int = 0, chars: int = 1200) -> list[str]:
    """n documents (first ``chars`` characters each) drawn in the pre-training mix of languages."""
    by_lang: dict[str, list[str]] = {}
    for doc in iter_docs(corpus, split):
        if len(doc["text"]) > 40:
            by_lang.setdefault(doc["lang"], []).append(doc["text"][:chars])
    rng = random.Random(seed)
    out = []
    for lang, share in MIX.items():
        docs = by_lang[lang]
        rng.shuffle(docs)
        out += docs[:int(n * share)]
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="build/pretrain/model")
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default="qscope_lab/embedded/saes")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=8_000_000)
    parser.add_argument("--activation-tokens", type=int, default=2_000_000)
    parser.add_argument("--kl-steps", type=int, default=600, help="KL fine-tune steps after MSE training (0: none)")
    parser.add_argument("--layers", type=int, nargs="*", help="train only these layers (default: all)")
    parser.add_argument("--kl-more", type=int, default=0,
                        help="only continue the KL fine-tune of the SAEs already in --out by this many steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when sharing the CPU)")
    parser.add_argument("--sweep-k", type=int, nargs="*",
                        help="only compare these k (MSE stage, --tokens each) at the middle layer: held-out FVE and "
                             "the CE cost per language, appended to --sweep-out")
    parser.add_argument("--sweep-out", default="qscope_lab/embedded/training/k_sweep.jsonl")
    args = parser.parse_args()

    from qscope_lab import Lab
    from qscope_lab.training.sae_training import TrainConfig, collect_activations, finetune_kl, train_sae_on_activations

    torch.set_num_threads(args.threads)
    lab = Lab.load(args.model, device="cpu")
    texts = mixed_texts(Path(args.corpus), "train", 6000)
    layers = args.layers or list(range(lab.n_layers))
    if args.sweep_k:
        return sweep_k(lab, texts, args)
    if args.kl_more:
        return continue_kl(lab, texts, layers, Path(args.out), args.kl_more)
    acts = collect_activations(lab, texts, layers, max_tokens=args.activation_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        config = TrainConfig(d_sae=args.width, k=args.k, tokens=args.tokens, seed=layer,
                             extra={"trained_on": "qscope-embedded corpus (en/zh/code mix)"})
        sae, log = train_sae_on_activations(acts[layer], config, layer=layer)
        if args.kl_steps:
            sae, kl_log = finetune_kl(lab, sae, texts, layer, steps=args.kl_steps, seed=layer)
            print(json.dumps({"layer": layer, "kl_first": kl_log.kl.iloc[0], "kl_last": kl_log.kl.iloc[-1]}))
        print(json.dumps({"layer": layer, "k": args.k, "heldout_fve": sae.meta["heldout_fve"],
                          "dead_fraction": sae.meta["dead_fraction"], "seconds": float(log.seconds.iloc[-1])}),
              flush=True)
        sae.save(out / f"layer{layer}.sae.safetensors", dtype=torch.bfloat16,
                 model="qscope-embedded", width=args.width)
        curves = out.parent / "training"
        curves.mkdir(parents=True, exist_ok=True)
        log.to_csv(curves / f"sae_layer{layer}.csv", index=False)


def sweep_k(lab, texts, args) -> None:
    """The evidence behind k: at the middle layer, each k trained the same way (MSE stage only, no KL), scored by
    held-out FVE and by the CE cost of splicing it in, per language (the two bars of the model card)."""
    from evaluate import lang_docs

    from qscope_lab import Lab
    from qscope_lab.saes.suite import SAESuite
    from qscope_lab.training.sae_training import TrainConfig, collect_activations, train_sae_on_activations

    layer = lab.n_layers // 2
    acts = collect_activations(lab, texts, [layer], max_tokens=args.activation_tokens)[layer]
    heldout = {lang: lang_docs(Path(args.corpus), lang, 60) for lang in ("en", "zh", "code")}
    for k in args.sweep_k:
        config = TrainConfig(d_sae=args.width, k=k, tokens=args.tokens, seed=layer)
        sae, log = train_sae_on_activations(acts, config, layer=layer)
        spliced = Lab(lab.model, saes=SAESuite.open({layer: sae}), name=lab.name)
        row = {"layer": layer, "k": k, "tokens": args.tokens, "heldout_fve": sae.meta["heldout_fve"],
               "dead_fraction": sae.meta["dead_fraction"], "seconds": round(float(log.seconds.iloc[-1]), 1)}
        for lang, docs in heldout.items():
            report = spliced.reconstruct(docs, layer=layer, batch_size=8, max_length=256)
            row[f"ce_delta_{lang}"] = round(float(report.ce_delta.iloc[0]), 4)
        print(json.dumps(row), flush=True)
        with open(args.sweep_out, "a") as f:
            f.write(json.dumps(row) + "\n")


def continue_kl(lab, texts, layers, out: Path, steps: int) -> None:
    """A second KL stage for the SAEs in ``out`` (the shipped layers 2 and 3 got 1,500 more steps: their CE
    cost was the highest after the first 600)."""
    from qscope_lab.saes.sae import SAE
    from qscope_lab.training.sae_training import finetune_kl

    for layer in layers:
        path = out / f"layer{layer}.sae.safetensors"
        before = SAE.load(path, layer=layer)
        sae, log = finetune_kl(lab, before, texts, layer, steps=steps, lr=2e-4, seed=100 + layer)
        print(json.dumps({"layer": layer, "kl_first": log.kl.iloc[:5].mean(), "kl_last": log.kl.iloc[-5:].mean()}))
        sae.meta["kl_finetune_steps"] = int(before.meta.get("kl_finetune_steps", 0)) + steps
        sae.save(path, dtype=torch.bfloat16, model="qscope-embedded", width=sae.d_sae)


if __name__ == "__main__":
    main()
