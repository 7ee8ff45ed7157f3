"""Explainers' throughput (issue 26).

1. The offline explainer over a whole layer of the embedded default (2048 features): features/s.
2. The LLM explainer (``explain.llm``: windows read, prompts built, concurrent requests, replies parsed; cache off)
   against the server's raw completion throughput: the same prompts sent straight with the ``openai`` client at the
   same concurrency. Target: explainer / raw <= 1.2.

It starts ``transformers serve`` on the embedded model on a free port (or uses ``--base-url`` and ``--model``).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explain_bench.py [--features 48]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def start_server(max_len: int = 1024) -> tuple[subprocess.Popen, str, str]:
    from qscope_lab import embedded

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    proc = subprocess.Popen([exe, "serve", str(embedded.MODEL_DIR), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--max-model-len", str(max_len), "--log-level", "warning"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=1) as reply:
                return proc, base + "/v1", json.loads(reply.read())["data"][0]["id"]
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--features", type=int, default=48, help="features the LLM explainer explains")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    args = parser.parse_args()
    os.environ["QSCOPE_LAB_HOME"] = tempfile.mkdtemp(prefix="explain-bench-")

    from qscope_lab import Lab
    from qscope_lab.explain import llm
    from qscope_lab.explain.chat import Chat
    from qscope_lab.explain.windows import feature_windows

    lab = Lab.load()
    t = time.perf_counter()
    out = lab.explain(args.layer, overwrite=True)
    dt = time.perf_counter() - t
    print(f"offline explainer: layer {args.layer}, {len(out)} features in {dt:.2f} s = {len(out) / dt:,.0f} "
          f"features/s (stored with the index; median score {out.score.median():.2f})")

    proc = None
    if args.base_url:
        base, model = args.base_url, args.model
    else:
        proc, base, model = start_server()
    try:
        feats = list(range(args.features))
        chat = Chat.openai(base, model, max_tokens=args.max_tokens, concurrency=args.concurrency, cache=False,
                           retries=0)
        chat.batch(["warm up"] * args.concurrency)
        wins = feature_windows(lab.index, args.layer, feats)
        prompts = [llm.prompt(llm.pick(wins[f], 4, 3)) for f in feats if wins.get(f)]

        import openai

        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

        def raw(messages):
            return client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                                  temperature=0.0).choices[0].message.content

        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(raw, prompts))
        raw_s = time.perf_counter() - t

        before = chat.cost.requests
        t = time.perf_counter()
        rows = llm.explain_features(lab.index, args.layer, feats, chat, n_top=4, n_quantile=3, progress=False)
        ours_s = time.perf_counter() - t
        ok = sum(r["explanation"] is not None for r in rows)
        print(f"LLM explainer: {len(prompts)} features, {ok} explained, {chat.cost.requests - before} requests, "
              f"{ours_s:.2f} s = {len(prompts) / ours_s:.1f} features/s")
        print(f"raw openai client, same prompts: {raw_s:.2f} s = {len(prompts) / raw_s:.1f} completions/s")
        print(f"overhead: {ours_s / raw_s:.2f}x (target <= 1.2x); concurrency {args.concurrency}, "
              f"max_tokens {args.max_tokens}")
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


if __name__ == "__main__":
    main()
