"""SeedClassifier.fit against a footprint of the same texts (issue 17), side by side in one process.

Both read the same 200 held-out documents of the embedded reference corpus (English, Chinese, Python) at every
layer of the embedded default: ``footprint(lab, texts, layer=[0, 1, 2, 3])`` is one scan that
keeps each text's active set at its last token (``position="all"``: the union over every token, the same SAE
work as fit); ``SeedClassifier.fit`` is one scan that keeps per-text statistics of every firing
feature, then selects layer / K / statistic by leave-one-out over the seeds. The methods run round-robin
(a, b, a, b, ...) and the medians of the repetitions are compared, so background load hits both alike.

Run: ``python benchmarks/classifier_bench.py`` (about a minute on 2 CPU cores; ``--repeats`` to change).
"""

from __future__ import annotations

import argparse
import json
from importlib import resources

import torch
from timing import medians  # benchmarks/timing.py: the one timing rule


def texts_and_labels(n: int) -> tuple[list[str], list[bool]]:
    """``n`` reference documents, Chinese positive, the rest negative (the classifier needs both classes)."""
    path = resources.files("qscope_lab.embedded") / "reference.jsonl"
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    docs = (docs * (n // len(docs) + 1))[:n]
    return [d["text"] for d in docs], [d["lang"] == "zh" for d in docs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from qscope_lab import Lab, SeedClassifier, footprint

    lab = Lab.load()
    texts, labels = texts_and_labels(args.n)
    layers = list(range(lab.n_layers))

    def fit():
        SeedClassifier(lab, progress=False).fit(texts, labels)

    def foot():
        footprint(lab, texts, layer=layers, progress=False)

    def foot_all():  # the same SAE work as fit: every counted token encoded at every layer
        footprint(lab, texts, layer=layers, position="all", progress=False)

    t_fit, t_foot, t_all = medians(fit, foot, foot_all, repeats=args.repeats)
    print(f"{'row':52s} {'seconds':>8s} {'ratio':>6s}")
    print(f"{'footprint, ' + str(args.n) + ' texts, all layers, last token':52s} {t_foot:8.3f} {1.0:6.2f}")
    print(f"{'footprint, same texts, all layers, every token':52s} {t_all:8.3f} {t_all / t_foot:6.2f}")
    print(f"{'SeedClassifier.fit, same texts (every token)':52s} {t_fit:8.3f} {t_fit / t_foot:6.2f}")
    print(f"fit / footprint of every token: {t_fit / t_all:.2f}x")


if __name__ == "__main__":
    main()
