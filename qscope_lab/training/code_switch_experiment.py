"""The SASFT demo, measured: teach the embedded model to code-switch, then fine-tune it clean with plain SFT and
with SASFT (same data, batches and seed) and compare the code-switch ratio of greedy answers to English prompts.

``code_switch_experiment(lab)`` returns the table; ``recipes/sasft_demo.py`` prints it over seeds;
``qscope-lab sasft-demo`` and ``qscope-lab language-features`` are the headless entry points.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..analysis.text_predicates import code_switch_ratio, han_share, repetition_rate
from ..embedded import reference_documents
from .language import language_features, sasft_targets
from .sasft import IGNORE_INDEX, SASFTLoss

if TYPE_CHECKING:
    from ..lab import Lab


# ---------------------------------------------------------------------------------------------- the demo
def _chunks_en(text: str, prompt_words: int, answer_words: int) -> list[tuple[str, str]]:
    words = [w for w in text.split() if w.isascii()]
    step = prompt_words + answer_words
    return [(" ".join(words[i:i + prompt_words]), " " + " ".join(words[i + prompt_words:i + step]))
            for i in range(0, len(words) - step + 1, step)]


def _chunks_zh(text: str, prompt_chars: int, answer_chars: int) -> list[tuple[str, str]]:
    chars = "".join(c for c in text if not c.isspace())
    step = prompt_chars + answer_chars
    return [(chars[i:i + prompt_chars], chars[i + prompt_chars:i + step])
            for i in range(0, len(chars) - step + 1, step)]


def code_switch_sft_data(contamination: float = 0.5, zh_share: float = 0.25, prompt_words: int = 8,
                         answer_words: int = 8, heldout_every: int = 4, seed: int = 0) -> dict:
    """The demo's data, from the held-out documents shipped with the package (embedded/reference.jsonl).

    SFT pairs (prompt, answer, language): English prompt -> its English continuation, of which a share
    ``contamination`` gets a Chinese phrase (6-10 characters of a Chinese document) spliced into the answer
    after a random word: plain SFT on it teaches the model to code-switch. Chinese pairs (``zh_share`` of the
    set) keep the model's Chinese in use. Every ``heldout_every``-th English document is held out: its chunks
    are the evaluation prompts (and clean pairs) and its text the clean-English CE set. Chinese phrases come from
    other documents than the Chinese pairs. Returns {"train": DataFrame, "eval_prompts": [...], "eval_pairs":
    DataFrame, "eval_texts": [...],
    "zh_prompts": [...], "language_texts": {"en": [...], "zh": [...], "code": [...]}}."""
    rng = np.random.default_rng(seed)
    docs = reference_documents()
    en = [d["text"] for d in docs if d["lang"] == "en"]
    zh = [d["text"] for d in docs if d["lang"] == "zh"]
    code = [d["text"] for d in docs if d["lang"] == "code"]
    en_train = [t for i, t in enumerate(en) if i % heldout_every]
    en_held = [t for i, t in enumerate(en) if not i % heldout_every]
    zh_phrase_docs, zh_pair_docs = zh[0::2], zh[1::2]
    phrases = [p for doc in zh_phrase_docs for p, _ in _chunks_zh(doc, 10, 0)]
    rows = []
    for doc in en_train:
        for prompt, answer in _chunks_en(doc, prompt_words, answer_words):
            switched = bool(rng.random() < contamination)
            if switched:
                words = answer.split()
                cut = int(rng.integers(1, len(words)))
                phrase = phrases[int(rng.integers(len(phrases)))][:int(rng.integers(6, 11))]
                answer = " " + " ".join(words[:cut]) + " " + phrase + " " + " ".join(words[cut:])
            rows.append({"prompt": prompt, "answer": answer, "language": "en", "switched": switched})
    n_zh = int(round(len(rows) * zh_share / max(1 - zh_share, 1e-9)))
    zh_pairs = [pair for doc in zh_pair_docs for pair in _chunks_zh(doc, 12, 12)]
    for j in rng.permutation(len(zh_pairs))[:n_zh]:
        rows.append({"prompt": zh_pairs[j][0], "answer": zh_pairs[j][1], "language": "zh", "switched": False})
    train = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    eval_pairs = pd.DataFrame([{"prompt": p, "answer": a} for doc in en_held
                               for p, a in _chunks_en(doc, prompt_words, answer_words)])
    zh_prompts = [p for doc in zh_phrase_docs[:10] for p, _ in _chunks_zh(doc, 12, 12)[:2]]
    return {"train": train, "eval_prompts": eval_pairs.prompt.tolist(), "eval_pairs": eval_pairs,
            "eval_texts": en_held, "zh_prompts": zh_prompts,
            "language_texts": {"en": en_train, "zh": zh_pair_docs, "code": code}}


def _chat_prompt(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def _encode_pairs(tokenizer, frame: pd.DataFrame, max_length: int = 64) -> list[tuple[list[int], int]]:
    """(ids, prompt length) per pair: chat prompt, then answer + <|im_end|>."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for prompt, answer in zip(frame.prompt, frame.answer):
        p = tokenizer(_chat_prompt(tokenizer, prompt))["input_ids"]
        a = tokenizer(answer.strip())["input_ids"] + [end]
        out.append(((p + a)[:max_length], len(p)))
    return out


