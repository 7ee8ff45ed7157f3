"""Benchmark redundancy and coverage (REFERENCE section 2) on the embedded model and its trained SAEs: a
near-duplicate benchmark must be more redundant than a diverse one, a superset must cover its subset, the greedy
subset must keep the asked share of features with fewer texts, and the footprint must match FeatureActs."""

import argparse
import itertools
import json

import altair as alt
import numpy as np
import pandas as pd
import pytest

from qscope_lab import Lab
from qscope_lab.base.textfiles import read_texts
from qscope_lab.cli import coverage as coverage_command
from qscope_lab.cli.coverage import parse_benchmark_args
from qscope_lab.embedded import REFERENCE_FILE
from qscope_lab.workflows.coverage import (
    Footprint,
    footprint,
    overlap,
    overlap_chart,
    select_subset,
)

LAYER, MAX_LENGTH = 2, 128
DOCS = [json.loads(line)["text"] for line in REFERENCE_FILE.read_text(encoding="utf-8").splitlines()]
DIVERSE = DOCS[::5][:40]                         # 40 documents across English, Chinese and Python sources
EXTRA = DOCS[2::5][:40]                          # 40 other documents: DIVERSE + EXTRA is a superset of DIVERSE
NEAR_DUP = [f"The {animal} sat on the {colour} mat. It was a quiet {time} in the old house."  # 40 variations
            for animal, colour, time in itertools.product(["cat", "dog", "fox", "bird", "mouse"],
                                                          ["red", "green", "blue", "small"], ["morning", "evening"])]


@pytest.fixture(scope="module")
def lab():
    return Lab.load()  # the embedded default: trained SAEs, so feature sets mean something


@pytest.fixture(scope="module")
def fps(lab):
    run = {"max_length": MAX_LENGTH, "batch_size": 16}
    return {"diverse": footprint(lab, DIVERSE, LAYER, **run), "near_dup": footprint(lab, NEAR_DUP, LAYER, **run),
            "superset": footprint(lab, DIVERSE + EXTRA, LAYER, **run)}


def test_overlap_with_superset(fps):
    asym, mins = overlap(fps)
    assert list(asym.index) == list(asym.columns) == ["diverse", "near_dup", "superset"]
    assert asym.loc["diverse", "superset"] == 1.0            # the superset covers every feature of its subset
    assert asym.loc["superset", "diverse"] < 1.0             # and has features of its own
    assert mins.loc["diverse", "superset"] == mins.loc["superset", "diverse"] == 1.0
    assert np.allclose(np.diag(asym), 1.0) and np.allclose(mins, mins.T)
    sets = {name: set(fp.features.tolist()) for name, fp in fps.items()}  # independent: Python sets
    for a, b in itertools.permutations(sets, 2):
        assert asym.loc[a, b] == pytest.approx(len(sets[a] & sets[b]) / len(sets[a]))
        assert mins.loc[a, b] == pytest.approx(len(sets[a] & sets[b]) / min(len(sets[a]), len(sets[b])))
    assert isinstance(overlap_chart(asym), alt.LayerChart)
    overlap_chart(mins).to_json()


def test_near_duplicates_are_more_redundant(fps):
    dup, div = fps["near_dup"], fps["diverse"]
    assert len(dup) == len(div) == 40
    assert dup.n_features < div.n_features
    assert dup.redundancy() > div.redundancy()                                    # REFERENCE normalisation
    assert dup.redundancy(normalize="texts") > div.redundancy(normalize="texts")  # size-free AUC
    assert len(select_subset(dup, 0.95)) < len(select_subset(div, 0.95))


