"""Training signals from SAE features (REFERENCE section 2, "Training signals"): SASFT against code-switching,
repetition features, and a steered sampler for RL.

- ``language_features``: monolinguality per feature and language, nu_L(s) = mu_L(s) - mean over the other
  languages of mu_(s) (mu = mean TopK activation per token), top features per language and layer, and
  alpha_j(s) = the mean encoder pre-activation of s on language j (what the SASFT loss clips at).
- ``SASFTLoss``: L_reduce = mean over counted tokens of sum_s relu(f_s(x) - alpha_s), f_s the SAE encoder
  pre-activation ``x @ W_enc.T + b_enc`` of the chosen features at the chosen decoder blocks; counted = completion
  tokens (``labels != -100``) of the samples a per-sample mask keeps (the non-L samples). Add
  ``weight * L_reduce`` to the CE of any training loop; ``SASFTTrainer`` does it for transformers' Trainer.
  Gradients reach the model only: the loss holds frozen copies of the chosen encoder rows, never the SAE.
- ``repetition_features``: features whose activation rises most between a token's first and last occurrence
  in a text repeated several times.
- ``steered_rollouts``: groups of sampled rollouts per prompt with exactly one rollout per group steered (e.g.
  a repetition feature up): rare bad cases on demand for an RL reward model or a GRPO group.
- ``code_switch_ratio``: share of answers that contain another script than the target language's.
The measured demo (plain SFT vs SASFT on the same code-switching data) is ``code_switch_experiment.py``.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .activations import counted_positions
from .lab import as_texts

IGNORE_INDEX = -100
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_FOREIGN = {"en": _CJK, "code": _CJK, "zh": _LATIN}


# ---------------------------------------------------------------------------------------------- metrics
def code_switched(text: str, target: str = "en", min_chars: int = 1) -> bool:
    """True if ``text`` holds at least ``min_chars`` characters of a script foreign to ``target``: CJK
    ideographs for ``"en"`` (and ``"code"``), Latin letters for ``"zh"``."""
    if target not in _FOREIGN:
        raise ValueError(f"target must be one of {sorted(_FOREIGN)}, got {target!r}")
    return len(_FOREIGN[target].findall(text)) >= min_chars


def code_switch_ratio(texts: Sequence[str] | str, target: str = "en", min_chars: int = 1) -> float:
    """Code-switch ratio (the SASFT paper's metric): the share of answers, to prompts in language ``target``,
    that contain another script at all (``code_switched``). An answer with one Chinese character counts as
    switched; for the amount of foreign text use ``foreign_share`` (``features.han_share`` for English)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    return float(np.mean([code_switched(t, target, min_chars) for t in texts]))


def foreign_share(texts: Sequence[str] | str, target: str = "en") -> float:
    """Mean over answers of the share of non-space characters in a script foreign to ``target``."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    shares = []
    for text in texts:
        chars = [c for c in text if not c.isspace()]
        shares.append(len(_FOREIGN[target].findall(text)) / max(len(chars), 1))
    return float(np.mean(shares)) if shares else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """1 - distinct / total word n-grams (characters when the text has too few words, e.g. Chinese):
    0 for no repeated n-gram, near 1 for a loop."""
    units = text.split()
    if len(units) < n + 1:
        units = [c for c in text if not c.isspace()]
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


# ---------------------------------------------------------------------------------------------- language features
def _layers_of(lab, layers) -> list[int]:
    if layers is None:
        layers = lab.saes.layers if lab.saes is not None else range(lab.n_layers)
    layers = [layers] if isinstance(layers, int) else list(layers)
    return sorted({lab._check_layer(layer) for layer in layers})


def _special_ids(lab) -> torch.Tensor:
    return torch.tensor(sorted(lab.tokenizer.all_special_ids or []), dtype=torch.long, device=lab.device)


@torch.no_grad()
def language_statistics(lab, texts_by_language: Mapping[str, Sequence[str]], layers=None, batch_size: int = 16,
                        max_length: int = 128, skip_first: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """Per layer: ``{"languages": [...], "act": [n_lang, d_sae] mean TopK activation per token,
    "pre": [n_lang, d_sae] mean encoder pre-activation, "fire": [n_lang, d_sae] firing rate, "tokens": [n_lang]}``
    over counted tokens (no pads, no special tokens, no attention sink when ``skip_first``)."""
    if not texts_by_language or len(texts_by_language) < 2:
        raise ValueError("give texts for at least two languages: {'en': [...], 'zh': [...]}")
    layers = _layers_of(lab, layers)
    special = _special_ids(lab)
    languages = list(texts_by_language)
    stats = {layer: {"languages": languages, **{key: torch.zeros(len(languages), lab.sae(layer).d_sae,
                                                                  dtype=torch.float64)
                                                for key in ("act", "pre", "fire")},
                     "tokens": torch.zeros(len(languages), dtype=torch.float64)} for layer in layers}
    for li, language in enumerate(languages):
        texts = as_texts(texts_by_language[language])
        for start in range(0, len(texts), batch_size):
            enc = lab.tokenize(texts[start:start + batch_size], max_length=max_length)
            keep = counted_positions(enc["attention_mask"], skip_first)
            if len(special):
                keep &= ~torch.isin(enc["input_ids"], special)
            hidden = lab.residuals(enc, layers)
            for layer in layers:
                sae = lab.sae(layer)
                pre = sae.pre_activations(hidden[layer][keep]).float()
                acts = sae.encode(hidden[layer][keep]).float()
                s = stats[layer]
                s["pre"][li] += pre.sum(0).double().cpu()
                s["act"][li] += acts.sum(0).double().cpu()
                s["fire"][li] += (acts > 0).sum(0).double().cpu()
                s["tokens"][li] += int(keep.sum())
    for s in stats.values():
        if (s["tokens"] == 0).any():
            empty = [languages[i] for i in torch.nonzero(s["tokens"] == 0).flatten().tolist()]
            raise ValueError(f"no counted tokens for language(s) {empty}")
        for key in ("act", "pre", "fire"):
            s[key] = (s[key] / s["tokens"].unsqueeze(-1)).float()
    return stats


def monolinguality(act_means: torch.Tensor) -> torch.Tensor:
    """[n_lang, d_sae]: nu_L = mu_L - mean over the other languages of mu (each language weighs the same)."""
    n = act_means.shape[0]
    others = (act_means.sum(0, keepdim=True) - act_means) / max(n - 1, 1)
    return act_means - others


def language_features(lab, texts_by_language: Mapping[str, Sequence[str]], layers=None, top: int = 10,
                      batch_size: int = 16, max_length: int = 128, skip_first: bool = True) -> pd.DataFrame:
    """The most language-specific features per language and layer (Deng et al. 2025, the SASFT paper).

    monolinguality = mean TopK activation on language L minus the mean, over the other languages, of their mean
    activation (per counted token). Columns: layer, language, rank, feature, monolinguality, mean_in,
    mean_others, fire_in, fire_others, and ``alpha_<lang>`` for every language: the feature's mean encoder
    pre-activation on that language, the threshold ``SASFTLoss`` clips at (``sasft_targets`` picks them)."""
    stats = language_statistics(lab, texts_by_language, layers, batch_size=batch_size, max_length=max_length,
                                skip_first=skip_first)
    frames = []
    for layer, s in stats.items():
        languages, act, fire, pre = s["languages"], s["act"], s["fire"], s["pre"]
        nu = monolinguality(act)
        n = len(languages)
        for li, language in enumerate(languages):
            order = torch.argsort(nu[li], descending=True)[:top]
            data = {"layer": layer, "language": language, "rank": np.arange(len(order)),
                    "feature": order.numpy(), "monolinguality": nu[li, order].numpy(),
                    "mean_in": act[li, order].numpy(),
                    "mean_others": ((act.sum(0) - act[li]) / max(n - 1, 1))[order].numpy(),
                    "fire_in": fire[li, order].numpy(),
                    "fire_others": ((fire.sum(0) - fire[li]) / max(n - 1, 1))[order].numpy()}
            for lj, other in enumerate(languages):
                data[f"alpha_{other}"] = pre[lj, order].numpy()
            frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def sasft_targets(frame: pd.DataFrame, language: str, alpha_language: str, top: int | None = None,
                  min_monolinguality: float = 0.0) -> tuple[dict[int, list[int]], dict[int, torch.Tensor]]:
    """(features, alphas) for ``SASFTLoss`` from a ``language_features`` table: the features of ``language``
    (the one to suppress), ``top`` per layer with monolinguality above ``min_monolinguality``, and alpha = their
    mean pre-activation on ``alpha_language`` (the language of the samples the loss is applied to)."""
    column = f"alpha_{alpha_language}"
    if column not in frame.columns:
        raise ValueError(f"no column {column!r}: the table's languages are "
                         f"{[c[6:] for c in frame.columns if c.startswith('alpha_')]}")
    rows = frame[(frame.language == language) & (frame.monolinguality > min_monolinguality)]
    if rows.empty:
        raise ValueError(f"no feature of language {language!r} with monolinguality > {min_monolinguality}")
    features, alphas = {}, {}
    for layer, group in rows.sort_values("rank").groupby("layer"):
        group = group.head(top) if top else group
        features[int(layer)] = group.feature.astype(int).tolist()
        alphas[int(layer)] = torch.tensor(group[column].to_numpy(), dtype=torch.float32)
    return features, alphas


# ---------------------------------------------------------------------------------------------- SASFT loss
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
            from .models import find_layers

            layers_path = find_layers(model)[0]
        object.__setattr__(self, "_model", model)  # not a submodule: .to() / parameters() leave the model alone
        self.layers_path = layers_path
        self.weight = float(weight)
        if not features:
            raise ValueError("features must name at least one layer: {layer: [feature ids]}")
        self.layers: list[int] = sorted(int(layer) for layer in features)
        self.features: dict[int, list[int]] = {}
        for layer in self.layers:
            sae = get_sae(layer)
            ids = [int(f) for f in features[layer]]
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
            self.register_buffer(f"W_{layer}", sae.W_enc.detach().index_select(0, index).float().clone())
            self.register_buffer(f"b_{layer}", sae.b_enc.detach().index_select(0, index).float().clone())
            self.register_buffer(f"alpha_{layer}", alpha.clone().to(sae.W_enc.device))
            centre = sae.b_dec.detach().float().clone() if sae.apply_b_dec_to_input else None
            self.register_buffer(f"centre_{layer}", centre)
        self._hidden: dict[int, torch.Tensor] = {}
        self._handles: list = []
        self.last: dict[int, float] = {}

    def extra_repr(self) -> str:
        n = {layer: len(f) for layer, f in self.features.items()}
        return f"features per layer={n}, weight={self.weight:g}, attached={self.attached}"

    # ------------------------------------------------------------------ hooks
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module | None = None) -> "SASFTLoss":
        """Register forward hooks on the decoder blocks (``model`` defaults to the one given at construction);
        returns self, usable as ``with sasft.attach(model): ...`` (detaches at the end)."""
        model = model if model is not None else self._model
        if model is None:
            raise ValueError("no model to attach to: SASFTLoss((model, saes), ...) or attach(model)")
        if self.layers_path is None:
            from .models import find_layers

            self.layers_path = find_layers(model)[0]
        self.detach()
        blocks = model.get_submodule(self.layers_path)
        device = next(model.parameters()).device
        self.to(device)
        for layer in self.layers:
            self._handles.append(blocks[layer].register_forward_hook(self._hook(layer)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._hidden = {}

    def __enter__(self) -> "SASFTLoss":
        if not self.attached:
            self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def _hook(self, layer: int):
        def hook(module, args, output):
            self._hidden[layer] = output[0] if isinstance(output, tuple) else output

        return hook

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


# ---------------------------------------------------------------------------------------------- repetition
@torch.no_grad()
def repetition_features(lab, texts: Sequence[str] | str, layer: int, top: int = 10, repeats: int = 4,
                        separator: str = "\n", batch_size: int = 8, max_unit_tokens: int = 48) -> pd.DataFrame:
    """Features whose activation rises most from a token's first occurrence to its last one.

    Each text (a sentence) + ``separator`` is tokenized once and its token ids repeated ``repeats`` times, so
    every token of the unit recurs at the same offset of each copy. rise = mean over texts and offsets of
    activation(last copy) - activation(first copy) (TopK activations; offset 0 of the first copy, the attention
    sink, is left out). Columns: feature, rise, first, last, fire_first, fire_last and ``copy_<i>`` (mean
    activation per copy, to see the trend)."""
    lab._check_layer(layer)
    if repeats < 2:
        raise ValueError("repeats must be at least 2")
    texts = as_texts(texts)
    sae = lab.sae(layer)
    units = [ids[:max_unit_tokens] for ids in lab._token_ids([t + separator for t in texts], None)]
    per_copy = torch.zeros(repeats, sae.d_sae, dtype=torch.float64)
    fire = torch.zeros(2, sae.d_sae, dtype=torch.float64)
    rise = torch.zeros(sae.d_sae, dtype=torch.float64)
    count = 0
    for start in range(0, len(units), batch_size):
        chunk = units[start:start + batch_size]
        enc = lab._pad([unit * repeats for unit in chunk])
        h = lab.residuals(enc, [layer])[layer]
        width = enc["input_ids"].shape[1]
        for row, unit in enumerate(chunk):
            n = len(unit)
            if n < 2:
                continue
            begin = width - n * repeats  # left padding
            acts = sae.encode(h[row, begin:]).float().cpu().view(repeats, n, sae.d_sae)[:, 1:]
            per_copy += acts.sum(1).double()
            rise += (acts[-1] - acts[0]).sum(0).double()
            fire[0] += (acts[0] > 0).sum(0).double()
            fire[1] += (acts[-1] > 0).sum(0).double()
            count += n - 1
    if count == 0:
        raise ValueError("no text gave a unit of two or more tokens")
    per_copy, fire, rise = per_copy / count, fire / count, rise / count
    order = torch.argsort(rise, descending=True)[:top]
    data = {"layer": layer, "feature": order.numpy(), "rise": rise[order].float().numpy(),
            "first": per_copy[0, order].float().numpy(), "last": per_copy[-1, order].float().numpy(),
            "fire_first": fire[0, order].float().numpy(), "fire_last": fire[1, order].float().numpy()}
    for i in range(repeats):
        data[f"copy_{i}"] = per_copy[i, order].float().numpy()
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------- RL sampler
def steered_rollouts(lab, prompts: Sequence[str] | str, features, alphas=8.0, group_size: int = 4,
                     layer: int | None = None, max_new_tokens: int = 32, temperature: float = 1.0,
                     top_p: float | None = None, seed: int = 0, chat: bool = False, mode: str = "add",
                     metric=repetition_rate) -> pd.DataFrame:
    """Groups of ``group_size`` sampled rollouts per prompt, exactly one of them steered.

    ``features``: a feature id, a list of ids (at ``layer``) or of ``(layer, feature)`` pairs; ``alphas``: one
    value or one per feature (e.g. a repetition feature up: a rare bad case in every group, for a reward model
    or a GRPO-style group to learn from). Which rollout of the group is steered is drawn per group (seeded).
    Columns: prompt, group, rollout, steered, alpha, text, and ``metric(text)`` (default ``repetition_rate``;
    None for none)."""
    prompts = as_texts(prompts)
    if group_size < 2:
        raise ValueError("group_size must be at least 2 (one steered rollout and one or more plain ones)")
    single_pair = (isinstance(features, tuple) and len(features) == 2 and layer is None
                   and all(isinstance(x, (int, np.integer)) for x in features))
    features = [features] if isinstance(features, (int, np.integer)) or single_pair else list(features)
    alphas = [float(alphas)] * len(features) if np.ndim(alphas) == 0 else [float(a) for a in alphas]
    if len(alphas) != len(features):
        raise ValueError(f"{len(features)} features but {len(alphas)} alphas")
    steer = {}
    for feature, alpha in zip(features, alphas):
        if isinstance(feature, tuple):
            steer[(int(feature[0]), int(feature[1]))] = alpha
        elif layer is None:
            raise ValueError("give layer= for plain feature ids, or (layer, feature) pairs")
        else:
            steer[(int(layer), int(feature))] = alpha
    options = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, chat=chat)
    if top_p is not None:
        options["top_p"] = top_p
    plain = lab.generate([p for p in prompts for _ in range(group_size - 1)], baseline=False, seed=seed,
                         **options).steered
    steered = lab.generate(prompts, steer=steer, mode=mode, baseline=False, seed=seed + 1, **options).steered
    pick = np.random.default_rng(seed).integers(0, group_size, size=len(prompts))
    label = alphas[0] if len(set(alphas)) == 1 else ",".join(f"{a:g}" for a in alphas)
    rows = []
    for g, prompt in enumerate(prompts):
        others = iter(plain[g * (group_size - 1):(g + 1) * (group_size - 1)])
        for r in range(group_size):
            is_steered = r == pick[g]
            text = steered[g] if is_steered else next(others)
            row = {"prompt": prompt, "group": g, "rollout": r, "steered": bool(is_steered),
                   "alpha": label if is_steered else 0.0, "text": text}
            if metric is not None:
                row[getattr(metric, "__name__", "metric")] = metric(text)
            rows.append(row)
    return pd.DataFrame(rows)
