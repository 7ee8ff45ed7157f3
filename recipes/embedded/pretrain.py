"""Pre-train the embedded model: a real Qwen3ForCausalLM, scaled down, on the mixed corpus. Seeded, resumable.

    python recipes/embedded/pretrain.py --tokens build/tokens --tokenizer build/tokenizer --out build/pretrain \
        --minutes 5 [--layers 6 --hidden 256 ...]

Runs on CUDA when present (bf16 autocast, fused AdamW, TF32, torch.compile if it compiles), on the CPU otherwise.
Windows of ``--seq`` tokens are drawn from per-language streams (documents joined by <|endoftext|>) in fixed
proportions, so English, Chinese and code are all learnt whatever their share of tokens. Training stops on the
clock (``--minutes``) or after ``--steps``: the learning-rate schedule (warm-up, cosine to 10%) follows the
elapsed fraction of that budget, so a run cut short by the clock still ends annealed. ``ckpt.pt`` (model,
optimiser, step, elapsed seconds, RNG states) is written every ``--save-minutes`` and at the end; a rerun with
the same ``--out`` resumes from it. Held-out loss per source is reported in bits per character (nats/token /
ln 2 x tokens/char), which compares across tokenizers. Outputs: ``model/`` (save_pretrained) and ``log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

MIX = {"en": 0.40, "zh": 0.35, "code": 0.25}


@dataclass
class ModelSpec:
    layers: int = 6
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 1024
    max_positions: int = 2048


@dataclass
class TrainSpec:
    seq: int = 512
    batch: int = 128
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup_fraction: float = 0.02
    weight_decay: float = 0.1
    minutes: float = 5.0          # the clock budget of this run (resumed runs count the time already spent)
    steps: int = 0                # 0: no step limit, the clock decides
    save_minutes: float = 2.0
    eval_every_minutes: float = 0.5
    keep_best: bool = True        # ship the weights of the best held-out evaluation (many epochs can overfit)
    seed: int = 0
    compile: bool = False         # torch.compile on CUDA: faster steps, but its compile time counts on the clock
    mix: dict = field(default_factory=lambda: dict(MIX))  # share of each language in every batch


def model_config(vocab_size: int, eos: int, spec: ModelSpec):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                       num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                       num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim,
                       max_position_embeddings=spec.max_positions, tie_word_embeddings=True, rope_theta=10000.0,
                       eos_token_id=eos, pad_token_id=eos, bos_token_id=None)


def count_parameters(spec: ModelSpec, vocab_size: int) -> int:
    """Parameters of the tied Qwen3 model (embedding counted once): what the shipped safetensors holds."""
    d, f = spec.hidden, spec.intermediate
    attn = d * spec.heads * spec.head_dim * 2 + d * spec.kv_heads * spec.head_dim * 2 + 2 * spec.head_dim
    return vocab_size * d + spec.layers * (attn + 3 * d * f + 2 * d) + d


def device_default() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Streams:
    """Per-language training streams and per-source held-out streams, as torch tensors on ``device``."""

    def __init__(self, tokens: dict[str, np.ndarray], index: dict, device: str):
        self.device = device
        self.train = {}
        for lang in MIX:
            parts = [np.asarray(tokens[n]) for n, m in sorted(index.items()) if m["lang"] == lang
                     and m["split"] == "train"]
            if not parts:
                raise ValueError(f"no training tokens for language {lang!r} in the token folder")
            self.train[lang] = torch.from_numpy(np.concatenate(parts).astype(np.int64)).to(device)
        self.heldout = {m["source"]: torch.from_numpy(np.asarray(tokens[n]).astype(np.int64))
                        for n, m in sorted(index.items()) if m["split"] == "heldout" and m["tokens"] > 8}
        self.chars_per_token = {m["source"]: m["chars"] / m["tokens"] for m in index.values()
                                if m["split"] == "heldout" and m["tokens"] > 8}
        self.lang_of = {m["source"]: m["lang"] for m in index.values()}

    def batch(self, gen: torch.Generator, size: int, seq: int) -> torch.Tensor:
        counts = [int(size * share) for share in MIX.values()]  # MIX: set from TrainSpec.mix by specs_from
        counts[0] += size - sum(counts)  # every batch holds the mix's shares exactly
        rows = []
        for lang, n in zip(MIX, counts, strict=True):
            if n == 0:
                continue
            stream = self.train[lang]
            starts = torch.randint(0, stream.numel() - seq - 1, (int(n),), generator=gen).to(self.device)
            rows.append(stream[starts[:, None] + torch.arange(seq + 1, device=self.device)])
        return torch.cat(rows)


@torch.no_grad()
def heldout_bpc(model, streams: Streams, seq: int, windows: int = 32, batch: int = 16) -> dict[str, float]:
    """Bits per character of every held-out source, on its first ``windows`` windows of ``seq`` tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for source, stream in sorted(streams.heldout.items()):
        n = max(1, min(windows, (stream.numel() - 1) // seq))
        length = min(seq, stream.numel() - 1)
        x = torch.stack([stream[i * length:i * length + length + 1] for i in range(n)]).to(device)
        nats, count = 0.0, 0
        for i in range(0, n, batch):
            xb = x[i:i + batch]
            with autocast(device):
                logits = model(xb[:, :-1]).logits.float()
            nats += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), xb[:, 1:].flatten(),
                                                            reduction="sum"))
            count += xb[:, 1:].numel()
        out[source] = round(nats / count / math.log(2) / streams.chars_per_token[source], 4)
    model.train(was_training)
    return out


