"""The exercise checks of the teaching notebook accept right answers and name the classic mistakes."""

from __future__ import annotations

import pytest
import torch

from qscope_lab import Lab, teaching
from qscope_lab.analysis.features import token_class_table
from qscope_lab.analysis.text_predicates import is_digit
from qscope_lab.training.sae_training import collect_activations


@pytest.fixture(scope="module")
def lab():
    return Lab.load()


@pytest.fixture(scope="module")
def residuals(lab):
    texts = ["The 3 cats sat on the mat in 1999.", "今天的天气很好，我们去公园散步。",
             "def add(a, b):\n    return a + b"]
    return collect_activations(lab, texts, [2], max_tokens=500)[2]


def by_hand(x, sae):
    pre = x @ sae.W_enc.T + sae.b_enc
    top = torch.topk(pre.relu(), sae.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def test_encode_check_passes_the_convention_and_names_each_mistake(lab, residuals):
    sae = lab.sae(2)
    assert teaching.check_encode(by_hand, sae, residuals)
    cases = {
        "not answered": teaching.check_encode(None, sae, residuals),
        "ReLU": teaching.check_encode(lambda x, s: torch.zeros_like(by_hand(x, s)).scatter(
            -1, torch.topk(x @ s.W_enc.T + s.b_enc, s.k).indices, -1.0), sae, residuals),
        "top k": teaching.check_encode(lambda x, s: (x @ s.W_enc.T + s.b_enc).relu(), sae, residuals),
        "b_dec": teaching.check_encode(lambda x, s: by_hand(x - s.b_dec, s), sae, residuals),
        "d_sae": teaching.check_encode(lambda x, s: torch.topk(x @ s.W_enc.T, s.k).values, sae, residuals),
        "raised ZeroDivisionError": teaching.check_encode(lambda x, s: 1 / 0, sae, residuals),
    }
    for hint, check in cases.items():
        assert not check and hint in repr(check), (hint, check)
    assert teaching.check_encode(None, sae, residuals).status == teaching.UNANSWERED


def test_fve_check_knows_the_uncentred_variance_mistake(lab, residuals):
    sae = lab.sae(2)
    right = teaching.check_fve(lambda x, xh: 1 - (x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum(), sae, residuals)
    assert right and 0.8 < float(repr(right).split("passed. ")[1].split(",")[0]) < 1
    wrong = teaching.check_fve(lambda x, xh: 1 - (x - xh).pow(2).sum() / x.pow(2).sum(), sae, residuals)
    assert not wrong and "mean" in repr(wrong)
    per_token = teaching.check_fve(lambda x, xh: 1 - (x - xh).pow(2).sum(-1) / x.pow(2).sum(-1), sae, residuals)
    assert not per_token and "one number" in repr(per_token)


def test_feature_check_uses_precision_on_the_texts(lab):
    texts = ["In 1999 there were 42 cats and 7 dogs.", "Call 555 0199 before 10 pm.", "x = 12 + 30 * 4",
             "The total was 3141 in the year 2024.", "他在2008年买了3本书。", "We walked in the park today."]
    acts = lab.encode(texts, layer=1, skip_first=True)
    table = token_class_table(acts, is_digit, min_count=5)
    digit = int(table[table.precision >= 0.8].feature.iloc[0])
    check = teaching.check_feature(acts, digit, is_digit, "digit", min_fires=5)
    row = table[table.feature == digit].iloc[0]
    assert check and f"precision {row.precision:.2f}, recall {row.recall:.2f}" in repr(check)
    worst = table.sort_values("precision").feature.iloc[0]
    assert "precision" in repr(teaching.check_feature(acts, int(worst), is_digit, "digit", min_fires=5))
    assert "out of range" in repr(teaching.check_feature(acts, 10**6, is_digit, "digit"))
    assert teaching.check_feature(acts, None, is_digit, "digit").status == teaching.UNANSWERED


def test_steer_check_wants_the_raw_decoder_column(lab):
    sae = lab.sae(2)
    assert teaching.check_steer(lambda h, s, f, a: h + a * s.W_dec[:, f], sae)
    encoder = teaching.check_steer(lambda h, s, f, a: h + a * s.W_enc[f], sae)
    assert not encoder and "decoder column" in repr(encoder)
    last_only = teaching.check_steer(lambda h, s, f, a: torch.cat([h[:, :-1], h[:, -1:] + a * s.W_dec[:, f]], 1), sae)
    assert not last_only and "differs" in repr(last_only)
