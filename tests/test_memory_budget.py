"""One memory budget (issue 24): jobs plan layer groups within it, read each SAE once, give the same numbers under a
tiny budget as under an unlimited one, and refuse a budget too small for one layer before any work."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import SAE, Lab
from qscope_lab.base import budget
from qscope_lab.base.budget import MemoryBudgetError
from qscope_lab.workflows.classify import SeedClassifier, stats
from qscope_lab.workflows.coverage import footprint, footprint_plan

EN = ["The cat sat on the mat.", "We walked to the river in the morning.", "She reads a book every night.",
      "The train leaves at seven o'clock.", "He fixed the old bicycle himself.", "Rain fell all afternoon."]
ZH = ["猫坐在垫子上。", "我们早上去河边散步。", "她每天晚上读书。", "火车七点出发。", "他自己修好了旧自行车。",
      "下午一直在下雨。"]
TEXTS, LABELS = EN + ZH, [False] * len(EN) + [True] * len(ZH)


@pytest.fixture(scope="module")
def lab():
    """The embedded default with an SAE cache of one byte: any second read of a layer would show as a load."""
    return Lab.load(cache_bytes=1)


class Forwards:
    """Counts the Lab's forwards (scans) and the layers each one asked for."""

    def __init__(self, lab):
        self.lab, self.calls = lab, []
        self.inner = lab.residuals

    def __enter__(self):
        def counted(enc, layers, *args, **kwargs):
            self.calls.append(sorted(layers))
            return self.inner(enc, layers, *args, **kwargs)
        self.lab.residuals = counted
        return self

    def __exit__(self, *exc):
        del self.lab.residuals  # the instance attribute goes; the method shows again


def one_layer_budget(plan) -> int:
    """A budget that holds exactly one layer of ``plan`` (two would not fit)."""
    return plan.fixed + plan.per_layer + plan.per_layer // 2


def test_classifier_under_a_tiny_budget_equals_unlimited_and_reads_each_sae_once(lab):
    layers = lab.saes.layers
    clf = SeedClassifier(lab, max_length=64, progress=False)
    lab.saes.reset_counts()
    with Forwards(lab) as whole:
        big = clf.fit(TEXTS, LABELS, memory_budget="100GB")
    assert lab.saes.load_counts == {layer: 1 for layer in layers}
    assert len({tuple(c) for c in whole.calls}) == 1  # one group: every batch asks for all layers
    plan, _ = stats.collect_plan(lab, len(TEXTS), layers, max_length=64)
    tiny_budget = one_layer_budget(plan)
    assert len(budget.plan_layers(layers, plan.per_layer, tiny_budget, plan.fixed).groups) == len(layers)
    small = SeedClassifier(lab, max_length=64, progress=False)
    lab.saes.reset_counts()
    with Forwards(lab) as grouped:
        small.fit(TEXTS, LABELS, memory_budget=tiny_budget)
    assert lab.saes.load_counts == {layer: 1 for layer in layers}  # each SAE read once for the whole fit
    assert sorted({tuple(c) for c in grouped.calls}) == [(layer,) for layer in layers]  # one scan per layer
    assert small.features_ == big.features_
    assert small.thresholds_ == big.thresholds_ and small.scales_ == big.scales_
    pd.testing.assert_frame_equal(small.selection_, big.selection_, check_exact=True)
    pd.testing.assert_frame_equal(small.deltas_, big.deltas_, check_exact=True)
    assert small.predict(TEXTS).tolist() == big.predict(TEXTS).tolist()


def test_footprint_under_a_tiny_budget_equals_unlimited(lab):
    layers = lab.saes.layers
    big = footprint(lab, TEXTS, layers, position="all", max_length=64, memory_budget="100GB")
    plan, _ = footprint_plan(lab, len(TEXTS), layers, "all", 64)
    lab.saes.reset_counts()
    with Forwards(lab) as grouped:
        small = footprint(lab, TEXTS, layers, position="all", max_length=64, memory_budget=one_layer_budget(plan))
    assert lab.saes.load_counts == {layer: 1 for layer in layers}
    assert sorted({tuple(c) for c in grouped.calls}) == [(layer,) for layer in layers]
    for layer in layers:
        assert (small[layer].indices == big[layer].indices).all() and (small[layer].offsets == big[layer].offsets).all()
        assert small[layer].n_features > 0


@pytest.mark.parametrize("method", ["grad_x_act", "integrated_gradients", "ablation"])
def test_attribute_at_three_layers_reads_each_sae_once(lab, method):
    lab.saes.reset_counts()
    result = lab.attribute(["The cat sat on the", "We walked to the"], layers=[0, 1, 2], method=method, steps=4)
    assert lab.saes.load_counts == {0: 1, 1: 1, 2: 1}  # the cache holds nothing: these are the only reads
    assert set(result.to_frame().layer) == {0, 1, 2}


