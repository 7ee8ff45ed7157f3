"""The embedded model's recipe (recipes/embedded/, issue 25): the corpus dedup and the one-command GPU run.

The dedup must remove what would leak held-out text into training and repeat contexts in feature cards (exact
copies up to case and whitespace, near copies with a word or a character changed) and keep distinct documents.
gpu_run.py is the script the GPU session runs unattended: here it runs end to end on the CPU at a toy size (a
2-layer Qwen3 of hidden 32, a 300-token BPE) and every output it promises must exist and load.
"""

from __future__ import annotations

import json
import random
import sys
import tarfile
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "embedded"
sys.path.insert(0, str(RECIPES))

import corpus  # noqa: E402
from dedup import deduplicate, normalise  # noqa: E402

EN_WORDS = ("the a cat dog house river walks runs quickly slowly under over morning evening city history book "
            "garden window letter friend music summer winter bridge market").split()
ZH_CHARS = "今天天气很好我们一起去公园散步历史城市书本早上晚上河流房子猫狗跑得快慢花园窗户朋友音乐夏天冬天桥市场"


def english(rng: random.Random, words: int = 150) -> str:
    return " ".join(rng.choice(EN_WORDS) for _ in range(words)) + "."


def chinese(rng: random.Random, chars: int = 200) -> str:
    return "".join(rng.choice(ZH_CHARS) for _ in range(chars)) + "。"


def code(rng: random.Random) -> str:
    return "\n".join(f"def f{rng.randint(0, 999)}(x):\n    return x + {rng.randint(0, 99)}" for _ in range(6))


def test_dedup_removes_planted_exact_and_near_duplicates_and_keeps_the_rest():
    rng = random.Random(0)
    base = [english(rng) for _ in range(150)] + [chinese(rng) for _ in range(150)]
    planted = {
        "case and spacing": "  " + base[3].upper().replace(" ", "   ") + "\n",
        "one word changed": base[10].replace(base[10].split()[40], "zebra", 1),
        "sentence appended": base[20] + " And then the evening came.",
        "one character changed": base[160][:100] + "龙" + base[160][101:],
        "identical review": base[170],
    }
    texts = base + list(planted.values())
    keep, stats = deduplicate(texts)
    assert keep[:len(base)].all(), "a distinct document was removed"
    assert not keep[len(base):].any(), [name for name, k in zip(planted, keep[len(base):], strict=True) if k]
    assert stats["exact_duplicates"] == 2 and stats["near_duplicates"] == 3
    assert stats["kept"] == len(base)


def test_dedup_threshold_separates_half_overlapping_documents():
    rng = random.Random(1)
    a, b = english(rng, 200), english(rng, 200)
    half = " ".join(a.split()[:100] + b.split()[100:])  # Jaccard with a is about 1/3
    keep, _ = deduplicate([a, b, half])
    assert keep.tolist() == [True, True, True]
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([a], threshold=1.5)
    assert normalise("Hello  World\n") == normalise("hello world")


def toy_sources(rng: random.Random) -> dict:
    en = [english(rng, rng.randint(40, 120)) for _ in range(300)]
    zh = [chinese(rng, rng.randint(40, 160)) for _ in range(300)]
    return {"toy-en": ("en", en + en[:20]), "toy-zh": ("zh", zh + [z + "。" for z in zh[:20]]),
            "toy-code": ("code", [code(rng) for _ in range(300)])}


def test_corpus_dedups_before_the_heldout_split(tmp_path):
    table = corpus.write_corpus(toy_sources(random.Random(2)), tmp_path)
    by_source = {row["source"]: row for row in table}
    assert by_source["toy-en"]["documents_before_dedup"] == 320 and by_source["toy-en"]["documents"] == 300
    assert by_source["toy-zh"]["documents"] == 300
    docs = [json.loads(line) for line in open(tmp_path / "docs.jsonl", encoding="utf-8")]
    assert len({normalise(d["text"]) for d in docs}) == len(docs)
    assert {d["split"] for d in docs} == {"train", "heldout"}
    stats = json.loads((tmp_path / "dedup.json").read_text())
    assert stats["exact_duplicates"] == 20 and stats["near_duplicates"] == 20


