"""Synthesis toward inactive features (REFERENCE section 2) on the embedded model: English seeds, targets that
fire on Chinese documents but on no seed, candidates from steered generation or from a user generator, each
kept only if it really fires its target (re-checked here with ``lab.encode``)."""

import argparse
import json

import altair as alt
import numpy as np
import pandas as pd
import pytest
import torch

from qscope_lab import Lab
from qscope_lab.base.textfiles import read_texts
from qscope_lab.embedded import REFERENCE_FILE
from qscope_lab.workflows import synthesis as syn

LAYER = 2
EN_SEEDS = [
    "The weather was fine, so we walked along the river until dusk.",
    "She opened the letter slowly and read it twice before saying a word.",
    "A function returns a value to the code that called it.",
    "The library was quiet except for the sound of turning pages.",
    "He promised to call his mother every Sunday evening.",
    "The children laughed as the dog chased its own tail around the garden.",
    "Never put off until tomorrow what you can do today.",
    "Our train was late, and we missed the beginning of the concert.",
    "The museum opens at nine and closes at five on weekdays.",
    "A wise man listens more than he speaks.",
    "It rained all night, and the roads were covered in mud.",
    "We painted the kitchen a pale shade of green.",
]


def _reference(lang: str) -> list[str]:
    with open(REFERENCE_FILE, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [r["text"] for r in rows if r["lang"] == lang]


def _max_by_encode(lab, texts, feature, layer=LAYER) -> np.ndarray:
    """Independent check: the feature's largest activation over each text's counted tokens, via lab.encode."""
    acts = lab.encode(texts, layer, skip_first=True)
    return np.array([float(v.max()) if len(v) else 0.0 for v in acts.feature(feature)])


@pytest.fixture(scope="module")
def emb():
    """The embedded model. One torch thread while this module runs: its 128-wide matmuls gain nothing from a
    second thread, and on a busy CPU two OpenMP threads ran them about 12x slower (measured 24 ms vs 1.9 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Lab.load()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zh_docs() -> list[str]:
    return _reference("zh")


@pytest.fixture(scope="module")
def targets(emb, zh_docs) -> list[int]:
    """Features that fire on Chinese documents and on none of the English seeds."""
    return syn.targets_from_contrast(emb, zh_docs[:20], EN_SEEDS, LAYER, n=5, max_neg_rate=0)


@pytest.fixture(scope="module")
def steered(emb, targets):
    return syn.synthesize(emb, EN_SEEDS, targets, LAYER, per_target=4, alphas=(4, 8, 16), max_new_tokens=16)


def test_targets_from_contrast_are_uncovered(emb, targets):
    assert len(targets) == 5
    cov = syn.coverage(emb, EN_SEEDS, targets, LAYER)
    assert not cov.covered.any() and (cov.n_texts == 0).all()
    assert syn.coverage_ratio(cov) == 0.0


def test_steered_synthesis_raises_coverage(emb, targets, steered):
    report = steered.report.iloc[0]
    assert report.n_targets == len(targets) and report.ratio_before == 0.0
    assert report.ratio_after > report.ratio_before
    assert report.ratio_after >= 0.6  # measured 1.0 (5 of 5)
    kept = steered.kept
    assert len(kept) >= 3 and set(kept.target) <= set(targets)
    assert (kept.activation > 0).all() and (kept.source == "steer").all()
    assert set(kept.alpha) <= {4.0, 8.0, 16.0}
    # every kept candidate fires its target when encoded on its own, unsteered
    for target, group in kept.groupby("target"):
        again = _max_by_encode(emb, group.text.tolist(), target)
        assert (again > 0).all()
        np.testing.assert_allclose(again, group.activation.to_numpy(), rtol=1e-3, atol=1e-4)
    # rejected candidates are counted, per uncovered target
    assert steered.rejected.sum() == len(steered.candidates) - (steered.candidates.activation > 0).sum()
    assert steered.rejected.sum() > 0 and report.n_rejected == steered.rejected.sum()
    assert list(steered.rejected.index) == targets
    rejected = steered.candidates[steered.candidates.activation <= 0]
    first = int(rejected.target.iloc[0])
    assert (_max_by_encode(emb, rejected.text[rejected.target == first].tolist(), first) == 0).all()


def test_kept_candidates_pass_the_fluency_check(emb, targets, steered):
    """Every kept candidate is fluent (distinct bigrams, perplexity within 2x the seeds' 90th percentile); the
    report counts the firing candidates dropped for fluency, and a looping text fails the check."""
    from qscope_lab.analysis.fluency import distinct_n, fluency, perplexity_limit

    cand, report = steered.candidates, steered.report.iloc[0]
    print(report.to_dict())
    assert cand.loc[cand.kept, "fluent"].all() and (steered.kept.distinct >= 0.5).all()
    assert report.n_dropped_fluency == int(((cand.activation > 0) & ~cand.fluent).sum())
    assert report.n_kept + report.n_dropped_fluency + report.n_rejected >= len(cand.drop_duplicates(["target", "text"]))
    limit = perplexity_limit(emb, EN_SEEDS)
    loop = "the the the the the the the the the the the the the the the the"
    table = fluency(emb, [EN_SEEDS[0], loop, "zq xv 9#k @@ ~~ qj"], limit)
    assert list(table.fluent) == [True, False, False] and distinct_n([1, 1, 1, 1]) == pytest.approx(1 / 3)
    assert table.perplexity.iloc[2] > limit


def test_dataset_coverage_matches_report(emb, targets, steered):
    data = steered.dataset()
    assert data[:len(EN_SEEDS)] == EN_SEEDS and set(steered.kept.text) <= set(data)
    assert syn.coverage_ratio(emb, data, targets, LAYER) == pytest.approx(steered.report.ratio_after.iloc[0])
    assert steered.dataset(EN_SEEDS[:2])[:2] == EN_SEEDS[:2]
    chart = steered.chart()
    assert isinstance(chart, alt.Chart) and chart.to_dict()["mark"]["type"] == "bar"
    assert "coverage" in repr(steered)


def test_user_generator_only_firing_kept(emb, targets, zh_docs):
    calls = []
    english = _reference("en")

    def generator(feature, n):  # e.g. an external LLM; here retrieval from held-out documents
        calls.append((feature, n))
        start = 20 + 2 * len(calls)
        return zh_docs[start:start + n - 1] + [english[len(calls)]]

    result = syn.synthesize(emb, EN_SEEDS, targets, LAYER, generator=generator, per_target=3)
    assert calls == [(f, 3) for f in targets]
    assert len(result.candidates) == 3 * len(targets)
    kept = result.kept
    assert (kept.source == "generator").all() and kept.alpha.isna().all()
    assert (kept.activation > 0).all()
    for target, group in kept.groupby("target"):
        assert (_max_by_encode(emb, group.text.tolist(), target) > 0).all()
    assert result.rejected.sum() == len(result.candidates) - len(kept) > 0
    assert result.report.ratio_after.iloc[0] > 0.0


def test_nothing_to_do_when_targets_are_covered(emb):
    acts = emb.encode(EN_SEEDS, LAYER, skip_first=True)
    fired = acts.top_features(3).feature.tolist()

    def never(feature, n):
        raise AssertionError("no target is uncovered: the generator must not be called")

    result = syn.synthesize(emb, EN_SEEDS, fired, LAYER, generator=never)
    assert result.report.ratio_before.iloc[0] == 1.0 == result.report.ratio_after.iloc[0]
    assert result.kept.empty and result.rejected.sum() == 0 and result.dataset() == EN_SEEDS


def test_coverage_agrees_with_encode(emb, zh_docs):
    texts = EN_SEEDS[:6] + zh_docs[:6] + ["x = [i * i for i in range(10)]"]
    acts = emb.encode(texts, LAYER, skip_first=True)
    targets = acts.top_features(6).feature.tolist() + syn.targets_from_contrast(emb, zh_docs[30:36], texts,
                                                                                LAYER, n=2, max_neg_rate=0)
    cov = syn.coverage(emb, texts, targets, LAYER, batch_size=4)
    assert list(cov.feature) == targets
    per_text = [[float(v.max()) for v in acts.feature(f)] for f in targets]
    expected_n = [sum(v > 0 for v in row) for row in per_text]
    assert cov.n_texts.tolist() == expected_n
    assert cov.covered.tolist() == [n > 0 for n in expected_n]
    np.testing.assert_allclose(cov.max_activation, [max(row) for row in per_text], rtol=1e-3, atol=1e-4)
    assert 0 < syn.coverage_ratio(cov) < 1
    direct = syn.max_activations(emb, texts, targets[:2], LAYER)
    np.testing.assert_allclose(direct, np.array(per_text[:2]).T, rtol=1e-3, atol=1e-4)


def test_errors(emb):
    with pytest.raises(ValueError, match="no seeds"):
        syn.synthesize(emb, [], [1], LAYER)
    with pytest.raises(ValueError, match="layer"):
        syn.synthesize(emb, EN_SEEDS, [1], 99)
    with pytest.raises(ValueError, match="layer"):
        syn.coverage(emb, EN_SEEDS, [1], -1)
    with pytest.raises(ValueError, match="no target"):
        syn.synthesize(emb, EN_SEEDS, [], LAYER)
    with pytest.raises(IndexError, match="target feature 5000 is out of range"):
        syn.coverage(emb, EN_SEEDS, [5000], LAYER)
    with pytest.raises(TypeError, match="target feature must be an int"):
        syn.coverage(emb, EN_SEEDS, [3.9], LAYER)
    with pytest.raises(ValueError, match="not str"):
        syn.synthesize(emb, EN_SEEDS, [1665], LAYER, generator=lambda f, n: [f"text {f}", 42])
    with pytest.raises(ValueError, match="list of str"):
        syn.synthesize(emb, EN_SEEDS, [1665], LAYER, generator=lambda f, n: "one string")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        syn.coverage(emb, ["fine", None], [1], LAYER)


def test_read_texts_and_targets(tmp_path, emb):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n{"text": "y", "lang": "en"}\n', encoding="utf-8")
    pd.DataFrame({"text": ["p", "q"], "label": [0, 1]}).to_csv(tmp_path / "c.csv", index=False)
    assert read_texts(tmp_path / "a.txt") == ["one", "two"]
    assert read_texts(tmp_path / "b.jsonl") == ["x", "y"]
    assert read_texts(tmp_path / "c.csv") == ["p", "q"]
    assert syn.as_targets(emb, "12, 45,12", LAYER) == [12, 45]
    assert syn.as_targets(emb, pd.DataFrame({"feature": [3, 4]}), LAYER) == [3, 4]


def test_cli_synthesize(tmp_path, monkeypatch, emb, zh_docs, capsys):
    from qscope_lab.cli import synthesize as synthesize_command

    monkeypatch.setattr(synthesize_command, "lab_from_args", lambda args: emb)  # embedded model, loaded once
    (tmp_path / "seeds.txt").write_text("\n".join(EN_SEEDS), encoding="utf-8")
    goal = tmp_path / "goal.jsonl"
    goal.write_text("".join(json.dumps({"text": t}) + "\n" for t in zh_docs[:8]), encoding="utf-8")
    parser = argparse.ArgumentParser(prog="qscope-lab")
    synthesize_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synthesize", "--layer", "2", "--seeds", str(tmp_path / "seeds.txt"),
                              "--targets-from", str(goal), "--n-targets", "1", "--per-target", "2",
                              "--alphas", "16", "--max-new-tokens", "8", "--out", str(tmp_path / "run")])
    args.func(args)
    report = pd.read_csv(tmp_path / "run_report.csv")
    kept = pd.read_csv(tmp_path / "run_kept.csv")
    assert report.n_targets.iloc[0] == 1 and report.n_kept.iloc[0] == len(kept)
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["synthesize", "--layer", "2", "--seeds", "s.txt"])  # no targets given
