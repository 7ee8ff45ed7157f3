"""Steering specs and the edit they make to a layer's output.

A ``Steer`` edits one layer's output along one direction ``d``: an SAE feature's decoder column
``W_dec[:, f]`` or a raw ``vector`` (a difference of means, ``methods.diff_means``). ``u = d / |d|``.

- ``add``:        h' = h + alpha * d                          (alpha < 0 suppresses; Qwen-Scope's steering)
- ``clamp``:      h' = h + (value - a_f(h)) * d                (the feature's activation is set to ``value``)
- ``ablate``:     h' = h - lambda * a_f(h) * d                 (lambda = 1 removes the feature's contribution)
- ``cap``:        h' = h - max(0, h.u - value) * u             (projection capping: the component along ``u``
                                                                never ends above ``value``; Neuronpedia's
                                                                PROJECTION_CAP with max = value)
- ``orthogonal``: h' = h + s * (h.u) * u                       (orthogonal decomposition: the component along
                                                                ``u`` is scaled by 1 + s, the orthogonal rest
                                                                kept; Neuronpedia's ORTHOGONAL_DECOMP with
                                                                strength 1 + s, so s = 0 is no edit, s = -1
                                                                removes the direction)

a_f(h) is the SAE's own TopK activation at that position. ``clamp`` and ``ablate`` are error-preserving: they
edit the SAE's latent and keep its error term, ``h' = decode(a') + (h - decode(a))``, which (the decoder being
linear) is the line above; the SAE's reconstruction error never enters the output. ``add``, ``orthogonal`` and a
zero strength (0 for add / ablate / orthogonal) leave ``h`` exactly as it is; ``cap`` and ``clamp`` take a target,
not a strength, so "no edit" is no steer at all.

A steer with ``when=Condition(...)`` is conditional (CAST, Lee et al. 2024, made per position): it edits only the
positions where its detector fires, an SAE feature above a threshold or a ``score(h)`` callable (a fitted
``SeedClassifier`` through ``Condition.from_classifier``) above one, read at the condition's layer in the same
forward, before that layer's own edits. Every other position is left bit for bit alone.

Edits apply to the chosen positions of the chosen batch rows only. Within one layer the additive edits (add,
clamp, ablate, orthogonal) are computed from the unedited ``h`` and summed; caps are applied after them.
Traces (``Lab.residuals``, ``next_tokens``) make the edit through nnsight; generation makes the same edit with
plain forward hooks (``core.hooks``) held for the whole ``generate`` call (``hooked``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from ..base import validate
from ..base.defaults import STEER_MODES
from .hooks import edit_blocks

if TYPE_CHECKING:
    from ..saes.sae import SAE

MODES = STEER_MODES
FEATURE_ONLY_MODES = ("clamp", "ablate")  # they read the SAE's activation of the feature
POSITIONS = ("all", "prompt", "generated")
VALUE_NAMES = {"add": "alpha", "clamp": "clamp value", "ablate": "ablation lambda", "cap": "projection cap",
               "orthogonal": "orthogonal scale"}
CAP_ROUNDS = 8  # caps along correlated directions are re-applied until every one holds (alternating projections)


@dataclass(frozen=True)
class Condition:
    """Where a conditional steer applies: positions whose ``layer`` output makes the detector fire.

    ``feature``: the SAE feature's TopK activation must exceed ``threshold``; or ``score``: a callable taking
    the layer's hidden states ``[batch, seq, d_model]`` and returning ``[batch, seq]`` scores, which must exceed
    ``threshold``. The condition's layer must not be after its steer's (it is read in the same forward)."""

    layer: int
    feature: int | None = None
    threshold: float = 0.0
    score: Callable[[torch.Tensor], torch.Tensor] | None = None
    name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "layer", validate.integer(self.layer, "condition layer", minimum=0))
        if (self.feature is None) == (self.score is None):
            raise ValueError("a Condition needs exactly one of feature= (an SAE feature id) or score= (a callable)")
        if self.feature is not None:
            object.__setattr__(self, "feature", validate.integer(self.feature, "condition feature", minimum=0))
        elif not callable(self.score):
            raise TypeError(f"condition score must be a callable h -> [batch, seq] scores, "
                            f"got {type(self.score).__name__}")
        object.__setattr__(self, "threshold", validate.number(self.threshold, "condition threshold"))
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"condition name must be a str, got {type(self.name).__name__}")

    @classmethod
    def parse(cls, when) -> Condition | None:
        """A Condition, None, or ``(layer, feature, threshold)`` / ``(layer, feature)`` (threshold 0)."""
        if when is None or isinstance(when, Condition):
            return when
        if isinstance(when, tuple) and len(when) in (2, 3):
            return cls(*when)
        raise TypeError(f"when must be a Condition, (layer, feature, threshold) or None, got {when!r}")

    @classmethod
    def from_classifier(cls, classifier, threshold: float = 0.0, sae: SAE | None = None) -> Condition:
        """Fire where a fitted ``SeedClassifier`` (one layer) would call the single token positive: its
        ``decision_matrix`` on the token's own activations of the classifier's features, > ``threshold``.
        ``sae`` defaults to the classifier's Lab's SAE of its layer."""
        layers = sorted({layer for layer, _ in getattr(classifier, "features_", [])})
        if not layers:
            raise ValueError("when=classifier: fit the classifier first (it has no features_)")
        if len(layers) > 1:
            raise ValueError(f"when=classifier: the classifier reads layers {layers}; a condition reads one "
                             f"layer (fit it with n_layers=1)")
        layer = layers[0]
        sae = classifier.lab.sae(layer) if sae is None else sae
        features = torch.tensor([f for _, f in classifier.features_], dtype=torch.long)
        statistic, eps = classifier.statistic_, float(getattr(classifier, "eps", 0.0))

        def score(h: torch.Tensor) -> torch.Tensor:
            acts = sae.encode(h)[..., features.to(sae.device)].float()  # [batch, seq, K]
            x = (acts > eps).float() if statistic == "rate" else acts
            flat = x.reshape(-1, x.shape[-1]).cpu().numpy()
            out = torch.as_tensor(classifier.decision_matrix(flat), dtype=torch.float32)
            return out.reshape(h.shape[:-1]).to(h.device)

        return cls(layer, score=score, threshold=threshold, name=f"classifier@L{layer}")

    @property
    def label(self) -> str:
        what = self.name or (f"f{self.feature}" if self.feature is not None else "score")
        return f"L{self.layer} {what} > {self.threshold:g}"

    def fires(self, h: torch.Tensor, sae: SAE | None) -> torch.Tensor:
        """``[batch, seq]`` bool: where the detector fires on ``h`` ([batch, seq, d_model])."""
        if self.feature is not None:
            if sae is None:
                raise ValueError(f"condition on feature {self.feature} of layer {self.layer} needs that layer's SAE")
            values, indices = sae.encode_sparse(h)
            act = (values * (indices == self.feature)).sum(-1)
            return (act > self.threshold).to(h.device)
        assert self.score is not None
        scores = self.score(h)
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(scores)
        if tuple(scores.shape) != tuple(h.shape[:-1]):
            raise ValueError(f"condition score returned shape {tuple(scores.shape)}; it must return one score per "
                             f"position, shape {tuple(h.shape[:-1])}")
        if scores.is_floating_point() and bool(torch.isnan(scores).any()):
            raise ValueError("condition score returned NaN: a score must be a number at every position")
        return (scores.to(h.device) > self.threshold) if scores.dtype != torch.bool else scores.to(h.device)

    def to_dict(self) -> dict:
        if self.score is not None:
            raise ValueError("a condition with a score callable cannot be written to a file; use a feature condition")
        return {"layer": self.layer, "feature": self.feature, "threshold": self.threshold, "name": self.name}


def _as_vector(vector, name: str) -> torch.Tensor:
    if isinstance(vector, (str, bytes)):
        raise TypeError(f"{name} must be a 1-D tensor or list of numbers, got {type(vector).__name__}")
    try:
        v = torch.as_tensor(vector).detach()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D tensor or list of numbers, got {type(vector).__name__}") from None
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be 1-D and non-empty, got shape {tuple(v.shape)}")
    if not (v.is_floating_point() or v.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got {v.dtype}")
    v = v.to(torch.float32).cpu()
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} holds NaN or inf")
    if float(v.norm()) == 0.0:
        raise ValueError(f"{name} is the zero vector: it has no direction to steer along")
    return v


@dataclass(frozen=True, eq=False)
class Steer:
    """One edit at one layer along one direction (``mode`` and ``value`` as in the module docstring).

    ``feature``: an SAE feature id whose decoder column is the direction; or ``feature=None`` and ``vector``
    (``d_model`` numbers, e.g. ``Lab.diff_means``): a raw direction, used as given (modes add, cap, orthogonal).
    ``when``: a ``Condition`` (or ``(layer, feature, threshold)``) making the steer conditional. ``name``: what
    tables and recipes call it."""

    layer: int
    feature: int | None
    value: float
    mode: str = "add"
    vector: Any = None
    when: Condition | None = None
    name: str | None = None

    def __post_init__(self):  # no silent coercion: 3.9 is not feature 3, "2" is not layer 2, NaN is no strength
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: use one of {MODES}")
        object.__setattr__(self, "layer", validate.integer(self.layer, "steer layer", minimum=0))
        if self.vector is None:
            if self.feature is None:
                raise ValueError("a Steer needs a feature id or, with feature=None, a vector=")
            object.__setattr__(self, "feature", validate.integer(self.feature, "steer feature", minimum=0))
            what = f"feature {self.feature}"
        else:
            if self.feature is not None:
                raise ValueError(f"a Steer has a feature ({self.feature}) or a vector, not both")
            if self.mode in FEATURE_ONLY_MODES:
                raise ValueError(f"mode={self.mode!r} reads an SAE feature's activation; a vector steer can use "
                                 f"add, cap or orthogonal")
            object.__setattr__(self, "vector", _as_vector(self.vector, "steer vector"))
            what = self.name or "vector"
        value_name = VALUE_NAMES[self.mode]
        object.__setattr__(self, "value", validate.alpha(self.value, f"steering {value_name} of {what}"))
        object.__setattr__(self, "when", Condition.parse(self.when))
        if self.when is not None and self.when.layer > self.layer:
            raise ValueError(f"condition layer {self.when.layer} is after the steered layer {self.layer}: a "
                             f"condition is read in the same forward, at or before the layer it steers")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"steer name must be a str, got {type(self.name).__name__}")

    @classmethod
    def from_vector(cls, layer: int, vector, value: float = 1.0, mode: str = "add", when=None,
                    name: str | None = None) -> Steer:
        """A raw-direction steer: ``value * vector`` added at ``layer`` (mode add), or a cap / orthogonal edit."""
        return cls(layer, None, value, mode, vector=vector, when=when, name=name)

    def with_value(self, value: float) -> Steer:
        """The same edit at another strength (a sweep's alpha)."""
        return Steer(self.layer, self.feature, value, self.mode, vector=self.vector, when=self.when, name=self.name)

    def direction(self, sae: SAE | None) -> torch.Tensor:
        """The raw direction ``d`` (decoder column or vector) on the SAE's device and dtype when there is one."""
        if self.vector is not None:
            return self.vector if sae is None else self.vector.to(device=sae.device, dtype=sae.dtype)
        if sae is None or self.feature is None:
            raise ValueError(f"steering feature {self.feature} needs layer {self.layer}'s SAE")
        return sae.direction(self.feature)

    @property
    def label(self) -> str:
        """``L2 f17 add +8`` / ``L2 diff-means add +4 when L1 f40 > 0.5``: what tables show."""
        what = f"f{self.feature}" if self.vector is None else (self.name or "vector")
        text = f"L{self.layer} {what} {self.mode} {self.value:+g}"
        return text + (f" when {self.when.label}" if self.when is not None else "")

    def to_dict(self) -> dict:
        """A JSON-ready dict (a recipe's steer); ``Steer.from_dict`` reads it back."""
        return {"layer": self.layer, "feature": self.feature, "value": self.value, "mode": self.mode,
                "vector": None if self.vector is None else self.vector.tolist(),
                "when": None if self.when is None else self.when.to_dict(), "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping) -> Steer:
        if not isinstance(data, Mapping):
            raise TypeError(f"a steer must be a dict, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown steer field(s) {sorted(unknown)}")
        when = data.get("when")
        if isinstance(when, Mapping):
            when = Condition(**when)
        return cls(data["layer"], data.get("feature"), data["value"], data.get("mode", "add"),
                   vector=data.get("vector"), when=when, name=data.get("name"))

    def _key(self) -> tuple:
        return (self.layer, self.feature, self.value, self.mode, self.when, self.name)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Steer):
            return NotImplemented
        if self._key() != other._key() or (self.vector is None) != (other.vector is None):
            return False
        return self.vector is None or torch.equal(self.vector, other.vector)

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [f"layer={self.layer}", f"feature={self.feature}", f"value={self.value:g}", f"mode={self.mode!r}"]
        if self.vector is not None:
            parts.append(f"vector=<{self.vector.numel()} floats, norm {float(self.vector.norm()):.4g}>")
        if self.when is not None:
            parts.append(f"when={self.when!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        return f"Steer({', '.join(parts)})"


SteerSpec = Mapping | Iterable[Steer] | Steer | None


def parse_steer(steer: SteerSpec, layer: int | None = None, mode: str = "add", when=None) -> list[Steer]:
    """Normalise ``{feature: alpha}`` (needs ``layer``), ``{(layer, feature): alpha}``, a Steer or a list of
    Steer. ``mode`` and ``when`` apply to the dict forms; a Steer carries its own."""
    if steer is None:
        return []
    if isinstance(steer, Steer):
        return [steer]
    if isinstance(steer, Mapping):
        out = []
        for key, value in steer.items():
            if isinstance(key, tuple):
                if len(key) != 2:
                    raise ValueError(f"steer key {key!r}: use feature or (layer, feature)")
                out.append(Steer(key[0], key[1], value, mode, when=when))
            else:
                if layer is None:
                    raise ValueError("steer={feature: alpha} needs layer=; or key the dict by (layer, feature)")
                out.append(Steer(layer, key, value, mode, when=when))
        return out
    if isinstance(steer, (str, bytes)) or not isinstance(steer, Iterable):
        raise TypeError(f"steer must be {{feature: alpha}}, {{(layer, feature): alpha}}, a Steer or a list of "
                        f"Steer, got {type(steer).__name__}")
    out = list(steer)
    bad = [s for s in out if not isinstance(s, Steer)]
    if bad:
        raise TypeError(f"steer list items must be qscope_lab.Steer, got {type(bad[0]).__name__}")
    return out


def by_layer(steers: list[Steer]) -> list[tuple[int, list[Steer]]]:
    """Grouped and sorted by layer: nnsight needs modules visited in forward order."""
    layers = sorted({s.layer for s in steers})
    return [(layer, [s for s in steers if s.layer == layer]) for layer in layers]


def _unit(direction: torch.Tensor) -> torch.Tensor:
    return direction / direction.norm()


def steering_delta(h: torch.Tensor, sae, steers: list[Steer], masks: Sequence[torch.Tensor | None] | None = None
                   ) -> torch.Tensor:
    """The vector each position of ``h`` ([..., d_model]) gets added by the additive modes (add, clamp, ablate,
    orthogonal; caps are not additive: ``apply_steering``), in the SAE's dtype (float32 for a vector steer
    without an SAE). ``masks[i]`` ([...] bool), when given, limits steer i to those positions."""
    dtype = sae.dtype if sae is not None else torch.float32
    device = sae.device if sae is not None else h.device
    delta = torch.zeros(*h.shape[:-1], h.shape[-1], dtype=dtype, device=device)
    if any(s.mode in FEATURE_ONLY_MODES for s in steers):
        values, indices = sae.encode_sparse(h)
    x = None
    for i, s in enumerate(steers):
        if s.mode == "cap":
            continue
        direction = s.direction(sae).to(device=device, dtype=dtype)
        if s.mode == "add":
            step = s.value * direction
        elif s.mode == "orthogonal":
            if x is None:
                x = h.to(device=device, dtype=dtype)
            u = _unit(direction)
            step = s.value * (x @ u).unsqueeze(-1) * u
        else:
            act = (values * (indices == s.feature)).sum(-1, keepdim=True).to(dtype)
            step = ((s.value - act) if s.mode == "clamp" else (-s.value * act)) * direction
        mask = masks[i] if masks is not None else None
        if mask is not None:
            step = step * mask.to(device=device).unsqueeze(-1)
        delta = delta + step
    return delta


def cap_projections(x: torch.Tensor, caps: Sequence[tuple[torch.Tensor, float, torch.Tensor | None]]) -> torch.Tensor:
    """``x`` with its component along each unit ``u`` lowered to at most ``cap`` (where ``mask`` is True):
    ``x - max(0, x.u - cap) u``. Several caps are re-applied in rounds while correlated directions undo one
    another; whatever a few rounds leave above a cap is then lowered along the part of its direction orthogonal
    to the caps before it, which moves no earlier cap's component, so every cap holds on return."""

    def excess_of(u: torch.Tensor, cap: float, mask: torch.Tensor | None) -> torch.Tensor:
        excess = ((x @ u) - cap).clamp_min(0.0)
        return excess if mask is None else excess * mask

    for _ in range(CAP_ROUNDS):
        moved = False
        for u, cap, mask in caps:
            excess = excess_of(u, cap, mask)
            if bool((excess > 0).any()):
                moved = True
                x = x - excess.unsqueeze(-1) * u
        if not moved or len(caps) == 1:
            return x
    basis: list[torch.Tensor] = []
    for u, cap, mask in caps:
        w = u - sum(((u @ e) * e for e in basis), torch.zeros_like(u))
        if float(w.norm()) > 1e-4:
            excess = excess_of(u, cap, mask)
            if bool((excess > 0).any()):
                x = x - (excess / (w @ u)).unsqueeze(-1) * w
            basis.append(w / w.norm())
    return x


def apply_steering(h: torch.Tensor, sae, steers: list[Steer], where: torch.Tensor,
                   fired: Mapping[Condition, torch.Tensor] | None = None) -> torch.Tensor:
    """h with the edits made at ``where`` ([batch, seq] bool, broadcastable); a new tensor, h untouched.

    A conditional steer edits ``where & fired[its condition]`` only; ``fired`` maps each condition to its
    ``[batch, seq]`` detector mask (``LayerSteering`` fills it as the forward passes the condition's layer). A
    condition at the steered layer itself is evaluated here on ``h`` when ``fired`` does not hold it."""
    where = where.expand(h.shape[:-1]) if where.dim() == h.dim() - 1 else where
    masks: list[torch.Tensor | None] = []
    for s in steers:
        if s.when is None:
            masks.append(None)
            continue
        mask = fired.get(s.when) if fired is not None else None
        if mask is None:
            if s.when.layer != s.layer:
                raise ValueError(f"steer {s.label}: its condition reads layer {s.when.layer}, which this forward "
                                 f"did not pass the steering through (use Lab.generate / residuals / next_tokens)")
            mask = s.when.fires(h, sae if s.when.feature is not None else None)
        masks.append(where & mask.to(where.device))
    if any(m is not None for m in masks):  # positions no steer edits stay out of the rows and the mask
        edited = torch.zeros_like(where)
        for m in masks:
            edited |= where if m is None else m
        where = edited
    rows = where.any(dim=-1).nonzero().squeeze(-1)
    if rows.numel() == 0:
        return h
    out = h.clone()
    sub = h[rows]
    sub_masks = [None if m is None else m[rows] for m in masks]
    additive = [s for s in steers if s.mode != "cap"]
    new = sub
    if additive:
        delta = steering_delta(sub, sae, steers, sub_masks).to(device=h.device, dtype=h.dtype)
        new = sub + delta
    caps = [(i, s) for i, s in enumerate(steers) if s.mode == "cap"]
    if caps:
        dtype = sae.dtype if sae is not None else torch.float32
        x = new.to(dtype)
        specs = []
        for i, s in caps:
            u = _unit(s.direction(sae).to(device=x.device, dtype=dtype))
            mask = sub_masks[i]
            if mask is None:
                mask = where[rows]
            specs.append((u, s.value, mask.to(dtype)))
        new = cap_projections(x, specs).to(h.dtype)
    keep = where[rows].unsqueeze(-1).expand_as(sub)
    out[rows] = torch.where(keep, new, sub)
    return out


class LayerSteering:
    """The steers of one forward, applied block by block in forward order: ``edit(layer, h)`` evaluates the
    conditions read at ``layer`` on ``h`` (before that layer's own edits), then makes the layer's edits.

    ``sae_for(layer)`` gives a layer's SAE (only asked for layers a feature steer or condition needs)."""

    def __init__(self, steers: list[Steer], sae_for: Callable[[int], Any]):
        self.groups = dict(by_layer(steers))
        self.conditions: dict[int, list[Condition]] = {}
        for s in steers:
            if s.when is not None and s.when not in self.conditions.setdefault(s.when.layer, []):
                self.conditions[s.when.layer].append(s.when)
        needs_sae = {s.layer for s in steers if s.vector is None or s.mode in FEATURE_ONLY_MODES}
        needs_sae |= {c.layer for group in self.conditions.values() for c in group if c.feature is not None}
        self.saes = {layer: sae_for(layer) for layer in sorted(needs_sae)}
        self.fired: dict[Condition, torch.Tensor] = {}

    @property
    def layers(self) -> list[int]:
        """Every layer this forward must be seen at: steered layers and condition layers."""
        return sorted(set(self.groups) | set(self.conditions))

    def edit(self, layer: int, h: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        for condition in self.conditions.get(layer, ()):
            self.fired[condition] = condition.fires(h, self.saes.get(layer))
        group = self.groups.get(layer)
        if not group:
            return h
        return apply_steering(h, self.saes.get(layer), group, where, self.fired)


def position_mask(step: int, positions, attention_mask: torch.Tensor, steered_rows: slice,
                  seq_len: int) -> torch.Tensor:
    """[batch, seq] bool mask of what to steer at this generation step (step 0 = the prompt's prefill)."""
    batch = attention_mask.shape[0]
    where = torch.zeros(batch, seq_len, dtype=torch.bool, device=attention_mask.device)
    if step == 0:
        if positions in ("all", "prompt"):
            where[steered_rows] = attention_mask[steered_rows].bool()
        elif not isinstance(positions, str):
            lengths = attention_mask.sum(-1)
            for row in range(batch)[steered_rows]:
                start = seq_len - int(lengths[row])  # left padding
                for p in positions:
                    idx = start + p if p >= 0 else seq_len + p
                    if not start <= idx < seq_len:
                        raise IndexError(f"positions: {p} is outside a prompt of {int(lengths[row])} tokens")
                    where[row, idx] = True
    elif positions in ("all", "generated"):
        where[steered_rows] = True
    return where


def check_positions(positions) -> None:
    if isinstance(positions, str):
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}: use one of {POSITIONS} or a list of prompt positions")
        return
    if not isinstance(positions, Iterable) or isinstance(positions, (bytes, bytearray)):
        raise TypeError(f"positions must be 'all', 'prompt', 'generated' or a list of int prompt positions, "
                        f"got {type(positions).__name__}")
    positions = list(positions)
    if not positions:
        raise ValueError("positions is an empty list: it would steer nothing (use 'all', 'prompt' or 'generated')")
    for i, p in enumerate(positions):
        validate.integer(p, f"positions[{i}]")


def check_steers(steers: list[Steer], n_layers: int, d_model: int, sae_for: Callable[[int], Any]) -> list[Steer]:
    """Each steer's layer, feature or vector length, and condition fit this model (errors name them)."""
    for s in steers:
        validate.layer(s.layer, n_layers, "steer layer")
        if s.vector is None:
            validate.feature(s.feature, sae_for(s.layer).d_sae, f"steer feature (layer {s.layer})")
        elif s.vector.numel() != d_model:
            raise ValueError(f"steer vector {s.name or ''} has {s.vector.numel()} numbers; this model's residual "
                             f"stream has d_model={d_model}".replace("  ", " "))
        if s.when is not None:
            validate.layer(s.when.layer, n_layers, "condition layer")
            if s.when.feature is not None:
                validate.feature(s.when.feature, sae_for(s.when.layer).d_sae,
                                 f"condition feature (layer {s.when.layer})")
    return steers


@contextlib.contextmanager
def hooked(blocks: torch.nn.ModuleList | Sequence[torch.nn.Module], steering: LayerSteering,
           positions, attention_mask: torch.Tensor, steered_rows: slice) -> Iterator[None]:
    """Steer ``generate`` calls inside the block: each decoder block ``steering`` needs gets
    ``steering.edit`` with the mask ``position_mask`` gives for that step (the n-th call of a block is step n;
    step 0 is the prefill), through ``hooks.edit_blocks`` (this thread's forwards only, removed on exit)."""

    def edit_for(layer: int):
        state: dict = {"step": 0, "masks": {}}

        def edit(h: torch.Tensor) -> torch.Tensor:
            step, state["step"] = state["step"], state["step"] + 1
            key = (min(step, 1), h.shape[1])  # every step after the prefill is steered alike
            where = state["masks"].get(key)
            if where is None:
                where = state["masks"][key] = position_mask(step, positions, attention_mask, steered_rows, h.shape[1])
            return steering.edit(layer, h, where)

        return edit

    with edit_blocks(blocks, {layer: edit_for(layer) for layer in steering.layers}):
        yield
