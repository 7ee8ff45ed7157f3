"""SASFT on the embedded model: does the SAE loss lower a code-switching habit more than plain SFT?

    python recipes/sasft_demo.py                      # 3 seeds x lambda 1e-3 / 0.1 / 0.25 / 0.5: ~5 min, 1 core
    python recipes/sasft_demo.py --seeds 0 --weights 0.25 --out build/sasft.csv

The shipped tiny model never answers English in Chinese, so the demo first gives it the habit: plain SFT
(``--habit-steps``) on English chat pairs of which 30% carry a Chinese phrase inside the answer. From that
model, the same clean SFT set (English pairs + 25% Chinese pairs, same batches, steps, lr and seed) is
trained (a) with CE only and (b) with CE + lambda * L_reduce on the 16 most Chinese SAE features of the last
layer (REFERENCE section 2: L_reduce = mean over the answer tokens of non-Chinese samples of
sum_s relu(f_s(x) - alpha_s), alpha_s = the feature's mean encoder pre-activation on English).

Columns: code_switch_ratio (share of greedy answers to 71 held-out English prompts containing any CJK
character), han_share (mean share of CJK characters in them), repetition (mean share of repeated word 3-grams
in them: greedy loops), zh_han_share (the same for answers to Chinese
prompts: the Chinese ability must survive), answer_ce_en (answer-token CE on the held-out clean English pairs),
ce_en_heldout (CE on the held-out English documents), seconds of fine-tuning.

Measured with the k = 64 SAEs (seeds 0-3, 1 CPU thread, ~60 s per seed; code-switch ratio per seed):

    habit            0.394 0.521 0.451 0.169     (base model: 0 on every seed)
    plain SFT        0.183 0.310 0.099 0.099     mean 0.173
    SASFT 1e-3       0.183 0.324 0.085 0.099     mean 0.173  (REFERENCE's lambda: no effect at this scale)
    SASFT 0.1        0.042 0.211 0.070 0.000     mean 0.081
    SASFT 0.25       0.000 0.014 0.042 0.000     mean 0.014  (the default)
    SASFT 0.5        0.000 0.000 0.014 0.000     mean 0.004

Costs seen: answers to Chinese prompts lose Chinese as lambda grows (zh_han_share 0.58 at 0.25 and 0.35 at
0.5 vs 0.77 after plain SFT) although Chinese samples are masked out of the loss, and greedy English answers
loop more (repetition 0.09 at 0.25, 0.17 at 0.5 vs 0.02; the base model's 0.29). answer_ce_en is lower with
SASFT (5.47 at 0.25 vs 5.80).
Lambda is ~250x REFERENCE's 5e-4..1e-3: here L_reduce is a per-token mean over 16 features of a
128-wide model, and the habit was learnt with a strong, recent CE signal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from qscope_lab import Lab
from qscope_lab import training as ts
from qscope_lab.cli.options import COUNT, POSITIVE, SEED, number
from qscope_lab.training import code_switch_experiment as cse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # every number checked while parsing (argparse error, exit code 2), before the model loads
    parser.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", type=number(minimum=0.0), nargs="+", default=[1e-3, 0.1, 0.25, 0.5],
                        help="lambda values, finite and >= 0 (1e-3 is REFERENCE's value for Qwen3-1.7B)")
    parser.add_argument("--steps", type=POSITIVE, default=30)
    parser.add_argument("--habit-steps", type=COUNT, default=60)
    parser.add_argument("--lr", type=number(above=0.0), default=1e-4)
    parser.add_argument("--features", type=POSITIVE, default=16)
    parser.add_argument("--threads", type=POSITIVE, default=1, help="torch CPU threads")
    parser.add_argument("--out", help="write every row (all seeds) as CSV")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200)

    lab = Lab.load()
    frames = []
    for seed in args.seeds:
        start = time.time()
        frame = cse.code_switch_experiment(lab, steps=args.steps, habit_steps=args.habit_steps, lr=args.lr,
                                          weight=args.weights, n_features=args.features, seed=seed)
        frame.insert(0, "seed", seed)
        frames.append(frame)
        print(f"\nseed {seed} ({time.time() - start:.0f} s; {frame.attrs['n_train']} SFT pairs, "
              f"{frame.attrs['n_eval']} held-out English prompts, features {frame.attrs['features']})")
        print(frame.round(3).to_string(index=False))
        answers, prompts = frame.attrs["answers"], frame.attrs["prompts"]
        weights = {a: w for a, w in zip(frame.arm, frame.weight) if a.startswith("sasft")}
        arm = min(weights, key=lambda a: abs(weights[a] - 0.25))
        shown = [i for i, text in enumerate(answers["habit"]) if ts.code_switched(text)][:3]
        for i in shown:
            print(f"  prompt {prompts[i]!r}\n    habit: {answers['habit'][i]!r}\n    sft:   {answers['sft'][i]!r}"
                  f"\n    {arm}: {answers[arm][i]!r}")
    table = pd.concat(frames, ignore_index=True)
    if len(args.seeds) > 1:
        columns = ["code_switch_ratio", "han_share", "repetition", "zh_han_share", "answer_ce_en", "ce_en_heldout"]
        summary = table.groupby("arm", sort=False)[columns].agg(["mean", "min", "max"])
        print(f"\nover seeds {args.seeds}:\n{summary.round(3).to_string()}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {len(table)} rows to {args.out}")


if __name__ == "__main__":
    main()
