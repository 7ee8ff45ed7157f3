"""The SAE math follows the Qwen-Scope convention exactly (REFERENCE section 1)."""

import pytest
import torch

from qscope_lab import SAE


def reference_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """The convention written out: raw residual, no b_dec centring, topk of relu, scattered into zeros."""
    pre = x @ sae.W_enc.T + sae.b_enc
    vals, idx = torch.relu(pre).topk(sae.k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, vals)


def test_encode_matches_the_convention():
    sae = SAE.random(32, 128, 6, seed=3)
    x = torch.randn(5, 7, 32) * 3
    dense = sae.encode(x)
    assert dense.shape == (5, 7, 128)
    assert torch.allclose(dense, reference_encode(sae, x), atol=1e-6)
    assert ((dense > 0).sum(-1) <= 6).all() and ((dense > 0).sum(-1) == 6).float().mean() > 0.9


def test_no_b_dec_centring():
    sae = SAE.random(16, 64, 4, seed=1)
    sae.b_dec.data += 5.0  # a large decoder bias must not shift the encoder input
    x = torch.randn(3, 16)
    assert torch.allclose(sae.encode(x), reference_encode(sae, x), atol=1e-6)


def test_sparse_decode_equals_dense_decode():
    sae = SAE.random(32, 128, 6, seed=4)
    x = torch.randn(9, 32)
    values, indices = sae.encode_sparse(x)
    dense = sae.encode(x)
    assert torch.allclose(sae.decode_sparse(values, indices), sae.decode(dense), atol=1e-5)
    assert torch.allclose(sae.decode(dense), dense @ sae.W_dec.T + sae.b_dec, atol=1e-5)


def test_fewer_than_k_positive_gives_fewer_nonzeros():
    sae = SAE.random(8, 32, 10, seed=0)
    sae.b_enc.data[:] = -100.0
    sae.b_enc.data[:3] = 100.0
    acts = sae.encode(torch.randn(4, 8))
    assert ((acts > 0).sum(-1) == 3).all()
    assert (acts >= 0).all()


def test_bfloat16_residuals_are_encoded_in_float32():
    sae = SAE.random(16, 64, 4, seed=2)
    x = torch.randn(3, 16).to(torch.bfloat16)
    out = sae.encode(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference_encode(sae, x.float()), atol=1e-6)


def test_clear_errors():
    sae = SAE.random(16, 64, 4)
    with pytest.raises(ValueError, match="d_model=16"):
        sae.encode(torch.randn(2, 17))
    with pytest.raises(IndexError, match="64 features"):
        sae.direction(64)
    with pytest.raises(ValueError, match=r"\(16, 64\)"):
        SAE(sae.W_enc, sae.b_enc, sae.W_dec.T, sae.b_dec, k=4)  # transposed decoder
    with pytest.raises(ValueError, match="k must be"):
        SAE(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k=0)


def test_decoder_norms_are_measured():
    sae = SAE.random(16, 64, 4)
    assert sae.decoder_norms[5] == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():
        sae.W_dec[:, 5] *= 3
    norms = sae.decoder_norms
    assert norms.shape == (64,)
    assert norms[5] == pytest.approx(3.0, rel=1e-5) and norms[0] == pytest.approx(1.0, rel=1e-5)


def test_sparse_decode_paths_agree_and_follow_weight_edits():
    sae = SAE.random(32, 128, 6, seed=5)
    x = torch.randn(10, 32)
    values, indices = sae.encode_sparse(x)
    before = sae.W_dec.detach().clone()
    fast = sae.decode_sparse(values, indices)  # W_dec re-laid column-major once + embedding_bag on its view
    assert torch.equal(sae.W_dec, before) and sae.W_dec.t().is_contiguous()  # same values, one layout
    assert sae.decoder_rows().data_ptr() == sae.W_dec.data_ptr()  # a view, not a copy
    sae.requires_grad_(True)
    slow = sae.decode_sparse(values, indices)  # autograd path through W_dec
    slow.sum().backward()
    assert sae.W_dec.grad is not None and torch.allclose(fast, slow, atol=1e-5)
    sae.requires_grad_(False)
    with torch.no_grad():
        sae.W_dec[:, indices[0, 0]] += 1.0  # an in-place edit must not leave a stale copy behind
    assert torch.allclose(sae.decode_sparse(values, indices), sae.decode(sae.encode(x)), atol=1e-5)
    assert sae.nbytes == 4 * (2 * 32 * 128 + 128 + 32)  # the weights only: no second decoder
