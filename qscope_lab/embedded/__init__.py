"""The embedded default: a tiny Qwen3ForCausalLM with its own TopK SAE suite, trained by this project.

It ships inside the package (model/ and saes/ beside this file; recipes/embedded/ rebuilds it), so
``Lab.load()`` works offline, on a CPU, in seconds. MODEL_CARD.md beside this file gives the recipe and quality.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
MODEL_DIR = HERE / "model"
SAE_DIR = HERE / "saes"
INDEX_DIR = HERE / "index"  # feature index of held-out text (recipes/embedded/feature_index.py)
REFERENCE_FILE = HERE / "reference.jsonl"  # held-out texts for feature cards and search (reference_corpus.py)
NAME = "qscope-embedded"
SAE_NAME = "qscope-embedded/saes"  # the suite's name (labels are kept per model and suite name)


def available() -> bool:
    return (MODEL_DIR / "config.json").is_file() and (MODEL_DIR / "model.safetensors").is_file()


def require() -> None:
    if not available():
        raise FileNotFoundError(
            f"the embedded default model is missing from {MODEL_DIR}; rebuild it with the recipes in "
            f"recipes/embedded/ or pass a model to Lab.load")


def reference_documents() -> list[dict]:
    """The shipped held-out documents: ``{"source", "lang", "text"}`` each (English, Chinese and Python)."""
    import json

    with open(REFERENCE_FILE, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def known_features() -> dict[str, tuple[int, int]]:
    """Named (layer, feature) pairs of the shipped SAEs, as measured by recipes/embedded/evaluate.py:
    ``"chinese"`` (the steering feature), ``"han"``, ``"digit"``, ``"code"``. Read from evaluation.json, so
    they stay right when the SAEs are retrained."""
    import json

    facts = json.loads((HERE / "evaluation.json").read_text(encoding="utf-8"))
    named = {name: (f["layer"], f["feature"]) for name, f in facts["features"].items()}
    named["chinese"] = (facts["steering"]["layer"], facts["steering"]["feature"])
    return named
