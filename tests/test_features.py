"""Feature-finding tools agree with brute force over dense activations."""

import pandas as pd
import pytest
import torch
from conftest import TEXTS

from qscope_lab.analysis.features import contrast, texts_firing, token_class_table, top_contexts
from qscope_lab.analysis.text_predicates import han_share, is_digit, is_han


def test_texts_firing_matches_dense(lab):
    acts = lab.encode(TEXTS, layer=1, skip_first=True)
    dense = acts.dense()
    assert torch.equal(texts_firing(acts), (dense > 0).any(dim=1).sum(0))


def test_contrast_ranks_by_firing_rate_difference(lab):
    pos, neg = ["猫坐在垫子上。", "我们今天去公园。"], ["The cat sat.", "We go to the park today."]
    table = contrast(lab, pos, neg, layer=2, top=5)
    assert list(table.columns) == ["feature", "name", "pos_rate", "neg_rate", "delta", "pos_mean", "neg_mean"]
    assert table.delta.is_monotonic_decreasing
    f = int(table.feature[0])
    fired_pos = sum(bool((t > 0).any()) for t in lab.encode(pos, 2, skip_first=True).feature(f))
    assert table.pos_rate[0] == fired_pos / 2


def test_token_class_precision_recall(lab):
    acts = lab.encode(TEXTS, layer=1)
    table = token_class_table(acts, is_han, min_count=1)
    row = table.iloc[0]
    tokens = [t for toks in acts.tokens for t in toks]
    han = torch.tensor([is_han(t) for t in tokens]) & acts.mask  # over counted tokens (the sink is not one)
    fires = torch.cat(acts.feature(int(row.feature))) > 0
    assert row.precision == pytest.approx((fires & han).sum().item() / fires.sum().item())
    assert row.recall == pytest.approx((fires & han).sum().item() / han.sum().item())


def test_top_contexts_mark_the_token(lab):
    acts = lab.encode(TEXTS, layer=1)
    f = int(acts.indices[1, 0])  # the strongest feature of a counted token (position 0 is the sink)
    ctx = top_contexts(acts, f, n=3, window=2)
    assert isinstance(ctx, pd.DataFrame) and 1 <= len(ctx) <= 3
    assert ctx.activation.is_monotonic_decreasing
    assert all(f"[[{tok}]]" in c for tok, c in zip(ctx.token, ctx.context))


def test_token_classes():
    assert is_han("猫") and is_han("坐在") and not is_han("cat") and not is_han("3")
    assert is_digit(" 42") and not is_digit("4a") and not is_digit(" ")
    assert han_share("猫坐。") == 1.0 and han_share("cat 猫") == 0.25 and han_share("") == 0.0
