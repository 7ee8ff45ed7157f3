"""SAE training: learns real structure, folds its input scale (raw residual in), keeps latents alive."""

import pytest
import torch
from conftest import TEXTS

from qscope_lab import SAE, Lab
from qscope_lab.testing.tiny import tiny_model
from qscope_lab.training.sae_training import (
    TrainConfig,
    fraction_of_variance_explained,
    train_sae,
    train_sae_on_activations,
)


def sparse_data(n=30_000, d=32, n_features=64, active=3, offset=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_features, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    idx = torch.randint(0, n_features, (n, active), generator=g)
    vals = torch.rand(n, active, generator=g) * 3
    return (vals.unsqueeze(-1) * dictionary[idx]).sum(1) + offset


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_learns_sparse_structure_on_raw_inputs(scale):
    x = sparse_data() * scale
    config = TrainConfig(d_sae=64, k=4, tokens=250_000, batch_tokens=1024, dead_after_tokens=20_000, lr=3e-3)
    sae, log = train_sae_on_activations(x, config, layer=0, progress=False)
    fve = fraction_of_variance_explained(sae, x[:5000])
    assert fve > 0.6, fve  # the same on raw inputs whatever their scale: the scale is folded in
    assert sae.meta["heldout_fve"] > 0.6 and sae.meta["dead_fraction"] < 0.1
    assert fraction_of_variance_explained(SAE.random(32, 64, 4), x[:5000]) < 0.2
    assert log.mse.iloc[-1] < log.mse.iloc[0]
    assert torch.allclose(sae.decoder_norms * sae.meta["input_scale"], torch.ones(64), atol=1e-4)


def test_train_sae_on_a_model_layer_plugs_into_a_lab(tokenizer):
    lab = Lab.load(tiny_model(layers=2), tokenizer=tokenizer, saes={})
    sae, log = train_sae(lab, TEXTS * 20, layer=1, d_sae=128, k=8, tokens=20_000, batch_tokens=512,
                         progress=False)
    assert (sae.d_model, sae.d_sae, sae.k, sae.layer) == (64, 128, 8, 1)
    lab2 = Lab.load(lab.hf_model, tokenizer=tokenizer, saes={1: sae})
    report = lab2.reconstruct(TEXTS, layer=1).iloc[0]
    assert report.fvu < 1.0 and report.l0 <= 8