def test_the_spliced_graph_keeps_no_decoder(lab):
    """What a differentiable spliced forward leaves for the backward (held for every layer at once until then):
    indices, activations and the model's own tensors, never a (d_sae, d_model) decoder or a copy of one."""
    from qscope_lab.methods import splice

    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    enc = lab.pad(lab.token_ids(["The cat sat on the"]))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, sites = splice.run(lab, enc, [1, 2])
    sae = lab.sae(1)
    assert saved and logits.requires_grad and sites[1].spliced()[0].requires_grad
    assert (sae.d_sae, sae.d_model) not in saved and (sae.d_model, sae.d_sae) not in saved
    grads = torch.autograd.grad(logits[0, -1].max(), [sites[1].spliced()[0]])
    assert grads[0].shape == sites[1].values.shape and grads[0].abs().sum() > 0


def test_too_small_a_budget_is_refused_before_any_work_with_the_numbers(lab):
    one = lab.saes.layer_nbytes(0)
    assert one == 4 * (2 * lab.d_model * 2048 + lab.d_model + 2048)  # from the files' headers, nothing loaded
    for job in (lambda: SeedClassifier(lab, progress=False).fit(TEXTS, LABELS, memory_budget="1MB"),
                lambda: footprint(lab, TEXTS, [0, 1], memory_budget="1MB"),
                lambda: lab.attribute("The cat sat on the", layers=[0, 1], memory_budget="1MB")):
        lab.saes.reset_counts()
        refused = r"needs \d+\.\d+ MB for one layer.*memory_budget is 1\.0 MB"
        with Forwards(lab) as forwards, pytest.raises(MemoryBudgetError, match=refused):
            job()
        assert forwards.calls == [] and lab.saes.loads == 0  # refused before reading or running anything


def test_attribution_needs_all_its_layers_at_once(lab):
    """Attribution splices every layer into one forward: a budget holding one layer but not three is refused."""
    one = lab.saes.layer_nbytes(0)
    with pytest.raises(MemoryBudgetError, match=r"splices all 3 layers \[0, 1, 2\] into one forward"):
        lab.attribute("The cat sat on the", layers=[0, 1, 2], memory_budget=int(1.6 * one))
    assert set(lab.attribute("The cat sat on the", layers=[0, 1, 2], memory_budget=int(3.2 * one)).layers) == {0, 1, 2}


def test_the_sae_cache_follows_the_budget():
    small = Lab.load(memory_budget="3MB")
    assert small.memory_budget == 3_000_000 and small.saes.cache_bytes == 3_000_000
    small.saes.reset_counts()
    for layer in (0, 1, 0):
        small.sae(layer)
    assert small.saes.loads == 3 and small.saes.cached_layers == [0]  # one 2.1 MB layer fits, two do not
    small.memory_budget = "1GB"  # settable; the cache follows
    assert small.saes.cache_bytes == 10**9
    pinned = Lab.load(memory_budget="3MB", cache_bytes="1GB")  # an explicit cache size wins
    assert pinned.saes.cache_bytes == 10**9


def test_chunked_encode_matches_unchunked():
    sae = SAE.random(64, 4096, 16, seed=3)
    x = torch.randn(3, 333, 64, generator=torch.Generator().manual_seed(0))
    whole_v, whole_i = sae.encode_sparse(x, chunk_rows=10**6)
    for rows in (1, 7, 128, 998):
        v, i = sae.encode_sparse(x, chunk_rows=rows)
        assert v.shape == whole_v.shape == (3, 333, 16)
        assert torch.equal(i, whole_i)  # the same features, in the same order
        # BLAS may block a matrix product of n rows differently from one of m: float rounding, nothing more
        assert torch.allclose(v, whole_v, rtol=0, atol=1e-5)
        first = sae.encode_sparse(x.reshape(-1, 64)[:rows], chunk_rows=10**6)  # a chunk is exactly its rows alone
        assert torch.equal(v.reshape(-1, 16)[:rows], first[0]) and torch.equal(i.reshape(-1, 16)[:rows], first[1])
    assert sae.encode_rows == budget.ENCODE_CHUNK_BYTES // (4 * 4096)  # fixed by the width, never by a budget
    empty = sae.encode_sparse(torch.zeros(0, 64))
    assert empty[0].shape == (0, 16) and empty[1].shape == (0, 16)


VALID = st.one_of(
    st.integers(1, 10**13),
    st.tuples(st.integers(1, 4096), st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "kb", "gib"]),
              st.sampled_from(["", " "])).map(lambda t: f"{t[0]}{t[2]}{t[1]}"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALID)
def test_valid_budgets_are_kept_as_bytes(lab, value):
    lab.memory_budget = value
    assert lab.memory_budget == budget.parse_bytes(value) > 0
    if isinstance(value, str):
        number, unit = int("".join(c for c in value if c.isdigit())), value.strip("0123456789 ").upper()
        assert lab.memory_budget == number * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10,
                                              "MIB": 2**20, "GIB": 2**30}[unit]


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.text(max_size=12).filter(lambda s: not budget._PATTERN.match(s)
                                                   or budget._PATTERN.match(s).group(2).upper() not in budget._UNITS),
                       st.integers(max_value=0), st.floats().filter(lambda f: not f >= 1), st.booleans(),
                       st.lists(st.integers(), max_size=2)))
def test_bad_budgets_are_refused_by_lab_load_before_the_model_loads(value):
    with pytest.raises((TypeError, ValueError), match="memory_budget"):
        Lab.load(memory_budget=value)
