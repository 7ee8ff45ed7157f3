"""Training with SAEs: train SAEs for a checkpoint, and the training signals of REFERENCE section 2.

``sae_training`` (TopK SAEs in the Qwen-Scope convention), ``language`` (language-specific features),
``sasft`` (the SASFT loss and Trainer), ``repetition`` (repetition features), ``rollouts`` (steered RL
rollouts), ``code_switch_experiment`` (the measured SFT vs SASFT demo).
"""

from ..analysis.text_predicates import code_switch_ratio, code_switched, foreign_share, repetition_rate
from .language import language_features, language_statistics, monolinguality, sasft_targets
from .repetition import repetition_features
from .rollouts import steered_rollouts
from .sasft import IGNORE_INDEX, SASFTLoss, completion_mask_from_labels

__all__ = ["language_features", "language_statistics", "monolinguality", "sasft_targets", "SASFTLoss",
           "completion_mask_from_labels", "IGNORE_INDEX", "repetition_features", "steered_rollouts",
           "code_switch_ratio", "code_switched", "foreign_share", "repetition_rate"]


def __getattr__(name):  # SASFTTrainer is built on first use: importing transformers' Trainer costs seconds
    if name == "SASFTTrainer":
        from . import sasft

        return sasft.SASFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
