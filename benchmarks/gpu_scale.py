"""Real-shape scale benchmark (issue 24): the Qwen3-1.7B, Qwen3-8B and Qwen3.5-27B shapes built with random
weights on a CUDA GPU (nothing downloaded), SAEs of their groups' real widths, and the library's calls timed against
the plain way of doing the same work, side by side in one run:

- encode: ``lab.encode`` over N tokens at one layer vs a bare forward to that layer + ``SAE.encode_sparse``
- index build: ``FeatureIndex.build`` over the SAE layers vs the bare forward + encode of the same tokens and layers
- steered generation: ``lab.generate`` with a steer (baseline=False) vs plain ``model.generate``, 64 new tokens
- attribution: ``lab.attribute`` (grad x act, one layer) vs one forward + backward to the input embeddings

Each row prints tokens/s for both sides, their ratio and the peak GPU memory of the library side. The whole run is
one prepared script: ``python benchmarks/gpu_scale.py --out $OUT`` (under 10 minutes on one H200). On a CPU,
``--device cpu --depth 2 --width 4096 --shapes 1.7B --tokens 256`` is a dry run of the same code (minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {"1.7B": "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "8B": "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50",
          "27B": "Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50"}
TEXT = ("The committee met on Tuesday to discuss the budget for the coming year. 委员会周二开会讨论来年的预算。"
        "def total(xs):\n    return sum(x for x in xs if x > 0)\n")


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int = 3) -> tuple[float, float]:
    """(median seconds, peak GB allocated on CUDA during the calls; 0 on the CPU) after one warm-up call."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0
    return sorted(times)[len(times) // 2], peak


def build(group_id: str, device: torch.device, depth: int | None, width: int | None, sae_layers: int):
    """A Lab on a random-weight model of the group's backbone shapes and random SAEs of its width."""
    import transformers
    from transformers import AutoTokenizer

    from qscope_lab import SAE, Lab, embedded
    from qscope_lab.saes.registry import find_group
    from qscope_lab.testing.tiny import real_config

    group = find_group(group_id)
    assert group is not None
    depth = depth or group.n_layers
    width = width or group.d_sae
    config = real_config(group.model_class, group.config, n_layers=depth)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, group.model_class)(config).to(dtype).eval()
    layers = sorted({depth // 2, max(0, depth // 2 - 1), min(depth - 1, depth // 2 + 1)})[:sae_layers]
    gen = torch.Generator(device=device).manual_seed(0)
    saes = {}
    for layer in layers:
        W_dec = torch.randn(group.d_model, width, generator=gen, device=device)
        W_dec /= W_dec.norm(dim=0, keepdim=True)
        saes[layer] = SAE(W_dec.T.contiguous(), 0.01 * torch.randn(width, generator=gen, device=device), W_dec,
                          torch.zeros(group.d_model, device=device), k=group.k)
    tokenizer = AutoTokenizer.from_pretrained(embedded.MODEL_DIR)
    lab = Lab.load(model, tokenizer=tokenizer, saes=saes, index=False)
    return lab, layers, group


def texts_of(lab, n_tokens: int, per_text: int = 512) -> list[str]:
    ids = lab.tokenizer(TEXT)["input_ids"]
    reps = max(1, per_text // len(ids))
    one = TEXT * reps
    n = max(1, n_tokens // (len(ids) * reps))
    return [one] * n


def bench_shape(name: str, args, device: torch.device, out: list[dict]) -> None:
    from qscope_lab import FeatureIndex

    t0 = time.perf_counter()
    lab, layers, group = build(SHAPES[name], device, args.depth, args.width, args.sae_layers)
    print(f"\n{name}: {group.backbone} shapes, {lab.n_layers} layers, hidden {lab.d_model}, "
          f"SAEs W{lab.sae(layers[0]).d_sae} k{group.k} at layers {layers} (built in {time.perf_counter() - t0:.0f} s)")
    texts = texts_of(lab, args.tokens)
    n_tokens = sum(len(i) for i in lab.token_ids(texts))
    layer = layers[len(layers) // 2]

    def row(what, ours, theirs, tokens, peak):
        entry = {"shape": name, "what": what, "ours_tok_s": tokens / ours, "plain_tok_s": tokens / theirs,
                 "speed_vs_plain": theirs / ours, "peak_gb": peak}
        out.append(entry)
        print(f"  {what:<28} ours {tokens / ours:>10,.0f} tok/s   plain {tokens / theirs:>10,.0f} tok/s   "
              f"speed vs plain {theirs / ours:5.2f}x   peak {peak:6.1f} GB")

    # 1. encode at one layer
    def plain_encode(at=(layer,)):
        with torch.no_grad():
            for i in range(0, len(texts), 8):
                enc = lab.tokenize(texts[i:i + 8])
                res = lab.residuals(enc, list(at))
                for a in at:
                    lab.sae(a).encode_sparse(res[a][enc["attention_mask"].bool()])

    ours, peak = timed(lambda: lab.encode(texts, layer=layer, batch_size=8, progress=False), device, args.repeats)
    theirs, _ = timed(plain_encode, device, args.repeats)
    row("encode", ours, theirs, n_tokens, peak)

    # 2. index build over the SAE layers
    folder = Path(tempfile.mkdtemp(prefix="gpu-scale-index-"))
    docs = [{"text": t, "source": "bench"} for t in texts]

    def build_index():
        FeatureIndex.build(lab, docs, layers=layers, path=folder / "index", overwrite=True, progress=False)

    ours, peak = timed(build_index, device, 1)
    theirs, _ = timed(lambda: plain_encode(tuple(layers)), device, 1)
    row(f"index build ({len(layers)} layers)", ours, theirs, n_tokens, peak)

    # 3. steered generation against plain generate
    prompts = ["The committee met on Tuesday to discuss"] * args.gen_batch
    new = args.new_tokens

    def plain_generate():
        enc = lab.tokenize(prompts)
        with torch.no_grad():
            lab.hf_model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                  pad_token_id=lab.tokenizer.pad_token_id)

    ours, peak = timed(lambda: lab.generate(prompts, layer=layer, steer={3: 8.0}, baseline=False, max_new_tokens=new,
                                            min_new_tokens=new), device, args.repeats)
    theirs, _ = timed(plain_generate, device, args.repeats)
    row("steered generate", ours, theirs, new * len(prompts), peak)

    # 4. attribution against one forward + backward to the input embeddings
    prompts = texts[: max(1, min(4, len(texts)))]
    enc = lab.tokenize(prompts)

    def plain_backward():
        model = lab.hf_model
        embeds = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"], use_cache=False,
                       logits_to_keep=1).logits
        logits[:, -1].max(-1).values.sum().backward()

    for p in lab.hf_model.parameters():
        p.requires_grad_(False)
    ours, peak = timed(lambda: lab.attribute(prompts, layers=[layer]), device, args.repeats)
    theirs, _ = timed(plain_backward, device, args.repeats)
    row("attribution (grad x act)", ours, theirs, int(enc["attention_mask"].sum()), peak)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--depth", type=int, default=None, help="layers built (default: the backbone's full depth)")
    parser.add_argument("--width", type=int, default=None, help="SAE width (default: the group's real width)")
    parser.add_argument("--sae-layers", type=int, default=3, help="layers with SAEs (index build runs on all)")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens encoded and indexed")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_scale on {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    results: list[dict] = []
    for shape in args.shapes:
        bench_shape(shape, args, device, results)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"device": name, "date": time.strftime("%Y-%m-%d"),
                                                           "args": {k: str(v) for k, v in vars(args).items()},
                                                           "rows": results}, indent=1))


if __name__ == "__main__":
    main()
