"""Unpack a gpu_run.py result, check that it loads, and (with --install) put it in place as the embedded default.

    python recipes/embedded/install_run.py --parts /work/.device/<files_at> --out build/gpu_run_result
    python recipes/embedded/install_run.py --parts ... --out build/gpu_run_result --install

The parts are the ``run.tar.partNN`` files the device tool brought back from $OUT. Checking means: every promised
file is there, the model loads as a ``Qwen3ForCausalLM`` through ``Lab.load`` with its SAEs, and a reconstruction
report runs. ``--install`` then replaces qscope_lab/embedded/model/ and saes/ and the training facts in
training/ (the old k_sweep.jsonl and per-layer CSVs go: they describe the old model). What depends on the
model must be rebuilt afterwards -- the commands are printed: evaluate.py (evaluation.json, the named features),
reference_corpus.py, feature_index.py, model_card.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EMBEDDED = HERE.parents[1] / "qscope_lab" / "embedded"
REQUIRED = ["model/config.json", "model/model.safetensors", "model/tokenizer.json", "summary.json",
            "sae_quality.json", "training/pretrain_log.jsonl"]


def unpack(parts_dir: Path, out: Path) -> Path:
    parts = sorted(parts_dir.glob("run.tar.part*"))
    if not parts:
        raise FileNotFoundError(f"no run.tar.part* files in {parts_dir}")
    out.mkdir(parents=True, exist_ok=True)
    joined = out / "run.tar"
    with open(joined, "wb") as handle:
        for part in parts:
            handle.write(part.read_bytes())
    with tarfile.open(joined) as tar:
        tar.extractall(out, filter="data")
    joined.unlink()
    return out


def check(run: Path) -> dict:
    missing = [name for name in REQUIRED if not (run / name).is_file()]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    config = json.loads((run / "model" / "config.json").read_text())
    n_layers = config["num_hidden_layers"]
    missing += [f"saes/layer{n}.sae.safetensors" for n in range(n_layers)
                if not (run / "saes" / f"layer{n}.sae.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(f"the run in {run} lacks {missing} (errors it logged: {summary.get('errors')})")
    from qscope_lab import Lab

    lab = Lab.load(str(run / "model"), saes=str(run / "saes"), device="cpu", index=False)
    report = lab.reconstruct(["The weather today is fine. 今天的天气很好。", "def f(x):\n    return x + 1"],
                             layer=list(range(n_layers)), max_length=64)
    print(report.round(3).to_string())
    quality = json.loads((run / "sae_quality.json").read_text())
    return {"layers": n_layers, "hidden": config["hidden_size"], "errors": summary.get("errors"),
            "min_fve": min(r["fve"] for r in quality), "max_ce_delta": max(r["ce_delta"] for r in quality),
            "heldout_bpc": summary.get("pretrain", {}).get("heldout_bpc"),
            "tokens": summary.get("pretrain", {}).get("tokens"), "stages_s": summary.get("stages")}


def install(run: Path, embedded: Path = EMBEDDED) -> None:
    for name in ("model", "saes"):
        shutil.rmtree(embedded / name, ignore_errors=True)
        shutil.copytree(run / name, embedded / name)
    training = embedded / "training"
    training.mkdir(exist_ok=True)
    for old in [*training.glob("sae_layer*.csv"), *training.glob("kl_layer*.csv"), training / "k_sweep.jsonl"]:
        old.unlink(missing_ok=True)
    for path in sorted((run / "training").iterdir()):
        shutil.copy2(path, training / path.name)
    for name in ("sae_quality.json", "samples.json", "summary.json"):
        shutil.copy2(run / name, training / f"gpu_run_{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=Path, required=True, help="folder with run.tar.part* from the device")
    parser.add_argument("--out", type=Path, default=Path("build/gpu_run_result"))
    parser.add_argument("--install", action="store_true", help="replace qscope_lab/embedded's model and SAEs")
    args = parser.parse_args()
    run = unpack(args.parts, args.out)
    facts = check(run)
    print(json.dumps(facts, indent=1, ensure_ascii=False))
    if not args.install:
        return
    install(run)
    print(f"installed into {EMBEDDED}; now rebuild what depends on the model:\n"
          "  python recipes/embedded/evaluate.py --corpus build/carry\n"
          "  python recipes/embedded/reference_corpus.py --corpus build/carry\n"
          "  python recipes/embedded/feature_index.py --corpus build/carry\n"
          "  python recipes/embedded/model_card.py --corpus build/carry", file=sys.stderr)


if __name__ == "__main__":
    main()
