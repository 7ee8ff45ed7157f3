"""Feature index under a memory budget: the layer plan follows the budget, a build by layer groups equals a build in
one pass file for file (build, add, a pass killed and resumed), each SAE is read once, and a budget too small for
one layer is refused, with the numbers, before anything is read or written."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab import FeatureIndex, Lab
from qscope_lab.base.budget import MemoryBudgetError
from qscope_lab.embedded import reference_documents
from qscope_lab.index import build as index_build
from qscope_lab.index import shard as index_shard
from qscope_lab.index.build import build_params, plan

LAYERS = [1, 2, 3]
OPTIONS = {"n_top": 5, "context_length": 96, "batch_size": 8, "window": 4, "shard_documents": 8}
UNLIMITED = 10**15


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab.load(index=False)


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = reference_documents()
    picked = [r for lang in ("en", "zh", "code") for r in [x for x in rows if x["lang"] == lang][:8]]
    return [{"text": r["text"][:80], "source": r["source"]} for r in picked]


@pytest.fixture(scope="module")
def layer_plan(lab):
    return plan(lab, LAYERS, build_params(OPTIONS), UNLIMITED)


def budget_for(layer_plan, n_layers: int) -> int:
    """The budget that fits exactly ``n_layers`` layers per group."""
    return layer_plan.fixed + n_layers * layer_plan.per_layer


def state_files(index: FeatureIndex) -> dict:
    """Every file of the index's state as bytes; partial.json as its fields but the generation (a build in one
    pass checkpoints once per ``checkpoint_every`` shards, one by groups once) and the checksum over it."""
    root = index.path / "state"
    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    meta = json.loads(out.pop("partial.json"))
    out["partial.json"] = {k: v for k, v in meta.items() if k not in ("generation", "checksum")}
    return out


def counted_build(lab, docs, path, budget, **extra) -> tuple[FeatureIndex, int]:
    lab.saes.clear()
    before = lab.saes.loads
    index = FeatureIndex.build(lab, docs, LAYERS, path, memory_budget=budget, checkpoint_every=1,
                               **{**OPTIONS, **extra})
    return index, lab.saes.loads - before


@pytest.fixture(scope="module")
def whole(lab, docs, tmp_path_factory):
    return counted_build(lab, docs, tmp_path_factory.mktemp("whole") / "index", UNLIMITED)


def test_plan_follows_the_budget(lab, layer_plan):
    assert layer_plan.groups == [LAYERS]
    for n, groups in ((1, [[1], [2], [3]]), (2, [[1, 2], [3]]), (3, [LAYERS])):
        assert plan(lab, LAYERS, build_params(OPTIONS), budget_for(layer_plan, n)).groups == groups
    # per layer: the SAE and the bound on the state, which grows with what is kept per feature
    notes = layer_plan.notes
    assert notes["sae"] == lab.sae(1).nbytes
    assert layer_plan.per_layer == notes["sae"] + notes["state"]["total"] + notes["residual"]
    bigger = plan(lab, LAYERS, build_params({**OPTIONS, "n_top": 50}), UNLIMITED)
    assert bigger.per_layer > layer_plan.per_layer
    assert plan(lab, LAYERS, build_params(OPTIONS), "6GB").budget == 6 * 10**9


@settings(max_examples=30, deadline=None)
@given(n_layers=st.integers(1, 12), share=st.floats(1.0, 13.0))
def test_plan_groups_are_consecutive_maximal_and_fit(lab, layer_plan, n_layers, share):
    layers = list(range(n_layers))
    budget = int(layer_plan.fixed + share * layer_plan.per_layer)
    groups = plan(lab, layers, build_params(OPTIONS), budget).groups
    assert [x for g in groups for x in g] == layers
    size = len(groups[0])
    assert all(len(g) == size for g in groups[:-1]) and 0 < len(groups[-1]) <= size
    assert layer_plan.fixed + size * layer_plan.per_layer <= budget
    assert size == n_layers or layer_plan.fixed + (size + 1) * layer_plan.per_layer > budget


def test_tiny_budget_builds_the_same_index_reading_each_sae_once(lab, docs, whole, layer_plan, tmp_path):
    unlimited, loads = whole
    assert loads == len(LAYERS)
    for n in (1, 2):
        index, loads = counted_build(lab, docs, tmp_path / f"groups{n}", budget_for(layer_plan, n))
        assert loads == len(LAYERS)  # each SAE file read once, whatever the number of passes
        assert state_files(index) == state_files(unlimited)
        assert not (index.path / "work").exists() and not (index.path / "shards").exists()
        assert index.manifest["sae_fingerprints"] == unlimited.manifest["sae_fingerprints"]
        assert index.manifest["corpus"] == unlimited.manifest["corpus"]
        assert index.top_contexts(2, 7).equals(unlimited.top_contexts(2, 7))


def test_add_by_groups_equals_one_build(lab, docs, whole, layer_plan, tmp_path):
    """24 documents in shards of 8: a build of 16 then an add of 8 folds the shards in the same order."""
    index, _ = counted_build(lab, docs[:16], tmp_path / "added", budget_for(layer_plan, 1))
    lab.saes.clear()
    before = lab.saes.loads
    index.add(lab, docs[16:], memory_budget=budget_for(layer_plan, 1), checkpoint_every=1)
    assert lab.saes.loads - before == len(LAYERS)
    assert state_files(index) == state_files(whole[0])
    assert index.manifest["adds"] == [{"first_shard": 2, "first_document": 16, "documents": 8, "shards": 1}]


def test_pass_killed_in_a_later_group_resumes_to_the_same_index(lab, docs, whole, layer_plan, tmp_path,
                                                                monkeypatch):
    real, calls = index_shard.compute_shard, []

    def dies_in_the_second_group(lab_, shard, docs_, layers, params, **kw):
        calls.append((layers[0], shard))
        if layers == [2] and shard == 1:
            raise KeyboardInterrupt("killed")
        return real(lab_, shard, docs_, layers, params, **kw)

    monkeypatch.setattr(index_build, "compute_shard", dies_in_the_second_group)
    path = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        counted_build(lab, docs, path, budget_for(layer_plan, 1))
    assert (path / "work" / "group0" / "done").is_file() and not (path / "state").exists()
    calls.clear()
    monkeypatch.setattr(index_build, "compute_shard", real)
    index, _ = counted_build(lab, docs, path, budget_for(layer_plan, 1))
    assert state_files(index) == state_files(whole[0])


def test_budget_too_small_for_one_layer_is_refused_before_any_work(lab, docs, layer_plan, tmp_path):
    lab.saes.clear()
    before = lab.saes.loads
    short = budget_for(layer_plan, 1) - 1
    with pytest.raises(MemoryBudgetError, match=r"needs .* for one layer .* memory_budget is .*raise memory_budget"):
        FeatureIndex.build(lab, docs, LAYERS, tmp_path / "never", memory_budget=short, **OPTIONS)
    with pytest.raises(MemoryBudgetError, match="0.00 GB|1.0 MB|MB"):
        FeatureIndex.build(lab, docs, LAYERS, tmp_path / "never", memory_budget="1MB", **OPTIONS)
    assert not (tmp_path / "never").exists() and lab.saes.loads == before
    with pytest.raises(ValueError, match="memory_budget"):
        FeatureIndex.build(lab, docs, LAYERS, tmp_path / "never", memory_budget="lots", **OPTIONS)


def test_add_refuses_a_budget_too_small_before_any_work(lab, whole, docs, layer_plan):
    index = whole[0]
    generation = index.generation
    with pytest.raises(MemoryBudgetError, match="FeatureIndex.add needs"):
        index.add(lab, [{"text": "more words here"}], memory_budget=budget_for(layer_plan, 1) // 2)
    assert index.generation == generation and index.manifest["pending"] is None
