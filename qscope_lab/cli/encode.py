"""``qscope-lab encode``: the top SAE features of every token of some texts."""

from __future__ import annotations

import argparse

from .options import (
    POSITIVE,
    add_lab_options,
    add_layer_option,
    add_out_option,
    check_layers,
    command,
    lab_from_args,
    layer_from_args,
    number,
    print_frame,
    text,
)


def register(sub) -> None:
    p = command(sub, "encode", "top SAE features of every token", """
The strongest SAE features of every token of some texts: one row per token and feature (text, position, token,
feature, activation, rank, name). Always-on features (firing on most tokens) are left out.""", """
  qscope-lab encode "hello world 你好" --top 5
  qscope-lab encode --layer 1 "The cat sat." "猫坐在垫子上。" --top 3 --out acts.csv""")
    add_lab_options(p)
    add_layer_option(p)
    p.add_argument("--top", type=POSITIVE, default=5, metavar="N", help="features shown per token (default 5)")
    p.add_argument("--max-firing-rate", type=number(maximum=1.0, above=0.0), default=0.5, metavar="RATE",
                   help="leave out features firing on more than this share of the tokens: always-on 'register' "
                        "features (default 0.5; 1 keeps all)")
    p.add_argument("--skip-first", action=argparse.BooleanOptionalAction, default=True,
                   help="mask position 0, the attention sink (default; --no-skip-first counts it)")
    add_out_option(p)
    p.add_argument("texts", nargs="+", type=text("a text"), metavar="TEXT",
                   help="texts to encode (quote each one)")
    p.set_defaults(func=run)


def run(args) -> None:
    check_layers(args, layer=[args.layer])
    lab = lab_from_args(args)
    acts = lab.encode(args.texts, layer=layer_from_args(args, lab), skip_first=args.skip_first)
    frame = acts.to_frame(max_firing_rate=args.max_firing_rate)
    frame = frame[frame["rank"] < args.top].reset_index(drop=True)
    print_frame(frame, args.out)