def test_the_heldout_pool_has_no_two_alike_and_no_twin_in_training(tmp_path):
    """What the shipped index and reference read (corpus.heldout_pool): a corpus written before the dedup (the
    1.57M model's) holds a review three times in its held-out split, one twice in training and held out once,
    and documents alike in their first characters only; each is shown once, a trained one never."""
    rng = random.Random(5)
    review, trained, head = chinese(rng, 80), english(rng, 40), english(rng, 60)
    rows = [("heldout", review), ("heldout", review.replace("。", " 。")), ("heldout", "  " + review),
            ("train", trained), ("train", trained), ("heldout", trained.upper()),
            ("heldout", head + " one ending"), ("heldout", head + " another ending entirely"),
            ("heldout", "too short"), *[("heldout", english(rng, 40)) for _ in range(5)],
            *[("train", english(rng, 40)) for _ in range(20)]]
    with open(tmp_path / "docs.jsonl", "w", encoding="utf-8") as out:
        for split, text in rows:
            out.write(json.dumps({"source": "toy", "lang": "en", "split": split, "text": text}) + "\n")
    pool, dropped = corpus.heldout_pool(tmp_path, chars=len(head) + 4)
    texts = [d["text"] for d in pool]
    assert sum(normalise(t) == normalise(review) for t in texts) == 1
    assert not any(normalise(t) == normalise(trained) for t in texts)
    assert sum(t.startswith(head[:40]) for t in texts) == 1  # alike in what is shown: the cut text
    assert all(len(t) >= 60 and len(t) <= len(head) + 4 for t in texts)
    assert dropped == {"heldout": 11, "alike_in_heldout": 3, "twin_in_train": 1, "kept": 7}  # "too short" is not


def test_gpu_run_end_to_end_on_the_cpu_at_a_toy_size(tmp_path):
    import gpu_run
    import tokenizer as tok
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from qscope_lab.saes.sae import SAE

    data = tmp_path / "data"
    corpus.write_corpus(toy_sources(random.Random(3)), data)
    tok.save(tok.build(tok.training_sample(data), vocab_size=300), data / "tokenizer")
    pack = tmp_path / "pack"
    summary = gpu_run.main([
        "--data", str(data), "--out", str(tmp_path / "run"), "--pack", str(pack), "--minutes", "3",
        "--sae-minutes", "0.2", "--tail-minutes", "0.1", "--steps", "4", "--layers", "2", "--hidden", "32",
        "--heads", "2", "--kv-heads", "1", "--head-dim", "16", "--intermediate", "64", "--seq", "32",
        "--batch", "4", "--act-tokens", "2000", "--sae-tokens", "8192", "--sae-k", "8", "--kl-steps", "2",
        "--sae-batch-windows", "8", "--eval-windows", "2", "--sample-tokens", "3", "--device", "cpu"])
    assert summary["errors"] == []
    assert summary["pretrain"]["step"] == 4 and summary["pretrain"]["tokens"] == 4 * 4 * 32
    assert set(summary["pretrain"]["heldout_bpc"]) == {"toy-en", "toy-zh", "toy-code"}

    run = tmp_path / "run"
    model = Qwen3ForCausalLM.from_pretrained(run / "model", dtype="auto")
    assert next(model.parameters()).dtype == torch.float32  # fp16 on disk, float32 in memory
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert len(AutoTokenizer.from_pretrained(run / "model")) == 300
    for layer in (0, 1):
        sae = SAE.load(run / "saes" / f"layer{layer}.sae.safetensors", layer=layer)
        assert (sae.d_model, sae.d_sae, sae.k) == (32, 16 * 32, 8)
        assert (run / "training" / f"sae_layer{layer}.csv").is_file()
    quality = json.loads((run / "sae_quality.json").read_text())
    assert {(r["layer"], r["language"]) for r in quality} == {(la, lg) for la in (0, 1) for lg in ("en", "zh", "code")}
    samples = json.loads((run / "samples.json").read_text())
    assert len(samples) == len(gpu_run.PROMPTS) and all("greedy_rep1.3" in s for s in samples)

    parts = sorted(pack.glob("run.tar.part*"))
    assert parts and (pack / "summary.json").is_file() and (pack / "run.log").is_file()
    assert len(list(pack.iterdir())) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in pack.iterdir())
    joined = tmp_path / "run.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        names = set(tar.getnames())
    assert {"model/model.safetensors", "saes/layer1.sae.safetensors", "sae_quality.json"} <= names
    assert not any(n.startswith(("pretrain/", "tokens/")) for n in names)  # checkpoints stay on the machine
