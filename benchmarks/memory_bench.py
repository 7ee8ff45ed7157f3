"""Memory benchmark: peak RSS of the streaming workflows over N and 10N texts; flat memory means a ratio near 1.

Each measurement runs in a fresh subprocess (this script with ``--child``) on the embedded default model, and
peak RSS is read from the child's ``VmHWM`` in /proc/self/status (``ru_maxrss`` would carry the parent's peak
over fork + exec). Texts are the shipped reference documents (qscope_lab/embedded/reference.jsonl), shuffled (seed 0)
and repeated to reach the count. "net" subtracts a child that only imports and loads the Lab (``Lab.load()``), so the
ratio of net peaks shows the growth the workflow itself adds.

- ``footprint``: ``qscope_lab.workflows.coverage.footprint`` at the last token (and, with ``--all``, at every token);
- ``seed_fit``: ``SeedClassifier.fit`` (every SAE layer) on Chinese-vs-other labels;
- ``forward`` (``--forward``): the same batches through ``lab.residuals`` with nothing kept: the part of
  the footprint's growth that comes from the forward passes themselves (allocator, tracing), not its storage;
- ``encode`` (``--contrast``): ``Lab.encode`` of all texts, a FeatureActs kept whole: what the memory of a
  non-streaming pass looks like, to show the benchmark can see growth.

Run: ``python benchmarks/memory_bench.py`` (N=200; ``--n`` to change; a few minutes on 2 busy CPU cores).

``--sae`` (issue 24) measures one SAE of real width instead, a stand-in of ``--d-model`` x ``--d-sae`` (default
Qwen3-8B's 4096 x W64K = 65536, k 50, random weights), each in its own child, RSS peak reset just before the step
(``/proc/self/clear_refs``) so the delta is what the step adds:

- ``sae_encode``: ``SAE.encode_sparse`` of a ``--tokens``-row text (4,096) in row chunks (the default), against
  ``sae_encode_dense``: the same call with one chunk of every row (the dense tokens x d_sae pre-activations of
  the unchunked path); the outputs are compared (same indices, values within float rounding);
- ``sae_load``: ``SAE.load`` of a Qwen-Scope ``.pt`` of that size written to a scratch folder (memory-mapped,
  finiteness checked slice by slice), then a second load of the unchanged file (the check is skipped), against
  ``sae_load_float64``: the memory-mapped tensors checked the old way (``isfinite(t.sum(dtype=float64))``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time


def peak_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024


def texts_and_labels(n: int) -> tuple[list[str], list[bool]]:
    from qscope_lab.embedded import REFERENCE_FILE

    rows = [json.loads(line) for line in REFERENCE_FILE.read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(rows)  # the file is grouped by source: mix the languages
    rows = [rows[i % len(rows)] for i in range(n)]
    return [r["text"] for r in rows], [r["lang"] == "zh" for r in rows]


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def reset_peak() -> float:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return rss_mb()


def sae_child(task: str, d_model: int, d_sae: int, tokens: int, scratch: str) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from qscope_lab import SAE
    from qscope_lab.saes import formats

    out: dict = {"task": task, "d_model": d_model, "d_sae": d_sae}
    if task.startswith("sae_encode"):
        gen = torch.Generator().manual_seed(0)
        W_enc = torch.randn(d_sae, d_model, generator=gen) / d_model ** 0.5
        sae = SAE(W_enc, torch.zeros(d_sae), W_enc.T, torch.zeros(d_model), k=50)  # decoder tied: half the RAM
        x = torch.randn(tokens, d_model, generator=gen)
        chunk = tokens if task == "sae_encode_dense" else None
        base = reset_peak()
        start = time.perf_counter()
        values, indices = sae.encode_sparse(x, chunk_rows=chunk)
        out.update(seconds=time.perf_counter() - start, added_mb=peak_mb() - base, tokens=tokens,
                   chunk_rows=chunk or sae.encode_rows)
        torch.save({"values": values, "indices": indices}, os.path.join(scratch, f"{task}.out.pt"))
    elif task == "sae_load":
        path = os.path.join(scratch, "SAE-Res-standin-W64K-L0_50", "layer0.sae.pt")
        formats.forget_checks()
        base = reset_peak()
        start = time.perf_counter()
        sae = SAE.load(path)
        out.update(seconds=time.perf_counter() - start, added_mb=peak_mb() - base, checks=dict(formats.CHECKS))
        del sae
        base = reset_peak()
        start = time.perf_counter()
        SAE.load(path)
        out.update(reload_seconds=time.perf_counter() - start, reload_added_mb=peak_mb() - base,
                   checks=dict(formats.CHECKS))
    elif task == "sae_load_float64":
        path = os.path.join(scratch, "SAE-Res-standin-W64K-L0_50", "layer0.sae.pt")
        base = reset_peak()
        start = time.perf_counter()
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        finite = all(bool(torch.isfinite(t.sum(dtype=torch.float64))) for t in state.values())
        out.update(seconds=time.perf_counter() - start, added_mb=peak_mb() - base, finite=finite)
    print(json.dumps(out))


def sae_main(args) -> None:
    import tempfile

    import torch

    with tempfile.TemporaryDirectory(prefix="qscope-memory-bench-") as scratch:
        folder = os.path.join(scratch, "SAE-Res-standin-W64K-L0_50")
        os.makedirs(folder)
        gen = torch.Generator().manual_seed(0)
        d_model, d_sae = args.d_model, args.d_sae
        torch.save({"W_enc": torch.randn(d_sae, d_model, generator=gen), "W_dec": torch.randn(d_model, d_sae,
                    generator=gen), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_model)},
                   os.path.join(folder, "layer0.sae.pt"))
        old = time.time() - 60
        os.utime(os.path.join(folder, "layer0.sae.pt"), (old, old))  # not "just written": its check is remembered
        del gen
        print(f"SAE stand-in d_model {d_model} x d_sae {d_sae} (k 50, float32: "
              f"{2 * d_model * d_sae * 4 / 1e9:.2f} GB of weights); text of {args.tokens} tokens", flush=True)
        results = {}
        for task in ("sae_encode_dense", "sae_encode", "sae_load_float64", "sae_load"):
            if task.startswith("sae_load"):  # both read the file from the page cache, not the (slow) disk
                with open(os.path.join(folder, "layer0.sae.pt"), "rb") as handle:
                    while handle.read(1 << 26):
                        pass
            cmd = [sys.executable, __file__, "--sae-child", task, "--d-model", str(d_model), "--d-sae", str(d_sae),
                   "--tokens", str(args.tokens), "--scratch", scratch]
            res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                                 check=False)
            if res.returncode:
                raise RuntimeError(f"{task} failed:\n{res.stderr[-2000:]}")
            results[task] = json.loads(res.stdout.strip().splitlines()[-1])
        chunked, dense = results["sae_encode"], results["sae_encode_dense"]
        a = torch.load(os.path.join(scratch, "sae_encode.out.pt"))
        b = torch.load(os.path.join(scratch, "sae_encode_dense.out.pt"))
        same = torch.equal(a["indices"], b["indices"])
        diff = float((a["values"] - b["values"]).abs().max())
        print(f"encode {args.tokens} tokens: chunked ({chunked['chunk_rows']} rows a chunk) adds "
              f"{chunked['added_mb']:.0f} MB in {chunked['seconds']:.1f} s; dense (one chunk) adds "
              f"{dense['added_mb']:.0f} MB in {dense['seconds']:.1f} s; memory ratio dense/chunked "
              f"{dense['added_mb'] / max(chunked['added_mb'], 1):.1f}x, time ratio chunked/dense "
              f"{chunked['seconds'] / dense['seconds']:.2f}; same indices: {same}, largest value difference "
              f"{diff:.2g}", flush=True)
        load, f64 = results["sae_load"], results["sae_load_float64"]
        print(f"load (.pt, mmap; peaks count the file's mapped pages, {2 * d_model * d_sae * 4 / 1e6:.0f} MB, which "
              f"any use of the SAE touches): first {load['seconds']:.2f} s adding {load['added_mb']:.0f} MB (check in "
              f"slices), reload {load['reload_seconds']:.2f} s adding {load['reload_added_mb']:.0f} MB (check "
              f"remembered: {load['checks']}); the old float64 check alone: {f64['seconds']:.2f} s adding "
              f"{f64['added_mb']:.0f} MB", flush=True)


def child(task: str, n: int, max_length: int) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from qscope_lab import Lab

    lab = Lab.load()
    texts, labels = texts_and_labels(n)
    start = time.perf_counter()
    if task == "footprint":
        from qscope_lab.workflows.coverage import footprint

        footprint(lab, texts, 2, max_length=max_length, progress=False)
    elif task == "footprint_all":
        from qscope_lab.workflows.coverage import footprint

        footprint(lab, texts, 2, position="all", max_length=max_length, progress=False)
    elif task == "seed_fit":
        from qscope_lab.workflows.classify import SeedClassifier

        SeedClassifier(lab, max_length=max_length, progress=False).fit(texts, labels)
    elif task == "forward":  # the same length-sorted batches through lab.residuals, nothing kept
        for first in range(0, n, 256):
            chunk = sorted(texts[first:first + 256], key=len, reverse=True)
            for b in range(0, len(chunk), 16):
                lab.residuals(lab.tokenize(chunk[b:b + 16], max_length=max_length), [2])
    elif task == "encode":
        lab.encode(texts, 2, max_length=max_length)
    elif task != "baseline":
        raise SystemExit(f"unknown task {task}")
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": peak_mb(), "seconds": seconds, "n": n, "task": task}))


def run_child(task: str, n: int, max_length: int) -> dict:
    cmd = [sys.executable, __file__, "--child", task, "--n", str(n), "--max-length", str(max_length)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{task} n={n} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="texts in the 1x run (the 10x run has 10 times more)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per text")
    parser.add_argument("--all", action="store_true", help="also footprint(position='all')")
    parser.add_argument("--contrast", action="store_true", help="also Lab.encode of all texts (not streaming)")
    parser.add_argument("--forward", action="store_true",
                        help="also the bare forward passes footprint makes (lab.residuals, nothing kept)")
    parser.add_argument("--only", help="comma-separated tasks to run instead (footprint, footprint_all, "
                                       "seed_fit, forward, encode)")
    parser.add_argument("--sae", action="store_true", help="only the SAE encode / load measurements (issue 24)")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--d-sae", type=int, default=65536)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sae-child", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.max_length)
        return
    if args.sae_child:
        sae_child(args.sae_child, args.d_model, args.d_sae, args.tokens, args.scratch)
        return
    if args.sae:
        sae_main(args)
        return
    tasks = ["footprint"] + (["footprint_all"] if args.all else []) + ["seed_fit"] + (
        ["forward"] if args.forward else []) + (["encode"] if args.contrast else [])
    if args.only:
        tasks = args.only.split(",")
    base = run_child("baseline", args.n, args.max_length)["peak_mb"]
    print(f"baseline (import + Lab.load, embedded model): peak {base:.0f} MB; max_length {args.max_length}")
    for task in tasks:
        small, big = run_child(task, args.n, args.max_length), run_child(task, 10 * args.n, args.max_length)
        ratio = big["peak_mb"] / small["peak_mb"]
        net_small, net_big = small["peak_mb"] - base, big["peak_mb"] - base
        print(f"{task}: 1x N={args.n} peak {small['peak_mb']:.0f} MB, 10x N={10 * args.n} peak "
              f"{big['peak_mb']:.0f} MB, ratio {ratio:.2f}  (net of baseline {net_small:.0f} -> {net_big:.0f} MB; "
              f"{small['seconds']:.0f} s -> {big['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
