"""Feature index: build throughput against the bare traced forward + SAE encode over the same tokens, peak RSS
building over 1x and 10x a corpus, time to open a card from the index vs the on-the-fly reference corpus, and the
Ray engine against the local one. Everything on the embedded default, side by side in one run.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/index_bench.py [--reps 3] [--no-ray]

Timings are medians of interleaved repetitions (A, B, A, B, ...), so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from qscope_lab import FeatureIndex, Lab
docs = json.load(open(sys.argv[1]))
lab = Lab.load(index=False)
start = time.perf_counter()
index = FeatureIndex.build(lab, docs, [2], sys.argv[2])
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tokens": index.tokens,
                  "seconds": time.perf_counter() - start}))
"""


def corpus(copies: int = 1) -> list[dict]:
    from qscope_lab.embedded import reference_documents

    docs = [{"text": d["text"], "source": d["source"]} for d in reference_documents()]
    return [{"text": d["text"] + ("" if c == 0 else f" ({c})"), "source": d["source"]}
            for c in range(copies) for d in docs]


def bare(lab, docs, layers, params) -> float:
    """The physical limit: the same chunks through the one scan loop and each layer's SAE encode, nothing kept."""
    from qscope_lab.core.scan import scan

    start = time.perf_counter()
    rows = [ids[s:s + params["context_length"]] for ids in lab.token_ids([d["text"] for d in docs])
            for s in range(0, len(ids), params["context_length"])]
    for batch in scan(lab, rows, layers, batch_size=params["batch_size"], progress=False):
        for layer in layers:
            lab.sae(layer).encode_sparse(batch.residuals[layer][batch.counted])
    return time.perf_counter() - start


def build(lab, docs, layers, path, **options) -> float:
    from qscope_lab import FeatureIndex

    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    FeatureIndex.build(lab, docs, layers, path, **options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-rss", action="store_true", help="skip the 1x / 10x peak-RSS builds (minutes)")
    args = parser.parse_args()

    from qscope_lab import FeatureIndex, Lab
    from qscope_lab.analysis import index_view
    from qscope_lab.analysis.reference import Reference
    from qscope_lab.index.build import DEFAULTS

    tmp = Path(tempfile.mkdtemp(prefix="index-bench-"))
    lab = Lab.load(index=False)
    docs, layers = corpus(1), list(range(lab.n_layers))
    bare(lab, docs[:16], layers, DEFAULTS)  # warm-up: load every SAE
    times = {"bare": [], "build": []}
    for _ in range(args.reps):
        times["bare"].append(bare(lab, docs, layers, DEFAULTS))
        times["build"].append(build(lab, docs, layers, tmp / "x"))
    index = FeatureIndex.open(tmp / "x")
    b, x = statistics.median(times["bare"]), statistics.median(times["build"])
    print(f"corpus: {len(docs)} documents, {index.tokens:,} counted tokens, layers {layers}")
    print(f"build throughput     {index.tokens / x:8,.0f} tok/s   bare forward + SAE encode {index.tokens / b:8,.0f} "
          f"tok/s   ratio {b / x:.2f}x (target >= 0.8)")
    per_token_layer_s = b / index.tokens / len(layers)
    disk = sum(p.stat().st_size for p in (tmp / "x").rglob("*") if p.is_file())
    print(f"  per token and layer: bare {per_token_layer_s * 1e6:.1f} us, "
          f"build {x / index.tokens / len(layers) * 1e6:.1f} us; index on disk {disk / 1e6:.1f} MB")
    print(f"  (disk per indexed layer {disk / len(layers) / 1e6:.1f} MB for {index.manifest['d_sae']} features)")

    # peak RSS: fresh processes, 1x and 10x the corpus, one layer
    rss = {}
    for copies in () if args.no_rss else (1, 10):
        data = tmp / f"docs{copies}.json"
        data.write_text(json.dumps(corpus(copies)))
        out = subprocess.run([sys.executable, "-c", CHILD, str(data), str(tmp / f"rss{copies}")], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rss[copies] = json.loads(out)
    if rss:
        print(f"peak RSS building     1x ({rss[1]['tokens']:,} tok) {rss[1]['rss_mb']:.0f} MB   10x "
              f"({rss[10]['tokens']:,} tok) {rss[10]['rss_mb']:.0f} MB   ratio "
              f"{rss[10]['rss_mb'] / rss[1]['rss_mb']:.2f}x (target <= 1.1)")

    # open a card: from the index (a fresh open each time) vs the reference corpus (encoded on first use);
    # the one-time imports both pay (altair, pyarrow's readers) happen first, outside the timings
    FeatureIndex.open(tmp / "x").top_contexts(layer := 2, 0)
    Reference(lab, [d["text"] for d in docs[:2]]).top_contexts(layer, 0)
    import altair  # noqa: F401
    features = index.stats(2).sort_values("firing_count").feature.tolist()[-50:]
    card_times = {"index": [], "reference": [], "index_warm": [], "reference_warm": []}
    for rep in range(args.reps):
        start = time.perf_counter()
        opened = FeatureIndex.open(tmp / "x")
        lab.use_index(opened)
        index_view.card(lab, opened, layer, features[rep], 8, 10)
        card_times["index"].append(time.perf_counter() - start)
        start = time.perf_counter()
        index_view.card(lab, opened, layer, features[rep + 10], 8, 10)
        card_times["index_warm"].append(time.perf_counter() - start)
        lab.use_index(None)
        start = time.perf_counter()
        ref = Reference(lab)
        ref.top_contexts(layer, features[rep], n=8), ref.feature_stats(layer, features[rep])
        card_times["reference"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref.top_contexts(layer, features[rep + 10], n=8), ref.feature_stats(layer, features[rep + 10])
        card_times["reference_warm"].append(time.perf_counter() - start)
    m = {k: statistics.median(v) * 1e3 for k, v in card_times.items()}
    print(f"open a card           index {m['index']:.0f} ms (next feature {m['index_warm']:.0f} ms)   reference "
          f"{m['reference']:.0f} ms (next feature {m['reference_warm']:.0f} ms)   ratio "
          f"{m['reference'] / m['index']:.0f}x (target: index under 100 ms)")

    if not args.no_ray:
        import ray

        small = docs[:96]
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        ray_times = {"local": [], "ray": []}
        for _ in range(args.reps):
            ray_times["local"].append(build(lab, small, layers, tmp / "l", shard_documents=24))
            ray_times["ray"].append(build(lab, small, layers, tmp / "r", shard_documents=24, engine="ray", workers=2))
        ray.shutdown()
        lo, ra = statistics.median(ray_times["local"]), statistics.median(ray_times["ray"])
        print(f"ray engine (2 actors, 2 cores, {len(small)} docs, 4 shards)   local {lo:.1f} s   ray {ra:.1f} s   "
              f"ratio {ra / lo:.2f}x (+ {startup:.0f} s cluster start once)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
