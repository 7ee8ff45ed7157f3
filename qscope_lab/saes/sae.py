"""A TopK sparse autoencoder with the exact Qwen-Scope conventions.

Weights keep the Qwen-Scope orientation, ``W_enc (d_sae, d_model)`` and ``W_dec (d_model, d_sae)``, which is
exactly what ``F.linear`` wants for both encode and decode: no transpose, no copy of a checkpoint.

    pre   = x @ W_enc.T + b_enc            (raw residual, float32, no b_dec centring)
    acts  = topk(relu(pre), k)             (scattered into zeros)
    x_hat = acts @ W_dec.T + b_dec

``apply_b_dec_to_input`` exists only for SAELens checkpoints trained with centring; Qwen-Scope SAEs never use it.

Memory: ``encode_sparse`` never holds more than ``encode_rows`` rows of dense pre-activations (a chunk of
``ENCODE_CHUNK_BYTES``, fixed by the width, so results never depend on a memory budget), and the decoder exists
in one layout: sparse decoding re-lays ``W_dec`` column-major once (``decoder_rows`` is then a view of it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import validate
from ..base.budget import ENCODE_CHUNK_BYTES  # dense pre-activations held at once by encode_sparse
from . import formats as sae_formats
from . import sources as sae_sources
from .formats import SAEConfig


class SAE(nn.Module):
    """TopK SAE on a residual stream. ``encode`` is dense like SAELens; ``encode_sparse`` is the cheap path."""

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        k: int,
        apply_b_dec_to_input: bool = False,
        meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        check_shapes(W_enc, b_enc, W_dec, b_dec)
        d_sae = W_enc.shape[0]
        if not 0 < int(k) <= d_sae:
            raise ValueError(f"k must be in 1..d_sae={d_sae}, got {k}")
        # Parameters wrap the given storage (mmap'd checkpoints stay mmap'd); frozen until someone trains them.
        self.W_enc = nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.W_dec = nn.Parameter(W_dec, requires_grad=False)
        self.b_dec = nn.Parameter(b_dec, requires_grad=False)
        self.k = int(k)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.meta: dict[str, Any] = dict(meta or {})
        self._decoder_norms: tuple[tuple, torch.Tensor] | None = None  # (W_dec identity, value)

    # ------------------------------------------------------------------ shape facts
    @property
    def d_model(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def nbytes(self) -> int:
        """Bytes held: the weights (one decoder layout: ``decoder_rows`` is a view, not a copy)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    @property
    def encode_rows(self) -> int:
        """Rows ``encode_sparse`` encodes at once: their dense pre-activations take at most ``ENCODE_CHUNK_BYTES``."""
        return max(1, ENCODE_CHUNK_BYTES // (self.d_sae * self.W_enc.element_size()))

    @property
    def encode_workspace_bytes(self) -> int:
        """Working memory of one ``encode_sparse`` beyond its input and output: a chunk's pre-activations and
        top-k's scratch of the same size (what a job's memory plan counts per layer)."""
        return 2 * self.encode_rows * self.d_sae * self.W_enc.element_size()

    @property
    def layer(self) -> int | None:
        return self.meta.get("layer")

    def extra_repr(self) -> str:
        where = f", layer={self.layer}" if self.layer is not None else ""
        return f"d_model={self.d_model}, d_sae={self.d_sae}, k={self.k}{where}, dtype={self.dtype}"

    def clear_caches(self) -> None:
        """Forget tensors derived from W_dec. Needed only after editing ``W_dec.data`` directly (edits through
        the parameter itself, e.g. an optimizer step or ``with torch.no_grad(): sae.W_dec[...] = ...``, are
        noticed)."""
        self._decoder_norms = None

    def _apply(self, fn, recurse=True):  # .to() / .cuda(): cached tensors belong to the old weights
        self.clear_caches()
        return super()._apply(fn, recurse)

    def _w_dec_key(self) -> tuple:
        return (self.W_dec.data_ptr(), self.W_dec._version)

    @property
    def decoder_norms(self) -> torch.Tensor:
        """``W_dec.norm(dim=0)``: Qwen-Scope does not document unit-norm decoder columns, so we measure them."""
        if self._decoder_norms is None or self._decoder_norms[0] != self._w_dec_key():
            self._decoder_norms = (self._w_dec_key(), self.W_dec.detach().norm(dim=0))
        return self._decoder_norms[1]

    def direction(self, feature: int) -> torch.Tensor:
        """The raw decoder column ``W_dec[:, f]``: what steering adds, per unit of alpha."""
        self.check_feature(feature)
        return self.W_dec[:, feature]

    def check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.d_sae:
            raise IndexError(f"feature {feature} is out of range: this SAE has {self.d_sae} features "
                             f"(0..{self.d_sae - 1})")

    # ------------------------------------------------------------------ encode / decode
    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"input has last dimension {x.shape[-1]}, this SAE expects d_model={self.d_model}")
        x = x.to(device=self.device, dtype=self.dtype)
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``x @ W_enc.T + b_enc`` for every feature (training signals use these)."""
        return F.linear(self._as_input(x), self.W_enc, self.b_enc)

    def encode_sparse(self, x: torch.Tensor, chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), each ``[..., k]``: the top-k of relu(pre). Values may be 0 if fewer than k fire.

        Rows are encoded ``chunk_rows`` at a time (default ``encode_rows``): the dense ``rows x d_sae``
        pre-activations exist for one chunk only (a 4,096-token text at W64K: 64 MB instead of 1 GB). Each
        chunk is exactly the unchunked computation of its rows; the default chunk depends on the width alone,
        so the same inputs give the same bits whatever the memory budget."""
        x = self._as_input(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.d_model)
        rows = self.encode_rows if chunk_rows is None else validate.integer(chunk_rows, "chunk_rows", minimum=1)
        values, indices = [], []
        for start in range(0, max(1, flat.shape[0]), rows):
            top = torch.topk(F.linear(flat[start:start + rows], self.W_enc, self.b_enc), self.k, dim=-1,
                             sorted=True)
            values.append(top.values)
            indices.append(top.indices)
            del top
        value = values[0] if len(values) == 1 else torch.cat(values)
        index = indices[0] if len(indices) == 1 else torch.cat(indices)
        return value.clamp_min_(0.0).view(*lead, self.k), index.view(*lead, self.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense activations ``[..., d_sae]`` with at most k non-zeros per position."""
        values, indices = self.encode_sparse(x)
        return torch.zeros(*values.shape[:-1], self.d_sae, dtype=values.dtype, device=values.device).scatter_(
            -1, indices, values)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction from dense activations: ``acts @ W_dec.T + b_dec``."""
        return F.linear(acts.to(self.dtype), self.W_dec, self.b_dec)

    def decoder_rows(self) -> torch.Tensor:
        """``W_dec.T`` as a contiguous (d_sae, d_model) *view* of ``W_dec``: the one decoder layout.

        Gathering k columns of the (d_model, d_sae) Qwen-Scope file layout reads scattered memory (25x slower
        sparse decode), so on first use ``W_dec`` itself is re-laid column-major (same shape and values, its
        columns contiguous; a memory-mapped file's pages are let go) and no second copy is ever kept."""
        weight = self.W_dec
        if not weight.t().is_contiguous():
            with torch.no_grad():
                weight.data = weight.data.t().contiguous().t()
        return weight.detach().t()

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Reconstruction from (values, indices): sums k decoder columns per position instead of a d_sae matmul."""
        lead = values.shape[:-1]
        flat_idx = indices.reshape(-1, indices.shape[-1]).to(self.device)
        flat_val = values.reshape(-1, values.shape[-1]).to(device=self.device, dtype=self.dtype)
        if self.W_dec.requires_grad:  # training: keep the autograd path through W_dec itself
            columns = self.W_dec.index_select(1, flat_idx.reshape(-1)).view(self.d_model, *flat_idx.shape)
            out = torch.einsum("dnk,nk->nd", columns, flat_val) + self.b_dec
        else:
            out = F.embedding_bag(flat_idx, self.decoder_rows(), per_sample_weights=flat_val, mode="sum")
            out = out + self.b_dec
        return out.view(*lead, self.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(*self.encode_sparse(x))

    # ------------------------------------------------------------------ files
    @property
    def config(self) -> SAEConfig:
        """This SAE's description as the file formats write it (``meta`` beyond the known fields is provenance)."""
        known = {"layer", "format", "path", "hook"}
        return SAEConfig(d_model=self.d_model, d_sae=self.d_sae, k=self.k, layer=self.layer,
                         apply_b_dec_to_input=self.apply_b_dec_to_input, format=self.meta.get("format", "qscope"),
                         path=self.meta.get("path"), hook=self.meta.get("hook", "resid_post"),
                         provenance={key: v for key, v in self.meta.items() if key not in known})

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], config: SAEConfig, device=None, dtype=None) -> SAE:
        """Build from what a file format returns: the four tensors and their ``SAEConfig``."""
        if device is not None or dtype is not None:
            tensors = {name: t.to(device=device or t.device, dtype=dtype or t.dtype) for name, t in tensors.items()}
        meta = {"layer": config.layer, "format": config.format, "path": config.path, "hook": config.hook,
                **config.provenance}
        return cls(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], k=config.k,
                   apply_b_dec_to_input=config.apply_b_dec_to_input, meta=meta)

    @classmethod
    def load(cls, source, layer: int | None = None, k: int | None = None, device=None, dtype=None) -> SAE:
        """One layer from a Qwen-Scope ``.pt``, a SAELens folder, a qscope ``.safetensors``, a folder of layer
        files or a hub repo id (``layer=`` picks the layer in the last two). k: explicit (it wins over
        everything, a file's own config included), else from the file's config, else from a hub-pattern name
        such as ``...-W32K-L0_50``. Files stored in bf16 / fp16 load as float32 unless ``dtype`` says otherwise."""
        explicit = None if k is None else validate.integer(k, "k", minimum=1)
        path, k = sae_sources.locate(source, layer=layer, k=explicit)
        tensors, config = sae_formats.read(path, k=k)
        if explicit is not None and config.k != explicit:
            config = dataclasses.replace(config, k=explicit)
        if dtype is None and any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors.values()):
            dtype = torch.float32
        try:
            sae = cls.from_parts(tensors, config, device=device, dtype=dtype)
        except ValueError as err:  # shapes that do not form one SAE: name the file
            raise ValueError(f"{path}: {err}") from None
        if sae.layer is None and layer is not None:
            sae.meta["layer"] = layer
        if not sae_sources.is_local(source):
            sae.meta["repo_id"] = str(source)
        return sae

    def with_k(self, k: int) -> SAE:
        """This SAE encoding with top-``k`` instead (the same weight tensors, not a copy); itself when k is its
        own. For an explicit ``k=`` given with SAE objects (``SAESuite.open`` / ``Lab.load``)."""
        k = validate.integer(k, "k", minimum=1)
        if k == self.k:
            return self
        return type(self)(self.W_enc.data, self.b_enc.data, self.W_dec.data, self.b_dec.data, k=k,
                          apply_b_dec_to_input=self.apply_b_dec_to_input, meta=self.meta)

    def save(self, path, format: str = "qscope", dtype: torch.dtype | None = None, **meta):
        """Write this SAE as ``format="qscope"`` (safetensors; ``meta`` joins ``self.meta`` in its metadata) or
        ``"qwen-scope"`` (the hub's ``.pt``, which has no room for metadata)."""
        config = self.config
        config = dataclasses.replace(config, provenance={**config.provenance, **meta})
        tensors = {name: getattr(self, name) for name in sae_formats.TENSOR_NAMES}
        return sae_formats.write(path, tensors, config, format=format, dtype=dtype)

    @classmethod
    def random(cls, d_model: int, d_sae: int, k: int, seed: int = 0, dtype=torch.float32) -> SAE:
        """A random SAE with unit-norm decoder columns and tied init; for tests and as a training start."""
        gen = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_model, d_sae, generator=gen, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=0, keepdim=True)
        W_enc = W_dec.T.contiguous()
        b_enc = 0.01 * torch.randn(d_sae, generator=gen)
        b_dec = 0.01 * torch.randn(d_model, generator=gen)
        return cls(W_enc.to(dtype), b_enc.to(dtype), W_dec.to(dtype), b_dec.to(dtype), k=k)


