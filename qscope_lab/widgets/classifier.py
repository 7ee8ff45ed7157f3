"""Seed classifier panel: type (or pass) positive and negative seeds, fit ``SeedClassifier``, see the per-layer
deltas, the chosen features each with its threshold, held-out predictions with precision / recall / F1 against
the report's rule, the random-feature and probe baselines; export the classifier to a file and load it back.

``ClassifierPanel(lab, positives=[...], negatives=[...], heldout=frame)``; ``panel.classifier`` is the fitted
``SeedClassifier``.

Export writes with ``SeedClassifier.save``: an existing SeedClassifier file at ``path`` is replaced, anything
else there (a notebook, another JSON file) is left alone and the refusal shows in the panel's error line
(``export(path, overwrite=True)`` from Python replaces it on purpose). ``top_k`` and ``n_layers`` are checked
(ints, at least 1) at construction and whenever they are set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import traitlets

from ..base import validate
from ..workflows.classify import SeedClassifier
from ._base import LabWidget, checked, css, esm
from ._charts import widget_svg

if TYPE_CHECKING:
    from ..lab import Lab


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _labelled_lines(text: str) -> tuple[list[str], list[bool]]:
    """Held-out lines written as ``+ text`` (positive) or ``- text`` (negative)."""
    texts, labels = [], []
    for n, line in enumerate(_lines(text), 1):
        if line[0] not in "+-":
            raise ValueError(f"held-out line {n} must start with + or -: {line[:40]!r}")
        texts.append(line[1:].strip())
        labels.append(line[0] == "+")
    return texts, labels


STATISTICS = ("mean", "rate", "any", "auto")  # what SeedClassifier takes: the panel's menu
SHOWN = 32  # chosen features listed (a top_k="all" rule has thousands; they are ranked, the first separate most)


def _why(clf: SeedClassifier, margins) -> str:
    """The three features with the largest part in one decision (``SeedClassifier.explain`` has them all)."""
    top = clf.deciding_order(margins)[:3]
    return "  ".join(f"L{clf.features_[i][0]} f{clf.features_[i][1]} {margins[i]:+.2f}" for i in top)


def _why_features(clf: SeedClassifier, margins) -> list[dict]:
    """The same three features as ``{layer, feature, margin}`` (the panel shows each with its display name)."""
    return [{"layer": int(clf.features_[i][0]), "feature": int(clf.features_[i][1]), "margin": float(margins[i])}
            for i in clf.deciding_order(margins)[:3]]


def _described(clf: SeedClassifier) -> str:
    shown = f" (the first {SHOWN} listed)" if len(clf.features_) > SHOWN else ""
    return f"layer {clf.layer_}, {clf.statistic_}, {len(clf.features_)} feature(s){shown}"


class ClassifierPanel(LabWidget):
    _esm = esm("classifier.js")
    _css = css()

    positives = traitlets.Unicode("").tag(sync=True)   # one seed text per line
    negatives = traitlets.Unicode("").tag(sync=True)
    heldout = traitlets.Unicode("").tag(sync=True)     # "+ text" / "- text" per line
    statistic = traitlets.Unicode("mean").tag(sync=True)  # one of STATISTICS (a menu in the panel)
    top_k = traitlets.Int(20).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    path = traitlets.Unicode("seed_classifier.json").tag(sync=True)

    chart_svg = traitlets.Unicode("").tag(sync=True)
    chosen = traitlets.List(traitlets.Dict()).tag(sync=True)  # layer, feature, statistic, threshold, direction, ...
    predictions = traitlets.List(traitlets.Dict()).tag(sync=True)  # text, label, predicted, score
    metrics = traitlets.List(traitlets.Dict()).tag(sync=True)      # method, precision, recall, f1, accuracy
    message = traitlets.Unicode("").tag(sync=True)

    _check_counts = checked("top_k", "n_layers", minimum=1)
    _check_statistic = checked("statistic", check=lambda value, name: validate.choice(value, STATISTICS, name))

    def __init__(self, lab: Lab, positives=(), negatives=(), heldout=None, top_k: int = 20, n_layers: int = 1,
                 statistic: str = "mean",
                 path: str = "seed_classifier.json", fit: bool = True, **kwargs):
        if isinstance(positives, pd.DataFrame):  # one frame with text, label
            frame = positives
            positives = frame.loc[frame.label.astype(bool), "text"].tolist()
            negatives = frame.loc[~frame.label.astype(bool), "text"].tolist()
        if isinstance(heldout, pd.DataFrame):
            heldout = "\n".join(("+ " if y else "- ") + t.replace("\n", " ")
                                for t, y in zip(heldout.text, heldout.label.astype(bool)))
        super().__init__(lab, positives="\n".join(t.replace("\n", " ") for t in positives),
                         negatives="\n".join(t.replace("\n", " ") for t in negatives), heldout=heldout or "",
                         top_k=top_k, n_layers=n_layers, statistic=statistic, path=path, **kwargs)
        self.classifier: SeedClassifier | None = None
        self.on_events(fit=lambda content: self.fit(), export=lambda content: self.export(),
                       load=lambda content: self.load())
        if fit and self.positives and self.negatives:
            self.fit()

    def fit(self) -> SeedClassifier | None:
        with self.working("fit"):
            pos, neg = _lines(self.positives), _lines(self.negatives)
            if not pos or not neg:
                raise ValueError("give at least one positive and one negative seed (one per line)")
            clf = SeedClassifier(self.lab, statistic=self.statistic, top_k=self.top_k, n_layers=self.n_layers,
                                 select="delta" if self.n_layers > 1 else "loo", progress=False)
            texts, labels = pos + neg, [True] * len(pos) + [False] * len(neg)
            held_texts, held_labels = _labelled_lines(self.heldout)
            if held_texts:
                table = clf.compare_baselines(texts, labels, held_texts, held_labels)
            else:
                clf.fit(texts, labels)
                table = pd.DataFrame()
            self.classifier = clf
            self._show(held_texts, held_labels, table)
            self.message = f"fitted on {len(pos)} + {len(neg)} seeds: {_described(clf)}"
        return self.classifier

    def _show(self, held_texts, held_labels, table: pd.DataFrame) -> None:
        clf = self.classifier
        chosen = [
            {"layer": int(r["layer"]), "feature": int(r["feature"]), "statistic": str(r["statistic"]),
             "threshold": float(r["threshold"]), "direction": int(r["direction"]), "weight": float(r["weight"]),
             "pos_mean": float(r.get("pos_mean", 0.0)), "neg_mean": float(r.get("neg_mean", 0.0))}
            for r in clf.rules_.head(SHOWN).to_dict("records")]
        predictions = []
        if held_texts:  # one scan: score, label and the three features that weigh most in each decision
            x = clf.transform(held_texts)
            scores, predicted, margins = clf.decision_matrix(x), clf.predict_matrix(x), clf.margins_matrix(x)
            predictions = [{"text": t, "label": bool(y), "predicted": bool(p), "score": float(s),
                            "why": _why(clf, m), "why_features": _why_features(clf, m)}
                           for t, y, s, p, m in zip(held_texts, held_labels, scores, predicted, margins)]
        with self.hold_sync():
            self.chart_svg = widget_svg(clf.delta_chart())
            self.chosen = chosen
            self.predictions = predictions
            self.metrics = [{k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
                            for row in table.to_dict("records")]
            self.refresh_names()

    def named_features(self) -> list[tuple[int, int]]:
        """The chosen features listed and those that decided each held-out prediction."""
        pairs = [(r["layer"], r["feature"]) for r in self.chosen]
        pairs += [(w["layer"], w["feature"]) for p in self.predictions for w in p.get("why_features", [])]
        return list(dict.fromkeys(pairs))

    def export(self, path: str | None = None, overwrite: bool = False) -> Path | None:
        """Save the classifier to ``path`` (default: the panel's) with ``SeedClassifier.save``: a file there
        that is not a SeedClassifier file is replaced only with ``overwrite=True``; a refusal (or any failure) is
        the panel's error and None is returned."""
        with self.working("export"):
            if self.classifier is None:
                raise ValueError("fit the classifier first")
            out = self.classifier.save(path or self.path, overwrite=overwrite)
            self.message = f"saved to {out}"
            return out
        return None

    def load(self, path: str | None = None) -> SeedClassifier | None:
        with self.working("load"):
            clf = SeedClassifier.load(path or self.path, self.lab)
            self.classifier = clf
            held_texts, held_labels = _labelled_lines(self.heldout)
            table = pd.DataFrame()
            if held_texts:
                table = pd.DataFrame([{"method": "loaded", **clf.evaluate(held_texts, held_labels)}])
            self._show(held_texts, held_labels, table)
            self.message = f"loaded {path or self.path}: {_described(clf)}"
        return self.classifier
