"""Pre-train the embedded model: a real Qwen3ForCausalLM, scaled down, on the mixed corpus. Seeded.

    python recipes/embedded/pretrain.py --corpus build/corpus --tokenizer qscope_lab/embedded/model \
        --out build/pretrain --steps 4000

Windows of 256 tokens are drawn from per-language streams (documents joined by <|endoftext|>) in fixed
proportions, so English, Chinese and code are all learnt whatever their share of bytes. Held-out loss per
source is reported in bits per character (nats/token / ln 2 * tokens/char), which compares across tokenizers.
Checkpoints are written every ``--save-every`` steps (save_pretrained, safetensors) with ``log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from corpus import iter_docs

MIX = {"en": 0.40, "zh": 0.35, "code": 0.25}
SEQ = 256


def model_config(vocab_size: int, eos: int):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
                       tie_word_embeddings=True, rope_theta=10000.0, eos_token_id=eos, pad_token_id=eos,
                       bos_token_id=None)


def tokenize_corpus(corpus: Path, tokenizer, cache: Path) -> dict[tuple[str, str, str], np.ndarray]:
    """(lang, source, split) -> uint16 token stream, cached as .npy; also records characters per stream."""
    cache.mkdir(parents=True, exist_ok=True)
    index = cache / "index.json"
    if index.exists():
        meta = json.loads(index.read_text())
        return {tuple(k.split("|")): np.load(cache / f"{k.replace('|', '_')}.npy") for k in meta}, meta
    docs: dict[tuple, list[str]] = {}
    for d in iter_docs(corpus):
        docs.setdefault((d["lang"], d["source"], d["split"]), []).append(d["text"])
    eos = tokenizer.eos_token_id
    streams, meta = {}, {}
    for key, texts in docs.items():
        ids = tokenizer(texts)["input_ids"]
        flat = np.fromiter((t for seq in ids for t in (*seq, eos)), dtype=np.uint16)
        name = "|".join(key)
        np.save(cache / f"{name.replace('|', '_')}.npy", flat)
        streams[key] = flat
        meta[name] = {"tokens": int(flat.size), "chars": sum(len(t) + 1 for t in texts)}
        print(f"tokenized {name}: {flat.size} tokens, {meta[name]['chars'] / flat.size:.2f} chars/token")
    index.write_text(json.dumps(meta, indent=1))
    return streams, meta


def batch(streams_by_lang: dict[str, np.ndarray], rng: np.random.Generator, size: int) -> torch.Tensor:
    langs = rng.choice(list(MIX), size=size, p=list(MIX.values()))
    rows = []
    for lang in langs:
        stream = streams_by_lang[lang]
        start = rng.integers(0, stream.size - SEQ - 1)
        rows.append(stream[start:start + SEQ + 1].astype(np.int64))
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def evaluate(model, heldout: dict, meta: dict, windows: int = 24) -> dict[str, float]:
    """Bits per character on fixed held-out windows of every source."""
    model.eval()
    out = {}
    for (lang, source, _), stream in sorted(heldout.items()):
        n = min(windows, max(1, (stream.size - 1) // SEQ))
        x = torch.from_numpy(np.stack([stream[i * SEQ:i * SEQ + SEQ + 1].astype(np.int64) for i in range(n)]))
        logits = model(x[:, :-1]).logits
        nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).item()
        m = meta[f"{lang}|{source}|heldout"]
        out[source] = nats / math.log(2) * m["tokens"] / m["chars"]
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--tokenizer", default="qscope_lab/embedded/model")
    parser.add_argument("--out", default="build/pretrain")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer, Qwen3ForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    streams, meta = tokenize_corpus(Path(args.corpus), tokenizer, out / "tokens")
    train = {lang: np.concatenate([s for (language, _, split), s in sorted(streams.items())
                                 if language == lang and split == "train"])
             for lang in MIX}
    heldout = {k: s for k, s in streams.items() if k[2] == "heldout"}
    model = Qwen3ForCausalLM(model_config(len(tokenizer), tokenizer.eos_token_id))
    n_params = sum(p.numel() for p in model.parameters())
    sizes = ", ".join(f"{k} {v.size / 1e6:.1f}M" for k, v in train.items())
    print(f"{n_params / 1e6:.2f} M parameters; train tokens: {sizes}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    log = open(out / "log.jsonl", "a")
    model.train()
    start, seen = time.time(), 0
    for step in range(args.steps):
        x = batch(train, rng, args.batch)
        loss = model(x[:, :-1], labels=None).logits.flatten(0, 1)
        loss = torch.nn.functional.cross_entropy(loss, x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        seen += x.numel()
        if step % 50 == 0 or step == args.steps - 1:
            record = {"step": step, "loss": round(loss.item(), 4), "lr": sched.get_last_lr()[0],
                      "tokens": seen, "minutes": round((time.time() - start) / 60, 2)}
            if step % args.save_every == 0 or step == args.steps - 1:
                record["heldout_bpc"] = {k: round(v, 4) for k, v in evaluate(model, heldout, meta).items()}
                model.save_pretrained(out / "model")
                tokenizer.save_pretrained(out / "model")
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps(record), flush=True)
    print(f"done: {seen / (time.time() - start):.0f} tokens/s")


if __name__ == "__main__":
    main()