def autocast(device):
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_factor(progress: float, spec: TrainSpec) -> float:
    """Warm-up over the first ``warmup_fraction`` of the budget, then cosine down to ``min_lr_fraction``."""
    warm = min(1.0, progress / max(1e-9, spec.warmup_fraction))
    p = min(1.0, max(0.0, progress))
    return warm * (spec.min_lr_fraction + (1 - spec.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def make_optimizer(model, spec: TrainSpec, device: str):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def try_compile(model, enabled: bool, log):
    """torch.compile when asked and available; any failure falls back to eager (and is logged)."""
    if not enabled or not hasattr(torch, "compile"):
        return model
    try:
        compiled = torch.compile(model)
        log({"event": "compile", "ok": True})
        return compiled
    except Exception as error:  # noqa: BLE001 - compile is an optimisation; eager always works
        log({"event": "compile", "ok": False, "error": repr(error)[:300]})
        return model


def train(model, streams: Streams, spec: TrainSpec, out: Path, device: str, log, tokenizer=None) -> dict:
    """Train until ``spec.minutes`` of (cumulative) training time or ``spec.steps``; resumes from out/ckpt.pt."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = make_optimizer(model, spec, device)
    gen = torch.Generator().manual_seed(spec.seed)
    step, elapsed, seen = 0, 0.0, 0
    ckpt = out / "ckpt.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, elapsed, seen = state["step"], state["elapsed"], state["tokens"]
        log({"event": "resume", "step": step, "elapsed_s": round(elapsed, 1), "tokens": seen})
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    fast = try_compile(model, spec.compile and device.startswith("cuda"), log)
    budget = spec.minutes * 60
    model.train()

    def save():
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "step": step, "elapsed": elapsed, "tokens": seen, "spec": asdict(spec)}, ckpt)

    last_save = last_eval = elapsed
    best: dict = {"score": math.inf}

    def consider(bpc: dict) -> None:
        """Keep a CPU copy of the weights when the mean held-out bits/char is the best so far."""
        score = sum(bpc.values()) / max(1, len(bpc))
        if spec.keep_best and score < best["score"]:
            best.update(score=score, step=step, state={k: v.detach().to("cpu", copy=True)
                                                       for k, v in model.state_dict().items()})

    window_start, window_tokens = time.time(), 0
    while elapsed < budget and (spec.steps <= 0 or step < spec.steps):
        t0 = time.time()
        progress = elapsed / budget if spec.steps <= 0 else max(elapsed / budget, step / spec.steps)
        for group in opt.param_groups:
            group["lr"] = spec.lr * lr_factor(progress, spec)
        x = streams.batch(gen, spec.batch, spec.seq)
        with autocast(device):
            logits = fast(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x[:, 1:].numel()
        window_tokens += x[:, 1:].numel()
        if step % 25 == 0 or step <= 3:
            loss_value = loss.item()  # syncs: the clock below then counts the GPU's work too
            elapsed += time.time() - t0
            record = {"step": step, "loss": round(loss_value, 4), "lr": round(opt.param_groups[0]["lr"], 6),
                      "tokens": seen, "minutes": round(elapsed / 60, 3),
                      "tokens_per_s": round(window_tokens / max(1e-9, time.time() - window_start))}
            if elapsed - last_eval >= spec.eval_every_minutes * 60:
                record["heldout_bpc"] = heldout_bpc(model, streams, spec.seq)
                consider(record["heldout_bpc"])
                last_eval = elapsed
            log(record)
            if elapsed - last_save >= spec.save_minutes * 60:
                save()
                last_save = elapsed
            window_start, window_tokens = time.time(), 0  # evaluation and saving stay out of tokens/s
        else:
            elapsed += time.time() - t0
    consider(heldout_bpc(model, streams, spec.seq))
    save()  # the last state, for a resumed run; the shipped weights may be an earlier, better one
    if "state" in best and best["step"] != step:
        model.load_state_dict(best["state"])
        log({"event": "restored_best", "step": best["step"], "mean_bpc": round(best["score"], 4), "last_step": step})
    final = {"step": step, "tokens": seen, "minutes": round(elapsed / 60, 3), "weights_of_step": best.get("step", step),
             "heldout_bpc": heldout_bpc(model, streams, spec.seq, windows=64)}
    log({"event": "final", **final})
    return final


def save_model(model, tokenizer, folder: Path, dtype=torch.float32) -> None:
    """save_pretrained, then the weights file rewritten in ``dtype`` (float16 halves the shipped size) while
    config.json keeps float32, so ``from_pretrained(dtype="auto")`` computes in float32 on a CPU."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    original = next(model.parameters()).dtype
    model.to(torch.float32)
    model.save_pretrained(folder)
    model.to(original)
    if dtype != torch.float32:
        for path in folder.glob("*.safetensors"):
            tensors = {name: t.to(dtype) for name, t in load_file(path).items()}
            save_file(tensors, path, metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def add_model_arguments(parser) -> None:
    m, t = ModelSpec(), TrainSpec()
    parser.add_argument("--layers", type=int, default=m.layers)
    parser.add_argument("--hidden", type=int, default=m.hidden)
    parser.add_argument("--heads", type=int, default=m.heads)
    parser.add_argument("--kv-heads", type=int, default=m.kv_heads)
    parser.add_argument("--head-dim", type=int, default=m.head_dim)
    parser.add_argument("--intermediate", type=int, default=m.intermediate)
    parser.add_argument("--seq", type=int, default=t.seq)
    parser.add_argument("--batch", type=int, default=t.batch)
    parser.add_argument("--lr", type=float, default=t.lr)
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: the clock decides)")
    parser.add_argument("--seed", type=int, default=t.seed)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only; guarded)")
    parser.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in MIX.items()),
                        help="language shares of every batch, e.g. en=0.4,zh=0.35,code=0.25")


