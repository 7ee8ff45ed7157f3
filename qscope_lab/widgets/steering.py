"""Steering panel: a prompt, one slider per feature, baseline and steered text side by side.

``SteeringPanel(lab, "The weather today is", layer=2, features=[f])``. Moving a slider regenerates (the
front-end debounces while dragging and sends at once on release); the baseline is cached per prompt and
length, so a slider move costs one steered generation. Features come by id, from ``add_feature`` (a heatmap
click in the Workbench), or from a search over labels and top tokens. ``generate_kwargs`` go to every
generation of the panel: small models loop under greedy decoding, and ``{"repetition_penalty": 1.3}`` keeps
steered text readable. Beside the texts, the ``top_next`` most likely next tokens after the prompt, baseline
and steered (0 hides them; not shown when only generated tokens are steered).

Generation controls beside the sliders: ``temperature`` (0: greedy, the default; above 0 samples), ``top_p``,
``seed`` (a sampled baseline and its steered text draw the same random numbers, so a slider move is what
differs), ``repetition_penalty`` (the library's default, ``methods.generation.DEFAULT_REPETITION_PENALTY`` where
it defines one, else 1.0 = none) and ``chat`` (wrap the prompt in the model's chat template). Each slider shows
the feature's display name beside its id (``names``).

Arguments are checked at construction and the traits again whenever they are set (``max_new_tokens`` >= 1,
``alpha_max`` a finite steering strength above 0, ``positions`` / ``mode`` from their lists); each ``features``
row must be a ``{layer, feature, alpha}`` of the Lab with a finite alpha, else the regeneration shows which row
is wrong (the panel keeps the value, the next good one works). What the front end sends (add, remove, sweep,
search) is checked field by field and an error shows in the panel's error line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import traitlets

from ..analysis.labels import FeatureLabels
from ..analysis.reference import Reference
from ..base import validate
from ..core.steering import MODES
from ..methods import generation
from ._base import LabWidget, checked, css, esm, message_field, reacts

if TYPE_CHECKING:
    from ..lab import Lab

POSITIONS = ("all", "prompt", "generated")


def default_repetition_penalty() -> float:
    """The library's default repetition penalty (1.0, none, unless ``methods.generation`` defines one)."""
    return float(getattr(generation, "DEFAULT_REPETITION_PENALTY", 1.0) or 1.0)


