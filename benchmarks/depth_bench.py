"""Feature index at full depth under a memory budget (issue 24): a Qwen3-1.7B-shaped stand-in (28 layers, hidden
2048, random weights) with W32K k50 SAEs in the hub's file format, written to a scratch folder; the index over all
28 layers built with ``memory_budget="6GB"``, side by side with the bare forward + encode of the same tokens and
layers. Prints:

- peak resident memory beyond the loaded model during the build, against the budget (target <= 1.2x);
- SAE file reads per layer (target 1);
- build throughput against the bare forward + encode (target >= 0.8x): the bare run is one forward over all the
  tokens keeping the 28 block outputs, then per layer its SAE read once and every token encoded (the least any
  index of these tokens and layers must do); medians of interleaved runs, in wall-clock and in CPU time (on a
  shared machine the CPU time is the steadier of the two);
- per-feature memory and disk, measured, and the plan's bound; what a 36-layer W64K and a 64-layer W80K group
  need under a given budget (layers per pass, passes), from the plan's formula and from the measured figures.

    nice -n 10 .venv/bin/python benchmarks/depth_bench.py [--tokens 1024] [--budget 6GB] [--folder /tmp/qscope-depth]

Not part of the test suite: staging writes 15 GB of SAE files (once; reused), a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

GROUP = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"
OPTIONS = {"context_length": 128, "batch_size": 8}


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out["VmRSS"], out["VmHWM"]


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5), so the next peak is the job's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def corpus(lab, tokens: int) -> list[dict]:
    """Reference documents of the embedded default, as many as make ``tokens`` tokens."""
    from qscope_lab.embedded import reference_documents

    docs, total = [], 0
    while total < tokens:
        for row in reference_documents():
            n = len(lab.tokenizer(row["text"])["input_ids"])
            docs.append({"text": row["text"], "source": row["source"]})
            total += n
            if total >= tokens:
                break
    return docs


def bare(lab, docs, layers, params) -> tuple[float, int, float]:
    """One forward over the chunks keeping every layer's counted block outputs, then each layer's SAE read once
    and every token encoded. Returns (seconds, SAE reads, seconds of the forward alone)."""
    import torch

    from qscope_lab.core.scan import scan

    lab.saes.clear()
    loads = lab.saes.loads
    start = time.perf_counter()
    rows = [ids[s:s + params["context_length"]] for ids in lab.token_ids([d["text"] for d in docs])
            for s in range(0, len(ids), params["context_length"])]
    kept: dict[int, list] = {layer: [] for layer in layers}
    for batch in scan(lab, rows, layers, batch_size=params["batch_size"], progress=False):
        for layer in layers:
            kept[layer].append(batch.residuals[layer][batch.counted].detach())
    forward = time.perf_counter() - start
    with torch.no_grad():
        for layer in layers:
            sae = lab.sae(layer)
            for x in kept.pop(layer):
                sae.encode_sparse(x)
            del sae
            lab.saes.clear()
    return time.perf_counter() - start, lab.saes.loads - loads, forward


def occupancy() -> tuple[float, int]:
    """(mean, largest) number of histogram bins a feature's samples occupy in the shipped index of the embedded
    default (150K tokens: every feature has fired often enough for its rows to have settled)."""
    import numpy as np

    from qscope_lab import FeatureIndex
    from qscope_lab.embedded import INDEX_DIR
    from qscope_lab.index import schema

    index = FeatureIndex.open(INDEX_DIR)
    means, tops = [], []
    for layer in index.layers:
        table = schema.open_contexts(schema.layer_folder(index.path / "state", layer) / schema.CONTEXTS).read_all()
        sample = table.column("kind").to_numpy() == schema.SAMPLE
        bins = np.bincount(table.column("feature").to_numpy()[sample], minlength=index.d_sae)
        bins = bins / index.params["samples_per_bin"]
        means.append(bins.mean())
        tops.append(int(bins.max()))
    return float(np.mean(means)), max(tops)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def needs_table(per_feature_measured: float, params: dict, budgets=(16e9, 32e9, 64e9, 128e9)) -> list[dict]:
    """Per group and budget: layers per pass and passes, from the plan's bound and from ``per_feature_measured``
    (bytes a layer holds per feature, the running state and a shard's together)."""
    from qscope_lab.base.budget import MemoryBudgetError
    from qscope_lab.index.build import plan_for
    from qscope_lab.saes.registry import find_group

    out = []
    for repo in ("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", "Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50"):
        g = find_group(repo)
        assert g is not None
        for budget in budgets:
            row = {"group": repo.split("/")[1], "layers": g.n_layers, "d_sae": g.d_sae, "budget": gb(budget)}
            try:
                p = plan_for(range(g.n_layers), g.d_model, g.d_sae, params, int(budget))
                row.update(per_layer_bound=gb(p.per_layer), layers_per_pass=p.layers_per_group,
                           passes=len(p.groups))
            except MemoryBudgetError:
                p = plan_for(range(g.n_layers), g.d_model, g.d_sae, params, int(1e15))
                row.update(per_layer_bound=gb(p.per_layer), layers_per_pass=0, passes="refused")
            measured = p.notes["sae"] + per_feature_measured * g.d_sae + p.notes["residual"]
            room = budget - p.fixed
            row.update(per_layer_measured=gb(measured),
                       layers_per_pass_measured=int(max(0, min(g.n_layers, room // measured))))
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--budget", default="6GB")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "qscope-depth"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from qscope_lab import FeatureIndex, Lab
    from qscope_lab.base.budget import parse_bytes
    from qscope_lab.index import schema
    from qscope_lab.index.build import build_params, plan
    from qscope_lab.index.partial import ROW_BYTES
    from qscope_lab.testing.standins import stage

    budget = parse_bytes(args.budget)
    t0 = time.perf_counter()
    model_dir, sae_dir = stage(GROUP, args.folder, shape="real", n_layers=args.layers, dtype="bfloat16")
    print(f"staged {model_dir.name} + {sae_dir.name} in {time.perf_counter() - t0:.0f} s "
          f"({sum(f.stat().st_size for f in sae_dir.iterdir()) / 1e9:.1f} GB of SAE files)")
    extra = {"memory_budget": budget} if "memory_budget" in inspect.signature(Lab.load).parameters else {}
    lab = Lab.load(model_dir, saes=sae_dir, dtype=torch.bfloat16, sae_dtype=torch.bfloat16, index=False, **extra)
    layers = list(range(lab.n_layers))
    docs = corpus(lab, args.tokens)
    params = build_params(OPTIONS)
    layer_plan = plan(lab, layers, params, budget)
    print(f"plan: {layer_plan}")

    import gc
    import statistics

    out = Path(tempfile.mkdtemp(prefix="depth-index-"))
    # warm-up, untimed: both traces compiled once (nnsight parses each with-block on its first run)
    bare(lab, docs[:1], layers[:1], params)
    one_layer = layer_plan.fixed + layer_plan.per_layer
    FeatureIndex.build(lab, docs[:1], layers[:2], out / "warm-up", memory_budget=one_layer, **OPTIONS)
    runs: dict[str, list] = {"build": [], "bare": []}
    peaks, reads, forwards = [], [], []
    index = None
    for rep in range(args.reps):  # interleaved (bare, build, bare, build, ...): load on the machine hits both
        lab.saes.clear()
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        _, bare_reads, forward_s = bare(lab, docs, layers, params)
        runs["bare"].append((time.perf_counter() - wall, time.process_time() - cpu))
        forwards.append(forward_s)
        lab.saes.clear()
        gc.collect()
        base, _ = rss()
        reset_peak()
        loads = lab.saes.loads
        wall, cpu = time.perf_counter(), time.process_time()
        index = FeatureIndex.build(lab, docs, layers, out / f"index{rep}", memory_budget=budget, **OPTIONS)
        runs["build"].append((time.perf_counter() - wall, time.process_time() - cpu))
        peaks.append(rss()[1] - base)
        reads.append((lab.saes.loads - loads) / len(layers))
        print(f"rep {rep}: bare {runs['bare'][-1][0]:.1f} s ({runs['bare'][-1][1]:.1f} s CPU), build "
              f"{runs['build'][-1][0]:.1f} s ({runs['build'][-1][1]:.1f} s CPU), peak beyond the model "
              f"{gb(peaks[-1])}", flush=True)
    assert index is not None
    tokens = index.tokens
    build_s, bare_s = (statistics.median(r[0] for r in runs[k]) for k in ("build", "bare"))
    build_cpu, bare_cpu = (statistics.median(r[1] for r in runs[k]) for k in ("build", "bare"))
    forward_s = statistics.median(forwards)
    beyond = max(peaks)
    # without the saved block outputs, pass g would run the forward from the embeddings to its last layer
    rerun = sum(g[-1] + 1 for g in layer_plan.groups) / len(layers)

    d_sae = index.d_sae
    width = 2 * params["window"] + 1
    rows = [schema.open_contexts(schema.layer_folder(index.path / "state", x) / schema.CONTEXTS).read_all().num_rows
            for x in layers]
    disk = [sum(f.stat().st_size for f in schema.layer_folder(index.path / "state", x).iterdir()) for x in layers]
    kept_per_feature = sum(rows) / len(layers) / d_sae
    tables = params["n_bins"] * 16 + 24  # histogram + sample thresholds + count / sum / max / top threshold
    measured_feature = tables + kept_per_feature * (ROW_BYTES + width * 8)
    state_bound = layer_plan.notes["state"]["total"] / d_sae
    result = {
        "tokens": tokens, "layers": len(layers), "d_sae": d_sae, "budget": gb(budget),
        "groups": len(layer_plan.groups), "layers_per_group": layer_plan.layers_per_group,
        "peak_rss_beyond_model": gb(beyond), "peak_vs_budget": round(beyond / budget, 3),
        "sae_reads_per_layer": max(reads), "bare_sae_reads_per_layer": bare_reads / len(layers),
        "build_s": round(build_s, 1), "bare_s": round(bare_s, 1),
        "build_tokens_per_s": round(tokens / build_s, 1), "bare_tokens_per_s": round(tokens / bare_s, 1),
        "throughput_vs_bare": round(bare_s / build_s, 3),
        "build_cpu_s": round(build_cpu, 1), "bare_cpu_s": round(bare_cpu, 1),
        "throughput_vs_bare_cpu": round(bare_cpu / build_cpu, 3),
        "forward_s": round(forward_s, 1),
        "forward_s_without_saved_block_outputs": round(forward_s * rerun, 1),
        "kept_rows_per_feature_layer": round(kept_per_feature, 2),
        "memory_per_feature_layer_measured_bytes": round(measured_feature),
        "memory_per_feature_layer_bound_bytes": round(state_bound),
        "disk_per_feature_layer_measured_bytes": round(sum(disk) / len(layers) / d_sae, 1),
    }
    print(json.dumps(result, indent=1))
    print("targets: peak_vs_budget <= 1.2, sae_reads_per_layer == 1, throughput_vs_bare >= 0.8 (medians of "
          f"{args.reps} interleaved runs; wall clock and this process's CPU time)")
    # a large corpus: every feature's rows settle at n_top + samples_per_bin x the bins its firings occupy
    mean_bins, top_bins = occupancy()
    row_memory = ROW_BYTES + width * 8
    settled_rows = params["n_top"] + params["samples_per_bin"] * mean_bins
    settled = tables + settled_rows * row_memory
    # steady: the running state and the shard being folded (each with its window pool up to twice its rows)
    steady = 2 * (tables + settled_rows * (row_memory + width * 8)) + 2 * layer_plan.notes["pending_bytes"] / d_sae
    contexts = sum((schema.layer_folder(index.path / "state", x) / schema.CONTEXTS).stat().st_size for x in layers)
    disk_row = contexts / max(sum(rows), 1)
    disk_tables = (sum(disk) - contexts) / len(layers) / d_sae
    print(json.dumps({
        "settled_bins_per_feature_mean": round(mean_bins, 1), "settled_bins_per_feature_max": top_bins,
        "settled_rows_per_feature": round(settled_rows, 1),
        "memory_per_feature_layer_kept_settled_bytes": round(settled),
        "memory_per_feature_layer_steady_settled_bytes": round(steady),
        "disk_per_row_bytes": round(disk_row, 1),
        "disk_per_feature_layer_settled_bytes": round(disk_tables + settled_rows * disk_row)}, indent=1))
    import pandas as pd

    print("\nwhat a group needs (per_layer_bound: the plan's; per_layer_measured: the steady settled state):")
    print(pd.DataFrame(needs_table(steady, params)).to_string(index=False))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
