"""What a steering bench costs against the raw generations it needs (issue 27; target <= 1.2x), side by side.

A bench of one steer on P prompts needs 7 x P completions (seven conditions). Timed here, as medians of
interleaved rounds (benchmarks/timing.py) on the embedded default, greedy, the same ``max_new_tokens``:

- raw, batched:     one plain ``model.generate`` on the same 7 x P rows (no hook): the floor
- raw, per condition: seven plain ``model.generate`` calls of P rows each (how a loop over conditions runs)
- ``lab.bench_steer``: the whole bench (the batched steered generation, fluency and collateral forwards, the
  concept scores, the random control's draw, bootstrap intervals)

Printed: seconds of each and the ratios bench / raw batched and bench / raw per condition, plus the bench's own
split by stage (``result.cost``).

Run: ``python benchmarks/steer_bench.py`` (about a minute on 2 idle cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch
from timing import medians  # benchmarks/timing.py: the one timing rule

PROMPTS = ["The weather today is", "Once upon a time", "My favourite food is", "The meeting starts at",
           "In the morning I", "The book was", "He opened the door and", "Science tells us that"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--new", type=int, default=32, help="max_new_tokens (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    from qscope_lab import embedded
    from qscope_lab.lab import Lab
    from qscope_lab.steering.bench import _prompt_only_text, default_instruction
    from qscope_lab.steering.concept import ExampleConcept

    lab = Lab.load()
    docs = embedded.reference_documents()
    zh = [d["text"][:200] for d in docs if d["lang"] == "zh"][:16]
    en = [d["text"][:200] for d in docs if d["lang"] == "en"][:16]
    concept = ExampleConcept(zh, en)
    layer, feature = embedded.known_features()["chinese"]
    steer = {feature: 32.0}

    instruction = default_instruction(concept)
    instructed = [_prompt_only_text(instruction, p) for p in PROMPTS]
    by_condition = [PROMPTS, instructed, PROMPTS, instructed, PROMPTS, PROMPTS, PROMPTS]
    rows = [p for part in by_condition for p in part]
    kwargs = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                  pad_token_id=lab.tokenizer.pad_token_id)

    @torch.no_grad()
    def raw_batched():
        return lab.hf_model.generate(**lab.tokenize(rows), **kwargs)

    @torch.no_grad()
    def raw_per_condition():
        for part in by_condition:
            lab.hf_model.generate(**lab.tokenize(part), **kwargs)

    result = {}

    def bench():
        result["bench"] = lab.bench_steer(steer, PROMPTS, concept, layer=layer, max_new_tokens=args.new,
                                          min_new_tokens=args.new)

    repeats = 2 if args.quick else 5
    t_raw, t_loop, t_bench = medians(raw_batched, raw_per_condition, bench, repeats=repeats)
    print(f"embedded default, {len(PROMPTS)} prompts x 7 conditions = {len(rows)} completions of {args.new} tokens, "
          f"{args.threads} threads, medians of {repeats} interleaved rounds")
    print(f"raw generate, batched:        {t_raw:7.3f} s")
    print(f"raw generate, per condition:  {t_loop:7.3f} s")
    print(f"lab.bench_steer:              {t_bench:7.3f} s")
    print(f"bench / raw batched:          {t_bench / t_raw:7.2f}x   (target <= 1.2x)")
    print(f"bench / raw per condition:    {t_bench / t_loop:7.2f}x")
    cost = result["bench"].cost
    stages = ", ".join(f"{k} {v:.3f}" for k, v in cost.items() if k.endswith("_s"))
    print(f"last bench by stage (s): {stages}; verdict {result['bench'].verdict}")


if __name__ == "__main__":
    main()
