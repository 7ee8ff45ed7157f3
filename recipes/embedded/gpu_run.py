"""One run, end to end and on the clock: corpus in -> tokenizer'd streams -> Qwen3 weights -> one TopK SAE per
layer -> held-out quality -> everything packed for the trip back from the GPU machine.

    python recipes/embedded/gpu_run.py --data build/carry --out build/gpu_run --pack "$OUT" --minutes 8.5

``--data`` holds ``docs.jsonl.xz`` (corpus.py + dedup, then xz) and ``tokenizer/`` (tokenizer.py); the token
streams are made from them on the machine (seconds with 16 cores). ``--minutes`` is the whole run's budget from
process start: pre-training gets what the SAE stage (``--sae-minutes``) and the final evaluation and packing
(``--tail-minutes``) leave, and stops on its clock with its schedule annealed; every later stage is also bounded
by the clock. A stage that fails is logged and the rest still runs, so whatever exists is packed. Rerunning
with the same ``--out`` resumes pre-training from ``pretrain/ckpt.pt`` (on the same machine).

Writes under ``--out``: ``model/`` (fp16 safetensors, config says float32, tokenizer), ``saes/layer{n}
.sae.safetensors`` (bf16, Qwen-Scope convention), ``training/pretrain_log.jsonl``, ``training/sae_layer{n}.csv``,
``training/kl_layer{n}.csv``, ``sae_quality.json`` (FVE and CE cost per layer and language on held-out text),
``samples.json`` (greedy continuations, plain and with repetition penalty 1.3), ``summary.json`` and
``run.log``. ``--pack DIR`` then writes ``run.tar.partNN`` (each < 15 MiB: the device tool returns at most 8
files of 16 MiB), ``summary.json`` and ``run.log`` into DIR. Rejoin with ``cat run.tar.part* | tar x``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tarfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

START = time.time()
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # the recipes and the qscope_lab package of this checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPTS = ["The weather today is", "My favourite book is about", "In the morning I usually",
           "The history of the city", "今天的天气", "我最喜欢的书是", "这家酒店的服务", "中国的历史",
           "def read_file(path):\n", "import os\n"]
PART_BYTES = 15 * 1024 * 1024


class Run:
    """The run's folder, its log (stdout + run.log) and its clock."""

    def __init__(self, out: Path, minutes: float):
        self.out = out
        self.deadline = START + minutes * 60
        out.mkdir(parents=True, exist_ok=True)
        self.handle = open(out / "run.log", "a", encoding="utf-8")
        self.summary: dict = {"stages": {}, "errors": []}

    def left(self) -> float:
        return self.deadline - time.time()

    def log(self, record) -> None:
        line = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
        line = f"[{time.time() - START:7.1f}s] {line}"
        print(line, flush=True)
        self.handle.write(line + "\n")
        self.handle.flush()

    def stage(self, name: str, fn, *args, **kwargs):
        """Run one stage; its time goes into the summary; an exception is logged and returns None."""
        t0 = time.time()
        self.log(f"--- {name} ({self.left():.0f} s left)")
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - later stages and the packing must still run
            self.log(f"!!! {name} failed: {error!r}\n{traceback.format_exc()}")
            self.summary["errors"].append({"stage": name, "error": repr(error)})
            return None
        finally:
            self.summary["stages"][name] = round(time.time() - t0, 1)


def tokenize(run: Run, data: Path, tokenizer):
    from tokens import load_tokens, summary, tokenize_corpus

    folder = run.out / "tokens"
    if not (folder / "index.json").is_file():
        tokenize_corpus(data, tokenizer, folder)
    tokens, index = load_tokens(folder)
    table = summary(index)
    for row in table:
        run.log(f"{row['source']:22s} {row['lang']:5s} {row['documents']:7d} docs {row['chars'] / 1e6:7.2f}M chars "
                f"{row['tokens'] / 1e6:7.2f}M tokens")
    run.summary["corpus"] = table
    run.summary["corpus_tokens"] = {lang: sum(r["tokens"] for r in table if r["lang"] == lang)
                                    for lang in ("en", "zh", "code")}
    return tokens, index


