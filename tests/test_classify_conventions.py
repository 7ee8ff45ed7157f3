"""SeedClassifier follows scikit-learn's estimator conventions: parameters read from ``__init__``'s signature,
``get_params`` / ``set_params`` built on them, and ``sklearn.base.clone`` giving an unfitted copy that shares the
Lab (the model inside it is never copied). On the tiny random-weight Lab of conftest."""

import inspect

import pytest

from qscope_lab.workflows.classify import NotFittedError, SeedClassifier

TEXTS = ["The cat sat on the mat.", "A dog ran in the park.", "猫坐在垫子上。", "今天天气很好。"]
LABELS = [0, 0, 1, 1]


def signature_names(cls) -> set[str]:
    return {name for name in inspect.signature(cls.__init__).parameters if name != "self"}


def test_get_params_matches_the_signature(lab):
    clf = SeedClassifier(lab, layers=[1, 2], top_k=3, progress=False)
    params = clf.get_params()
    assert set(params) == signature_names(SeedClassifier) == set(SeedClassifier._get_param_names())
    assert params == clf.get_params(deep=False)  # no parameter is itself an estimator
    assert params["lab"] is lab and params["layers"] == [1, 2] and params["top_k"] == 3
    defaults = {name: p.default for name, p in inspect.signature(SeedClassifier.__init__).parameters.items()}
    assert params["statistic"] == defaults["statistic"] and params["eps"] == defaults["eps"]


def test_a_subclass_adds_a_parameter_through_its_init(lab):
    class Wider(SeedClassifier):
        def __init__(self, lab, extra: int = 1, **kwargs):
            super().__init__(lab, **kwargs)
            self.extra = extra

    assert Wider._get_param_names() == ["extra", "lab"]
    assert Wider(lab, extra=3).set_params(extra=4).get_params() == {"extra": 4, "lab": lab}

    class Starred(SeedClassifier):
        def __init__(self, lab, *layers):
            super().__init__(lab, layers)

    with pytest.raises(RuntimeError, match=r"\*layers"):
        Starred._get_param_names()


def test_set_params_round_trips_and_refuses_unknown_names(lab):
    clf = SeedClassifier(lab, progress=False)
    changed = {"layers": [1, 2], "statistic": "rate", "top_k": "all", "eps": 0.5, "batch_size": 3}
    assert clf.set_params(**changed) is clf
    params = clf.get_params()
    assert {name: params[name] for name in changed} == changed
    again = SeedClassifier(lab).set_params(**params)
    assert again.get_params() == params and again.lab is lab
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['topk'\].*valid: .*'top_k'"):
        clf.set_params(topk=3)
    with pytest.raises(ValueError, match="topk"):  # nothing is half-applied
        clf.set_params(top_k=1, topk=3)
    assert clf.top_k == "all"


def test_repr_shows_the_parameters_that_differ_from_their_defaults(lab):
    assert repr(SeedClassifier(lab)) == "SeedClassifier()"
    clf = SeedClassifier(lab, layers=[1, 2], top_k=3, progress=False)
    assert repr(clf) == "SeedClassifier(layers=[1, 2], progress=False, top_k=3)"
    clf.fit(TEXTS, LABELS)
    assert repr(clf).startswith("SeedClassifier(layers=[1, 2], progress=False, top_k=3, features=[(")


def test_sklearn_clone_shares_the_lab_and_drops_the_fit(lab):
    base = pytest.importorskip("sklearn.base")
    clf = SeedClassifier(lab, layers=[1, 2], statistic=["mean", "rate"], top_k=2, progress=False)
    clf.fit(TEXTS, LABELS)
    assert clf.predict(TEXTS).shape == (4,)
    cloned = base.clone(clf)
    assert type(cloned) is SeedClassifier and cloned is not clf
    assert cloned.lab is lab  # the same model, not a deep copy of it
    assert cloned.get_params() == clf.get_params()
    assert cloned.layers is not clf.layers and cloned.statistic is not clf.statistic  # the rest are copies
    assert not [name for name in vars(cloned) if name.endswith("_")]  # no fitted state carried over
    with pytest.raises(NotFittedError):
        cloned.predict(TEXTS)
    cloned.layers.append(3)  # changing the clone's parameters leaves the original alone
    assert clf.layers == [1, 2]
    # a clone of an unfitted classifier, and a clone of a clone, keep sharing the Lab
    assert base.clone(base.clone(SeedClassifier(lab))).lab is lab