def _collate(pairs, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels -100 on prompt and pad positions."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (ids, plen) in enumerate(pairs):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
        labels[i, plen:len(ids)] = torch.tensor(ids[plen:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def finetune(model, tokenizer, train: pd.DataFrame, steps: int, sasft: SASFTLoss | None = None,
             lr: float = 1e-3, batch_size: int = 16, max_length: int = 64, seed: int = 0,
             suppress: str = "zh", log_every: int = 25) -> pd.DataFrame:
    """A plain SFT loop (AdamW, constant lr, completion-only CE) on ``model`` in place; with ``sasft``, the loss
    is CE + sasft(labels, sample_mask = samples whose language is not ``suppress``). Returns the log."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pairs = _encode_pairs(tokenizer, train, max_length)
    is_target = torch.tensor((train.language == suppress).to_numpy())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    records = []
    with (sasft.attach(model) if sasft is not None else _nothing()):
        for step in range(steps):
            pick = torch.randint(0, len(pairs), (batch_size,), generator=gen)
            batch = {k: v.to(device) for k, v in _collate([pairs[i] for i in pick.tolist()],
                                                          tokenizer.pad_token_id).items()}
            ce = model(**batch).loss
            extra = sasft(labels=batch["labels"], sample_mask=~is_target[pick]) if sasft is not None else None
            loss = ce if extra is None else ce + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % log_every == 0 or step == steps - 1:
                records.append({"step": step, "ce": ce.item(),
                                "l_reduce": sum(sasft.last.values()) if sasft is not None else float("nan")})
    model.eval()
    return pd.DataFrame(records)


@contextmanager
def _nothing():
    yield None


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24,
                   batch_size: int = 32) -> list[str]:
    """Greedy chat answers of a plain transformers model (left-padded batches, stop at <|im_end|>)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = [end, tokenizer.eos_token_id]
    device = next(model.parameters()).device
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [_chat_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
            for row in ids[:, enc["input_ids"].shape[1]:].tolist():
                cut = next((j for j, t in enumerate(row) if t in stops), len(row))
                out.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return out


@torch.no_grad()
def text_ce(model, tokenizer, texts: Sequence[str], max_length: int = 96, batch_size: int = 16) -> float:
    """Mean next-token CE (nats/token) of ``model`` on ``texts`` (truncated to ``max_length`` tokens)."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for start in range(0, len(texts), batch_size):
        ids = [row for row in tokenizer(list(texts[start:start + batch_size]), truncation=True,
                                        max_length=max_length)["input_ids"] if len(row) > 1]
        if not ids:
            continue
        batch = _collate([(row, 0) for row in ids], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="sum",
                               ignore_index=IGNORE_INDEX)
        total += float(loss)
        n += int((labels != IGNORE_INDEX).sum())
    return total / max(n, 1)


@torch.no_grad()
def answer_ce(model, tokenizer, pairs: pd.DataFrame, max_length: int = 64, batch_size: int = 32) -> float:
    """Mean CE (nats/token) of the answer tokens of chat pairs (columns prompt, answer): how well the model
    learned to answer, prompt tokens not counted."""
    encoded = _encode_pairs(tokenizer, pairs, max_length)
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in _collate(encoded[start:start + batch_size],
                                                      tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="sum",
                                       ignore_index=IGNORE_INDEX))
        n += int((labels != IGNORE_INDEX).sum())
    return total / max(n, 1)


def code_switch_experiment(lab: Lab, steps: int = 30, weight: float | Sequence[float] = 0.25,
                           layers: Sequence[int] | None = None, n_features: int = 16, contamination: float = 0.3,
                           habit_steps: int = 60, habit_lr: float = 1e-3, lr: float = 1e-4, batch_size: int = 16,
                           seed: int = 0, max_new_tokens: int = 24, clean_contamination: float = 0.0,
                           progress: bool = False) -> pd.DataFrame:
    """Does SASFT lower the code-switch ratio more than plain SFT? A measured answer on a small model.

    1. habit: a deep copy of ``lab.hf_model`` is fine-tuned (plain SFT, ``habit_steps`` at ``habit_lr``) on chat
       pairs whose English answers carry Chinese phrases in a share ``contamination`` of them
       (``code_switch_sft_data``): it now code-switches on held-out English prompts, standing in for a model
       with the habit (the paper's Qwen3 models switch out of the box; the shipped tiny model never does).
    2. From that same model, same data order, steps, lr and seed: (a) ``sft``: plain SFT on the SFT set
       (English answers with ``clean_contamination`` share switched, default none, plus Chinese pairs);
       (b) ``sasft``: the same with ``+ weight * L_reduce`` on the ``n_features`` most Chinese features
       (monolinguality on the shipped model) at ``layers`` (default the last), alpha = their mean pre-activation
       on English, over the answer tokens of the non-Chinese samples. A list of weights gives one arm each.

    Rows: base, habit, sft, sasft: code_switch_ratio and han_share of greedy answers to held-out English
    prompts, repetition (mean ``repetition_rate`` of those answers: greedy loops), zh_han_share of answers to
    Chinese prompts (Chinese must survive), answer_ce_en (answer-token
    CE on held-out clean English pairs: did it learn to answer?), ce_en_heldout (clean held-out English
    documents), seconds of fine-tuning. ``frame.attrs``: answers, features, alphas, logs, sizes."""
    layers = [lab.n_layers - 1] if layers is None else list(layers)
    weights = [float(weight)] if np.ndim(weight) == 0 else [float(w) for w in weight]
    noisy = code_switch_sft_data(contamination=contamination, seed=seed)
    sft_data = code_switch_sft_data(contamination=clean_contamination, seed=seed + 1)
    table = language_features(lab, noisy["language_texts"], layers=layers, top=n_features)
    features, alphas = sasft_targets(table, "zh", alpha_language="en", top=n_features)
    tokenizer = lab.tokenizer
    rows, answers, logs = [], {}, {}

    def measure(arm, model, weight_value, seconds):
        english = greedy_answers(model, tokenizer, noisy["eval_prompts"], max_new_tokens=max_new_tokens)
        chinese = greedy_answers(model, tokenizer, noisy["zh_prompts"], max_new_tokens=max_new_tokens)
        answers[arm] = english
        rows.append({"arm": arm, "weight": weight_value,
                     "code_switch_ratio": code_switch_ratio(english, "en"),
                     "han_share": float(np.mean([han_share(t) for t in english])),
                     "repetition": float(np.mean([repetition_rate(t) for t in english])),
                     "zh_han_share": float(np.mean([han_share(t) for t in chinese])),
                     "answer_ce_en": answer_ce(model, tokenizer, noisy["eval_pairs"]),
                     "ce_en_heldout": text_ce(model, tokenizer, noisy["eval_texts"]),
                     "seconds": round(seconds, 1)})
        if progress:
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)

    measure("base", lab.hf_model, 0.0, 0.0)
    habit = copy.deepcopy(lab.hf_model)
    for p in habit.parameters():
        p.requires_grad_(True)
    start = time.time()
    logs["habit"] = finetune(habit, tokenizer, noisy["train"], habit_steps, lr=habit_lr, batch_size=batch_size,
                             seed=seed)
    measure("habit", habit, 0.0, time.time() - start)
    for arm, w in [("sft", 0.0)] + [("sasft" if len(weights) == 1 else f"sasft {w:g}", w) for w in weights]:
        model = copy.deepcopy(habit)
        loss = SASFTLoss(lab, features, alphas, weight=w) if w > 0 else None
        start = time.time()
        logs[arm] = finetune(model, tokenizer, sft_data["train"], steps, sasft=loss, lr=lr,
                             batch_size=batch_size, seed=seed + 1)
        measure(arm, model, w, time.time() - start)
        del model
    frame = pd.DataFrame(rows)
    frame.attrs.update(answers=answers, prompts=noisy["eval_prompts"], features=features,
                       alphas={k: v.tolist() for k, v in alphas.items()}, logs=logs, layers=layers,
                       n_eval=len(noisy["eval_prompts"]), n_train=len(sft_data["train"]), steps=steps,
                       habit_steps=habit_steps)
    return frame
