"""Build the feature index shipped with the embedded default (qscope_lab/embedded/index/): every layer's feature
statistics over the corpus's held-out split, so the default's cards and search open without encoding anything.

    python recipes/embedded/corpus.py --out build/corpus          # the corpus (held-out split included)
    python recipes/embedded/feature_index.py --corpus build/corpus --out qscope_lab/embedded/index
    python recipes/embedded/feature_index.py --explain-only     # the shipped explanations of an existing index

Held out from the model's and SAEs' training, like reference.jsonl but about ten times larger; documents are cut
to ``--chars`` characters and the index keeps fewer, shorter contexts than the library default, so it stays a
few MB in the wheel. No two documents are alike (``corpus.heldout_pool``: exact and near duplicates of the cut
text dropped, and any with a twin in training) and the index keeps distinct windows, so no feature shows the same
text twice among its top contexts. Every feature of every layer is then explained by the offline explainer and
the table (``explanations.parquet``) is shipped in the index folder, so the default names its features out of the box
(the user's own explanations and labels, kept under ``$QSCOPE_LAB_HOME``, win over it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from corpus import heldout_pool

from qscope_lab import FeatureIndex, Lab


def explain_into(index_dir: str) -> None:
    """The offline explainer over every layer of the index at ``index_dir``, its table written into that folder.
    Run in a scratch ``QSCOPE_LAB_HOME`` (where explanations of the shipped index go), then copied beside it."""
    from qscope_lab.index.explanations import FILE, location

    with tempfile.TemporaryDirectory() as home:
        os.environ["QSCOPE_LAB_HOME"] = home
        lab = Lab.load(index=index_dir)
        start = time.perf_counter()
        for layer in lab.index.layers:
            table = lab.explain(layer)
            print(f"layer {layer}: {len(table)} features explained, median score {table.score.median():.2f}")
        written = location(lab.index.path) / FILE
        target = Path(index_dir) / FILE
        if written.resolve() != target.resolve():
            shutil.copyfile(written, target)
        print(f"{target} ({target.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default="qscope_lab/embedded/index")
    parser.add_argument("--chars", type=int, default=1200)
    parser.add_argument("--explain-only", action="store_true", help="only (re)write the shipped explanations")
    args = parser.parse_args()
    if args.explain_only:
        explain_into(args.out)
        return

    pool, dropped = heldout_pool(Path(args.corpus), args.chars)
    print(f"held-out documents: {dropped}")
    docs = [{"text": d["text"], "source": d["source"]} for d in pool]
    shutil.rmtree(args.out, ignore_errors=True)
    lab = Lab.load(index=False)
    start = time.perf_counter()
    index = FeatureIndex.build(lab, docs, None, args.out, n_top=10, window=5, samples_per_bin=1,
                               context_length=256, shard_documents=256, progress=True)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"{index.documents} documents, {index.tokens:,} tokens, {size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.0f} s -> {args.out}")
    explain_into(args.out)


if __name__ == "__main__":
    main()
