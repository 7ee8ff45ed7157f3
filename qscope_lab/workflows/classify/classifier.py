"""``SeedClassifier``: label a few texts, keep the few SAE features that best separate them, each with a
threshold and a weight chosen on the seeds; no training loop, so each decision reads as named features.

``statistic="any"`` is the report's rule (positive if ANY selected feature fires at any token, eps = 0); on
longer text nobody here wrote it calls most negatives positive. The default reads each feature's mean activation
over the text ("rate", the share of tokens where it fires, is the other calibrated statistic), keeps the 20
features whose class means differ most on the seeds, and sums their weighted margins past per-feature
thresholds (``rules``); the layer (and, when asked for, the statistic and the number of features) is chosen by
leave-one-out over the seeds (``rules.cross_validate``), never on held-out data. On the out-of-domain benchmark
(``benchmarks/ood_classifier``) that default did best of the variants tried.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...base import validate
from . import rules, stats
from .common import STORE_LIMIT, NotFittedError, classify_text, classify_texts, metrics, texts_labels
from .files import load_classifier, save_classifier

if TYPE_CHECKING:
    from ...lab import Lab

SCREEN = 32        # features per layer and statistic kept by the screening pass


def _ordered(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-layer ``rules.cross_validate`` tables as one, in the order it gives a table of all layers (its rows
    are independent per (layer, statistic); only the final sort spans layers)."""
    table = pd.concat(tables, ignore_index=True) if tables else rules.cross_validate({}, np.zeros(0, bool))
    order = table.statistic.map({s: i for i, s in enumerate(rules.STATISTICS)}).rename("_stat")
    table = pd.concat([table, order], axis=1).sort_values(
        rules.SELECT_BY + ["_stat", "top_k", "layer"], ascending=[False] * len(rules.SELECT_BY) + [True, True, True],
        kind="stable")
    return table.drop(columns="_stat").reset_index(drop=True)


def _choices(value, name: str, allowed, auto) -> tuple:
    """A single choice, a list of them, or "auto" (all of ``auto``) -> a tuple of validated choices."""
    if isinstance(value, str) and value == "auto":
        return tuple(auto)
    single = isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")
    values = [value] if single else list(value)
    if not values:
        raise ValueError(f"{name} is empty")
    for v in values:
        if allowed is not None:
            if v not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)} or 'auto', got {v!r}")
        elif isinstance(v, str):
            if v != "all":
                raise ValueError(f"{name} must be an int from 1 to 32, 'all' or 'auto', got {v!r}")
        else:
            validate.integer(v, name, 1, 32)
    if allowed is None:  # a number of features: "all" is rules.ALL
        return tuple(dict.fromkeys(rules.ALL if v == "all" else int(v) for v in values))
    return tuple(dict.fromkeys(values))


def _written(k: int) -> int | str:
    """A number of features as the parameter is written: rules.ALL is "all"."""
    return "all" if k == rules.ALL else k