def check_shapes(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor) -> None:
    """Raise a ValueError naming both shapes when the four tensors do not form one SAE."""
    if W_enc.ndim != 2 or W_dec.ndim != 2:
        raise ValueError(f"W_enc and W_dec must be matrices, got shapes {tuple(W_enc.shape)} and {tuple(W_dec.shape)}")
    d_sae, d_model = W_enc.shape
    if tuple(W_dec.shape) != (d_model, d_sae):
        hint = ""
        if tuple(W_dec.shape) == (d_sae, d_model):
            hint = " (W_dec looks transposed: SAELens orientation stored in a Qwen-Scope file?)"
        raise ValueError(
            f"W_dec has shape {tuple(W_dec.shape)} but W_enc {tuple(W_enc.shape)} needs W_dec of shape "
            f"{(d_model, d_sae)} = (d_model, d_sae){hint}")
    if tuple(b_enc.shape) != (d_sae,):
        raise ValueError(f"b_enc has shape {tuple(b_enc.shape)} but W_enc {tuple(W_enc.shape)} needs ({d_sae},)")
    if tuple(b_dec.shape) != (d_model,):
        raise ValueError(f"b_dec has shape {tuple(b_dec.shape)} but W_enc {tuple(W_enc.shape)} needs ({d_model},)")
