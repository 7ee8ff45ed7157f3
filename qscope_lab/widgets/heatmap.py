"""Token x feature activation heatmap: text coloured by one feature, hover for a token's top features, and a
grid of the strongest features over all tokens. ``Heatmap(lab, texts, layer=3)``.

Arrays are numpy arrays in Python (:class:`ArrayTrait`) and travel as float32 / int32 bytes (``DataView`` in
JS), so a 2,000-token text is a few hundred kB, not a JSON list of floats. Encoding happens when texts, layer
or skip options change; picking a feature only re-slices the cached activations.

``n_top`` (features per token's hover) and ``n_grid`` (rows of the grid) are ints of at least 1, ``max_length``
one too (or None): checked at construction and, for the traits, whenever they are set.

Every feature shown (legend, grid rows, hover rows) carries its display name (``names``: the user's label, else
its best stored explanation, else its top tokens). Switching layer selects the new layer's strongest feature:
the same id in another layer is an unrelated feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import traitlets

from ..analysis.labels import FeatureLabels
from ..base import validate
from ..core import tokens
from ..core.activations import FeatureActs
from ._base import ArrayTrait, LabWidget, checked, css, esm, reacts

if TYPE_CHECKING:
    from ..lab import Lab

MAX_FIRING_RATE = 0.5  # features firing on more of the shown tokens are 'always on': left out of the rankings


def rank_token_features(acts: FeatureActs, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token, ``n`` features for its hover: activation x rarity (-log of the firing rate over these texts),
    so a broad feature (39% of tokens) yields to one that marks this token; always-on ones are left out.
    Returns (activations, feature ids) ``[tokens, n]``, zero-padded."""
    rates = acts.firing_rates()
    rarity = -torch.log(rates.clamp(min=1e-6))
    rarity[rates > MAX_FIRING_RATE] = 0.0
    values = acts.values * acts.mask.unsqueeze(-1)
    score = values * rarity[acts.indices]
    order = torch.argsort(score, dim=-1, descending=True)[:, :n]
    top_v = torch.gather(values, 1, order) * (torch.gather(score, 1, order) > 0)
    top_i = torch.gather(acts.indices, 1, order)
    width = min(n, values.shape[1])
    out_v, out_i = np.zeros((values.shape[0], n), np.float32), np.zeros((values.shape[0], n), np.int32)
    out_v[:, :width], out_i[:, :width] = top_v.numpy(), top_i.numpy()
    return out_v, out_i


