"""Attribution benchmark: ``lab.attribute`` against one plain forward + backward of the same model, side by side.

For each model (the embedded default, and random stand-ins of the four Qwen-Scope families built by
``qscope_lab.testing.standins``; on a GPU box pass ``--model`` / ``--saes`` for a real group and the same code
runs), on the same batch of prompts:

- ``plain``: ``model(inputs_embeds=...)`` forward with the target logit's gradient taken back to the input
  embeddings (every layer; no parameter gradients): the least any gradient method needs.
- ``plain+params``: the same with parameter gradients, what a training step's backward costs.
- ``attribute``: ``lab.attribute(prompts, target, layers=middle)`` (grad x act: SAE encode, splice with error
  terms, one backward from the spliced layer, rows for every fired feature).

Times are medians of interleaved repetitions (plain, attribute, plain, ...), ratios attribute / plain. Memory:
bytes autograd saves for the backward (activations only; weights are held anyway), and on CUDA the peak
allocated memory; gradients run only from the chosen layer on, so attribution at a late layer saves less.

Run: ``python benchmarks/attribution_bench.py`` (about 5 min on 2 CPU cores) or ``--quick`` (about 1 min).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from qscope_lab import Lab

PROMPTS = ["The weather today is very nice, so we went for a walk in the park and then",
           "今天的天气很好，我们去公园散步，然后",
           "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return",
           "In 1999 the three cats sat on the mat while the dog barked twice and the bird"]


def saved_bytes(fn, weights: set[int]) -> int:
    sizes = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes)


def plain(lab, enc, token: int, params: bool):
    model = lab.hf_model
    for p in model.parameters():
        p.requires_grad_(params)
    try:
        embeds = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        out = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"], use_cache=False, logits_to_keep=1)
        out.logits[:, -1, token].sum().backward()
    finally:
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(True)


def measure(lab, name: str, reps: int) -> None:
    enc = lab.tokenize(PROMPTS)
    token = int(lab.attribute(PROMPTS[0]).target.token(0))
    layer = lab.n_layers // 2
    jobs = {"plain": lambda: plain(lab, enc, token, False), "plain+params": lambda: plain(lab, enc, token, True),
            "attribute": lambda: lab.attribute(PROMPTS, target=token, layers=layer)}
    for job in jobs.values():  # warm-up (SAE load, decoder row copy, allocator)
        job()
    times = {key: [] for key in jobs}
    for _ in range(reps):
        for key, job in jobs.items():
            if lab.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            job()
            if lab.device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(v) for key, v in times.items()}
    weights = {p.untyped_storage().data_ptr() for p in lab.hf_model.parameters()}
    weights |= {lab.sae(x).decoder_rows().untyped_storage().data_ptr() for x in (layer, lab.n_layers - 1)}
    mem = {"plain": saved_bytes(jobs["plain"], weights), "attribute": saved_bytes(jobs["attribute"], weights),
           "attribute, last layer": saved_bytes(lambda: lab.attribute(PROMPTS, target=token,
                                                                      layers=lab.n_layers - 1), weights)}
    print(f"\n{name}: {lab.architecture}, {lab.n_layers} layers, d_model {lab.d_model}, "
          f"{enc['input_ids'].numel()} tokens ({len(PROMPTS)} prompts), layer {layer}, {reps} reps")
    for key in jobs:
        print(f"  {key:14s} {1000 * med[key]:8.1f} ms   {med[key] / med['plain']:5.2f}x plain")
    print(f"  attribute / plain+params: {med['attribute'] / med['plain+params']:.2f}x")
    for key, value in mem.items():
        print(f"  saved for backward, {key:22s} {value / 2**20:8.2f} MiB   {value / mem['plain']:5.2f}x plain")
    if lab.device.type == "cuda":
        for key, job in (("plain", jobs["plain"]), ("attribute", jobs["attribute"])):
            torch.cuda.reset_peak_memory_stats()
            job()
            print(f"  CUDA peak, {key:10s} {torch.cuda.max_memory_allocated() / 2**20:10.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, two stand-ins")
    parser.add_argument("--model", help="a real checkpoint (hub id or folder) instead of the stand-ins")
    parser.add_argument("--saes", help="its SAE group (hub id or folder)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    torch.set_num_threads(2)
    if args.model:
        measure(Lab.load(args.model, saes=args.saes, device=args.device, dtype=args.dtype), args.model, reps)
        return
    measure(Lab.load(), "embedded default", reps)
    from qscope_lab.testing.standins import stage

    groups = ["Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_50"]
    if not args.quick:
        groups += ["Qwen/SAE-Res-Qwen3-30B-A3B-Base-W32K-L0_50", "Qwen/SAE-Res-Qwen3.5-35B-A3B-Base-W32K-L0_50"]
    with tempfile.TemporaryDirectory() as folder:
        for group in groups:
            model_dir, sae_dir = stage(group, folder, n_layers=8, hidden=256, width=4096)
            measure(Lab.load(model_dir, saes=sae_dir, device=args.device), f"stand-in of {group}", reps)


if __name__ == "__main__":
    main()
