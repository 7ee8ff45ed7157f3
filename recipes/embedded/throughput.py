"""Measure pre-training throughput (tokens/s, and the model FLOP/s it implies) of a Qwen3 config on this device.

    python recipes/embedded/throughput.py --layers 6 --hidden 256 --vocab 16384 --seq 512 --batch 8 --steps 5

The schedule of gpu_run.py is planned from such a measurement: tokens/s x minutes = tokens seen. Model FLOPs
per token are 6 x (non-embedding parameters + the tied output projection) + 12 x layers x seq x hidden
(attention scores), the usual estimate (Kaplan et al. 2020, PaLM appendix B).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from pretrain import ModelSpec, TrainSpec, autocast, count_parameters, device_default, make_optimizer, model_config


def flops_per_token(spec: ModelSpec, vocab: int, seq: int) -> float:
    non_embedding = count_parameters(spec, vocab) - vocab * spec.hidden
    return 6 * (non_embedding + vocab * spec.hidden) + 12 * spec.layers * seq * spec.heads * spec.head_dim


def measure(spec: ModelSpec, vocab: int, seq: int, batch: int, steps: int, device: str, compile: bool) -> dict:
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(model_config(vocab, 0, spec)).to(device)
    opt = make_optimizer(model, TrainSpec(), device)
    fast = torch.compile(model) if compile else model
    x = torch.randint(1, vocab, (batch, seq + 1), device=device)

    def step():
        with autocast(device):
            logits = fast(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step().item()  # warm-up (and compile)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    tokens_per_s = batch * seq / seconds
    return {"device": device, "parameters": count_parameters(spec, vocab), "seq": seq, "batch": batch,
            "seconds_per_step": round(seconds, 4), "tokens_per_s": round(tokens_per_s),
            "model_tflops": round(tokens_per_s * flops_per_token(spec, vocab, seq) / 1e12, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default=device_default())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = ModelSpec(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                     head_dim=args.head_dim, intermediate=args.intermediate)
    print(json.dumps(measure(spec, args.vocab, args.seq, args.batch, args.steps, args.device, args.compile)))


if __name__ == "__main__":
    main()
