"""Finding SAE files (local folders, single files, hub repos) and holding a model's per-layer SAEs lazily.

A Qwen-Scope group is tens to hundreds of GB, so nothing is read until a layer is asked for, only that layer's
file is fetched, and loaded layers live in an LRU cache bounded in bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from ..base import validate
from . import formats as sae_formats
from . import hub
from .formats import k_from_name, layer_of
from .registry import find_group, parse_group_name
from .sae import SAE
from .sources import is_local, looks_like_path, scan_folder

DEFAULT_CACHE_BYTES = 4 * 1024**3


class SAESuite:
    """Per-layer SAEs of one model, loaded on first use and kept in an LRU cache with a byte budget.

    ``suite[12]`` returns layer 12's SAE; ``suite.layers`` lists the layers available without loading any.
    """

    def __init__(self, loader: Callable[[int], SAE], layers: list[int], name: str,
                 k: int | None = None, d_model: int | None = None, d_sae: int | None = None,
                 cache_bytes: int | None = None):
        self._loader = loader
        self.layers = sorted(layers)
        self.name = name
        self.k, self.d_model, self.d_sae = k, d_model, d_sae
        self.cache_bytes = DEFAULT_CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        # no cache size of its own: a Lab sets cache_bytes to its memory_budget (in-memory suites hold their size)
        self.follows_budget = cache_bytes is None
        self._cache: OrderedDict[int, SAE] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many files were read: lets users (and tests) see the laziness
        self.load_counts: dict[int, int] = {}  # reads per layer: a job that reads each SAE once leaves 1s here
        self.dtype = None  # the dtype SAEs are loaded in (None: as stored, half precision widened to float32)
        self._peek: Callable[[int], tuple[int, int] | None] | None = None  # (d_model, d_sae) from a file's header

    def __repr__(self) -> str:
        shown = f"{self.layers[0]}..{self.layers[-1]}" if len(self.layers) > 3 else self.layers
        return (f"SAESuite({self.name!r}, layers={shown}, d_sae={self.d_sae}, k={self.k}, "
                f"cached={list(self._cache)})")

    def __contains__(self, layer: int) -> bool:
        return layer in self.layers

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer: int) -> SAE:
        layer = int(layer)
        if layer not in self.layers:
            raise KeyError(f"no SAE for layer {layer} in {self.name} (layers: {self.layers[0]}..{self.layers[-1]})"
                           if self.layers else f"{self.name} has no layers")
        with self._lock:
            if layer in self._cache:
                self._cache.move_to_end(layer)
                return self._cache[layer]
            sae = self._loader(layer)
            self.loads += 1
            self.load_counts[layer] = self.load_counts.get(layer, 0) + 1
            if sae.meta.get("layer") is None:
                sae.meta["layer"] = layer
            for attr in ("k", "d_model", "d_sae"):
                if getattr(self, attr) is None:
                    setattr(self, attr, getattr(sae, attr))
            self._cache[layer] = sae
            self._evict()
            return sae

    def _evict(self) -> None:
        while len(self._cache) > 1 and self.cached_bytes > self.cache_bytes:
            self._cache.popitem(last=False)

    def layer_nbytes(self, layer: int | None = None) -> int | None:
        """Bytes one layer's SAE takes once loaded, known without reading it: its size when cached, else from
        the suite's d_model and d_sae (config, registry or folder name); None when those are not known yet."""
        with self._lock:
            if layer is not None and layer in self._cache:
                return self._cache[layer].nbytes
            if layer is None and self._cache:
                return next(iter(self._cache.values())).nbytes
        if (self.d_model is None or self.d_sae is None) and self._peek is not None and self.layers:
            shape = self._peek(self.layers[0] if layer is None else layer)
            if shape is not None:
                self.d_model, self.d_sae = shape
        if self.d_model is None or self.d_sae is None:
            return None
        import torch

        size = torch.empty((), dtype=self.dtype or torch.float32).element_size()
        return (2 * self.d_model * self.d_sae + self.d_model + self.d_sae) * size

    def reset_counts(self) -> None:
        """Zero ``loads`` and ``load_counts`` (before a measured job)."""
        with self._lock:
            self.loads = 0
            self.load_counts = {}

    @property
    def cached_layers(self) -> list[int]:
        return list(self._cache)

    @property
    def cached_bytes(self) -> int:
        return sum(sae.nbytes for sae in self._cache.values())

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def open(cls, source, k: int | None = None, device=None, dtype=None,
             cache_bytes: int | None = None) -> SAESuite:
        """From a hub repo id, a local folder (any supported format), one file, or a ``{layer: SAE}`` dict.
        An explicit ``k`` wins over every file's config and every SAE object's own k (those objects are left
        as they are: the suite holds versions of them with top-``k``, sharing their weights)."""
        if k is not None:
            k = validate.integer(k, "k", minimum=1)
        if isinstance(source, SAESuite):
            return source if k is None or k == source.k else source._with_k(k)
        if isinstance(source, SAE):
            source = {source.layer if source.layer is not None else 0: source}
        if isinstance(source, Mapping):
            suite = cls._from_mapping(source, device, dtype, cache_bytes)
            return suite if k is None or k == suite.k else suite._with_k(k)
        if is_local(source):
            suite = cls._from_path(Path(source).expanduser(), k, device, dtype, cache_bytes)
        elif looks_like_path(source):
            raise FileNotFoundError(f"no such file or folder: {source}")
        else:
            suite = cls._from_hub(str(source), k, device, dtype, cache_bytes)
        suite.dtype = dtype
        return suite

    def _with_k(self, k: int) -> SAESuite:
        """A suite reading through this one, each layer's SAE encoding with top-``k`` (``SAE.with_k``)."""
        suite = type(self)(lambda layer: self[layer].with_k(k), self.layers, self.name, k=k, d_model=self.d_model,
                           d_sae=self.d_sae, cache_bytes=self.cache_bytes)
        suite.follows_budget, suite.dtype = self.follows_budget, self.dtype
        return suite

    @classmethod
    def _from_mapping(cls, saes: Mapping[int, SAE], device, dtype, cache_bytes) -> SAESuite:
        saes = {int(layer): sae for layer, sae in saes.items()}
        for layer, sae in saes.items():
            if sae.meta.get("layer") is None:
                sae.meta["layer"] = layer
        first = next(iter(saes.values()))

        def load(layer: int) -> SAE:
            sae = saes[layer]
            return sae.to(device=device, dtype=dtype) if device is not None or dtype is not None else sae

        return cls(load, list(saes), "in-memory",
                    k=first.k, d_model=first.d_model, d_sae=first.d_sae,
                   cache_bytes=cache_bytes if cache_bytes is not None else sum(s.nbytes for s in saes.values()))

    @classmethod
    def _from_path(cls, path: Path, k, device, dtype, cache_bytes) -> SAESuite:
        if path.is_file() or sae_formats.is_saelens_folder(path):
            sae = SAE.load(path, k=k, device=device, dtype=dtype)
            layer = sae.layer if sae.layer is not None else 0
            return cls(lambda _: sae, [layer], path.name, k=sae.k, d_model=sae.d_model, d_sae=sae.d_sae,
                       cache_bytes=cache_bytes)
        files = scan_folder(path)
        if not files:
            raise FileNotFoundError(f"{path} contains no SAE files (layer{{n}}.sae.pt, layer{{n}}.sae.safetensors "
                                    f"or SAELens folders)")
        named = k_from_name(path)  # the folder's name says k for .pt files only: a file's own config wins over it
        pt = any(f.suffix == ".pt" for f in files.values())
        if k is None and named is None and pt:
            raise ValueError(f"{path} holds Qwen-Scope .pt files, which carry no config: pass k= (50 or 100), or "
                             f"keep the hub folder name (e.g. 'SAE-Res-Qwen3-1.7B-Base-W32K-L0_50')")
        parsed = parse_group_name(path.name)
        explicit = k
        suite = cls(lambda layer: SAE.load(files[layer], k=explicit, device=device, dtype=dtype), list(files),
                    path.name, k=k or (named if pt else None), d_sae=parsed[1] if parsed else None,
                    cache_bytes=cache_bytes)
        suite._peek = lambda layer: sae_formats.peek_shape(files[layer])
        return suite

    @classmethod
    def _from_hub(cls, repo_id: str, k, device, dtype, cache_bytes) -> SAESuite:
        group = find_group(repo_id)
        parsed = parse_group_name(repo_id)
        if group is None and parsed is None:
            raise ValueError(
                f"'{repo_id}' is neither a local path nor a Qwen-Scope hub id (Qwen/SAE-Res-<model>-W<N>K-L0_<k>); "
                f"`qscope-lab saes` lists the 14 groups")
        if group is not None:
            layers, d_model, d_sae, k = list(range(group.n_layers)), group.d_model, group.d_sae, k or group.k
        else:
            assert parsed is not None  # checked above
            layers = cls._hub_layers(repo_id)
            d_model, d_sae, k = None, parsed[1], k or parsed[2]

        def load(layer: int) -> SAE:
            return SAE.load(repo_id, layer=layer, k=k, device=device, dtype=dtype)

        return cls(load, layers, repo_id, k=k, d_model=d_model, d_sae=d_sae, cache_bytes=cache_bytes)

    @staticmethod
    def _hub_layers(repo_id: str) -> list[int]:
        if not hub.hub_available():
            raise hub.HubUnavailableError(
                f"'{repo_id}' is not in the qscope registry, so its layer list must come from the Hub, which "
                f"cannot be reached. Download the folder elsewhere and pass its local path.")
        from huggingface_hub import list_repo_files

        return sorted(n for n in (layer_of(f) for f in list_repo_files(repo_id)) if n is not None)

