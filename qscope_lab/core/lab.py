"""The Lab: one nnsight-traced Qwen model plus its per-layer SAEs, and the calls a notebook makes on them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from . import models, validate
from .activations import FeatureActs
from .registry import default_group
from .sae import SAE
from .sae_suite import SAESuite
from .scan import scan
from .steering import Steer, SteerSpec, apply_steering, by_layer, parse_steer

_DANGLING = r".*was never reached.*"  # nnsight's note when an open generation loop outlives the run


class Lab:
    """A traced model and its SAEs. ``lab.model`` is the nnsight wrapper for your own traces,
    ``lab.layers[n]`` the envoy of decoder block n (its output is Qwen-Scope layer n)."""

    def __init__(self, model, saes: SAESuite | None = None, name: str | None = None):
        self.model = model
        self.tokenizer = model.tokenizer
        self.hf_model = model._module
        self.layers_path, modules = models.find_layers(self.hf_model)
        envoy = model
        for part in self.layers_path.split("."):
            envoy = getattr(envoy, part)
        self.layers = envoy
        self.n_layers = len(modules)
        self.d_model = int(models.text_config(self.hf_model).hidden_size)
        self.architecture = type(self.hf_model).__name__
        self.name = name or getattr(self.hf_model.config, "_name_or_path", None) or self.architecture
        self.saes = saes
        if saes is not None and saes.d_model is not None and saes.d_model != self.d_model:
            raise ValueError(f"SAEs '{saes.name}' expect d_model={saes.d_model} but {self.name} has "
                             f"hidden_size={self.d_model}: they were trained on another model")
        self._token_strings: dict[int, str] = {}

    def __repr__(self) -> str:
        saes = f"{self.saes.name!r}" if self.saes is not None else None
        return (f"Lab({self.name!r}, {self.architecture}, layers={self.n_layers}, d_model={self.d_model}, "
                f"device={self.device}, saes={saes})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model=None, tokenizer=None, saes=None, device: str | None = None, dtype=None,
             k: int | None = None, sae_dtype=torch.float32, cache_bytes: int | None = None) -> Lab:
        """Build a Lab from a hub id, a local checkpoint folder, or a built transformers model (+ tokenizer).

        ``saes``: a Qwen-Scope hub id, a local folder or file of SAEs, a ``{layer: SAE}`` dict, or None (a
        registered Qwen-Scope backbone then gets its k=50 group; nothing is downloaded until a layer is used).
        """
        from nnsight import TransformersModel

        from .. import embedded

        dtype = models.resolve_dtype(dtype)
        name = None
        if model is None:  # the embedded default: offline, CPU, seconds
            embedded.require()
            model, name = embedded.MODEL_DIR, embedded.NAME
            if saes is None and embedded.SAE_DIR.is_dir():
                saes = embedded.SAE_DIR
        if isinstance(model, TransformersModel):
            wrapped = model
        elif isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("a built model needs its tokenizer: Lab.load(model, tokenizer=tok)")
            if device is not None or dtype is not None:
                model = model.to(device=device, dtype=dtype)
            wrapped = models.wrap(model.eval(), tokenizer)
        elif isinstance(model, (str, Path)):
            name = name or str(model)
            folder = models.local_model_folder(model)
            hf_model, loaded_tok = models.load_pretrained(folder, device or models.default_device(), dtype)
            wrapped = models.wrap(hf_model, tokenizer or loaded_tok)
        else:
            raise TypeError(f"model must be a hub id, a folder, or a transformers model, not {type(model).__name__}")

        if isinstance(saes, dict) and not saes:  # {}: explicitly no SAEs (e.g. before training your own)
            saes = None
        elif saes is None and name is not None and default_group(name) is not None:
            saes = default_group(name).repo_id
        sae_device = device or next(wrapped._module.parameters()).device
        suite = None if saes is None else SAESuite.open(saes, k=k, device=sae_device, dtype=sae_dtype,
                                                        cache_bytes=cache_bytes)
        return cls(wrapped, suite, name=name)

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    def sae(self, layer: int) -> SAE:
        """Layer n's SAE, loaded on first use (only that layer's file is read or downloaded)."""
        self.check_layer(layer)
        if self.saes is None:
            raise ValueError("this Lab has no SAEs: Lab.load(model, saes=<hub id, folder or {layer: SAE}>)")
        sae = self.saes[layer]
        if sae.d_model != self.d_model:
            raise ValueError(f"layer {layer} SAE has d_model={sae.d_model} (W_enc {tuple(sae.W_enc.shape)}) but "
                             f"{self.name} has hidden_size={self.d_model}")
        return sae

    def check_layer(self, layer, name: str = "layer") -> int:
        """``layer`` as an int if it is a decoder block of this model; TypeError / ValueError naming it if not."""
        return validate.layer(layer, self.n_layers, name)

    def check_layers(self, layers, name: str = "layers") -> list[int]:
        """One layer or a non-empty list of distinct layers, each checked as ``check_layer`` does (order kept)."""
        return validate.layers(layers, self.n_layers, name)

    def check_feature(self, layer: int, feature, name: str = "feature") -> int:
        """``feature`` as an int if it is a feature id of layer ``layer``'s SAE; IndexError naming it if not."""
        return validate.feature(feature, self.sae(layer).d_sae, name)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each token id decoded on its own (cached): what a heatmap or table shows."""
        out = []
        for i in ids:
            s = self._token_strings.get(i)
            if s is None:
                s = self._token_strings[i] = self.tokenizer.decode([i])
            out.append(s)
        return out

    def token_pieces(self, ids: Sequence[int], max_group: int = 4) -> list[str]:
        """Like ``token_strings`` but for reading generated text: a character split over several byte-level
        tokens (each alone decodes to U+FFFD) is shown whole on its first token and the others get ''. The
        list keeps one entry per token, so per-token flags still line up."""
        ids = list(ids)
        out = self.token_strings(ids)
        start = 0
        while start < len(ids):
            if "\ufffd" not in out[start]:
                start += 1
                continue
            for end in range(start + 2, min(start + max_group, len(ids)) + 1):
                whole = self.tokenizer.decode(ids[start:end])
                if "\ufffd" not in whole:
                    out[start:end] = [whole] + [""] * (end - start - 1)
                    start = end
                    break
            else:
                start += 1
        return out

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Left-padded batch encoding on the model's device; empty texts are refused with their index."""
        return self.pad(self.token_ids(validate.texts(texts), max_length))

    def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text (special tokens the tokenizer adds included), cut to ``max_length``."""
        return self.tokenizer(list(texts), truncation=max_length is not None, max_length=max_length)["input_ids"]

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Left-pad token id lists into a batch (``input_ids``, ``attention_mask``) on the model's device."""
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:
            raise ValueError(f"text {empty[0]} has no tokens")
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        return {key: value.to(self.device) for key, value in enc.items()}

    # ------------------------------------------------------------------ activations
    @torch.no_grad()
    def residuals(self, enc: dict, layers: Sequence[int], steer: list[Steer] | None = None,
                  run_to_end: bool = False) -> dict[int, torch.Tensor]:
        """Block outputs ``[batch, seq, d_model]`` at ``layers`` (after any steering edit), in one traced forward
        that stops after the last layer needed."""
        layers = sorted(set(layers))
        for layer in layers:
            self.check_layer(layer)
        edits = dict(by_layer(steer or []))
        for layer in edits:
            self.check_layer(layer)
        last = max(layers + list(edits))
        where = enc["attention_mask"].bool()
        saved: dict[int, torch.Tensor] = {}
        with self.model.trace(dict(enc)) as tracer:
            for layer in range(last + 1):
                if layer in edits:
                    envoy = self.layers[layer]
                    envoy.output = apply_steering(envoy.output, self.sae(layer), edits[layer], where)
                if layer in layers:
                    saved[layer] = self.layers[layer].output
            if not run_to_end:
                tracer.stop()
        return saved

    def encode(self, texts: str | Sequence[str], layer: int, batch_size: int = 8, skip_first: bool = False,
               skip_special: bool = True, max_length: int | None = None, progress: bool | None = None) -> FeatureActs:
        """Sparse SAE features of every token. Batched (longest first, so padding is small), pads never stored.

        ``skip_first`` masks position 0 (the attention sink); ``skip_special`` masks special tokens."""
        texts = validate.texts(texts)
        layer = self.check_layer(layer)
        sae = self.sae(layer)
        parts: dict[int, tuple] = {}
        token_ids: list[list[int]] = [[] for _ in texts]
        for batch in scan(self, texts, [layer], batch_size=batch_size, max_length=max_length,
                          skip_first=skip_first, skip_special=skip_special, progress=progress, desc="encode"):
            values, indices = sae.encode_sparse(batch.residuals[layer][batch.real])
            counted = batch.counted[batch.real].cpu()
            lengths = [len(ids) for ids in batch.token_ids]
            for i, ids, v, ix, m in zip(batch.index.tolist(), batch.token_ids, values.float().cpu().split(lengths),
                                        indices.cpu().split(lengths), counted.split(lengths)):
                parts[i], token_ids[i] = (v, ix, m), ids
        return FeatureActs(
            texts=list(texts), layer=layer, d_sae=sae.d_sae, token_ids=token_ids,
            tokens=[self.token_strings(ids) for ids in token_ids],
            values=torch.cat([parts[i][0] for i in range(len(texts))]),
            indices=torch.cat([parts[i][1] for i in range(len(texts))]),
            mask=torch.cat([parts[i][2] for i in range(len(texts))]))

    # ------------------------------------------------------------------ workflows on the core
    def reconstruct(self, texts: str | Sequence[str], layer: int | Sequence[int], batch_size: int = 4,
                    skip_first: bool = True, max_length: int | None = None) -> pd.DataFrame:
        """How well the SAE stands in for the layer: FVU, cosine, L0 and the CE loss clean vs SAE spliced in."""
        from .reconstruction import reconstruction_report

        return reconstruction_report(self, validate.texts(texts), layer, batch_size=batch_size,
                                     skip_first=skip_first, max_length=max_length)

    def generate(self, prompt: str | Sequence[str], layer: int | None = None, steer: SteerSpec = None,
                 positions="all", mode: str = "add", max_new_tokens: int = 32, baseline: bool = True,
                 do_sample: bool = False, seed: int | None = None, chat: bool = False, **generate_kwargs):
        """Generate with SAE features steered at every step; baseline and steered come from one batched run.

        ``steer={feature: alpha}`` at ``layer``, or ``{(layer, feature): alpha}`` / a list of ``Steer`` for
        several layers. ``positions``: "all" (prompt and generated tokens, the default), "prompt", "generated",
        or a list of prompt positions. ``mode``: "add", "clamp" or "ablate". Greedy unless ``do_sample``."""
        from .generation import generate

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DANGLING)
            return generate(self, prompt, parse_steer(steer, layer, mode), positions=positions,
                            max_new_tokens=max_new_tokens, baseline=baseline, do_sample=do_sample, seed=seed,
                            chat=chat, **generate_kwargs)

    def sweep(self, prompt: str, layer: int, feature: int, alphas=(-16, -8, -4, 0, 4, 8, 16), **options):
        """Steering sweep: one greedy completion per alpha as a table (options: positions, mode,
        max_new_tokens, metric, e.g. ``metric=han_share``, and any ``generate`` keyword such as
        ``repetition_penalty``)."""
        from .generation import sweep

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DANGLING)
            return sweep(self, prompt, layer, feature, alphas, **options)

    def next_tokens(self, prompt: str, layer: int | None = None, steer: SteerSpec = None, mode: str = "add",
                    top: int = 10) -> pd.DataFrame:
        """Top next-token probabilities after ``prompt``, baseline and with the prompt steered, side by side
        (the official demo's view of what a steer does before any text is generated)."""
        from .generation import next_token_table

        return next_token_table(self, prompt, parse_steer(steer, layer, mode), top=top)

    def info(self) -> pd.DataFrame:
        """Model and SAE facts as a two-column table."""
        facts = {"model": self.name, "class": self.architecture, "layers": self.n_layers,
                 "d_model": self.d_model, "layers_path": self.layers_path, "device": str(self.device),
                 "dtype": str(next(self.hf_model.parameters()).dtype), "vocab": len(self.tokenizer)}
        if self.saes is not None:
            facts.update({"saes": self.saes.name, "sae_layers": f"{self.saes.layers[0]}..{self.saes.layers[-1]}",
                          "d_sae": self.saes.d_sae, "k": self.saes.k, "cached_layers": self.saes.cached_layers})
        return pd.DataFrame({"field": list(facts), "value": [str(v) for v in facts.values()]})
