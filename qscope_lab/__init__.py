"""qscope-lab: a Jupyter-native workbench for Qwen models and the Qwen-Scope sparse autoencoders.

Core: ``Lab`` (an nnsight-traced model + per-layer SAEs), ``SAE`` (TopK, Qwen-Scope conventions),
``FeatureActs`` (sparse per-token features), ``Steer`` (feature edits for generation).
Workflows: ``SeedClassifier`` (seed-data classification), ``synthesize`` (data toward uncovered features),
``footprint`` / ``overlap`` / ``select_subset`` (benchmark coverage and redundancy), ``SASFTLoss`` and
``language_features`` / ``repetition_features`` / ``steered_rollouts`` (SAE-based training signals).
"""

from .activations import FeatureActs
from .classify import SeedClassifier
from .coverage import footprint, overlap, select_subset
from .generation import Generation
from .hub import HubUnavailableError
from .lab import Lab
from .registry import GROUPS, SAEGroup, registry_frame
from .sae import SAE
from .sae_io import UnsafeCheckpointError
from .sae_suite import SAESuite
from .steering import Steer
from .synthesis import synthesize
from .training_signals import (SASFTLoss, code_switch_ratio, language_features, repetition_features,
                               sasft_targets, steered_rollouts)

__version__ = "0.1.0"
__all__ = ["Lab", "SAE", "SAESuite", "FeatureActs", "Generation", "Steer", "GROUPS", "SAEGroup",
           "registry_frame", "HubUnavailableError", "UnsafeCheckpointError", "SeedClassifier", "footprint",
           "overlap", "select_subset", "synthesize", "SASFTLoss", "language_features", "sasft_targets",
           "repetition_features", "steered_rollouts", "code_switch_ratio"]
