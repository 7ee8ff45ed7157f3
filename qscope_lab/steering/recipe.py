"""Steering recipes: a steer with the evidence behind it, as a versioned JSON file and a Markdown card.

A recipe names the model and SAE suite it was made for (with a fingerprint of each steered layer's SAE weights),
its steers (layers, features, strengths, mode, conditions), the positions it steers, its status and the bench
tables, sweep and before / after examples that earned the status. ``Recipe.save(path)`` writes ``path`` (JSON)
and the card beside it (``.md``); ``Recipe.load(path)`` reads it back. ``lab.generate(prompt, steer=recipe)``
applies it, after ``recipe.check(lab)``: a recipe for another model or suite is refused, naming both.

Statuses: "draft" (steers only), "candidate" (found, not benchmarked), then a bench's verdict: "benchmarked",
"validated" or "failed".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..base import validate
from ..base.atomic import write_atomic
from ..core.steering import Steer
from ..index.hashes import sae_fingerprint
from .bench import SteerBench

FORMAT = "qscope-lab/steering-recipe"
VERSION = 1
STATUSES = ("draft", "candidate", "benchmarked", "validated", "failed")


def _steer_dict(s: Steer) -> dict:
    to_dict = getattr(s, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {"layer": s.layer, "feature": s.feature, "value": s.value, "mode": s.mode}


def _steer_from(data: dict) -> Steer:
    from_dict = getattr(Steer, "from_dict", None)
    if callable(from_dict):
        return from_dict(data)
    return Steer(data["layer"], data["feature"], data["value"], data.get("mode", "add"))


def _records(frame) -> list[dict]:
    if frame is None:
        return []
    if isinstance(frame, pd.DataFrame):
        frame = frame.to_dict("records")
    return [{k: _clean(v) for k, v in row.items()} for row in frame]


def _clean(v):
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclass
class Recipe:
    """See the module docstring. ``steers()`` the edits; ``bench`` the ``SteerBench`` (or None)."""

    name: str
    model: str
    sae_suite: str | None
    sae_fingerprints: dict[str, str]
    steer_records: list[dict]
    positions: object = "all"
    status: str = "draft"
    concept: dict = field(default_factory=dict)
    bench: SteerBench | None = None
    sweep: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    created: str = ""
    version: int = VERSION

    def __post_init__(self):
        validate.choice(self.status, STATUSES, "status")
        validate.text(self.name, "name")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, lab: LabLike, steers: list[Steer], name: str = "recipe", positions="all", status: str | None = None,
               concept: dict | None = None, bench: SteerBench | None = None, sweep=None, candidates=None,
               settings: dict | None = None) -> Recipe:
        """A recipe of ``steers`` for ``lab``'s model and suite; status "draft" unless given (a bench's verdict)."""
        if not steers:
            raise ValueError("a recipe needs at least one steer")
        fingerprints = {}
        for s in steers:
            for layer in {s.layer, *([s.when.layer] if getattr(s, "when", None) is not None else [])}:
                if lab.saes is not None and layer in lab.saes:
                    fingerprints[str(layer)] = sae_fingerprint(lab.sae(layer))
        examples = []
        if bench is not None:
            examples = _records(bench.examples(n=3))
        return cls(name=name, model=lab.name, sae_suite=lab.saes.name if lab.saes is not None else None,
                   sae_fingerprints=fingerprints, steer_records=[_steer_dict(s) for s in steers],
                   positions=positions if isinstance(positions, str) else list(positions),
                   status=status or (bench.verdict if bench is not None else "draft"),
                   concept=dict(concept or (bench.concept if bench is not None else {})), bench=bench,
                   sweep=_records(sweep), candidates=_records(candidates), examples=examples,
                   settings={k: _clean(v) for k, v in (settings or {}).items()},
                   created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    # ------------------------------------------------------------------ use
    def steers(self, lab: LabLike | None = None) -> list[Steer]:
        """The edits as ``Steer`` objects; with ``lab``, after ``check(lab)``."""
        if lab is not None:
            self.check(lab)
        return [_steer_from(r) for r in self.steer_records]

    def check(self, lab: LabLike) -> None:
        """Refuse a Lab of another model or SAE suite (naming both), or whose steered layers' SAE weights differ."""
        suite = lab.saes.name if lab.saes is not None else None
        if lab.name != self.model or suite != self.sae_suite:
            raise ValueError(f"recipe {self.name!r} was made for model {self.model!r} with SAEs {self.sae_suite!r}, "
                             f"but this Lab is model {lab.name!r} with SAEs {suite!r}")
        for layer, digest in self.sae_fingerprints.items():
            if sae_fingerprint(lab.sae(int(layer))) != digest:
                raise ValueError(f"recipe {self.name!r}: layer {layer} of {suite!r} has other weights than the "
                                 f"recipe was made with (fingerprint {digest}): the features may mean something else")

    @property
    def layers(self) -> list[int]:
        return sorted({int(r["layer"]) for r in self.steer_records})

    @property
    def features(self) -> list[int | None]:
        return [r.get("feature") for r in self.steer_records]

    @property
    def alphas(self) -> list[float]:
        return [float(r["value"]) for r in self.steer_records]

    @property
    def mode(self) -> list[str]:
        return [r.get("mode", "add") for r in self.steer_records]

    def sweep_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.sweep)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.version, "name": self.name, "status": self.status,
                "model": self.model, "sae_suite": self.sae_suite, "sae_fingerprints": dict(self.sae_fingerprints),
                "layers": self.layers, "features": self.features, "alphas": self.alphas, "mode": self.mode,
                "positions": self.positions, "steers": self.steer_records, "concept": self.concept,
                "bench": None if self.bench is None else self.bench.to_dict(), "sweep": self.sweep,
                "candidates": self.candidates, "examples": self.examples, "settings": self.settings,
                "created": self.created}

    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> Recipe:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a qscope-lab steering recipe (format {FORMAT!r} missing)")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise ValueError(f"{source} is recipe version {version!r}; this qscope-lab reads versions 1..{VERSION}")
        missing = [k for k in ("name", "model", "sae_suite", "steers", "status") if k not in data]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}")
        if not isinstance(data["steers"], list) or not data["steers"]:
            raise ValueError(f"{source}: steers must be a non-empty list")
        try:
            for r in data["steers"]:
                _steer_from(r)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: a steer is malformed: {err}") from None
        bench = SteerBench.from_dict(data["bench"]) if data.get("bench") else None
        return cls(name=data["name"], model=data["model"], sae_suite=data["sae_suite"],
                   sae_fingerprints=dict(data.get("sae_fingerprints", {})), steer_records=list(data["steers"]),
                   positions=data.get("positions", "all"), status=data["status"], concept=data.get("concept", {}),
                   bench=bench, sweep=data.get("sweep", []), candidates=data.get("candidates", []),
                   examples=data.get("examples", []), settings=data.get("settings", {}),
                   created=data.get("created", ""), version=version)

    def save(self, path) -> Path:
        """Write the JSON to ``path`` (``.json`` added when it has no suffix) and the Markdown card beside it."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder: give a file name such as {path / (self.name + '.json')}")
        if path.suffix == "":
            path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1, default=_clean))
        write_atomic(path.with_suffix(".md"), self.to_markdown())
        return path

    @classmethod
    def load(cls, path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a JSON recipe: {err}") from None
        return cls.from_dict(data, source=str(path))

    # ------------------------------------------------------------------ the card
    def to_markdown(self) -> str:
        lines = [f"# Steering recipe: {self.name}", "", f"Status: **{self.status}**", ""]
        if self.bench is not None:
            lines += [f"Verdict: {self.bench.reason}", ""]
        lines += ["## Model and SAEs", "", f"- model: `{self.model}`", f"- SAE suite: `{self.sae_suite}`",
                  f"- SAE fingerprints: {', '.join(f'layer {k}: `{v}`' for k, v in self.sae_fingerprints.items())}",
                  "", "## Steers", "", "| layer | feature | value | mode |", "|---|---|---|---|"]
        lines += [f"| {r['layer']} | {r.get('feature')} | {r['value']:g} | {r.get('mode', 'add')} |"
                  for r in self.steer_records]
        lines += ["", f"Positions: {self.positions}", ""]
        if self.concept:
            lines += ["## Concept", "", ", ".join(f"{k}: {v}" for k, v in self.concept.items()), ""]
        if self.bench is not None:
            cols = ["condition", "concept", "concept_lo", "concept_hi", "fluency_ppl", "distinct_2", "repetition",
                    "collateral", "latency_ms"]
            lines += ["## Bench (held-out prompts)" if self.settings.get("held_out_prompts") else "## Bench", "",
                      _table(self.bench.summary[cols]), "", "## Gates", "",
                      _table(self.bench.gates[["gate", "rule", "value", "outcome"]]), ""]
            if not self.bench.controls.empty:
                lines += ["Random-feature control (matched firing density):", "", _table(self.bench.controls), ""]
        if self.sweep:
            frame = self.sweep_frame()
            keep = [c for c in ("layer", "feature", "alpha", "concept", "fluency_ppl", "repetition")
                    if c in frame.columns]
            lines += ["## Sweep (dev prompts)", "", _table(frame[keep]), ""]
        if self.examples:
            lines += ["## Before / after", ""]
            for ex in self.examples:
                lines += [f"**Prompt:** `{ex.get('prompt', '')}`", ""]
                for cond in ("unsteered", "steering-only", "prompt-only"):
                    if cond in ex:
                        lines += [f"- {cond}: `{str(ex[cond])[:200]!r}`"]
                lines.append("")
        lines += ["## Provenance", "", f"- created: {self.created}", f"- recipe format {FORMAT} v{self.version}",
                  f"- settings: `{json.dumps(self.settings, ensure_ascii=False, default=str)[:1500]}`", ""]
        return "\n".join(lines)

    def __repr__(self) -> str:
        steers = ", ".join(f"L{r['layer']} f{r.get('feature')} {r.get('mode', 'add')} {r['value']:+g}"
                           for r in self.steer_records)
        return f"Recipe({self.name!r}, status={self.status!r}, steers=[{steers}], model={self.model!r})"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _table(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which is not a dependency)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
