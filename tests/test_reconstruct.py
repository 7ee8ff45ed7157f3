"""Reconstruction report: FVU, cosine and CE with the SAE spliced in, checked on SAEs whose answer is known."""

import pytest
import torch
from conftest import TEXTS

from qscope_lab import SAE, Lab
from qscope_lab.testing.tiny import tiny_model


def exact_sae(d_model: int) -> SAE:
    """relu(x) and relu(-x) as 2*d features: with k = d_model it reconstructs every x exactly."""
    eye = torch.eye(d_model)
    return SAE(torch.cat([eye, -eye]), torch.zeros(2 * d_model), torch.cat([eye, -eye], 1), torch.zeros(d_model),
               k=d_model)


def test_exact_sae_has_zero_fvu_and_no_ce_cost(tokenizer):
    lab = Lab.load(tiny_model(), tokenizer=tokenizer, saes={1: exact_sae(64)})
    report = lab.reconstruct(TEXTS, layer=1)
    row = report.iloc[0]
    assert row.fvu < 1e-10 and row.cosine == pytest.approx(1.0, abs=1e-6)
    assert abs(row.ce_delta) < 1e-4 and row.ce_spliced == pytest.approx(row.ce_clean, abs=1e-4)


def test_report_per_layer_and_the_measured_error_term_restores_clean_loss(lab):
    report = lab.reconstruct(TEXTS, layer=[1, 2], batch_size=3)
    assert list(report.layer) == [1, 2]
    assert (report.fvu > 0.05).all() and (report.l0 <= 8).all()
    assert (report.ce_with_error - report.ce_clean).abs().max() < 1e-4  # the measured error-term forward
    assert report.tokens.iloc[0] == sum(len(lab.tokenizer(t)["input_ids"]) - 1 for t in TEXTS)  # sink skipped


def test_fvu_is_batch_size_independent(lab):
    a = lab.reconstruct(TEXTS, layer=2, batch_size=1).iloc[0]
    b = lab.reconstruct(TEXTS, layer=2, batch_size=4).iloc[0]
    assert a.fvu == pytest.approx(b.fvu, rel=1e-4)
    assert a.ce_spliced == pytest.approx(b.ce_spliced, rel=1e-4)


def test_ce_with_error_is_measured_so_a_broken_splice_fails(lab, monkeypatch):
    """The error-term copy runs through ``splice.encode_site``: an error term off by a tenth shows in the loss."""
    from qscope_lab.methods import splice

    right = splice.encode_site

    def broken(sae, h):
        site = right(sae, h)
        site.error = site.error * 0.9
        return site

    monkeypatch.setattr("qscope_lab.methods.reconstruction.encode_site", broken)
    report = lab.reconstruct(TEXTS, layer=2, batch_size=3)
    assert (report.ce_with_error - report.ce_clean).abs().max() > 1e-3