def test_coverage_curve(fps):
    for fp in fps.values():
        mc, exact = fp.coverage_curve(n_orders=20, seed=0), fp.coverage_curve(exact=True)
        for curve in (mc, exact):
            assert list(curve.n) == list(range(1, len(fp) + 1))
            assert (np.diff(curve.coverage) >= -1e-12).all()
            assert curve.coverage.iloc[-1] == pytest.approx(1.0, abs=1e-12)
        assert np.abs(mc.coverage - exact.coverage).max() < 0.03    # Monte Carlo agrees with the closed form
        assert exact.coverage.iloc[0] == pytest.approx(fp.sizes.mean() / fp.n_features)  # E|F(S_1)| = mean |F(x)|
        assert fp.coverage_curve(seed=3).equals(fp.coverage_curve(seed=3))
        assert fp.redundancy() == pytest.approx(exact.coverage.sum() / fp.n_features)
        assert fp.redundancy(normalize="texts") == pytest.approx(exact.coverage.mean())
    assert isinstance(fps["diverse"].chart(), alt.LayerChart)


def test_select_subset(lab, fps):
    fp = fps["diverse"]
    sub = select_subset(fp, fraction=0.9)
    assert list(sub.columns) == ["step", "text", "new_features", "n_features", "coverage"]
    assert sub.coverage.iloc[-1] >= 0.9 and len(sub) < len(fp)
    assert len(sub) == 1 or sub.coverage.iloc[-2] < 0.9      # stops as soon as the target is reached
    assert sub.text.is_unique and (np.diff(sub.new_features) <= 0).all()  # greedy gains never grow
    per_text = fp.per_text
    union = set().union(*(set(per_text[i].tolist()) for i in sub.text))   # independent recomputation
    assert len(union) == sub.n_features.iloc[-1]
    assert len(union) / fp.n_features == pytest.approx(sub.coverage.iloc[-1])
    assert sub.new_features.iloc[0] == fp.sizes.max()
    first = sub.text.iloc[:4].tolist()  # recomputed from the texts, in other batches: the same features
    fresh = footprint(lab, [DIVERSE[i] for i in first], LAYER, max_length=MAX_LENGTH, batch_size=3)
    assert fresh.n_features == sub.n_features.iloc[3]
    assert set(fresh.features.tolist()) == set().union(*(set(per_text[i].tolist()) for i in first))
    assert len(select_subset(fp, 1.0, max_size=3)) == 3
    assert select_subset(fp, 1.0).coverage.iloc[-1] == 1.0
    assert fp.subset(sub.text).n_features == sub.n_features.iloc[-1]


def test_footprint_matches_feature_acts(lab):
    texts = ["The cat sat on the mat.", "猫坐在垫子上。", "def add(a, b):\n    return a + b", "a", DOCS[7]]
    last = footprint(lab, texts, LAYER, max_length=MAX_LENGTH, batch_size=2)
    every = footprint(lab, texts, LAYER, position="all", max_length=MAX_LENGTH, batch_size=2)
    acts = lab.encode(texts, LAYER, batch_size=8, skip_first=True, max_length=MAX_LENGTH)
    for i in range(len(texts)):
        rows = acts.rows(i)
        counted = np.flatnonzero(acts.mask[rows].numpy()) + rows.start
        want_last = set() if not len(counted) else set(
            acts.indices[counted[-1]][acts.values[counted[-1]] > 0].tolist())
        want_all = set(acts.indices[counted][acts.values[counted] > 0].tolist())
        assert set(last.per_text[i].tolist()) == want_last
        assert set(every.per_text[i].tolist()) == want_all
    assert last.sizes[3] == 0            # "a" is one token: with skip_first nothing is counted
    assert last.sizes[[0, 1, 2, 4]].min() > 0 and every.sizes[0] > last.sizes[0]
    both = footprint(lab, texts[:3], [1, LAYER], max_length=MAX_LENGTH)
    assert set(both) == {1, LAYER} and both[LAYER].layer == LAYER
    assert [a.tolist() for a in both[LAYER].per_text] == [a.tolist() for a in last.per_text[:3]]


