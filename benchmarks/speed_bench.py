"""Speed where users wait (issue 17): qscope_lab against the plain way of doing the same job, side by side.

Every row is a ratio of medians over interleaved repetitions (a, b, a, b, ...), measured in this one run on the
embedded default (``Lab.load()``), so background load hits both sides alike:

1. Generation, 32 greedy tokens: ``lab.generate`` unsteered vs ``model.generate``; steered (``baseline=False``)
   vs ``model.generate`` with the same edit made by a ``register_forward_hook``; steered with its baseline (two
   rows, one batched run) vs the hooked ``model.generate`` on the same two rows; the hook itself vs no hook.
2. ``lab.reconstruct`` vs four plain forwards: the same batches, one ``model(**enc)`` on four copies (clean,
   SAE spliced in, SAE plus error term, zero-ablated, spliced by a forward hook), the same SAE encode / decode
   and CE.
3. Import times, each in a fresh interpreter: ``import qscope_lab``, ``from qscope_lab import Lab``,
   ``import qscope_lab.widgets`` and the ``qscope-lab saes`` command, against ``import torch``.
4. Feature cards: the first card of a layer (a fresh reference corpus) vs a later card of the same layer, built
   inside a running event loop as in a kernel (a fill of the rest of the corpus is finished untimed between reps).

Run: ``python benchmarks/speed_bench.py`` (about 3 min on 2 idle cores) or ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import medians  # benchmarks/timing.py: the one timing rule

THREADS = 2
PROMPT = "The weather today is"
NEW = 32
ALPHA = 8.0
BIN = Path(sys.executable).parent




def row(label: str, ours: float, plain: float, target: str = "") -> None:
    print(f"  {label:<58} {ours * 1000:8.1f} ms vs {plain * 1000:8.1f} ms  ratio {ours / plain:5.2f}  {target}")


# ---------------------------------------------------------------------------------------------- 1. generation
def bench_generation(lab, layer: int, feature: int, repeats: int) -> None:
    hf, tok = lab.hf_model, lab.tokenizer
    one, two = lab.tokenize([PROMPT]), lab.tokenize([PROMPT, PROMPT])
    d = lab.sae(layer).W_dec[:, feature].to(hf.dtype)
    block = dict(hf.named_modules())[f"{lab.layers_path}.{layer}"]
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=tok.pad_token_id)
    rows_to_steer = {"all": slice(None)}

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = h.clone()
        h[rows_to_steer["all"]] += ALPHA * d
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def plain(enc, steer_rows=None):
        handle = None
        if steer_rows is not None:
            rows_to_steer["all"] = steer_rows
            handle = block.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return hf.generate(**enc, **kw)
        finally:
            if handle is not None:
                handle.remove()

    steer = {feature: ALPHA}
    cases = [
        ("lab.generate, no steering / model.generate", lambda: lab.generate(PROMPT, **kw_lab()),
         lambda: plain(one), "target <= 1.10"),
        ("lab.generate steered, baseline=False / generate + hook", lambda: lab.generate(
            PROMPT, layer=layer, steer=steer, baseline=False, **kw_lab()), lambda: plain(one, slice(None)),
         "target <= 1.10"),
        ("lab.generate steered + baseline (2 rows) / same + hook", lambda: lab.generate(
            PROMPT, layer=layer, steer=steer, **kw_lab()), lambda: plain(two, slice(1, 2)), "target <= 1.10"),
        ("model.generate + hook / model.generate (the hook's cost)", lambda: plain(one, slice(None)),
         lambda: plain(one), ""),
    ]
    # the same tokens on both sides, or the comparison is void
    ours = lab.generate(PROMPT, layer=layer, steer=steer, baseline=False, **kw_lab()).steered_ids[0]
    theirs = plain(one, slice(None))[0, one["input_ids"].shape[1]:].tolist()
    print(f"  (steered ids identical to generate + hook: {ours == theirs})")
    for label, a, b, target in cases:
        t_a, t_b = medians(a, b, repeats=repeats)
        row(label, t_a, t_b, target)


def kw_lab() -> dict:
    return dict(max_new_tokens=NEW, min_new_tokens=NEW)


# ---------------------------------------------------------------------------------------------- 2. reconstruct
def bench_reconstruct(lab, layer: int, texts: list[str], repeats: int) -> None:
    from qscope_lab.core.scan import scan

    sae, hf = lab.sae(layer), lab.hf_model
    block = dict(hf.named_modules())[f"{lab.layers_path}.{layer}"]

    @torch.no_grad()
    def plain() -> float:
        """Four copies of every batch in one plain forward; the same statistics as the report."""
        ce_sum = torch.zeros(4)
        for batch in scan(lab, texts, (), batch_size=4, max_length=128, skip_first=True):
            n, counted, real = len(batch), batch.counted, batch.real
            state = {}

            def hook(module, args, output, n=n, counted=counted, state=state):
                h = output[0] if isinstance(output, tuple) else output
                clean = h[:n]
                values, indices = sae.encode_sparse(clean[counted])
                x_hat = sae.decode_sparse(values, indices)
                state.update(x=clean[counted], x_hat=x_hat, values=values)
                out = h.clone()
                out[n:2 * n][counted] = x_hat.to(h.dtype)
                out[2 * n:3 * n][counted] = (x_hat + (clean[counted].to(x_hat.dtype) - x_hat)).to(h.dtype)
                out[3 * n:][counted] = 0
                return (out, *output[1:]) if isinstance(output, tuple) else out

            handle = block.register_forward_hook(hook)
            try:
                enc = {k: torch.cat([v] * 4) for k, v in batch.enc.items()}
                logits = hf(**enc).logits
            finally:
                handle.remove()
            ids, ok = batch.enc["input_ids"], real[:, 1:] & real[:, :-1]
            for v in range(4):
                losses = F.cross_entropy(logits[v * n:(v + 1) * n, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                         reduction="none").view(ok.shape)[ok]
                ce_sum[v] += losses.sum()
            x, x_hat = state["x"], state["x_hat"]
            _ = ((x - x_hat).pow(2).sum(), F.cosine_similarity(x, x_hat, dim=-1).sum(), (state["values"] > 0).sum())
        return float(ce_sum[0])

    ours = lambda: lab.reconstruct(texts, layer=layer, batch_size=4, max_length=128)
    report = ours()
    print(f"  ({len(texts)} texts, {int(report.tokens[0])} tokens; columns: {', '.join(report.columns[1:])})")
    t_a, t_b = medians(ours, plain, repeats=repeats)
    row("lab.reconstruct / four plain forwards", t_a, t_b, "target <= 1.05")


# ---------------------------------------------------------------------------------------------- 3. imports
IMPORTS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import qscope_lab": [sys.executable, "-c", "import qscope_lab"],
    "from qscope_lab import Lab": [sys.executable, "-c", "from qscope_lab import Lab"],
    "import qscope_lab.widgets": [sys.executable, "-c", "import qscope_lab.widgets"],
    "qscope-lab saes": [str(BIN / "qscope-lab"), "saes"],
}


def bench_imports(repeats: int) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    runs = [lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True, env=env) for cmd in IMPORTS.values()]
    times = dict(zip(IMPORTS, medians(*runs, repeats=repeats)))
    torch_t = times["import torch"]
    for name, t in times.items():
        print(f"  {name:<30} {t * 1000:8.0f} ms   {t / torch_t:5.2f}x import torch")
    print(f"  ratio import qscope_lab.widgets / from qscope_lab import Lab  "
          f"{times['import qscope_lab.widgets'] / times['from qscope_lab import Lab']:5.2f}  (target <= 1.3)")
    print(f"  qscope-lab saes {times['qscope-lab saes']:.2f} s  (target < 0.5 s)")


# ---------------------------------------------------------------------------------------------- 4. feature cards
def bench_cards(lab, layer: int, feature: int, repeats: int) -> None:
    from qscope_lab.analysis.reference import Reference
    from qscope_lab.widgets import FeatureCard

    refs = []

    def first():
        refs.append(Reference(lab))
        FeatureCard(lab, layer, feature, reference=refs[-1])

    def settle():  # a background fill (if any) finishes untimed, so it never overlaps the next timing
        wait = getattr(refs[-1], "wait", None) if refs else None
        if wait is not None:
            wait()

    shared = Reference(lab)
    FeatureCard(lab, layer, feature, reference=shared)
    settle_shared = getattr(shared, "wait", lambda: None)
    settle_shared()
    later = lambda: FeatureCard(lab, layer, (feature + 1) % lab.sae(layer).d_sae, reference=shared)
    t_first, t_later = medians(first, later, repeats=repeats, between=settle)
    row("first FeatureCard of a layer / a later card", t_first, t_later)


async def _in_a_loop(fn, *args):
    return fn(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--only", nargs="*", default=["generation", "reconstruct", "imports", "cards"])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    repeats = 3 if args.quick else 9

    from qscope_lab import Lab
    from qscope_lab.analysis.reference import default_texts
    from qscope_lab.embedded import known_features

    lab = Lab.load()
    layer, feature = known_features()["chinese"]
    print(f"{lab!r}; torch threads {torch.get_num_threads()}; medians of {repeats} interleaved repetitions")
    if "generation" in args.only:
        print(f"\n1. generation: {NEW} greedy tokens, steering L{layer} f{feature} add {ALPHA:+g} at every position")
        bench_generation(lab, layer, feature, repeats)
    if "reconstruct" in args.only:
        print(f"\n2. reconstruct at layer {layer}")
        bench_reconstruct(lab, layer, default_texts()[:24], repeats)
    if "imports" in args.only:
        print("\n3. imports (fresh interpreters)")
        bench_imports(max(3, repeats // 2))
    if "cards" in args.only:
        print(f"\n4. feature cards at layer {layer} (reference corpus: {len(default_texts())} shipped documents)")
        # built inside a running event loop, as in a Jupyter kernel (where a first card may preview and fill later)
        asyncio.run(_in_a_loop(bench_cards, lab, layer, feature, max(3, repeats // 2)))


if __name__ == "__main__":
    main()
