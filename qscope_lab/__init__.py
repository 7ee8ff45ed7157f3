"""qscope-lab: a Jupyter-native workbench for Qwen models and the Qwen-Scope sparse autoencoders.

Core: ``Lab`` (an nnsight-traced model + per-layer SAEs), ``SAE`` (TopK, Qwen-Scope conventions),
``FeatureActs`` (sparse per-token features), ``Steer`` (feature edits for generation).
"""

from .activations import FeatureActs
from .generation import Generation
from .hub import HubUnavailableError
from .lab import Lab
from .registry import GROUPS, SAEGroup, registry_frame
from .sae import SAE
from .sae_io import UnsafeCheckpointError
from .sae_suite import SAESuite
from .steering import Steer

__version__ = "0.1.0"
__all__ = ["Lab", "SAE", "SAESuite", "FeatureActs", "Generation", "Steer", "GROUPS", "SAEGroup",
           "registry_frame", "HubUnavailableError", "UnsafeCheckpointError"]
