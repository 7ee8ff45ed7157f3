"""SASFT: sparse-autoencoder-guided SFT against code-switching (REFERENCE section 2, "Training signals").

L_reduce = mean over counted tokens of sum_s relu(f_s(x) - alpha_s), f_s the SAE encoder pre-activation
``x @ W_enc.T + b_enc`` of the chosen features at the chosen decoder blocks; counted = completion tokens
(``labels != -100``) of the samples a per-sample mask keeps (the non-L samples). Add ``weight * L_reduce`` to the
CE of any training loop; ``SASFTTrainer`` does it for transformers' Trainer. Gradients reach the model only: the
loss holds frozen copies of the chosen encoder rows, never the SAE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import validate
from ..core.hooks import edit_blocks

IGNORE_INDEX = -100


def completion_mask_from_labels(labels: torch.Tensor, shift: bool = False) -> torch.Tensor:
    """[batch, seq] bool: positions holding a completion token (``labels != -100``, transformers' convention).
    ``shift=True`` marks instead the positions that *predict* one (the last prompt token included)."""
    mask = labels != IGNORE_INDEX
    if shift:
        mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    return mask


class SASFTLoss(nn.Module):
    """Sparse-autoencoder-guided SFT loss: ``weight * L_reduce`` at the chosen decoder blocks.

        sasft = SASFTLoss(lab, features={3: [12, 40]}, alphas={3: alpha_en}, weight=1e-3)
        with sasft.attach(model):            # forward hooks on model's decoder blocks 3 (kept until detach)
            out = model(input_ids, attention_mask=..., labels=labels)
            loss = out.loss + sasft(labels=labels, sample_mask=~is_chinese)
            loss.backward()

    ``source``: a Lab, or ``(model, saes)`` with saes a ``{layer: SAE}`` dict or SAESuite (model may be None
    when you only call ``l_reduce`` on hidden states you pass). ``alphas``: ``{layer: [n_features] tensor}``,
    ``{layer: float}`` or one float. L_reduce = sum over layers of the mean over counted tokens of
    sum_s relu(f_s(h) - alpha_s); counted = completion tokens (``completion_mask``, else ``labels != -100``,
    else all) of the samples ``sample_mask`` keeps. The SAE stays frozen: the loss keeps detached copies of
    the chosen encoder rows as buffers, so gradients flow only into the model. ``last`` holds the latest
    unweighted L_reduce per layer (floats) for logging.
    """

    def __init__(self, source, features: Mapping[int, Sequence[int]], alphas=0.0, weight: float = 1e-3,
                 layers_path: str | None = None):
        super().__init__()
        if hasattr(source, "hf_model") and hasattr(source, "sae"):
            model, get_sae, layers_path = source.hf_model, source.sae, layers_path or source.layers_path
        else:
            model, saes = source
            get_sae = saes.__getitem__
        if model is not None and layers_path is None:
            from ..core.models import find_layers

            layers_path = find_layers(model)[0]
        object.__setattr__(self, "_model", model)  # not a submodule: .to() / parameters() leave the model alone
        self.layers_path = layers_path
        self.weight = validate.number(weight, "weight", minimum=0.0)
        if not features:
            raise ValueError("features must name at least one layer: {layer: [feature ids]}")
        self.layers: list[int] = sorted(int(layer) for layer in features)
        self.features: dict[int, list[int]] = {}
        for layer in self.layers:
            sae = get_sae(layer)
            ids = [validate.feature(f, sae.d_sae, f"features[{layer}]") for f in features[layer]]
            if not ids:
                raise ValueError(f"layer {layer}: no features given")
            for f in ids:
                sae.check_feature(f)
            self.features[layer] = ids
            index = torch.tensor(ids, dtype=torch.long, device=sae.W_enc.device)
            if isinstance(alphas, Mapping) and layer not in alphas:
                raise ValueError(f"alphas has no entry for layer {layer}")
            alpha = alphas[layer] if isinstance(alphas, Mapping) else alphas
            alpha = torch.as_tensor(alpha, dtype=torch.float32).flatten()
            if alpha.numel() == 1:
                alpha = alpha.expand(len(ids))
            if alpha.numel() != len(ids):
                raise ValueError(f"layer {layer}: {len(ids)} features but {alpha.numel()} alphas")
            if not torch.isfinite(alpha).all():
                raise ValueError(f"alphas of layer {layer} must be finite numbers, got {alpha.tolist()}")
            self.register_buffer(f"W_{layer}", sae.W_enc.detach().index_select(0, index).float().clone())
            self.register_buffer(f"b_{layer}", sae.b_enc.detach().index_select(0, index).float().clone())
            self.register_buffer(f"alpha_{layer}", alpha.clone().to(sae.W_enc.device))
            centre = sae.b_dec.detach().float().clone() if sae.apply_b_dec_to_input else None
            self.register_buffer(f"centre_{layer}", centre)
        self._hidden: dict[int, torch.Tensor] = {}
        self._hooks: contextlib.ExitStack | None = None
        self.last: dict[int, float] = {}

    def extra_repr(self) -> str:
        n = {layer: len(f) for layer, f in self.features.items()}
        return f"features per layer={n}, weight={self.weight:g}, attached={self.attached}"

    # ------------------------------------------------------------------ hooks
    @property
    def attached(self) -> bool:
        return self._hooks is not None

    def attach(self, model: nn.Module | None = None) -> SASFTLoss:
        """Register forward hooks on the decoder blocks (``model`` defaults to the one given at construction);
        returns self, usable as ``with sasft.attach(model): ...`` (detaches at the end)."""
        model = model if model is not None else self._model
        if model is None:
            raise ValueError("no model to attach to: SASFTLoss((model, saes), ...) or attach(model)")
        if self.layers_path is None:
            from ..core.models import find_layers

            self.layers_path = find_layers(model)[0]
        self.detach()
        blocks = model.get_submodule(self.layers_path)
        device = next(model.parameters()).device
        self.to(device)
        # every thread's forwards: a trainer may run them off the thread that attached
        self._hooks = contextlib.ExitStack()
        self._hooks.enter_context(edit_blocks(blocks, {layer: self._record(layer) for layer in self.layers},
                                              this_thread_only=False))
        return self

    def detach(self) -> None:
        if self._hooks is not None:
            self._hooks.close()
        self._hooks = None
        self._hidden = {}

    def __enter__(self) -> SASFTLoss:
        if not self.attached:
            self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def _record(self, layer: int):
        def record(h: torch.Tensor) -> None:
            self._hidden[layer] = h

        return record

    # ------------------------------------------------------------------ the loss
    def pre_activations(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """f_s(h) for the chosen features of ``layer``: ``[..., n_features]`` (float32, differentiable in h)."""
        W = getattr(self, f"W_{layer}")
        x = h.to(device=W.device, dtype=torch.float32)
        centre = getattr(self, f"centre_{layer}")
        if centre is not None:
            x = x - centre
        return F.linear(x, W, getattr(self, f"b_{layer}"))

    def excess(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """sum_s relu(f_s(h) - alpha_s) per position: ``[...]``."""
        return F.relu(self.pre_activations(layer, h) - getattr(self, f"alpha_{layer}")).sum(-1)

    def _mask(self, shape, device, completion_mask=None, labels=None, sample_mask=None) -> torch.Tensor:
        if completion_mask is None and labels is not None:
            completion_mask = completion_mask_from_labels(labels)
        mask = torch.ones(shape, dtype=torch.bool, device=device) if completion_mask is None else \
            completion_mask.to(device=device, dtype=torch.bool)
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"completion mask has shape {tuple(mask.shape)}, the hidden states {tuple(shape)}")
        if sample_mask is not None:
            sample_mask = torch.as_tensor(sample_mask, device=device).bool().flatten()
            if sample_mask.numel() != shape[0]:
                raise ValueError(f"sample_mask has {sample_mask.numel()} entries for a batch of {shape[0]}")
            mask = mask & sample_mask.unsqueeze(-1)
        return mask

    def l_reduce(self, hidden: Mapping[int, torch.Tensor], completion_mask=None, labels=None,
                 sample_mask=None) -> torch.Tensor:
        """Unweighted L_reduce from hidden states ``{layer: [batch, seq, d_model]}`` (0 with no counted token)."""
        total = None
        self.last = {}
        for layer in self.layers:
            if layer not in hidden:
                raise RuntimeError(f"no hidden state of layer {layer}: run the model with the hooks attached "
                                   f"(sasft.attach(model)) before computing the loss")
            h = hidden[layer]
            mask = self._mask(h.shape[:2], h.device, completion_mask, labels, sample_mask)
            excess = self.excess(layer, h).to(h.device)
            term = (excess * mask).sum() / mask.sum().clamp_min(1)
            self.last[layer] = float(term.detach())
            total = term if total is None else total + term.to(total.device)
        return total

    def forward(self, completion_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                sample_mask: torch.Tensor | None = None, clear: bool = True) -> torch.Tensor:
        """``weight * L_reduce`` on the hidden states of the latest forward pass through the hooked blocks."""
        try:
            return self.weight * self.l_reduce(self._hidden, completion_mask, labels, sample_mask)
        finally:
            if clear:
                self._hidden = {}


def _sasft_trainer_class():
    from transformers import Trainer

    class SASFTTrainer(Trainer):
        """transformers ``Trainer`` with ``loss = CE + sasft(...)``.

            trainer = SASFTTrainer(model=model, args=args, train_dataset=ds, data_collator=collate,
                                   sasft=SASFTLoss((model, saes), features, alphas, weight=1e-3))

        Batches carry ``labels`` (completion tokens, -100 elsewhere) and may carry a bool ``sample_mask_key``
        column (default ``"sasft_mask"``: True = count the sample, e.g. the non-Chinese ones); it is kept past
        ``remove_unused_columns`` and taken out before the model's forward. Under gradient accumulation with
        token-normalised CE the SASFT term is divided by the accumulation steps, like the CE."""

        def __init__(self, *args, sasft: SASFTLoss, sample_mask_key: str = "sasft_mask", **kwargs):
            super().__init__(*args, **kwargs)
            self.sasft = sasft
            self.sample_mask_key = sample_mask_key
            self.sasft.attach(self.model)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self.sample_mask_key not in self._signature_columns:
                self._signature_columns.append(self.sample_mask_key)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            sample_mask = inputs.pop(self.sample_mask_key, None)
            labels = inputs.get("labels")
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            extra = self.sasft(labels=labels, sample_mask=sample_mask)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None and model.training:
                extra = extra / max(getattr(self, "current_gradient_accumulation_steps", 1), 1)
            loss = loss + extra.to(loss.device)
            return (loss, outputs) if return_outputs else loss

    return SASFTTrainer


def __getattr__(name):  # SASFTTrainer is built on first use: importing Trainer costs seconds
    if name == "SASFTTrainer":
        cls = _sasft_trainer_class()
        globals()["SASFTTrainer"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