def _positive_alpha(value, name: str) -> float:
    """A steering strength above 0 (the sliders' range)."""
    value = validate.alpha(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be above 0, got {value:g}")
    return value


def _query(value, name: str) -> str:
    """A search query: any str ("" clears the results)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({type(value).__name__})")
    return value


def _top_p(value, name: str) -> float:
    """Nucleus sampling's mass: above 0, at most 1."""
    value = validate.number(value, name, maximum=1)
    if value <= 0:
        raise ValueError(f"{name} must be above 0, got {value:g}")
    return value


def _penalty(value, name: str) -> float:
    """A repetition penalty: above 0 (1 = none; below 1 favours repeats), at most 10."""
    value = validate.number(value, name, maximum=10)
    if value <= 0:
        raise ValueError(f"{name} must be above 0 (1 = no penalty), got {value:g}")
    return value


class SteeringPanel(LabWidget):
    _esm = esm("steering.js")
    _css = css()

    prompt = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)                   # layer of features added by id or search
    n_layers = traitlets.Int(1).tag(sync=True)
    features = traitlets.List(traitlets.Dict()).tag(sync=True)  # {layer, feature, alpha, label}
    positions = traitlets.Unicode("all").tag(sync=True)
    mode = traitlets.Unicode("add").tag(sync=True)
    max_new_tokens = traitlets.Int(32).tag(sync=True)
    alpha_max = traitlets.Float(32.0).tag(sync=True)          # sliders run from -alpha_max to +alpha_max

    baseline_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steered_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    differs = traitlets.List(traitlets.Bool()).tag(sync=True)  # per steered token: not the baseline's token
    generation_ms = traitlets.Float(0.0).tag(sync=True)
    generations = traitlets.Int(0).tag(sync=True)             # counts regenerations (front-end timing)
    steered_for = traitlets.List(traitlets.Dict()).tag(sync=True)  # the {layer, feature, alpha} that made the text
    sweep_rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    next_tokens = traitlets.List(traitlets.Dict()).tag(sync=True)  # top next tokens, baseline vs prompt steered
    search_results = traitlets.List(traitlets.Dict()).tag(sync=True)
    temperature = traitlets.Float(0.0).tag(sync=True)         # 0: greedy; above 0: sampled with seed
    top_p = traitlets.Float(1.0).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    repetition_penalty = traitlets.Float(1.0).tag(sync=True)  # set to the library's default at construction
    default_repetition_penalty = traitlets.Float(1.0).tag(sync=True)
    chat = traitlets.Bool(False).tag(sync=True)               # the prompt wrapped in the chat template

    _check_max_new_tokens = checked("max_new_tokens", minimum=1)
    _check_alpha_max = checked("alpha_max", check=lambda value, name: _positive_alpha(value, name))
    _check_positions = checked("positions", check=lambda value, name: validate.choice(value, POSITIONS, name))
    _check_mode = checked("mode", check=lambda value, name: validate.choice(value, MODES, name))
    _check_temperature = checked("temperature", check=lambda value, name: validate.number(value, name, minimum=0,
                                                                                           maximum=100))
    _check_top_p = checked("top_p", check=lambda value, name: _top_p(value, name))
    _check_seed = checked("seed", minimum=0, maximum=2**63 - 1)
    _check_repetition_penalty = checked("repetition_penalty", check=lambda value, name: _penalty(value, name))

    def __init__(self, lab: Lab, prompt: str = "", layer: int | None = None, features=(), positions: str = "all",
                 max_new_tokens: int = 32, alpha_max: float = 32.0, mode: str = "add", labels=None,
                 generate_kwargs: dict | None = None, top_next: int = 5, **kwargs):
        default = default_repetition_penalty()
        generate_kwargs = dict(generate_kwargs or {})
        for key in ("temperature", "top_p", "seed", "repetition_penalty", "chat"):  # the panel's own controls
            if key in generate_kwargs and key not in kwargs:
                kwargs[key] = generate_kwargs.pop(key)
        kwargs.setdefault("repetition_penalty", default)
        super().__init__(lab, prompt=prompt, n_layers=lab.n_layers, positions=positions, mode=mode,
                         layer=lab.n_layers // 2 if layer is None else layer, max_new_tokens=max_new_tokens,
                         alpha_max=alpha_max, default_repetition_penalty=default, **kwargs)
        self.labels = labels if labels is not None else FeatureLabels.for_lab(lab)
        self.generate_kwargs = generate_kwargs
        self.top_next = validate.integer(top_next, "top_next", minimum=0)
        self._baseline_key, self._baseline = None, None
        self.on_events(add=self._add_message, remove=self._remove_message, sweep=self._sweep_message,
                       search=self._search_message)
        for item in features:
            feature, alpha = item if isinstance(item, tuple) else (item, 0.0)
            self.add_feature(feature, alpha, regenerate=False)
        self.regenerate()

    # ------------------------------------------------------------------ public
    def add_feature(self, feature: int, alpha: float = 0.0, layer: int | None = None, regenerate: bool = True):
        """Add a slider (or set the alpha of an existing one) for ``feature`` at ``layer`` (default: the panel's)."""
        with self.working("add feature"):
            layer = self.lab.check_layer(self.layer if layer is None else layer)
            feature = self.lab.check_feature(layer, feature)
            alpha = validate.alpha(alpha)
            rows = [dict(row) for row in self.features]
            for row in rows:
                if (row["layer"], row["feature"]) == (layer, feature):
                    row["alpha"] = alpha
                    break
            else:
                rows.append({"layer": layer, "feature": feature, "alpha": alpha})
            if regenerate:
                self.features = rows
            else:
                with self.quietly():
                    self.features = rows

    def remove_feature(self, index: int) -> None:
        index = validate.integer(index, "index", minimum=0)
        if index >= len(self.features):
            raise IndexError(f"index {index} is out of range: the panel has {len(self.features)} feature(s)")
        self.features = [row for i, row in enumerate(self.features) if i != index]

    def steer(self) -> dict:
        """The current edit as ``{(layer, feature): alpha}`` (zero sliders left out): what lab.generate takes."""
        return {(row["layer"], row["feature"]): row["alpha"] for row in self.features if row["alpha"]}

    def generation_options(self) -> dict:
        """What every generation of the panel is given besides the prompt and the steering: the panel's controls
        (sampling only when ``temperature`` > 0) and ``generate_kwargs``."""
        options = {"repetition_penalty": self.repetition_penalty, "chat": self.chat}
        if self.temperature > 0:
            options.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return {**options, **self.generate_kwargs}

    def named_features(self) -> list[tuple[int, int]]:
        """The sliders' features and the search results."""
        return ([(int(row["layer"]), int(row["feature"])) for row in self.features if "layer" in row
                 and "feature" in row] + [(self.layer, int(r["feature"])) for r in self.search_results])

    def regenerate(self) -> None:
        with self.working("generate"):
            if not self.prompt.strip():
                raise ValueError("type a prompt")
            if self.positions not in POSITIONS:
                raise ValueError(f"positions must be one of {', '.join(POSITIONS)}")
            self._check_features()
            self.refresh_names()
            start = time.perf_counter()
            options = self.generation_options()
            key = (self.prompt, self.max_new_tokens, repr(sorted(options.items())))
            if key != self._baseline_key:
                self._baseline = self.lab.generate(self.prompt, max_new_tokens=self.max_new_tokens, **options)
                self._baseline_key = key
            base_ids = self._baseline.steered_ids[0]
            steer = self.steer()
            if steer:
                out = self.lab.generate(self.prompt, steer=steer, positions=self.positions, mode=self.mode,
                                        max_new_tokens=self.max_new_tokens, baseline=False, **options)
                ids = out.steered_ids[0]
            else:
                ids = base_ids
            # the first generated token only sees a steered prompt when the prompt is steered
            shown = self.prompt
            if options.get("chat"):
                shown = self.lab.tokenizer.apply_chat_template([{"role": "user", "content": self.prompt}],
                                                               tokenize=False, add_generation_prompt=True)
            table = (self.lab.next_tokens(shown, steer=steer, mode=self.mode, top=self.top_next)
                     if self.top_next and self.positions != "generated" else None)
            with self.hold_sync():
                self.steered_for = [{"layer": layer, "feature": feature, "alpha": alpha}
                                    for (layer, feature), alpha in steer.items()]
                self.next_tokens = [] if table is None else table.round(4).to_dict("records")
                self.baseline_tokens = self.lab.token_pieces(base_ids)
                self.steered_tokens = self.lab.token_pieces(ids)
                self.differs = [j >= len(base_ids) or t != base_ids[j] for j, t in enumerate(ids)]
                self.generation_ms = (time.perf_counter() - start) * 1000
                self.generations += 1

    def sweep(self, index: int = 0, alphas=None):
        """Alpha sweep of the ``index``-th feature (a table; also shown in the panel)."""
        index = validate.integer(index, "index", minimum=0)
        if index >= len(self.features):
            raise IndexError(f"index {index} is out of range: the panel has {len(self.features)} feature(s)")
        row = self.features[index]
        top = self.alpha_max
        alphas = alphas or [-top, -top / 2, -top / 4, 0, top / 4, top / 2, top]
        table = self.lab.sweep(self.prompt, row["layer"], row["feature"], alphas=alphas, positions=self.positions,
                               mode=self.mode, max_new_tokens=self.max_new_tokens, **self.generation_options())
        self.sweep_rows = [{"alpha": r.alpha, "text": r.text, "same": bool(r.same)} for r in table.itertuples()]
        return table

    # ------------------------------------------------------------------ recipes
    def open_recipe(self, recipe):
        """Load a steering recipe (a ``Recipe`` or its JSON file) into the sliders, its mode and positions, and
        regenerate. Refused, with the panel left as it was: a recipe for another model or SAE suite (naming both),
        and steers the sliders cannot hold (a raw vector, a condition, modes that differ). Returns the recipe."""
        from pathlib import Path

        from ..steering.recipe import Recipe

        if isinstance(recipe, str | Path):
            recipe = Recipe.load(recipe)
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe or the path of a recipe file, got {type(recipe).__name__}")
        steers = recipe.steers(self.lab)  # checks the model, the suite and the steered layers' weights
        for s in steers:
            if s.feature is None or s.when is not None:
                raise ValueError(f"recipe {recipe.name!r}: steer {s.label} is a "
                                 f"{'raw vector' if s.feature is None else 'conditional steer'}, which the panel's "
                                 f"sliders cannot hold: use lab.generate(prompt, steer=recipe)")
        modes = sorted({s.mode for s in steers})
        if len(modes) != 1:
            raise ValueError(f"recipe {recipe.name!r} mixes modes {modes}; the panel has one mode for every slider")
        positions = recipe.positions
        if positions not in POSITIONS:
            raise ValueError(f"recipe {recipe.name!r} steers positions {positions!r}; the panel steers one of "
                             f"{', '.join(POSITIONS)}")
        strongest = max(abs(s.value) for s in steers)
        with self.quietly(), self.hold_sync():
            self.mode, self.positions = modes[0], positions
            if strongest > self.alpha_max:  # every slider must reach its value
                self.alpha_max = float(max(1, int(strongest) + 1))
            self.features = [{"layer": s.layer, "feature": s.feature, "alpha": s.value} for s in steers]
        self._opened_recipe = recipe
        self.regenerate()
        return recipe

    def save_recipe(self, path, name: str | None = None):
        """Save the sliders (non-zero ones), mode and positions as a steering recipe: ``path`` (JSON) and its
        Markdown card beside it. Unchanged since ``open_recipe``, the opened recipe's evidence (bench, sweep,
        status) is kept; otherwise it is a new "draft" with the panel's prompt and generation settings. An
        existing file is replaced only when it is a recipe. Returns the JSON's path."""
        from pathlib import Path

        from ..core.steering import Steer
        from ..steering.recipe import Recipe

        if name is not None:
            validate.text(name, "name")
        if not isinstance(path, str | Path):
            raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
        target = Path(path)
        target = target.with_suffix(".json") if target.suffix == "" and not target.is_dir() else target
        if target.is_file():
            try:
                Recipe.load(target)
            except ValueError as err:
                raise ValueError(f"{target} exists and is not a steering recipe ({err}): not replaced") from None
        steers = [Steer(layer, feature, alpha, self.mode) for (layer, feature), alpha in self.steer().items()]
        if not steers:
            raise ValueError("the panel has no non-zero slider: a recipe needs at least one steer")
        opened = getattr(self, "_opened_recipe", None)
        same = (opened is not None and opened.positions == self.positions
                and [(s.layer, s.feature, s.value, s.mode) for s in opened.steers()]
                == [(s.layer, s.feature, s.value, s.mode) for s in steers])
        if same:
            recipe = Recipe.from_dict({**opened.to_dict(), "name": name or opened.name})
        else:
            options = {k: v for k, v in self.generation_options().items() if isinstance(v, int | float | str | bool)}
            recipe = Recipe.create(self.lab, steers, name=name or "steering-panel", positions=self.positions,
                                   settings={"prompt": self.prompt, "max_new_tokens": self.max_new_tokens,
                                             "generation": options, "made_by": "SteeringPanel"})
        return recipe.save(target)

    # ------------------------------------------------------------------ plumbing
    def _check_features(self) -> None:
        """Each row a ``{layer, feature, alpha}`` of the Lab with a finite alpha (what the sliders send)."""
        for i, row in enumerate(self.features):
            missing = [key for key in ("layer", "feature", "alpha") if key not in row]
            if missing:
                raise ValueError(f"features[{i}] has no {', '.join(map(repr, missing))}")
            layer = self.lab.check_layer(row["layer"], f"features[{i}]['layer']")
            self.lab.check_feature(layer, row["feature"], f"features[{i}]['feature']")
            validate.alpha(row["alpha"], f"features[{i}]['alpha']")

    @reacts("features", "prompt", "positions", "mode", "max_new_tokens", "temperature", "top_p", "seed",
            "repetition_penalty", "chat")
    def _inputs_changed(self, change):
        self.regenerate()

    def _add_message(self, content: dict) -> None:
        alpha = message_field(content, "alpha", validate.alpha) if "alpha" in content else 0.0
        self.add_feature(message_field(content, "feature"), alpha)

    def _remove_message(self, content: dict) -> None:
        self.remove_feature(message_field(content, "index"))

    def _sweep_message(self, content: dict) -> None:
        self.sweep(message_field(content, "index"))

    def _search_message(self, content: dict) -> None:
        query = message_field(content, "query", _query)
        found = Reference.of(self.lab).search(self.layer, query, self.labels)
        self.search_results = [{"feature": int(r.feature), "label": r.label, "match": r.match,
                                "top_tokens": list(r.top_tokens)} for r in found.itertuples()]
        self.refresh_names()
