"""Which repetition penalty should be the library's default? Loops measured on the embedded default.

Unsteered greedy continuations (40 new tokens) of 10 English prompts, and the same prompts with the named
"chinese" feature steered at a few alphas, at each repetition penalty. Per setting: the mean distinct-2 (distinct
character bigrams over the letters and Han characters, the fluency measure of issue 25), the share of
continuations that loop (distinct-2 < 0.6 or a run of one character longer than 4), the longest such run, the
median perplexity of prompt + continuation under the unpenalised model, and for the steered rows the Han share and
how many are "fluent Chinese" by issue 25's measure (Han share >= 0.5, no loop). The library's default
(``base.defaults.DEFAULT_REPETITION_PENALTY``) is chosen from this table.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/repetition_default.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qscope_lab import Lab, embedded
from qscope_lab.analysis.fluency import perplexities
from qscope_lab.analysis.text_predicates import han_share, is_cjk_char

PROMPTS = [
    "The history of the city begins",
    "My favourite way to spend a Sunday is",
    "The committee decided that the new rules",
    "When the train finally arrived, she",
    "Scientists have long wondered why",
    "The recipe calls for two cups of flour and",
    "In the morning the market was",
    "He opened the letter and read",
    "The best thing about learning a language is",
    "After the storm, the village",
]


def letters(text: str) -> list[str]:
    return [ch for ch in text if ch.isalpha() or is_cjk_char(ch)]


def distinct_2(text: str) -> float:
    chars = letters(text)
    pairs = list(zip(chars, chars[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 0.0


def longest_run(text: str) -> int:
    chars, best, run = letters(text), 0, 0
    for i, ch in enumerate(chars):
        run = run + 1 if i and ch == chars[i - 1] else 1
        best = max(best, run)
    return best


def loops(text: str) -> bool:
    return distinct_2(text) < 0.6 or longest_run(text) > 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--penalties", default="1.0,1.1,1.2,1.3,1.5,2.0")
    parser.add_argument("--alphas", default="0,16,32,64", help="steering strengths of the 'chinese' feature")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, help="also ban repeated n-grams (0: off)")
    args = parser.parse_args()
    lab = Lab.load()
    layer, feature = embedded.known_features()["chinese"]
    extra = {"no_repeat_ngram_size": args.no_repeat_ngram_size} if args.no_repeat_ngram_size else {}
    rows = []
    for penalty in [float(p) for p in args.penalties.split(",")]:
        for alpha in [float(a) for a in args.alphas.split(",")]:
            start = time.perf_counter()
            steer = {feature: alpha} if alpha else None
            gen = lab.generate(PROMPTS, layer=layer, steer=steer, max_new_tokens=args.max_new_tokens,
                               repetition_penalty=penalty, baseline=False, **extra)
            texts = gen.steered
            rows.append({"penalty": penalty, "alpha": alpha,
                         "distinct_2": sum(map(distinct_2, texts)) / len(texts),
                         "looping": sum(map(loops, texts)),
                         "max_run": max(map(longest_run, texts)),
                         "han_share": sum(map(han_share, texts)) / len(texts),
                         "fluent_zh": sum(han_share(t) >= 0.5 and not loops(t) for t in texts),
                         # the unpenalised model's perplexity of prompt + continuation (a loop is cheap, so low
                         # is not better; a jump says the penalty pushes the text off the model's distribution)
                         "ppl": float(np.median(perplexities(lab, [p + t for p, t in zip(PROMPTS, texts)]))),
                         "example": texts[0][:60], "seconds": round(time.perf_counter() - start, 2)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns="example").to_string(index=False))
        print(table[["penalty", "alpha", "example"]].to_string(index=False))


if __name__ == "__main__":
    main()
