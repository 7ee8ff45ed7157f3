"""A SeedClassifier file loses nothing and never answers wrong in silence: ``save`` is atomic (a full disk keeps
the old file), refuses to replace what is not a classifier file, writes through a link and keeps the mode;
``load`` checks every field and names the file and the field of any damage (hand-picked tampering and random
corruption); a text with no counted token gets the class prior, said so, not a score made of thresholds alone.
On the tiny random-weight Lab of conftest."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import pickle
import stat
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab.workflows.classify import FORMAT, SeedClassifier

TEXTS = ["The cat sat on the mat.", "A dog ran in the park.", "We walked home in the rain.",
         "猫坐在垫子上。", "今天天气很好。", "我们明天早上八点出发。"]
LABELS = [0, 0, 0, 1, 1, 1]
PROBE = ["The bird sang.", "他每天早上跑步。", "a"]  # "a": one token, nothing counted once the sink is skipped


@pytest.fixture(scope="module")
def fitted(lab):
    return SeedClassifier(lab, top_k=4, progress=False).fit(TEXTS, LABELS)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory) -> dict:
    """The saved file's JSON, to tamper with."""
    path = fitted.save(tmp_path_factory.mktemp("clf") / "clf.json")
    return json.loads(path.read_text())


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------- atomic save
@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A real, small file system at ``folder`` (root only): writes past its size fail with ENOSPC."""
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (to fill a disk for real) needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(lab, fitted, tmp_path):
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        path = fitted.save(disk / "clf.json")
        before = path.read_bytes()
        fill(disk)
        with pytest.raises(OSError) as info:
            fitted.save(path)
        assert info.value.errno == errno.ENOSPC
        assert path.read_bytes() == before  # not truncated: today's write_text left a torn file here
        assert sorted(p.name for p in disk.iterdir()) == ["clf.json", "filler"]
        np.testing.assert_array_equal(SeedClassifier.load(path, lab).predict(PROBE), fitted.predict(PROBE))


@pytest.mark.parametrize("name,content", [
    ("analysis.ipynb", json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})),
    ("other.json", json.dumps({"a": 1})),
    ("notes.txt", "my notes, not JSON"),
    ("empty.json", ""),
    ("list.json", "[1, 2]"),
])
def test_save_refuses_to_replace_a_file_that_is_not_a_classifier(fitted, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FileExistsError, match=rf"{name} exists and is not a SeedClassifier file.*overwrite=True"):
        fitted.save(path)
    assert path.read_text() == content
    assert fitted.save(path, overwrite=True) == path  # asked for: replaced
    assert json.loads(path.read_text())["format"] == FORMAT
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_save_replaces_a_classifier_file_and_never_a_folder(lab, fitted, tmp_path):
    path = fitted.save(tmp_path / "clf.json")
    other = SeedClassifier(lab, top_k=1, progress=False).fit(TEXTS, LABELS)
    assert other.save(path) == path  # a classifier file: what save means
    assert len(SeedClassifier.load(path, lab).features_) == 1
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="folder"):
        fitted.save(tmp_path / "folder", overwrite=True)
    with pytest.raises(TypeError, match="overwrite"):
        fitted.save(path, overwrite="yes")


@pytest.mark.skipif(os.name != "posix", reason="POSIX links and permission bits")
def test_save_writes_through_a_link_and_keeps_the_mode(lab, fitted, tmp_path):
    (tmp_path / "store").mkdir()
    real = fitted.save(tmp_path / "store" / "clf.json")
    os.chmod(real, 0o640)
    link = tmp_path / "clf.json"
    link.symlink_to(real)
    fitted.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert SeedClassifier.load(link, lab).features_ == fitted.features_
    old = os.umask(0o022)
    try:
        new = fitted.save(tmp_path / "new.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644  # a new file: the umask's default


def test_what_save_writes_always_loads(lab, fitted, tmp_path):
    broken = copy.copy(fitted)
    broken.scales_ = [0.0] + list(fitted.scales_[1:])
    with pytest.raises(ValueError, match=r"cannot save .*scales\[0\].*must be positive"):
        broken.save(tmp_path / "broken.json")
    assert not (tmp_path / "broken.json").exists()


# ---------------------------------------------------------------------------------------------- tampered files
def tamper(data: dict, change) -> dict:
    data = copy.deepcopy(data)
    change(data)
    return data


def setitem(key, value):
    def change(data):
        data[key] = value
    return change


def setindex(key, i, value):
    def change(data):
        data[key][i] = value
    return change


def setconfig(key, value):
    def change(data):
        data["config"][key] = value
    return change


def setfeature(feature):
    """The first feature replaced by ``feature`` at the chosen layer."""
    def change(data):
        data["features"][0] = [data["layer"], feature]
    return change


def delete(key):
    def change(data):
        del data[key]
    return change


TAMPERED = [
    ("NaN threshold", setindex("thresholds", 0, float("nan")), r"thresholds\[0\].*finite"),
    ("infinite threshold", setindex("thresholds", 1, float("inf")), r"thresholds\[1\].*finite"),
    ("negative threshold", setindex("thresholds", 0, -1.0), r"thresholds\[0\]"),
    ("zero scale", setindex("scales", 0, 0.0), r"scales\[0\].*positive"),
    ("negative scale", setindex("scales", 0, -2.0), r"scales\[0\].*positive"),
    ("directions a number", setitem("directions", 5), r"'directions'.*must be a list"),
    ("direction 5", setindex("directions", 0, 5), r"directions\[0\]"),
    ("direction 0", setindex("directions", 0, 0), r"directions\[0\].*\+1 or -1"),
    ("bool threshold", setindex("thresholds", 0, True), r"thresholds\[0\].*number"),
    ("string scale", setindex("scales", 0, "1.0"), r"scales\[0\].*number"),
    ("bogus statistic", setitem("statistic", "bogus"), r"'statistic'.*one of"),
    ("bogus combine", setconfig("combine", "bogus"), r"'config'.*combine"),
    ("bogus select", setconfig("select", "bogus"), r"'config'.*select"),
    ("unknown parameter", setconfig("temperature", 2), r"config.temperature"),
    ("skip_first a string", setconfig("skip_first", "no"), r"config.skip_first"),
    ("thresholds too short", lambda d: d["thresholds"].pop(), r"'thresholds'.*entries but there are 4"),
    ("scales too long", lambda d: d["scales"].append(1.0), r"'scales'.*5 entries"),
    ("features empty", setitem("features", []), r"'features'.*empty"),
    ("feature out of range", setfeature(10_000), r"features\[0\] feature.*0\.\.255"),
    ("negative feature", setfeature(-1), r"features\[0\] feature"),
    ("feature a float", setfeature(3.5), r"features\[0\] feature.*int"),
    ("feature not a pair", setindex("features", 0, 7), r"features\[0\].*pair"),
    ("feature layer not chosen", lambda d: d["features"].__setitem__(0, [(d["layer"] + 1) % 4, 1]),
     r"features\[0\] layer"),
    ("repeated feature", lambda d: d["features"].__setitem__(1, list(d["features"][0])), r"features\[1\].*repeats"),
    ("layer out of range", setitem("layer", 99), r"'layer'"),
    ("layers out of range", setitem("layers", [99]), r"layers\[0\]"),
    ("layers empty", setitem("layers", []), r"'layers'.*empty"),
    ("candidate layers out of range", setconfig("layers", [0, 99]), r"'config'.*layers"),
    ("version from the future", setitem("version", 99), r"'version'.*newer qscope-lab"),
    ("version a string", setitem("version", "2"), r"'version'.*int"),
    ("n_seeds zero", setitem("n_seeds", [0, 3]), r"n_seeds\[0\]"),
    ("n_seeds three", setitem("n_seeds", [1, 2, 3]), r"'n_seeds'"),
    ("top_k 99", setitem("top_k", 99), r"'top_k'"),
    ("rules of another feature", lambda d: d["rules"][0].__setitem__("feature", 255 - d["features"][0][1]),
     r"rules\[0\]"),
    ("rules missing", delete("rules"), r"'rules'.*missing"),
    ("layer_scores NaN", lambda d: d["layer_scores"][0].__setitem__("top1_delta", float("nan")),
     r"layer_scores\[0\].top1_delta.*finite"),
    ("deltas a dict", setitem("deltas", {"a": 1}), r"'deltas'.*list"),
    ("model a number", setitem("model", 3), r"'model'"),
    ("config a list", setitem("config", [1]), r"'config'.*object"),
    ("thresholds missing", delete("thresholds"), r"'thresholds'.*missing"),
]


@pytest.mark.parametrize("name,change,message", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_fields_are_refused_naming_the_file_and_the_field(lab, saved, tmp_path, name, change, message):
    path = write(tmp_path / "tampered.json", tamper(saved, change))
    with pytest.raises(ValueError, match=message) as info:
        SeedClassifier.load(path, lab)
    assert str(path) in str(info.value)


def test_a_statistic_the_rule_cannot_hold_is_refused_at_load_not_at_predict(lab, saved, tmp_path):
    data = tamper(saved, setitem("statistic", "any"))  # 'any' is a statistic, but not with these thresholds
    with pytest.raises(ValueError, match=r"tampered.json .*'statistic'"):
        SeedClassifier.load(write(tmp_path / "tampered.json", data), lab)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  "{" * 50_000])
def test_deep_nesting_gives_a_clear_error_not_a_recursion_error(lab, tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"deep.json is not a saved SeedClassifier"):
        SeedClassifier.load(path, lab)


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["QSCOPE_PWNED"]),))


def test_a_pickle_is_never_unpickled(lab, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("QSCOPE_PWNED", str(marker))
    path = tmp_path / "clf.json"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ValueError, match="clf.json is not a saved SeedClassifier"):
        SeedClassifier.load(path, lab)
    assert not marker.exists()


def test_a_version_1_file_still_loads(lab, tmp_path):
    clf = SeedClassifier(lab, statistic="any", top_k=1, select="delta", progress=False).fit(TEXTS, LABELS)
    data = json.loads(clf.save(tmp_path / "v2.json").read_text())
    v1 = {key: value for key, value in data.items()
          if key not in ("version", "statistic", "top_k", "thresholds", "directions", "scales", "rules", "selection")}
    v1["config"] = {k: v for k, v in v1["config"].items() if k != "combine"}
    loaded = SeedClassifier.load(write(tmp_path / "v1.json", v1), lab)
    assert loaded.statistic_ == "any" and loaded.features_ == clf.features_
    np.testing.assert_array_equal(loaded.predict(PROBE), clf.predict(PROBE))


def test_the_saved_file_round_trips(lab, fitted, tmp_path):
    loaded = SeedClassifier.load(fitted.save(tmp_path / "clf.json"), lab)
    np.testing.assert_array_equal(loaded.decision_function(PROBE), fitted.decision_function(PROBE))


# ---------------------------------------------------------------------------------------------- random corruption
FIELDS = ["version", "model", "config", "layer", "layers", "statistic", "top_k", "features", "thresholds",
          "directions", "scales", "n_seeds", "rules", "selection", "deltas", "layer_scores"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=6), st.sampled_from(["bogus", "all", "any", "rate", "mean", "sum", "vote", "loo"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


def boundary(clf) -> float:
    return float(clf.eps) if clf.statistic_ == "any" else 0.0


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(FIELDS), where=st.integers(0, 30), deep=st.booleans(), value=json_values)
def test_random_corruption_is_refused_by_name_or_still_answers_right(lab, saved, tmp_path_factory, field, where,
                                                                     deep, value):
    """Any one field (or one entry of a list field, or one cell of a table) replaced by any JSON value: load
    refuses with a ValueError naming the file, or the classifier it returns gives finite scores whose sign is
    its prediction, and explains itself. Never a TypeError, KeyError, RecursionError, or NaN score."""
    data = copy.deepcopy(saved)
    target = data[field]
    if deep and isinstance(target, list) and target:
        i = where % len(target)
        if isinstance(target[i], dict) and target[i]:
            target[i][sorted(target[i])[where % len(target[i])]] = value
        elif isinstance(target[i], list) and target[i]:
            target[i][where % len(target[i])] = value
        else:
            target[i] = value
    elif deep and isinstance(target, dict) and target:
        target[sorted(target)[where % len(target)]] = value
    else:
        data[field] = value
    path = tmp_path_factory.mktemp("corrupt") / "clf.json"
    path.write_text(json.dumps(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = SeedClassifier.load(path, lab)
    except ValueError as err:
        assert str(path) in str(err), err
        return
    scores, predicted = clf.decision_function(PROBE), clf.predict(PROBE)
    assert np.isfinite(scores).all(), (field, value, scores)
    decided = ~np.isclose(scores, boundary(clf))  # a vote tie goes to the first feature
    np.testing.assert_array_equal(predicted[decided], scores[decided] > boundary(clf))
    assert clf.explain(PROBE[0]).attrs["predicted"] == predicted[0]


# ---------------------------------------------------------------------------------------------- no counted token
def test_a_text_with_no_counted_token_gets_the_class_prior(lab, fitted):
    texts = ["a", "The", "x"]  # one token each: the sink at position 0 is skipped, nothing is counted
    assert fitted.prior() == (False, 0.0)  # 3 and 3 seeds: log odds 0, a tie goes to the negative class
    np.testing.assert_array_equal(fitted.decision_function(texts), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(fitted.predict(texts), [False, False, False])
    assert np.isnan(fitted.transform(texts)).all()
    table = fitted.explain("a")
    assert table.attrs["evidence"] is False and "no counted token" in table.attrs["note"]
    assert table.attrs["score"] == 0.0 and table.attrs["predicted"] is False
    assert (table.margin == 0).all() and table.value.isna().all()
    counted = fitted.explain(PROBE[0])
    assert counted.attrs["evidence"] is True and counted.attrs["note"] == ""


@pytest.mark.parametrize("statistic,combine", [("mean", "sum"), ("rate", "vote"), ("any", "sum")])
def test_the_prior_follows_the_seeds(lab, statistic, combine):
    clf = SeedClassifier(lab, statistic=statistic, combine=combine, top_k=3, progress=False)
    clf.fit(TEXTS + ["Ein Hund lief im Park."], LABELS + [1])  # 4 positive, 3 negative seeds
    label, score = clf.prior()
    assert label is True
    expected = {"sum": np.log(4 / 3), "vote": 4 / 7 - 0.5}[combine] + (clf.eps if statistic == "any" else 0.0)
    assert score == pytest.approx(expected)
    assert clf.predict(["a", "The"]).tolist() == [True, True]
    np.testing.assert_allclose(clf.decision_function(["a"]), [expected])


@pytest.mark.parametrize("text", ["   ", "\n\t ", "\u3000"])
def test_a_whitespace_only_text_is_refused_like_the_empty_one(fitted, text):
    with pytest.raises(ValueError, match=r"texts\[1\] is only whitespace"):
        fitted.predict(["The cat.", text])
    with pytest.raises(ValueError, match="text is only whitespace"):
        fitted.explain(text)
    with pytest.raises(ValueError, match=r"texts\[0\] is only whitespace"):
        SeedClassifier(fitted.lab, progress=False).fit([text] + TEXTS[1:], LABELS)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["thresholds", "scales", "directions", "n_seeds"]), where=st.integers(0, 30),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                       st.floats(1e-300, 1e300)))
def test_random_numbers_in_the_rule_are_refused_or_answer_finitely(lab, saved, tmp_path_factory, field, where,
                                                                   value):
    """One number of the rule replaced by any number (NaN, inf, 0, negative, tiny, huge): refused by name, or
    finite scores whose sign is the prediction (a text with no counted token included)."""
    data = copy.deepcopy(saved)
    data[field][where % len(data[field])] = value
    path = tmp_path_factory.mktemp("numbers") / "clf.json"
    path.write_text(json.dumps(data))
    try:
        clf = SeedClassifier.load(path, lab)
    except ValueError as err:
        assert str(path) in str(err) and field in str(err), err
        return
    scores, predicted = clf.decision_function(PROBE), clf.predict(PROBE)
    assert np.isfinite(scores).all(), (field, value, scores)
    decided = ~np.isclose(scores, boundary(clf))
    np.testing.assert_array_equal(predicted[decided], scores[decided] > boundary(clf))
