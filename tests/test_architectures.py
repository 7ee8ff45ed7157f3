"""Every Qwen-Scope architecture: layers found, hooks at the right place, encode = the convention, padding safe."""

import pytest
import torch
from conftest import TEXTS

from qscope_lab.testing.tiny import ARCHITECTURES


def test_layers_found_on_every_architecture(arch_lab):
    expected = "model.language_model.layers" if "ConditionalGeneration" in arch_lab.architecture else "model.layers"
    assert arch_lab.architecture in ARCHITECTURES
    assert arch_lab.layers_path == expected and arch_lab.n_layers == 4 and arch_lab.d_model == 64


def test_hook_output_is_hf_hidden_states_n_plus_1(arch_lab):
    enc = arch_lab.tokenize(TEXTS)
    with torch.no_grad():
        hidden = arch_lab.hf_model(**enc, output_hidden_states=True).hidden_states
    got = arch_lab.residuals(enc, range(arch_lab.n_layers))
    for layer in range(arch_lab.n_layers - 1):  # the last hidden_states entry has the final norm applied
        assert torch.allclose(got[layer], hidden[layer + 1], atol=1e-5), layer
    last = arch_lab.n_layers - 1
    captured = {}
    module = dict(arch_lab.hf_model.named_modules())[f"{arch_lab.layers_path}.{last}"]
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            arch_lab.hf_model(**enc)
    finally:
        handle.remove()
    assert torch.allclose(got[last], captured["out"], atol=1e-5)


def test_encode_equals_direct_computation(arch_lab):
    layer = 2
    sae = arch_lab.sae(layer)
    acts = arch_lab.encode(TEXTS, layer=layer, batch_size=3, skip_first=False)  # dense() zeroes skipped rows
    for i, text in enumerate(TEXTS):
        enc = arch_lab.tokenize([text])  # alone: no padding at all
        with torch.no_grad():
            h = arch_lab.hf_model(**enc, output_hidden_states=True).hidden_states[layer + 1][0]
        pre = h @ sae.W_enc.T + sae.b_enc
        vals, idx = torch.relu(pre).topk(sae.k, dim=-1)
        expected = torch.zeros_like(pre).scatter_(-1, idx, vals)
        assert acts.token_ids[i] == enc["input_ids"][0].tolist()
        assert torch.allclose(acts.dense(i), expected, atol=2e-5), (arch_lab.architecture, i)


def test_left_padded_batch_matches_single_prompts(arch_lab):
    enc = arch_lab.tokenize(TEXTS)
    batch = arch_lab.residuals(enc, [1])[1]
    lengths = enc["attention_mask"].sum(-1)
    for i, text in enumerate(TEXTS):
        alone = arch_lab.residuals(arch_lab.tokenize([text]), [1])[1][0]
        assert torch.allclose(batch[i, -int(lengths[i]):], alone, atol=1e-5)


def test_sae_width_mismatch_is_named(tokenizer):
    from qscope_lab import SAE, Lab
    from qscope_lab.testing.tiny import tiny_model

    with pytest.raises(ValueError, match="d_model=32 but .* hidden_size=64"):
        Lab.load(tiny_model(), tokenizer=tokenizer, saes={0: SAE.random(32, 64, 4)})
