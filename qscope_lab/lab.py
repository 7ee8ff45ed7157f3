"""The Lab: one nnsight-traced Qwen model plus its per-layer SAEs, and the calls a notebook makes on them."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch

from .base import budget as budgets
from .base import validate
from .core import models
from .core.activations import FeatureActs
from .core.scan import scan
from .core.steering import LayerSteering, Steer, SteerSpec, parse_steer
from .core.steering import check_steers as _check_steers
from .core.tokens import readable_tokens
from .index.store import FeatureIndex
from .saes.registry import default_group
from .saes.sae import SAE
from .saes.suite import SAESuite


class Lab:
    """A traced model and its SAEs. ``lab.model`` is the nnsight wrapper for your own traces,
    ``lab.layers[n]`` the envoy of decoder block n (its output is Qwen-Scope layer n)."""

    def __init__(self, model, saes: SAESuite | None = None, name: str | None = None, memory_budget=None):
        self.model = model
        self.tokenizer = model.tokenizer
        self.hf_model = model._module
        self.layers_path, modules = models.find_layers(self.hf_model)
        self.blocks = modules  # the decoder blocks themselves: where plain forward hooks go (generation, splicing)
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
        self.index: FeatureIndex | None = None  # a corpus feature index read by cards and search (use_index)
        self._memory_budget = 0
        self.memory_budget = memory_budget  # the setter parses "8GB" / None

    @property
    def memory_budget(self) -> int:
        """Bytes every corpus-scale job of this Lab may hold (SAEs + per-layer state), unless the job is given its
        own ``memory_budget=``. Set it with bytes or a string ("8GB"); None takes ``base.budget.DEFAULT_SHARE``
        of the device's free memory. The SAE cache follows it unless ``cache_bytes`` was given to ``Lab.load``."""
        return self._memory_budget

    @memory_budget.setter
    def memory_budget(self, value) -> None:
        self._memory_budget = budgets.resolve(value, self.device)
        if self.saes is not None and getattr(self.saes, "follows_budget", False):
            self.saes.cache_bytes = self._memory_budget

    def job_budget(self, memory_budget=None) -> int:
        """A job's budget in bytes: its own ``memory_budget=`` when given, else the Lab's."""
        return self.memory_budget if memory_budget is None else budgets.parse_bytes(memory_budget)

    def __repr__(self) -> str:
        saes = f"{self.saes.name!r}" if self.saes is not None else None
        return (f"Lab({self.name!r}, {self.architecture}, layers={self.n_layers}, d_model={self.d_model}, "
                f"device={self.device}, saes={saes})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model=None, tokenizer=None, saes=None, device: str | None = None, dtype=None,
             k: int | None = None, sae_dtype=torch.float32, cache_bytes: int | None = None, index=None,
             memory_budget=None) -> Lab:
        """Build a Lab from a hub id, a local checkpoint folder, or a built transformers model (+ tokenizer).

        ``saes``: a Qwen-Scope hub id, a local folder or file of SAEs, a ``{layer: SAE}`` dict, or None (a
        registered Qwen-Scope backbone then gets its k=50 group; nothing is downloaded until a layer is used).
        ``index``: a feature index folder (``FeatureIndex.build``) that cards and search read; the embedded
        default uses the one it ships unless ``index=False``.
        ``memory_budget``: bytes or a string like "8GB" that every corpus-scale job of this Lab stays within (index
        build, footprint, classifier fit, attribution; each job may pass its own). Default: half of what the
        device has free. The SAE cache holds at most this much unless ``cache_bytes`` says otherwise.
        """
        from nnsight import TransformersModel

        from . import embedded

        dtype = models.resolve_dtype(dtype)
        device = models.check_device(device)
        if k is not None:
            k = validate.integer(k, "k", minimum=1)
        if memory_budget is not None:  # refused before the model loads
            memory_budget = budgets.parse_bytes(memory_budget)
        if cache_bytes is not None:
            cache_bytes = budgets.parse_bytes(cache_bytes, "cache_bytes")
        name = suite_name = None
        if model is None:  # the embedded default: offline, CPU, seconds
            embedded.require()
            model, name = embedded.MODEL_DIR, embedded.NAME
            if saes is None and embedded.SAE_DIR.is_dir():
                saes = embedded.SAE_DIR
                suite_name = embedded.SAE_NAME
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
        elif saes is None and name is not None and (group := default_group(name)) is not None:
            saes = group.repo_id
        sae_device = device or next(wrapped._module.parameters()).device
        suite = None if saes is None else SAESuite.open(saes, k=k, device=sae_device, dtype=sae_dtype,
                                                        cache_bytes=cache_bytes)
        if suite is not None and suite_name:
            suite.name = suite_name
        lab = cls(wrapped, suite, name=name, memory_budget=memory_budget)
        if index is None and suite_name == embedded.SAE_NAME and embedded.INDEX_DIR.is_dir():
            index = embedded.INDEX_DIR
        if index is not None and index is not False:
            lab.use_index(index)
        return lab

    def loader(self) -> Callable[[], Lab]:
        """How another process rebuilds this Lab (a Ray worker of ``FeatureIndex.build``): a picklable
        callable, ``Lab.load`` for the embedded default, else ``Lab.load(name, saes=suite, dtype=...)``."""
        from . import embedded

        if self.name == embedded.NAME:
            return Lab.load
        if self.saes is None:
            raise ValueError(f"{self.name} has no SAEs: nothing for another process to rebuild")
        dtype = str(next(self.hf_model.parameters()).dtype).removeprefix("torch.")
        return functools.partial(Lab.load, self.name, saes=self.saes.name, dtype=dtype)

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

    def check_sae_layers(self, layers: Sequence[int]) -> None:
        """Every layer has an SAE, judged from the suite's file names / config (no weights read: the job that
        follows reads each once; its d_model is checked then)."""
        if self.saes is None:
            raise ValueError("this Lab has no SAEs: Lab.load(model, saes=<hub id, folder or {layer: SAE}>)")
        missing = [layer for layer in layers if layer not in self.saes]
        if missing:
            have = f"layers {self.saes.layers[0]}..{self.saes.layers[-1]}" if self.saes.layers else "no layers"
            raise KeyError(f"no SAE for layer {missing[0]} in {self.saes.name} ({have})")

    def use_index(self, index) -> FeatureIndex | None:
        """Read feature cards, search and hover labels from a feature index (a folder or an opened index); it
        must be built for this model and SAE suite (refused naming both otherwise). ``None`` detaches it.
        ``lab.index`` is then the one ``FeatureIndex`` class: it reads, and ``lab.index.add(lab, more)`` extends."""
        if index is None:
            self.index = None
            return None
        if not isinstance(index, FeatureIndex):
            index = FeatureIndex.open(index)
        index.check(self)
        self.index = index
        return index

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
        list keeps one entry per token, so per-token flags still line up (``core.tokens.join_fragments``)."""
        from .core.tokens import fragment_bytes, join_fragments

        ids = [int(i) for i in ids]
        return join_fragments(self.token_strings(ids), fragment_bytes(self, ids), max_group)[0]

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Left-padded batch encoding on the model's device; empty texts are refused with their index."""
        return self.pad(self.token_ids(validate.texts(texts), max_length))

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model reads (``max_position_embeddings``), None if its config does not say."""
        limit = getattr(models.text_config(self.hf_model), "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text (special tokens the tokenizer adds included), cut to ``max_length``.

        A text longer than the model's positions is cut there with a warning that says how long it was: the
        model cannot read past its context, and minutes of encoding garbage would be worse than a cut."""
        if max_length is not None:
            max_length = validate.integer(max_length, "max_length", minimum=1)
        ids = self.tokenizer(list(texts), truncation=max_length is not None, max_length=max_length)["input_ids"]
        limit = self.max_positions
        if limit is not None and (max_length is None or max_length > limit):
            long = [(i, len(row)) for i, row in enumerate(ids) if len(row) > limit]
            if long:
                i, n = long[0]
                more = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
                warnings.warn(f"text {i} has {n} tokens{more}; {self.name} reads at most {limit} positions: "
                              f"truncated to {limit}", stacklevel=3)
                ids = [row[:limit] for row in ids]
        return ids

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
        steering = LayerSteering(self.check_steers(list(steer or [])), self.sae)  # conditions read in order
        edited = steering.layers
        last = max(layers + edited)
        where = enc["attention_mask"].bool()
        saved: dict[int, torch.Tensor] = {}
        with self.model.trace(dict(enc)) as tracer:
            for layer in range(last + 1):
                if layer in edited:
                    envoy = self.layers[layer]
                    h = envoy.output
                    new = steering.edit(layer, h, where)
                    if new is not h:
                        envoy.output = new
                if layer in layers:
                    saved[layer] = self.layers[layer].output
            if not run_to_end:
                tracer.stop()
        return saved

    def encode(self, texts: str | Sequence[str], layer: int, batch_size: int = 8, skip_first: bool = True,
               skip_special: bool = True, max_length: int | None = None, progress: bool | None = None) -> FeatureActs:
        """Sparse SAE features of every token. Batched (longest first, so padding is small), pads never stored.

        ``skip_first`` (default True, as everywhere in qscope-lab) masks position 0: the attention sink, whose
        huge activations of a few features say nothing about the text; its row is still stored, so
        ``skip_first=False`` is only needed to count it. ``skip_special`` masks special tokens."""
        texts = validate.texts(texts)
        layer = self.check_layer(layer)
        batch_size = validate.integer(batch_size, "batch_size", minimum=1)
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
            mask=torch.cat([parts[i][2] for i in range(len(texts))]),
            readable=readable_tokens(self, token_ids), namer=functools.partial(self.feature_names, layer))

    # ------------------------------------------------------------------ workflows on the core
    def reconstruct(self, texts: str | Sequence[str], layer: int | Sequence[int], batch_size: int = 4,
                    skip_first: bool = True, max_length: int | None = None) -> pd.DataFrame:
        """How well the SAE stands in for the layer: FVU, cosine, L0 and the CE loss clean vs SAE spliced in."""
        from .methods.reconstruction import reconstruction_report

        batch_size = validate.integer(batch_size, "batch_size", minimum=1)
        return reconstruction_report(self, validate.texts(texts), self.check_layers(layer, "layer"),
                                     batch_size=batch_size,
                                     skip_first=skip_first, max_length=max_length)

    def generate(self, prompt, layer: int | None = None, steer: SteerSpec = None,
                 positions="all", mode: str = "add", max_new_tokens: int = 32, baseline: bool = True,
                 do_sample: bool | None = None, seed: int | None = None, chat=False, temperature: float | None = None,
                 top_p: float | None = None, repetition_penalty: float | None = None, when=None, **generate_kwargs):
        """Generate with steering at every step; baseline and steered come from one batched run.

        ``steer={feature: alpha}`` at ``layer``, or ``{(layer, feature): alpha}`` / a ``Steer`` / a list of
        ``Steer`` (a ``diff_means`` vector, a conditional steer...). ``mode`` (dict forms): "add", "clamp",
        "ablate", "cap" (projection capping) or "orthogonal" (``core.steering``); ``when``: a ``Condition`` or
        ``(layer, feature, threshold)`` making the dict's steers conditional. ``positions``: "all" (prompt and
        generated tokens, the default), "prompt", "generated", or a list of prompt positions.

        Greedy unless ``temperature`` / ``top_p`` / ``do_sample=True`` (sampled from ``seed``, baseline and
        steered rows sharing their noise); ``repetition_penalty`` defaults to
        ``methods.generation.DEFAULT_REPETITION_PENALTY`` (1.0: off). ``chat``: True (or a dict of chat-template
        options) renders each prompt, or a list of messages, with the tokenizer's chat template.
        ``result.settings`` records the decoding."""
        from .methods.generation import DEFAULT_REPETITION_PENALTY, decoding, generate, render_prompts

        steer, positions = self._recipe_steers(steer, positions)  # a steering recipe: checked against this Lab
        steers = self.check_steers(parse_steer(steer, layer, mode, when))
        decode = decoding(do_sample, temperature, top_p, seed,
                          DEFAULT_REPETITION_PENALTY if repetition_penalty is None else repetition_penalty)
        rendered = render_prompts(self, prompt, chat)
        max_new_tokens = self.check_new_tokens(max_new_tokens, rendered[0])
        return generate(self, prompt, steers, positions=positions, max_new_tokens=max_new_tokens,
                        baseline=baseline, decode=decode, chat=chat, rendered=rendered, **generate_kwargs)

    def sweep(self, prompt: str, layer: int | None = None, feature: int | Steer | None = None,
              alphas=(-16, -8, -4, 0, 4, 8, 16), do_sample: bool | None = None, seed: int | None = None,
              temperature: float | None = None, top_p: float | None = None,
              repetition_penalty: float | None = None, **options):
        """Steering sweep: one completion per alpha as a table, the decoding (greedy by default, the library's
        repetition penalty) and any seed the same for every alpha. ``feature``: an SAE feature id at ``layer``, or
        a ``Steer`` (e.g. ``lab.diff_means(...)``) whose value each alpha replaces. Options: positions, mode,
        when, max_new_tokens, chat, metric (e.g. ``metric=han_share``), and ``generate`` keywords;
        ``attrs['settings']`` records the decoding."""
        from .methods.generation import DEFAULT_REPETITION_PENALTY, decoding, render_prompts, sweep

        validate.text(prompt, "prompt")
        if isinstance(feature, Steer):
            self.check_steers([feature])
            layer = feature.layer
        else:
            if layer is None or feature is None:
                raise TypeError("sweep needs layer= and feature= (an SAE feature id), or feature=<a Steer>")
            layer = self.check_layer(layer)
            feature = self.check_feature(layer, feature)
        if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
            raise TypeError(f"alphas must be a list of numbers, got {type(alphas).__name__}")
        alphas = [validate.alpha(a, f"alphas[{i}]") for i, a in enumerate(alphas)]
        if not alphas:
            raise ValueError("alphas is empty: give at least one steering strength")
        if options.get("when") is not None:
            from .core.steering import Condition

            if isinstance(feature, Steer):
                raise ValueError("when= makes a feature id conditional; a Steer carries its own when=")
            options["when"] = Condition.parse(options["when"])
            self.check_steers([Steer(layer, feature, 1.0, when=options["when"])])
        decode = decoding(do_sample, temperature, top_p, seed,
                          DEFAULT_REPETITION_PENALTY if repetition_penalty is None else repetition_penalty)
        rendered = render_prompts(self, prompt, options.get("chat", False))
        options["max_new_tokens"] = self.check_new_tokens(options.get("max_new_tokens", 32), rendered[0])
        return sweep(self, prompt, layer, feature, alphas, decode=decode, **options)

    def next_tokens(self, prompt: str, layer: int | None = None, steer: SteerSpec = None, mode: str = "add",
                    top: int = 10, when=None) -> pd.DataFrame:
        """Top next-token probabilities after ``prompt``, baseline and with the prompt steered, side by side
        (the official demo's view of what a steer does before any text is generated)."""
        from .methods.generation import next_token_table

        validate.text(prompt, "prompt")
        top = validate.integer(top, "top", minimum=1, maximum=len(self.tokenizer))
        return next_token_table(self, prompt, self.check_steers(parse_steer(steer, layer, mode, when)), top=top)

    def diff_means(self, positives, negatives, layer: int, **options) -> Steer:
        """A difference-of-means steering vector (AxBench's baseline) at ``layer``: a ``Steer`` adding
        ``mean(positives) - mean(negatives)`` of the residuals (unit vector, value = the difference's norm), for
        ``generate`` / ``sweep`` like any steer (``methods.diff_means``; options batch_size, max_length, name)."""
        from .methods.diff_means import diff_means

        return diff_means(self, positives, negatives, layer, **options)

    def check_steers(self, steers: list[Steer]) -> list[Steer]:
        """Each edit's layer and feature (or vector length) and condition fit this Lab (errors name them)."""
        return _check_steers(steers, self.n_layers, self.d_model, self.sae)

    def check_new_tokens(self, max_new_tokens, prompt=None) -> int:
        """``max_new_tokens`` as an int >= 1 that, with the longest prompt, fits the model's positions."""
        n = validate.integer(max_new_tokens, "max_new_tokens", minimum=1)
        limit = self.max_positions
        if limit is not None:
            texts = validate.texts(prompt, "prompt") if prompt is not None else []
            longest = max((len(ids) for ids in self.tokenizer(texts)["input_ids"]), default=0) if texts else 0
            if longest >= limit:
                raise ValueError(f"the prompt has {longest} tokens; {self.name} reads at most {limit} positions, "
                                 f"so nothing can be generated after it: shorten the prompt")
            if longest + n > limit:
                raise ValueError(f"max_new_tokens={n} with a prompt of {longest} tokens passes the {limit} positions "
                                 f"{self.name} can read: use at most {limit - longest}")
        return n

    # ------------------------------------------------------------------ steering evidence (qscope_lab.steering)
    def _recipe_steers(self, steer, positions):
        """A recipe (anything with ``steers(lab)``) becomes its checked steers and, unless ``positions`` was
        given, its positions; other specs pass through."""
        if callable(getattr(steer, "steers", None)) and hasattr(steer, "positions"):
            return steer.steers(self), (steer.positions if positions == "all" else positions)
        return steer, positions

    def bench_steer(self, steer, prompts, concept, layer: int | None = None, mode: str = "add", positions="all",
                    max_new_tokens: int = 32, seed: int = 0, judge=None, **options):
        """Benchmark a steer against prompting and controls: seven conditions (unsteered, prompt-only,
        steering-only, prompt + steering, zero strength, a random feature of matched firing density, negative
        strength) in one batched generation, with the concept score, fluency (perplexity under the unsteered
        model), distinct-n, repetition, collateral (perplexity on neutral text) and latency, bootstrap 95%
        intervals, and a verdict from stated gates (``result.gates``). ``steer``: what ``generate`` takes, or a
        recipe. ``concept``: a SeedClassifier (or any ``predict_proba`` / ``decision_function``), a callable
        texts -> scores, ``(positives, negatives)`` example texts, or a description with ``judge=<chat>``.
        Options (``steering.bench.run_bench``): instruction (the prompt-only text), neutral, samples, do_sample,
        temperature, top_p, n_boot, random_features, fluency_bound, goal, chat and ``generate`` keywords.
        Reproducible from ``seed``. ``result.to_frame()``, ``result.verdict``."""
        from .steering.bench import run_bench

        prompts = validate.texts(prompts, "prompts")
        steer, positions = self._recipe_steers(steer, positions)
        steers = self.check_steers(parse_steer(steer, layer, mode))
        max_new_tokens = self.check_new_tokens(max_new_tokens, prompts)
        return run_bench(self, steers, prompts, concept, positions=positions, max_new_tokens=max_new_tokens,
                         seed=seed, judge=judge, **options)

    def autopilot(self, positives, negatives, prompts, layers=None, max_new_tokens: int = 24, seed: int = 0,
                  **options):
        """From examples to a benchmarked recipe: candidate features by contrast of ``positives`` vs
        ``negatives`` across ``layers`` (default: every SAE layer), a strength sweep on a dev split of
        ``prompts``, the bench on the held-out rest. Returns a ``steering.recipe.Recipe`` whose ``status`` is
        the held-out verdict and whose ``bench`` is the result (options: ``steering.autopilot.autopilot``)."""
        from .steering.autopilot import autopilot

        prompts = validate.texts(prompts, "prompts")
        max_new_tokens = self.check_new_tokens(max_new_tokens, prompts)
        return autopilot(self, positives, negatives, prompts, layers=layers, max_new_tokens=max_new_tokens,
                         seed=seed, **options)

    # ------------------------------------------------------------------ attribution
    def attribute(self, prompt: str | Sequence[str], target=None, layers=None, method: str = "grad_x_act",
                  steps: int = 16, top: int = 20, steer: SteerSpec = None, batch_size: int = 16,
                  memory_budget=None):
        """Which SAE features at ``layers`` (default: the middle one) made the model produce ``target`` after
        ``prompt`` (one or a batch), with the SAEs spliced in with their error terms (the forward is exactly the
        model's). ``target``: None (the model's own top next token), a token str / id (its logit), ``(a, b)``
        (logit difference), ``Continuation(text)``, ``NextToken(t, "logprob")`` or ``fn(logits) -> [batch]``.
        ``method``: "grad_x_act" (one backward), "integrated_gradients" (``steps`` points from zero activations)
        or "ablation" (exact, the ``top`` strongest features per prompt). ``steer`` edits the prompt first, as
        in ``generate``. Returns an ``Attribution`` (``to_frame()``, ``metric``, ``baseline_metric``).
        ``memory_budget`` (default ``lab.memory_budget``): the SAEs and spliced state must fit, else
        MemoryBudgetError before any forward, with the numbers. Each SAE is read once per call."""
        from .methods.attribution import METHODS, attribute, check_cost

        prompts = validate.texts(prompt, "prompt")
        layers = sorted(self.check_layers(self.n_layers // 2 if layers is None else layers))
        self.check_sae_layers(layers)
        budget = self.job_budget(memory_budget)
        method = validate.choice(method, METHODS, "method")
        steps, top = check_cost(steps, "steps"), check_cost(top, "top")
        batch_size = check_cost(batch_size, "batch_size")
        steers = self.check_steers(parse_steer(steer, layers[0] if len(layers) == 1 else None))
        return attribute(self, prompts, target, layers, method, steps=steps, top=top, steers=steers,
                         batch_size=batch_size, memory_budget=budget)

    def attribute_edges(self, prompt: str, upstream: int, downstream: int, target=None, top: int = 10,
                        top_upstream: int = 10, steer: SteerSpec = None) -> pd.DataFrame:
        """How much each feature at layer ``upstream`` drives each of the ``top`` features at ``downstream``
        (strongest by attribution to ``target``, or by activation), by gradient through the spliced model: one
        row per edge (upstream feature -1: the error term). ``viz.charts.edge_graph`` draws it."""
        from .methods.attribution import check_cost
        from .methods.edges import attribute_edges

        validate.text(prompt, "prompt")
        upstream, downstream = self.check_layer(upstream, "upstream"), self.check_layer(downstream, "downstream")
        top = check_cost(top, "top")
        top_upstream = validate.integer(top_upstream, "top_upstream", minimum=1, maximum=self.sae(upstream).d_sae)
        steers = self.check_steers(parse_steer(steer))
        return attribute_edges(self, prompt, upstream, downstream, target=target, top=top,
                               top_upstream=top_upstream, steers=steers)

    def direct_logit_attribution(self, prompt: str, position: int = -1, layers=None, token=None) -> pd.DataFrame:
        """What each feature active at ``position`` adds to ``token``'s logit (default: the top prediction)
        through the final norm and the unembedding; feature -1 is the rest of the residual.
        ``viz.charts.logit_bars`` draws it."""
        from .methods.logit_lens import direct_logit_attribution

        validate.text(prompt, "prompt")
        position = validate.integer(position, "position")
        return direct_logit_attribution(self, prompt, position=position, layers=layers, token=token)

    def logit_lens(self, prompt: str, top: int = 3) -> pd.DataFrame:
        """Top ``top`` next tokens of every layer's residual at every position, through the final norm and
        unembedding. ``viz.charts.logit_lens_grid`` draws it."""
        from .methods.logit_lens import logit_lens

        validate.text(prompt, "prompt")
        return logit_lens(self, prompt, top=validate.integer(top, "top", minimum=1, maximum=len(self.tokenizer)))

    # ------------------------------------------------------------------ words for features (qscope_lab.explain)
    def explain(self, layer: int, features=None, explainer: str = "offline", chat=None, engine: str = "local",
                address: str | None = None, workers: int | None = None, **options) -> pd.DataFrame:
        """Words for ``features`` (default: all) of ``layer``, stored with ``lab.index`` and resumed:
        ``explainer="offline"`` (token patterns and source profile from the index, scored by held-out precision /
        recall) or ``"llm"`` with ``chat`` (an ``explain.chat.Chat``, an OpenAI-compatible endpoint, a
        transformers chat model or ``f(messages) -> str``). ``engine="ray"`` explains batches as Ray tasks
        (``workers`` at a time, on the cluster at ``address``), each stored as it finishes. Returns layer,
        feature, explanation, score, explainer, model, prompt_version, scores (``explain.runner.explain``'s
        options)."""
        from .explain.runner import explain

        return explain(self, layer, features, explainer=explainer, chat=chat, engine=engine, address=address,
                       workers=workers, **options)

    def search(self, query: str, layers=None, top: int = 20, min_score: float | None = None,
               max_density: float | None = None, **options) -> pd.DataFrame:
        """Features whose words match ``query`` (labels, stored explanations, top tokens, source profile),
        best first: layer, feature, name, explanation, score, explainer, density, top_tokens, match, facet,
        precision, recall (``explain.search.search``'s options: ``embed`` a sentence-embedding callable,
        ``reference`` the documents relevance is measured on)."""
        from .explain.search import search

        return search(self, query, layers=layers, top=top, min_score=min_score, max_density=max_density, **options)

    def search_by_example(self, text, layers=None, top: int = 20, **options) -> pd.DataFrame:
        """Features that fire on ``text`` far more than on the index's corpus, most lifted first
        (``explain.examples.search_by_example``)."""
        from .explain.examples import search_by_example

        return search_by_example(self, text, layers=layers, top=top, **options)

    def feature_names(self, layer, features) -> list[str]:
        """One display name per feature of ``layer`` (order kept): the user's label, else the best stored
        explanation, else the top tokens, else "L<layer>/F<feature>" (``explain.names``). Every table that lists
        features shows them in its ``name`` column."""
        from .explain.names import display_names

        return display_names(self, layer, features)

    def info(self) -> pd.DataFrame:
        """Model and SAE facts as a two-column table."""
        facts = {"model": self.name, "class": self.architecture, "layers": self.n_layers,
                 "d_model": self.d_model, "layers_path": self.layers_path, "device": str(self.device),
                 "dtype": str(next(self.hf_model.parameters()).dtype), "vocab": len(self.tokenizer)}
        if self.saes is not None:
            middle = self.saes.layers[len(self.saes.layers) // 2]  # a folder's suite learns d_sae / k from a file
            d_sae = self.saes.d_sae if self.saes.d_sae is not None else self.sae(middle).d_sae
            k = self.saes.k if self.saes.k is not None else self.sae(middle).k
            facts.update({"saes": self.saes.name, "sae_layers": f"{self.saes.layers[0]}..{self.saes.layers[-1]}",
                          "d_sae": d_sae, "k": k, "cached_layers": self.saes.cached_layers})
        return pd.DataFrame({"field": list(facts), "value": [str(v) for v in facts.values()]})