class Heatmap(LabWidget):
    _esm = esm("heatmap.js")
    _css = css()

    texts = traitlets.List(traitlets.Unicode())
    layer = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    feature = traitlets.Int(-1).tag(sync=True)
    skip_first = traitlets.Bool(True).tag(sync=True)
    skip_special = traitlets.Bool(True).tag(sync=True)
    n_top = traitlets.Int(6).tag(sync=True)
    n_grid = traitlets.Int(12).tag(sync=True)
    _check_counts = checked("n_top", "n_grid", minimum=1, maximum=1000)

    tokens = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)  # whole characters ('' after)
    token_notes = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)  # "byte token 1 of 2 of 猫"
    counted = ArrayTrait("uint8", ndim=1).tag(sync=True)        # per token: 0 = skipped (sink / special)
    values = ArrayTrait("float32", ndim=1).tag(sync=True)       # per token: the selected feature
    vmax = traitlets.Float(1.0).tag(sync=True)                  # colour scale: 0 -> white, vmax -> full colour
    top_values = ArrayTrait("float32", ndim=2).tag(sync=True)   # [tokens, n_top], strongest first
    top_indices = ArrayTrait("int32", ndim=2).tag(sync=True)    # [tokens, n_top]
    grid_features = traitlets.List(traitlets.Int()).tag(sync=True)
    grid = ArrayTrait("float32", ndim=2).tag(sync=True)         # [n_grid, tokens], feature-major

    def __init__(self, lab: Lab, texts, layer: int | None = None, feature: int | None = None, skip_first: bool = True,
                 skip_special: bool = True, max_length: int | None = 4096, labels=None, **kwargs):
        texts = [texts] if isinstance(texts, str) else list(texts)
        if max_length is not None:
            max_length = validate.integer(max_length, "max_length", minimum=1)
        if feature is not None:
            kwargs["feature"] = feature
        super().__init__(lab, texts=texts, n_layers=lab.n_layers,
                         layer=lab.n_layers // 2 if layer is None else layer, skip_first=skip_first,
                         skip_special=skip_special, **kwargs)
        self.max_length = max_length
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.acts: FeatureActs | None = None
        self._shown: list[int] = []
        self._encode()

    @reacts("texts", "layer", "skip_first", "skip_special")
    def _inputs_changed(self, change):
        # f53 of another layer is another feature: a new layer starts from its strongest
        self._encode(keep_feature=change["name"] != "layer")
        if self.error and change["name"] != "texts":  # bad input: show the error, keep what was shown
            with self.quietly():
                setattr(self, change["name"], change["old"])

    @reacts("feature")
    def _feature_changed(self, change):
        self._send_feature()

    def _encode(self, keep_feature: bool = True) -> None:
        with self.working("encode"):
            layer = self.lab.check_layer(self.layer)
            if not self.texts or not all(t.strip() for t in self.texts):
                raise ValueError("give at least one non-empty text")
            acts = self.lab.encode(self.texts, layer, skip_first=self.skip_first, skip_special=self.skip_special,
                                   max_length=self.max_length)
            self.acts = acts
            counted = acts.mask.numpy().astype(np.uint8)
            top_v, top_i = rank_token_features(acts, self.n_top)
            stats = acts.top_features(self.n_grid, max_firing_rate=MAX_FIRING_RATE)
            features = stats.feature.tolist()
            grid = (np.stack([torch.cat(acts.feature(f)).numpy() for f in features]) if features
                    else np.zeros((0, acts.n_tokens), np.float32))
            self._shown = sorted(set(features) | set(np.unique(top_i[top_v > 0]).tolist()))
            shown, notes = [], []
            for ids in acts.token_ids:  # whole characters; the hover names the byte tokens behind them
                pieces, starts = tokens.groups(self.lab, ids)
                shown.append(pieces)
                notes.append([tokens.hover(pieces, starts, i) for i in range(len(ids))])
            with self.hold_sync():
                self.token_notes = notes
                self.tokens = shown
                self.counted = counted
                self.top_values, self.top_indices = top_v, top_i
                self.grid_features, self.grid = features, grid
                keep = keep_feature and 0 <= self.feature < acts.d_sae
                chosen = self.feature if keep else features[0] if features else 0
                if chosen != self.feature:
                    self.feature = chosen  # the observer sends its values
                else:
                    self._send_feature()
                self.refresh_names()

    def _send_feature(self) -> None:
        if self.acts is None:
            return
        with self.working("feature"):
            if not 0 <= self.feature < self.acts.d_sae:
                raise ValueError(f"feature {self.feature} does not exist: this SAE has 0..{self.acts.d_sae - 1}")
            values = torch.cat(self.acts.feature(self.feature)).numpy()
            with self.hold_sync():
                self.values = values
                self.vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
                if self.feature not in self._shown:
                    self.refresh_names()

    def named_features(self) -> list[tuple[int, int]]:
        """The grid's rows, every feature in a token's hover, and the selected one."""
        shown = set(self._shown) | ({self.feature} if self.acts is not None and 0 <= self.feature < self.acts.d_sae
                                    else set())
        return [(self.layer, f) for f in sorted(shown)]

    def token_hover(self, text: int, position: int) -> list[tuple[int, float]]:
        """What hovering token ``position`` of text ``text`` lists: (feature, activation), strongest first, the
        always-on features ranked down (see :func:`rank_token_features`)."""
        row = self.acts.rows(text).start + position
        return [(int(f), float(v)) for f, v in zip(self.top_indices[row], self.top_values[row]) if v > 0]

    def feature_values(self) -> list[np.ndarray]:
        """Per text, the selected feature's activation at every token (what the colours show)."""
        return [v.numpy() for v in self.acts.feature(self.feature)]