def specs_from(args) -> tuple[ModelSpec, TrainSpec]:
    model = ModelSpec(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                      head_dim=args.head_dim, intermediate=args.intermediate)
    mix = {}
    for item in args.mix.split(","):
        lang, _, share = item.partition("=")
        try:
            mix[lang.strip()] = float(share)
        except ValueError:
            raise ValueError(f"--mix: {item!r} is not lang=share (e.g. en=0.4,zh=0.35,code=0.25)") from None
    if set(mix) != set(MIX) or abs(sum(mix.values()) - 1) > 1e-6 or min(mix.values()) <= 0:
        raise ValueError(f"--mix must give positive shares of {sorted(MIX)} that sum to 1, got {mix}")
    MIX.clear()
    MIX.update(mix)
    train_spec = TrainSpec(seq=args.seq, batch=args.batch, lr=args.lr, steps=args.steps, seed=args.seed,
                           minutes=getattr(args, "minutes", TrainSpec.minutes), compile=args.compile, mix=dict(mix))
    return model, train_spec


def build_model(tokenizer, spec: ModelSpec, seed: int):
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(model_config(len(tokenizer), tokenizer.eos_token_id, spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="build/tokens")
    parser.add_argument("--tokenizer", default="build/tokenizer")
    parser.add_argument("--out", default="build/pretrain")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--device", default=device_default())
    parser.add_argument("--threads", type=int, default=2)
    add_model_arguments(parser)
    args = parser.parse_args()

    from tokens import load_tokens
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model_spec, train_spec = specs_from(args)
    streams = Streams(*load_tokens(Path(args.tokens)), device=args.device)
    model = build_model(tokenizer, model_spec, args.seed)
    handle = open(out / "log.jsonl", "a")

    def log(record):
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        print(json.dumps(record), flush=True)

    log({"event": "start", "parameters": sum(p.numel() for p in model.parameters()), "model": asdict(model_spec),
         "train": asdict(train_spec), "device": args.device})
    train(model, streams, train_spec, out, args.device, log)
    save_model(model, tokenizer, out / "model")


if __name__ == "__main__":
    main()