def pretrain(run: Run, streams, tokenizer, model_spec, train_spec, device: str):
    from pretrain import build_model, save_model, train

    model = build_model(tokenizer, model_spec, train_spec.seed)
    n_params = sum(p.numel() for p in model.parameters())
    run.summary["parameters"] = n_params
    run.summary["model"] = asdict(model_spec)
    run.summary["train"] = asdict(train_spec)
    folder = run.out / "pretrain"
    folder.mkdir(parents=True, exist_ok=True)
    training = run.out / "training"
    training.mkdir(parents=True, exist_ok=True)
    log_path = training / "pretrain_log.jsonl"
    with open(log_path, "a") as handle:
        def log(record):
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            run.log(record)

        log({"event": "start", "parameters": n_params, "model": asdict(model_spec), "train": asdict(train_spec),
             "device": device})
        final = train(model, streams, train_spec, folder, device, log)
    run.summary["pretrain"] = final
    rates = [json.loads(line).get("tokens_per_s") for line in open(log_path)]
    rates = [r for r in rates if r]
    if rates:
        run.summary["pretrain"]["tokens_per_s_median"] = float(np.median(rates[len(rates) // 4:] or rates))
    save_model(model, tokenizer, run.out / "model", dtype=torch.float16)
    return model


@torch.no_grad()
def samples(run: Run, model, tokenizer, device: str, new_tokens: int = 40):
    model.eval()
    rows = []
    for prompt in PROMPTS:
        if run.left() < 10:  # packing still needs its seconds
            run.log("samples: out of time")
            break
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        row = {"prompt": prompt}
        for name, penalty in (("greedy", 1.0), ("greedy_rep1.3", 1.3)):
            out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=penalty,
                                 pad_token_id=tokenizer.eos_token_id)
            row[name] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)
        rows.append(row)
        run.log(row)
    (run.out / "samples.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))


def sae_stage(run: Run, model, streams, eos: int, args, device: str, seconds: float):
    """Collect activations once, then per layer: MSE training, KL fine-tune, save; then held-out quality."""
    import pandas as pd
    import sae_gpu

    from qscope_lab.saes.sae import SAE

    t0 = time.time()
    model.eval()
    layers = list(range(model.config.num_hidden_layers))
    d = model.config.hidden_size
    width = args.sae_width_mult * d
    gen = torch.Generator().manual_seed(1234)

    def windows():
        return streams.batch(gen, args.sae_batch_windows, args.seq)

    acts = sae_gpu.collect(model, windows, layers, args.act_tokens, eos, deadline=t0 + 0.2 * seconds)
    run.log({"activations": {layer: list(a.shape) for layer, a in acts.items()},
             "seconds": round(time.time() - t0, 1)})
    out = run.out / "saes"
    out.mkdir(parents=True, exist_ok=True)
    training = run.out / "training"
    training.mkdir(parents=True, exist_ok=True)
    trained = {}
    per_layer = (seconds * 0.75 - (time.time() - t0)) / len(layers)
    kl_share = 0.35 if args.kl_steps else 0.0
    for layer in layers:
        tl = time.time()
        p, records = sae_gpu.train_sae(acts[layer], width, args.sae_k, args.sae_tokens,
                                       seconds=per_layer * (1 - kl_share), seed=layer)
        pd.DataFrame(records).to_csv(training / f"sae_layer{layer}.csv", index=False)
        held = acts[layer][-20000:].float()  # a quick training-set check; held-out FVE is in sae_quality.json
        meta = {"train_fve_tail": round(sae_gpu.fve(p, args.sae_k, held), 4), "mse_steps": records[-1]["step"] + 1,
                "train_tokens": records[-1]["tokens"], "dead_fraction": records[-1]["dead_fraction"]}
        if args.kl_steps:
            p, kl_records = sae_gpu.finetune_kl(model, p, args.sae_k, layer, lambda: streams.batch(
                gen, 8, min(256, args.seq)), eos, args.kl_steps, seconds=per_layer * kl_share)
            pd.DataFrame(kl_records).to_csv(training / f"kl_layer{layer}.csv", index=False)
            meta.update(kl_finetune_steps=(kl_records[-1]["step"] + 1) if kl_records else 0,
                        kl_first=kl_records[0]["kl"] if kl_records else None,
                        kl_last=kl_records[-1]["kl"] if kl_records else None)
        trained[layer] = p
        sae = SAE(*(p[n].float().cpu() for n in ("W_enc", "b_enc", "W_dec", "b_dec")), k=args.sae_k,
                  meta={"layer": layer, "hook": "resid_post", **meta,
                        "trained_on": "qscope-embedded corpus (en/zh/code mix, deduplicated)"})
        sae.save(out / f"layer{layer}.sae.safetensors", dtype=torch.bfloat16, model="qscope-embedded", width=width)
        run.log({"layer": layer, **meta, "seconds": round(time.time() - tl, 1)})
    del acts
    heldout = {}
    for lang in ("en", "zh", "code"):
        parts = [s for src, s in sorted(streams.heldout.items()) if streams.lang_of[src] == lang]
        if parts:
            heldout[lang] = torch.cat(parts)
    rows = sae_gpu.quality(model, trained, args.sae_k, heldout, eos, min(args.seq, 256), windows=args.eval_windows)
    for row in rows:
        run.log(row)
    (run.out / "sae_quality.json").write_text(json.dumps(rows, indent=1))
    run.summary["sae"] = {"k": args.sae_k, "width": width, "layers": len(layers), "quality": rows,
                          "min_fve": min(r["fve"] for r in rows), "max_ce_delta": max(r["ce_delta"] for r in rows)}


def pack(run: Run, folder: Path) -> list[str]:
    """run.tar (the outputs, without checkpoints and token streams) split into < 15 MiB parts, plus
    summary.json and run.log, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tar_path = run.out / "run.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(run.out.rglob("*")):
            rel = path.relative_to(run.out)
            if path.is_file() and rel.parts[0] not in ("pretrain", "tokens") and path.name != "run.tar":
                tar.add(path, arcname=str(rel))
    names = []
    with open(tar_path, "rb") as src:
        for i in range(100):
            chunk = src.read(PART_BYTES)
            if not chunk:
                break
            name = f"run.tar.part{i:02d}"
            (folder / name).write_bytes(chunk)
            names.append(name)
    tar_path.unlink()
    for name in ("summary.json", "run.log"):
        if (run.out / name).is_file():
            (folder / name).write_bytes((run.out / name).read_bytes())
            names.append(name)
    return names


def main(argv=None) -> dict:
    from pretrain import ModelSpec, Streams, TrainSpec, add_model_arguments, device_default, specs_from

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="build/carry", help="folder with docs.jsonl(.xz) and tokenizer/")
    parser.add_argument("--out", default="build/gpu_run")
    parser.add_argument("--pack", default=os.environ.get("OUT"), help="folder for the packed results ($OUT)")
    parser.add_argument("--minutes", type=float, default=8.5, help="the whole run's budget from process start")
    parser.add_argument("--sae-minutes", type=float, default=1.5)
    parser.add_argument("--tail-minutes", type=float, default=0.5, help="samples, final summary and packing")
    parser.add_argument("--sae-k", type=int, default=32)
    parser.add_argument("--sae-width-mult", type=int, default=16)
    parser.add_argument("--sae-tokens", type=int, default=12_000_000, help="MSE-stage tokens per layer (at most)")
    parser.add_argument("--act-tokens", type=int, default=3_000_000, help="activation rows collected per layer")
    parser.add_argument("--sae-batch-windows", type=int, default=64)
    parser.add_argument("--kl-steps", type=int, default=400)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--sample-tokens", type=int, default=40, help="new tokens per sample continuation")
    parser.add_argument("--device", default=device_default())
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_model_arguments(parser)
    parser.set_defaults(**{k: v for k, v in {**asdict(ModelSpec()), **asdict(TrainSpec())}.items()
                           if k in ("layers", "hidden", "seq", "batch")})
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(Path(args.out), args.minutes)
    run.summary.update(device=args.device, torch=torch.__version__, python=platform.python_version(),
                       gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                       argv=sys.argv if argv is None else argv, budget_minutes=args.minutes)
    from transformers import AutoTokenizer

    data = Path(args.data)
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    loaded = run.stage("tokenize", tokenize, run, data, tokenizer)
    model = None
    if loaded is not None:
        streams = Streams(*loaded, device=args.device)
        model_spec, train_spec = specs_from(args)
        train_spec.minutes = max(0.05, (run.left() - 60 * (args.sae_minutes + args.tail_minutes)) / 60)
        run.log(f"pre-training budget {train_spec.minutes:.2f} min")
        model = run.stage("pretrain", pretrain, run, streams, tokenizer, model_spec, train_spec, args.device)
    if model is not None:
        sae_seconds = max(5.0, run.left() - 60 * args.tail_minutes)
        run.stage("saes", sae_stage, run, model, streams, tokenizer.eos_token_id, args, args.device, sae_seconds)
        run.stage("samples", samples, run, model, tokenizer, args.device, args.sample_tokens)
    run.summary["wall_minutes"] = round((time.time() - START) / 60, 2)
    (run.out / "summary.json").write_text(json.dumps(run.summary, indent=1, ensure_ascii=False))
    if args.pack:
        names = pack(run, Path(args.pack))
        run.log(f"packed into {args.pack}: {names}")
        (Path(args.pack) / "run.log").write_bytes((run.out / "run.log").read_bytes())
    run.log(f"done in {(time.time() - START) / 60:.2f} min; errors: {run.summary['errors']}")
    return run.summary


if __name__ == "__main__":
    summary = main()
    sys.exit(1 if summary["errors"] else 0)
