"""What the layers below the Lab use of it, as a typed protocol.

``methods``, ``index`` and the runtime in ``core`` take a ``LabLike``, not the ``Lab`` class: they sit below
``qscope_lab.lab`` in the import contracts, and this protocol is the dependency the contracts cannot see made
explicit (a type checker holds ``Lab`` to it). Anything with these members can be scanned, spliced, attributed
or indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from ..saes.sae import SAE
    from ..saes.suite import SAESuite
    from .activations import FeatureActs
    from .steering import Steer


class LabLike(Protocol):
    """A traced model with per-layer SAEs: the members scan loops, methods and the feature index read (read-only
    properties here, so plain attributes of the Lab satisfy them)."""

    @property
    def model(self) -> Any: ...  # the nnsight wrapper (traces)

    @property
    def tokenizer(self) -> Any: ...

    @property
    def hf_model(self) -> Any: ...  # the transformers model itself (a PreTrainedModel: forwards, generate)

    @property
    def blocks(self) -> torch.nn.ModuleList: ...  # decoder blocks: where forward hooks go (core.hooks)

    @property
    def layers(self) -> Any: ...  # nnsight envoys of the decoder blocks

    @property
    def layers_path(self) -> str: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def architecture(self) -> str: ...

    @property
    def saes(self) -> SAESuite | None: ...

    @property
    def index(self) -> Any: ...  # the FeatureIndex cards and search read, or None

    @property
    def device(self) -> torch.device: ...

    @property
    def memory_budget(self) -> int: ...  # bytes a corpus-scale job may hold unless given its own (base.budget)

    @property
    def max_positions(self) -> int | None: ...

    def sae(self, layer: int) -> SAE: ...

    def check_layer(self, layer: Any, name: str = "layer") -> int: ...

    def check_layers(self, layers: Any, name: str = "layers") -> list[int]: ...

    def token_strings(self, ids: Sequence[int]) -> list[str]: ...

    def token_pieces(self, ids: Sequence[int], max_group: int = 4) -> list[str]: ...

    def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]: ...

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]: ...

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]: ...

    def residuals(self, enc: dict, layers: Sequence[int], steer: list[Steer] | None = None,
                  run_to_end: bool = False) -> dict[int, torch.Tensor]: ...

    def loader(self) -> Callable[[], LabLike]: ...

    def encode(self, texts: str | Sequence[str], layer: int, batch_size: int = 8, skip_first: bool = True,
               skip_special: bool = True, max_length: int | None = None, progress: bool | None = None
               ) -> FeatureActs: ...  # sparse SAE features of every token (explain's search reads references)

    def feature_names(self, layer: Any, features: Any) -> list[str]: ...  # display names (explain.names)