def test_errors(lab, fps):
    with pytest.raises(ValueError, match="empty"):
        footprint(lab, [], LAYER)
    for bad in (99, "2", True, []):
        with pytest.raises(ValueError, match="layer"):
            footprint(lab, ["hello"], bad)
    with pytest.raises(ValueError, match="position"):
        footprint(lab, ["hello"], LAYER, position="first")
    blank = Footprint(LAYER, "last", 2048, np.zeros(0, np.int32), np.zeros(3, np.int64))
    for call in (blank.coverage_curve, blank.redundancy, lambda: select_subset(blank)):
        with pytest.raises(ValueError, match="no feature"):
            call()
    with pytest.raises(ValueError, match="fraction"):
        select_subset(fps["diverse"], fraction=0)
    other = Footprint(1, "last", 2048, fps["diverse"].indices, fps["diverse"].offsets)
    with pytest.raises(ValueError, match="layer"):
        overlap({"a": fps["diverse"], "b": other})
    with pytest.raises(ValueError, match="NAME=path"):
        parse_benchmark_args(["a="])


def test_cli_writes_four_files(lab, tmp_path, monkeypatch):
    (tmp_path / "dup.txt").write_text("\n".join(NEAR_DUP[:12]) + "\n\n", encoding="utf-8")
    with open(tmp_path / "docs.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"source": "ref", "text": t}, ensure_ascii=False) + "\n" for t in DIVERSE[:12])
    pd.DataFrame({"id": range(6), "text": EXTRA[:6]}).to_csv(tmp_path / "extra.csv", index=False)
    assert read_texts(tmp_path / "dup.txt") == NEAR_DUP[:12]
    assert read_texts(tmp_path / "docs.jsonl") == DIVERSE[:12]
    assert read_texts(tmp_path / "extra.csv") == EXTRA[:6]

    monkeypatch.setattr(coverage_command, "lab_from_args", lambda args: lab)  # the embedded default, already loaded
    parser = argparse.ArgumentParser(prog="qscope-lab")
    coverage_command.register(parser.add_subparsers(dest="command", required=True))
    prefix = tmp_path / "run"
    args = parser.parse_args(["coverage", "--layer", str(LAYER), "--max-length", "64", "--out", str(prefix),
                              "--benchmark", f"dup={tmp_path / 'dup.txt'}",
                              "--benchmark", f"docs={tmp_path / 'docs.jsonl'}",
                              "--benchmark", str(tmp_path / "extra.csv")])
    args.func(args)
    summary = pd.read_csv(f"{prefix}_footprint.csv")
    assert list(summary.benchmark) == ["dup", "docs", "extra"] and list(summary.n_texts) == [12, 12, 6]
    assert {"benchmark", "n_texts", "n_features", "redundancy"} <= set(summary.columns)
    assert summary.set_index("benchmark").redundancy["dup"] > summary.set_index("benchmark").redundancy["docs"]
    for kind in ("asym", "min"):
        table = pd.read_csv(f"{prefix}_overlap_{kind}.csv").set_index("F1")
        assert list(table.columns) == ["dup", "docs", "extra"] and np.allclose(np.diag(table), 1.0)
    curve = pd.read_csv(f"{prefix}_curve.csv")
    assert curve.groupby("benchmark").coverage.last().round(12).eq(1.0).all()
    assert len(curve) == 12 + 12 + 6


def test_exact_curve_against_enumeration():
    rng = np.random.default_rng(0)
    sets = [np.unique(rng.integers(0, 30, size=rng.integers(0, 9))).astype(np.int32) for _ in range(7)]
    fp = Footprint(0, "last", 30, np.concatenate(sets), np.concatenate([[0], np.cumsum([len(s) for s in sets])]))
    assert [s.tolist() for s in fp.per_text] == [s.tolist() for s in sets] and len(fp) == 7
    union = set(np.concatenate(sets).tolist())
    brute = [np.mean([len(set().union(*(set(sets[i].tolist()) for i in combo))) for combo in
                      itertools.combinations(range(7), n)]) / len(union) for n in range(1, 8)]
    assert np.allclose(fp.coverage_curve(exact=True).coverage, brute)
    assert np.allclose(fp.coverage_curve(n_orders=4000, seed=1).coverage, brute, atol=0.02)
    assert fp.redundancy() == pytest.approx(sum(brute) / len(union))
    greedy = select_subset(fp, 1.0)
    assert greedy.n_features.iloc[-1] == len(union)
    assert greedy.new_features.iloc[0] == max(len(s) for s in sets)
