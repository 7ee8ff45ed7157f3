"""qscope-lab: a Jupyter-native workbench for Qwen models and the Qwen-Scope sparse autoencoders.

The package is layered (each imports only what is below it; ``pyproject.toml`` holds the contracts):
``core`` (Lab, SAE and its file formats, activations, the scan loop, steering, generation) <- ``analysis``
(features, reference corpus, labels, memory) <- ``workflows`` (seed classifier, coverage, synthesis) and
``training`` (SAE training, SASFT, repetition, rollouts) <- ``widgets`` and ``cli``; ``viz`` (charts) and
``embedded`` (the shipped default) sit at the bottom. The names below are the public API; each is imported on
first use, so ``import qscope_lab`` is cheap and the CLI's static commands never load torch.
"""

from __future__ import annotations

import importlib

from .viz import render as _render  # no altair import: registers by class name

_render.install_display_hook()  # in a notebook, any altair chart then draws offline (no CDN)

__version__ = "0.1.0"

_EXPORTS = {
    "Lab": "lab", "SAE": "saes.sae", "SAESuite": "saes.suite", "FeatureActs": "core.activations",
    "Generation": "methods.generation", "Steer": "core.steering", "GROUPS": "saes.registry",
    "SAEGroup": "saes.registry", "registry_frame": "saes.registry", "HubUnavailableError": "saes.hub",
    "UnsafeCheckpointError": "saes.formats", "SeedClassifier": "workflows.classify",
    "footprint": "workflows.coverage", "overlap": "workflows.coverage", "select_subset": "workflows.coverage",
    "synthesize": "workflows.synthesis", "SASFTLoss": "training.sasft", "language_features": "training.language",
    "sasft_targets": "training.language", "repetition_features": "training.repetition",
    "steered_rollouts": "training.rollouts", "code_switch_ratio": "analysis.text_predicates",
    "FeatureIndex": "index.store",
    "Attribution": "methods.attribution", "Continuation": "methods.targets", "NextToken": "methods.targets",
    "LogitDiff": "methods.targets",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qscope_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
