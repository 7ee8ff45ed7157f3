"""base.budget: budgets parsed as users write them, and layer plans that never exceed them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qscope_lab.base import budget


@pytest.mark.parametrize("text, expected", [("6GB", 6 * 10**9), ("512 MiB", 512 * 2**20), ("1.5e9", 1_500_000_000),
                                            ("2gib", 2 * 2**30), (4096, 4096), ("10 KB", 10_000)])
def test_budgets_parse_as_written(text, expected):
    assert budget.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "eight GB", "6 XB", "-1GB", "0", "nan", float("inf"), True, [6], None])
def test_bad_budgets_are_refused_by_name(bad):
    with pytest.raises((TypeError, ValueError), match="memory_budget"):
        budget.parse_bytes(bad)


def test_default_is_a_share_of_what_is_free():
    free = budget.free_bytes("cpu")
    assert free > 0
    assert 0 < budget.resolve(None, "cpu") <= free


@given(n_layers=st.integers(1, 64), per_layer=st.integers(1, 10**10), fixed=st.integers(0, 10**10),
       extra=st.integers(0, 10**11))
def test_plan_covers_every_layer_once_in_order_and_each_group_fits(n_layers, per_layer, fixed, extra):
    cap = fixed + per_layer + extra
    plan = budget.plan_layers(range(n_layers), per_layer, cap, fixed)
    assert [layer for group in plan.groups for layer in group] == list(range(n_layers))
    assert all(fixed + len(group) * per_layer <= cap for group in plan.groups)
    if len(plan.groups) > 1:  # no smaller plan would do: one more layer would not fit
        assert fixed + (plan.layers_per_group + 1) * per_layer > cap


def test_a_budget_too_small_for_one_layer_is_refused_with_the_numbers():
    with pytest.raises(budget.MemoryBudgetError, match=r"needs 3\.50 GB for one layer.*memory_budget is 2\.00 GB"):
        budget.plan_layers(range(28), per_layer=3 * 10**9, budget=2 * 10**9, fixed=5 * 10**8, job="the index")