class SeedClassifier:
    """A few SAE features of one layer, each with a threshold and a weight chosen on the seeds.

    ``statistic``: "rate", "mean", "any" (the report's OR rule), a list of them, or "auto" (all three); ``top_k``:
    features per rule (1-32), "all" (every feature the seeds separate: a dense discriminant, a few points more
    accurate on the out-of-domain benchmark, no longer short to read), a list, or "auto" (5, 10, 20);
    ``select="loo"`` picks layer, statistic and K by
    leave-one-out over the seeds (ten folds beyond 64 seeds); ``select="delta"`` is the report's choice: the
    layer with the largest top-1 delta, with ``n_layers=m > 1`` the top-1 feature of each of the m best layers.
    ``drop_always_on`` drops "any" features firing in every seed (True) or in that share of them (a float);
    ``eps``: a feature fires when its activation exceeds it (0 in the report)."""

    def __init__(self, lab: Lab, layers=None, statistic="mean", top_k=20, select: str = "loo",
                 combine: str = "sum", n_layers: int = 1, skip_first: bool = True, skip_special: bool = True,
                 drop_always_on: bool | float = True, batch_size: int = 16, max_length: int | None = 256,
                 eps: float = 0.0, progress: bool | None = None):
        # scikit-learn's convention: store the parameters as given; ``fit`` validates them
        self.lab, self.layers, self.statistic, self.top_k, self.select = lab, layers, statistic, top_k, select
        self.combine = combine
        self.n_layers, self.skip_first, self.skip_special = n_layers, skip_first, skip_special
        self.drop_always_on, self.batch_size, self.max_length = drop_always_on, batch_size, max_length
        self.eps, self.progress = eps, progress

    # ------------------------------------------------------------------ scikit-learn's estimator conventions
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The parameters of ``__init__``, sorted (as ``sklearn.base.BaseEstimator._get_param_names`` reads
        them): a subclass adds a parameter by adding it to its ``__init__`` and storing it under that name."""
        if cls.__init__ is object.__init__:
            return []
        params = [p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self" and p.kind != p.VAR_KEYWORD]
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(f"{cls.__name__}.__init__ takes *{p.name}: scikit-learn's estimators name "
                                   f"every parameter")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as stored (scikit-learn's ``get_params``); with ``deep``, those of a
        parameter that is itself an estimator too, as ``name__param``."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{key}", v) for key, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params) -> SeedClassifier:
        """Change constructor parameters (``name__param`` reaches into a parameter that is an estimator);
        unknown names are refused. Takes effect at the next ``fit``."""
        valid = self._get_param_names()
        unknown = sorted({name.partition("__")[0] for name in params} - set(valid))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; valid: {valid}")
        nested: dict[str, dict] = {}
        for name, value in params.items():
            name, _, sub = name.partition("__")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __sklearn_clone__(self) -> SeedClassifier:
        """What ``sklearn.base.clone`` returns: an unfitted classifier with the same parameters, sharing this
        one's Lab (the model is never copied); the other parameters are deep copies, as ``clone`` makes them."""
        return type(self)(**{name: value if name == "lab" else copy.deepcopy(value)
                             for name, value in self.get_params(deep=False).items()})

    def _validate_params(self) -> None:
        """Check the parameters; derive ``candidate_layers_`` and the candidate statistics and K values."""
        lab = self.lab
        self._statistics = _choices(self.statistic, "statistic", rules.STATISTICS, rules.STATISTICS)
        self._ks = _choices(self.top_k, "top_k", None, rules.TOP_KS)
        if self.select not in ("loo", "delta"):
            raise ValueError(f"select must be 'loo' or 'delta', got {self.select!r}")
        if self.combine not in ("sum", "vote"):
            raise ValueError(f"combine must be 'sum' or 'vote', got {self.combine!r}")
        layers = self.layers
        if layers is None:  # every layer that has an SAE
            layers = range(lab.n_layers) if lab.saes is None else lab.saes.layers
        self.candidate_layers_ = sorted(lab.check_layers(layers))
        validate.integer(self.n_layers, "n_layers", 1, len(self.candidate_layers_))
        if self.select == "delta" and (len(self._statistics) > 1 or len(self._ks) > 1):
            raise ValueError("select='delta' needs one statistic and one top_k (it does no model selection)")
        if self.n_layers > 1 and self.select != "delta":
            raise ValueError("n_layers > 1 is the report's multi-layer variant: use select='delta'")
        validate.integer(self.batch_size, "batch_size", 1)
        if self.max_length is not None:
            validate.integer(self.max_length, "max_length", 2)
        validate.number(self.eps, "eps", 0.0)
        if not isinstance(self.drop_always_on, bool):
            validate.number(self.drop_always_on, "drop_always_on", 0.0, 1.0)

    def _config(self) -> dict:
        config = {k: getattr(self, k) for k in ("statistic", "top_k", "select", "combine", "n_layers", "skip_first",
                                                "skip_special", "drop_always_on", "batch_size", "max_length",
                                                "eps")}
        config["statistic"] = list(self._statistics) if len(self._statistics) > 1 else self._statistics[0]
        ks = [_written(k) for k in self._ks]
        config["top_k"] = ks if len(ks) > 1 else ks[0]
        return {"layers": list(self.candidate_layers_), **config}

    def __repr__(self) -> str:
        """The parameters that differ from their defaults (the Lab, always given, is left out), then the
        selected features once fitted."""
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                 if name != "lab" and (defaults.get(name, inspect.Parameter.empty) is inspect.Parameter.empty
                                       or repr(value) != repr(defaults[name]))]
        if "features_" in self.__dict__:
            shown.append(f"features={self.features_}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _check_fitted(self) -> None:
        if "features_" not in self.__dict__:
            raise NotFittedError("this SeedClassifier is not fitted yet: call fit(texts, labels) or "
                                 "SeedClassifier.load(path, lab) first")

    def _scan_options(self) -> dict:
        return {"batch_size": self.batch_size, "max_length": self.max_length, "skip_first": self.skip_first,
                "skip_special": self.skip_special, "progress": self.progress}

    # ------------------------------------------------------------------ fit
    def seed_stats(self, texts, labels=None, memory_budget=None) -> tuple[stats.TextStats, np.ndarray]:
        """Per-text statistics of the seeds at every candidate layer (one scan per layer group that fits
        ``memory_budget``, default the Lab's; beyond ``STORE_LIMIT`` seeds a first pass keeps only per-class sums
        to screen features, so memory stays flat). Each SAE is read once per pass."""
        self._validate_params()
        texts, y = texts_labels(texts, labels)
        layers, options = self.candidate_layers_, self._scan_options()
        options["memory_budget"] = memory_budget
        if len(texts) <= STORE_LIMIT:
            return stats.collect(self.lab, texts, layers, eps=self.eps, **options, desc="fit"), y
        sums = stats.summaries(self.lab, texts, y, layers, self.eps, **options, desc="screen")
        keep = {}
        n = np.array([max(int(y.sum()), 1), max(int((~y).sum()), 1)])[:, None]
        for layer, (fires, r1, r2, m1, m2) in sums.items():
            picked = [np.argsort(-(fires[0] / n[0] - fires[1] / n[1]))[:SCREEN]]
            for s1, s2 in ((r1, r2), (m1, m2)):
                mu = s1 / n
                sd = np.sqrt(np.maximum(s2 / n - mu ** 2, 0).mean(0)) + 1e-9
                picked.append(np.argsort(-np.abs(mu[0] - mu[1]) / sd)[:SCREEN])
            keep[layer] = np.unique(np.concatenate(picked))
        return stats.collect(self.lab, texts, layers, keep, eps=self.eps, **options, desc="fit"), y

    def fit(self, texts, labels=None, memory_budget=None) -> SeedClassifier:
        """Collect the seeds' statistics, choose layer / statistic / K on them alone, fit the rule.

        ``memory_budget`` (bytes or "8GB"; default ``lab.memory_budget``) bounds the SAEs and statistics held at
        once: layers are taken in groups that fit (the same result as one pass), and a budget too small for one
        layer is refused (MemoryBudgetError) before any forward."""
        self.__dict__.pop("features_", None)  # a failed refit must not leave the old selection usable
        self._validate_params()
        texts, y = texts_labels(texts, labels)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if not n_pos or not n_neg:
            raise ValueError(f"both classes are needed: got {n_pos} positive and {n_neg} negative texts")
        seed, y = self.seed_stats(texts, y, memory_budget=memory_budget)
        return self.fit_stats(seed, y)

    def fit_stats(self, seed: stats.TextStats, y) -> SeedClassifier:
        """``fit`` on statistics already collected from the seeds (``seed_stats``): reads nothing else."""
        self.__dict__.pop("features_", None)
        self._validate_params()
        y = np.asarray(y, bool)
        if not y.any() or y.all():
            raise ValueError(f"both classes are needed: got {int(y.sum())} positive and {int((~y).sum())} "
                             f"negative texts")
        feats = {layer: seed.features(layer) if layer in seed.entries else np.zeros(0, int)
                 for layer in self.candidate_layers_}
        needed = sorted(set(self._statistics) | {"any"})
        tables, scores, folds = [], [], []
        for layer in feats:  # one layer's float32 [seeds x features] matrices at a time, dropped after its turn
            mats = {(layer, s): seed.matrix(layer, s, feats[layer], np.float32) for s in needed}
            self._layer_table(layer, mats[(layer, "any")], feats[layer], y, tables, scores)
            if self.select == "loo":
                folds.append(rules.cross_validate({key: m for key, m in mats.items() if key[1] in self._statistics},
                                                  y, self._ks, self.eps, self.drop_always_on, combine=self.combine))
            del mats
        self._tables(tables, scores)
        if self.select == "delta":
            best = self.layer_scores_.head(self.n_layers)
            layers = [int(x) for x in best.layer[best.top1_delta > 0]]
            if not layers:
                raise ValueError("no feature fires in more positive than negative seed texts: add seeds or layers")
            if len(layers) < self.n_layers:
                warnings.warn(f"only {len(layers)} of the {self.n_layers} layers asked for have a feature "
                              f"firing more on positives than negatives", stacklevel=2)
            choice = (layers, self._statistics[0], self._ks[0] if self.n_layers == 1 else 1)
            self.selection_ = pd.DataFrame()
        else:
            table = _ordered(folds)
            table["chosen"] = np.arange(len(table)) == 0
            top = table.iloc[0]
            choice = ([int(top.layer)], str(top.statistic), int(top.top_k))
            if rules.ALL in self._ks:  # shown as the parameter is written
                table["top_k"] = table.top_k.map(_written)
            self.selection_ = table
        layers, statistic, k = choice
        picked = []
        for layer in layers:
            x = seed.matrix(layer, statistic, feats[layer], np.float32)
            ranking = rules.rank(x, y, statistic, self.eps, self.drop_always_on)
            rule = rules.top_rule(ranking, statistic, k, self.combine)
            picked += [(layer, int(feats[layer][c]), float(t), int(d), float(sc),
                        float(x[y, c].mean(dtype=np.float64)), float(x[~y, c].mean(dtype=np.float64)))
                       for c, t, d, sc in zip(rule.features, rule.thresholds, rule.directions, rule.scales)]
        if not picked:
            raise ValueError(f"no feature separates the seeds at layer(s) {layers} with statistic "
                             f"{statistic!r}: add seeds or layers")
        self.statistic_, self.top_k_, self.layers_, self.layer_ = statistic, _written(k), layers, layers[0]
        self.rules_ = pd.DataFrame(picked, columns=["layer", "feature", "threshold", "direction", "scale",
                                                    "pos_mean", "neg_mean"])
        self.rules_.insert(2, "name", self._names(self.rules_.layer, self.rules_.feature))
        self.rules_.insert(3, "statistic", statistic)
        # per unit of the statistic's comparison scale (its square root for rate / mean); 0 for the OR rule
        self.rules_.insert(7, "weight", 0.0 if statistic == "any" else self.rules_.direction / self.rules_.scale)
        self.thresholds_ = self.rules_.threshold.tolist()
        self.directions_ = self.rules_.direction.tolist()
        self.scales_ = self.rules_.scale.tolist()
        self.n_seeds_ = (int(y.sum()), int((~y).sum()))
        self._candidates_ = {layer: f for layer, f in feats.items() if len(f)}
        self._seed_ = (seed, y)
        self.features_ = [(int(a), int(b)) for a, b in zip(self.rules_.layer, self.rules_.feature)]
        return self

    def _names(self, layers, features) -> list[str]:
        """Display names of (layer, feature) pairs (``lab.feature_names``, one call per layer)."""
        layers, features = [int(a) for a in layers], [int(b) for b in features]
        names = {layer: dict(zip(fs, self.lab.feature_names(layer, fs))) for layer in set(layers)
                 for fs in [sorted({f for a, f in zip(layers, features) if a == layer})]}
        return [names[a][b] for a, b in zip(layers, features)]

    def _layer_table(self, layer: int, peak: np.ndarray, f: np.ndarray, y: np.ndarray, table: list,
                     scores: list) -> None:
        """One layer's rows of ``deltas_`` and ``layer_scores_`` (``peak``: its "any" matrix)."""
        k = max(self._ks) if self.select == "loo" else self._ks[0]
        fires = peak > self.eps
        ranking = rules.rank(peak, y, "any", self.eps, self.drop_always_on)
        top = ranking.order[:k]
        for rank, c in enumerate(top, 1):
            table.append({"layer": layer, "feature": int(f[c]), "pos_rate": float(fires[y, c].mean()),
                          "neg_rate": float(fires[~y, c].mean()), "delta": float(ranking.scores[rank - 1]),
                          "rank": rank})
        scores.append({"layer": layer, "feature": int(f[top[0]]) if len(top) else -1,
                       "top1_delta": float(ranking.scores[0]) if len(top) else 0.0,
                       "topk_delta": float(ranking.scores[:k].mean()) if len(top) else 0.0})

    def _tables(self, table: list, scores: list) -> None:
        """``deltas_`` (the report's per-layer top features) and ``layer_scores_`` (top-1 delta per layer)."""
        self.deltas_ = pd.DataFrame(table, columns=["layer", "feature", "pos_rate", "neg_rate", "delta", "rank"])
        # the largest top-1 delta wins; ties go to the larger top-k mean, then to the earlier layer
        self.layer_scores_ = pd.DataFrame(scores).sort_values(["top1_delta", "topk_delta"], ascending=False,
                                                              kind="stable", ignore_index=True)

    # ------------------------------------------------------------------ predict
    def _rule(self) -> rules.Rule:
        return rules.Rule(self.statistic_, np.arange(len(self.features_)), np.asarray(self.thresholds_, float),
                          np.asarray(self.directions_, int), np.asarray(self.scales_, float), self.combine)

    def stats_matrix(self, text_stats: stats.TextStats, features=None) -> np.ndarray:
        """``[n_texts, n_features]`` of this rule's statistic, read from collected statistics; a text with no
        counted token (see ``decision_function``) has a row of NaN: its statistics are undefined (a mean over
        no token)."""
        features = self.features_ if features is None else features
        out = np.zeros((text_stats.n_texts, len(features)))
        for layer in dict.fromkeys(layer for layer, _ in features):
            cols = [j for j, (l2, _) in enumerate(features) if l2 == layer]
            if layer in text_stats.entries:
                out[:, cols] = text_stats.matrix(layer, self.statistic_, [features[j][1] for j in cols])
        out[np.asarray(text_stats.n_counted) == 0] = np.nan
        return out

    def transform(self, texts, features=None) -> np.ndarray:
        """``[n_texts, n_features]``: the rule's statistic of each selected (layer, feature) (for "any" the
        largest activation over the counted tokens); NaN for every feature of a text with no counted token
        (see ``decision_function``). A text that is empty or only whitespace is refused (ValueError naming it)."""
        self._check_fitted()
        features = self.features_ if features is None else features
        texts = classify_texts(texts)
        by_layer = {layer: [f for l2, f in features if l2 == layer] for layer, _ in features}
        if not by_layer:
            return np.zeros((len(texts), 0))
        collected = stats.collect(self.lab, texts, list(by_layer), by_layer, eps=self.eps, **self._scan_options(),
                                  desc="classify")
        return self.stats_matrix(collected, features)

    @staticmethod
    def _split_evidence(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matrix with rows holding NaN set to 0, bool mask of those rows: texts with no evidence)."""
        x = np.asarray(x, float).reshape(len(x), -1)
        missing = np.isnan(x).any(1)
        return np.where(missing[:, None], 0.0, x), missing

    def prior(self) -> tuple[bool, float]:
        """(label, score) given to a text without evidence (see ``decision_function``): the label of the class with more
        seeds (the negative class on a tie) and the score of no feature evidence, on ``decision_function``'s
        scale: the seeds' log prior odds log(n_pos / n_neg) for the summed rule (0 for balanced seeds, the
        discriminant's intercept), eps + that for "any", the positive seeds' share minus one half for
        ``combine="vote"``. Its sign agrees with the label as every score's does."""
        self._check_fitted()
        n_pos, n_neg = self.n_seeds_
        label = n_pos > n_neg
        if self.statistic_ != "any" and self.combine == "vote":
            return label, n_pos / (n_pos + n_neg) - 0.5
        log_odds = float(np.log(n_pos / n_neg))
        return label, (float(self.eps) + log_odds) if self.statistic_ == "any" else log_odds

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Bool per row of a ``transform`` matrix: OR for "any", else the summed margins (or the votes); a row
        holding NaN (a text with no counted token) gets the class prior's label (``prior``)."""
        x, missing = self._split_evidence(x)
        out = self._rule().predict(x)
        out[missing] = self.prior()[0]
        return out

    def decision_matrix(self, x: np.ndarray) -> np.ndarray:
        """``decision_function`` of a ``transform`` matrix (a row holding NaN: ``prior``'s score)."""
        x, missing = self._split_evidence(x)
        out = x.max(1, initial=0.0) if self.statistic_ == "any" else self._rule().score(x)
        out[missing] = self.prior()[1]
        return out

    def margins_matrix(self, x: np.ndarray) -> np.ndarray:
        """``[n_texts, n_features]`` of a ``transform`` matrix: each feature's signed part in the decision, its
        weighted margin past its threshold (they sum to the decision for the summed rule); for "any", its
        activation past eps (the largest decides). A row holding NaN (no counted token) is all 0: no feature
        has a part in that decision, which is the prior's."""
        x, missing = self._split_evidence(x)
        out = self._rule().margins(x)
        out[missing] = 0.0
        return out

    def deciding_order(self, margins: np.ndarray) -> np.ndarray:
        """Indices of one text's ``margins_matrix`` row, the largest part in the decision first (by size; for
        "any", the strongest activation)."""
        return np.argsort(-margins if self.statistic_ == "any" else -np.abs(margins), kind="stable")

    def decision_function(self, texts) -> np.ndarray:
        """"any": the largest activation of any selected feature (> eps is the OR rule); otherwise the summed
        weighted margins past the thresholds (> 0: positive; with ``combine="vote"`` the share of
        features voting positive minus one half, a tie going to the first feature).

        A text with no counted token ("a", "The", any one-token text, since the attention sink
        at position 0 is skipped) has no feature evidence: it gets ``prior()``'s score (log prior odds of the
        seeds, 0 for balanced seeds) and ``predict`` the class prior's label (negative on a tie), never a score
        made of thresholds alone."""
        return self.decision_matrix(self.transform(texts))

    def explain(self, text: str, n: int | None = 10) -> pd.DataFrame:
        """Why one text got its label: the rule's features (layer, feature, display name) with their statistic on
        the text (``value``),
        threshold, weight and ``margin`` (``margins_matrix``), the largest part first (by size; for "any", the
        strongest activation); ``n`` rows (None: all). ``attrs``: ``score`` (``decision_function``),
        ``predicted`` and ``rest``, the summed margin of the rows not shown (what a dense rule's tail adds),
        ``evidence`` (False for a text with no counted token: every ``value`` NaN, every margin 0, score and label
        the prior's) and ``note`` (why, or "")."""
        self._check_fitted()
        text = classify_text(text)
        if n is not None:
            validate.integer(n, "n", 1)
        x = self.transform([text])
        margins = self.margins_matrix(x)[0]
        weights = [0.0 if self.statistic_ == "any" else d / sc for d, sc in zip(self.directions_, self.scales_)]
        table = pd.DataFrame({"layer": [layer for layer, _ in self.features_],
                              "feature": [f for _, f in self.features_],
                              "name": self._names([a for a, _ in self.features_], [b for _, b in self.features_]),
                              "statistic": self.statistic_,
                              "value": x[0], "threshold": self.thresholds_, "weight": weights, "margin": margins})
        table = table.iloc[self.deciding_order(margins)].reset_index(drop=True)
        shown = table if n is None else table.head(n)
        evidence = not np.isnan(x[0]).any()
        note = "" if evidence else (
            "no counted token (a one-token text: the attention sink at position 0 is skipped): no feature "
            "evidence, so the score and the label are the class prior's (SeedClassifier.prior)")
        shown.attrs.update(score=float(self.decision_matrix(x)[0]), predicted=bool(self.predict_matrix(x)[0]),
                           rest=0.0 if self.statistic_ == "any" else float(table.margin.iloc[len(shown):].sum()),
                           evidence=evidence, note=note)
        return shown

    def predict(self, texts) -> np.ndarray:
        """Bool per text (a text with no counted token: the class prior's label, see ``decision_function``)."""
        return self.predict_matrix(self.transform(texts))

    def score(self, texts, labels=None) -> float:
        """Accuracy, as in scikit-learn."""
        return self.evaluate(texts, labels)["accuracy"]

    def evaluate(self, texts, labels=None) -> dict:
        """accuracy, precision, recall, f1 (positive class) and n."""
        texts, y = texts_labels(texts, labels)
        return metrics(self.predict(texts), y)

    # ------------------------------------------------------------------ baselines
    def random_feature_control(self, seed: int = 0) -> SeedClassifier:
        """A copy with as many features drawn at random (same layers, same statistic) among those that fire in
        some seed text, thresholds and weights chosen on the seeds the same way: what the ranking adds (for
        ``top_k="all"`` nothing: the control then holds about the same features)."""
        self._check_fitted()
        if not getattr(self, "_candidates_", None):
            raise NotFittedError("the random control needs the seed statistics of fit (not kept by save/load)")
        rng = np.random.default_rng(seed)
        seed_stats, y = self._seed_
        control = copy.copy(self)
        control.features_, control.thresholds_, control.directions_, control.scales_ = [], [], [], []
        for layer in dict.fromkeys(layer for layer, _ in self.features_):
            n = sum(1 for l2, _ in self.features_ if l2 == layer)
            pool = self._candidates_[layer]
            columns = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
            drawn = [int(f) for f in pool[columns]]
            if self.statistic_ == "any":
                thresholds, directions, scales = [self.eps] * len(drawn), [1] * len(drawn), [1.0] * len(drawn)
            else:  # fitted over the whole pool as ``fit`` does (the shrinkage reads the layer's mean variance)
                x = rules.scaled(seed_stats.matrix(layer, self.statistic_, pool), self.statistic_)
                _, thresholds, directions, scales = (part[columns] for part in rules.discriminant(x, y))
                thresholds = thresholds ** 2  # back from the root scale to the statistic's units
            control.features_ += [(layer, f) for f in drawn]
            control.thresholds_ += [float(t) for t in thresholds]
            control.directions_ += [int(d) for d in directions]
            control.scales_ += [float(v) for v in scales]
        return control

    def logreg_probe(self, train_texts, train_labels, test_texts, layer=None, steps: int = 100,
                     l2: float = 1e-3) -> np.ndarray:
        """Bool predictions of a logistic regression (LBFGS, standardized inputs) on the mean residual at
        ``layer`` (default: the chosen one): the dense, trained baseline the rule is measured against."""
        from .baselines import logreg

        if layer is None:
            self._check_fitted()
            layer = self.layer_
        train_texts, y = texts_labels(train_texts, train_labels)
        opts = {**self._scan_options(), "desc": "probe"}
        train = stats.collect(self.lab, train_texts, [], residual_layers=[layer], **opts).residual_means[layer]
        test = stats.collect(self.lab, classify_texts(test_texts, "test_texts"), [], residual_layers=[layer],
                             **opts).residual_means[layer]
        return logreg(train, y, test, steps, l2)

    def compare_baselines(self, train_texts, train_labels, test_texts, test_labels, n_random: int = 5,
                          seed: int = 0, draws: int = 1, n_seeds: int | None = None) -> pd.DataFrame:
        """Held-out metrics of the report's rule, this (calibrated) rule, random features and a logistic probe;
        with ``draws > 1`` over that many draws of ``n_seeds`` seeds per class (mean, sd, min, max)."""
        from .baselines import compare_draws, summarize

        per_draw = compare_draws(self, train_texts, train_labels, test_texts, test_labels, n_random, seed,
                                 draws, n_seeds)
        table = summarize(per_draw)
        table.attrs["draws"] = per_draw
        return table

    def delta_chart(self):
        """Bar chart of the top-1 delta per layer; the chosen layer(s) highlighted."""
        from ...viz import charts

        self._check_fitted()
        return charts.classifier_layers(self.layer_scores_, self.layers_)

    # ------------------------------------------------------------------ files
    def save(self, path, overwrite: bool = False):
        """JSON with the config, model and SAE names, the rule (features, thresholds) and the seed tables,
        written atomically (a full disk or a crash leaves the old file intact; a symbolic link is written
        through). An existing SeedClassifier file at ``path`` is replaced; any other file (a notebook, other
        JSON, an empty file) only with ``overwrite=True``, else ``FileExistsError``. Returns the path."""
        self._check_fitted()
        return save_classifier(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, lab: Lab) -> SeedClassifier:
        """Rebuild a saved classifier on ``lab``; refuses a file fitted on another model, and a damaged or
        tampered one with a ValueError naming the file and the field (``files.check``)."""
        return load_classifier(cls, path, lab)
