#!/usr/bin/env bash
# Build build/carry/: what gpu_run.py needs on the GPU machine (recipes/embedded/GPU_RUN.md).
#   docs.jsonl.xz  the deduplicated corpus with its train / held-out split (corpus.py)
#   tokenizer/     the Qwen-style BPE, 16k vocabulary (tokenizer.py)
#   sources.json, dedup.json   per-source sizes and dedup counts (for the model card)
# and build/tokens/ (the token streams, only to report tokens per source here; the GPU machine makes its own).
# About 35 minutes on this project's 2 shared cores (downloads: seconds; dedup and xz dominate).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
echo "corpus $(date -u +%T)"
$PY recipes/embedded/corpus.py --out build/corpus
mkdir -p build/carry
echo "tokenizer $(date -u +%T)"
$PY recipes/embedded/tokenizer.py --corpus build/corpus --out build/carry/tokenizer --vocab-size 16384
echo "xz $(date -u +%T)"
xz -T2 -6 -c build/corpus/docs.jsonl > build/carry/docs.jsonl.xz.tmp
mv build/carry/docs.jsonl.xz.tmp build/carry/docs.jsonl.xz
cp build/corpus/sources.json build/corpus/dedup.json build/carry/
echo "tokens $(date -u +%T)"
rm -rf build/tokens
$PY recipes/embedded/tokens.py --corpus build/corpus --tokenizer build/carry/tokenizer --out build/tokens
du -sh build/carry build/carry/*
sha256sum build/carry/docs.jsonl.xz
echo "done $(date -u +%T)"
