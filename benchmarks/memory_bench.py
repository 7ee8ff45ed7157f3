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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.max_length)
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
