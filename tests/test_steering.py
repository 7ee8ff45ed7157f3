"""Steering edits exactly alpha * W_dec[:, f] where asked and nothing else; alpha = 0 is plain generation."""

import pytest
import torch
from conftest import TEXTS

from qscope_lab import Steer
from qscope_lab.core.steering import parse_steer, steering_delta
from qscope_lab.methods.generation import DEFAULT_REPETITION_PENALTY


def next_layer_input(lab, enc, layer, steers=None):
    """What block layer+1 actually receives: an independent plain-PyTorch view of the edited stream."""
    captured = {}

    def hook(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]

    module = dict(lab.hf_model.named_modules())[f"{lab.layers_path}.{layer + 1}"]
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = lab.residuals(enc, [layer], steer=steers, run_to_end=True)[layer]
    finally:
        handle.remove()
    return out, captured["x"]


@pytest.mark.parametrize("alpha", [8.0, -3.5])
def test_add_changes_the_layer_output_by_exactly_alpha_d(arch_lab, alpha):
    layer, feature = 1, 17
    enc = arch_lab.tokenize(TEXTS)
    where = enc["attention_mask"].bool()
    clean = arch_lab.residuals(enc, [layer])[layer]
    steered, seen_downstream = next_layer_input(arch_lab, enc, layer, [Steer(layer, feature, alpha)])
    assert torch.equal(steered, seen_downstream)  # the edit is what the rest of the model sees
    d = arch_lab.sae(layer).W_dec[:, feature]
    diff = steered - clean
    assert torch.allclose(diff[where], (alpha * d).expand(int(where.sum()), -1), atol=1e-5)
    assert torch.equal(steered[~where], clean[~where])  # pad positions untouched


def test_only_listed_positions_change(lab):
    layer = 2
    enc = lab.tokenize(TEXTS)
    clean = lab.residuals(enc, [layer])[layer]
    from qscope_lab.core.steering import apply_steering

    where = torch.zeros_like(enc["attention_mask"], dtype=torch.bool)
    where[0, -1] = True
    where[2, -3] = True
    out = apply_steering(clean, lab.sae(layer), [Steer(layer, 5, 2.0)], where)
    changed = (out != clean).any(-1)
    assert torch.equal(changed, where)


def test_clamp_and_ablate_use_the_features_own_activation(lab):
    layer, sae = 1, lab.sae(1)
    h = lab.residuals(lab.tokenize(TEXTS[:1]), [layer])[layer][0]
    values, indices = sae.encode_sparse(h)
    f = int(indices[2, 0])  # the strongest feature at position 2
    a = (values * (indices == f)).sum(-1, keepdim=True)
    d = sae.W_dec[:, f]
    assert a[2].item() > 0
    assert torch.allclose(steering_delta(h, sae, [Steer(layer, f, 5.0, "clamp")]), (5.0 - a) * d, atol=1e-6)
    assert torch.allclose(steering_delta(h, sae, [Steer(layer, f, 1.0, "ablate")]), -a * d, atol=1e-6)


@pytest.mark.parametrize("penalty", [None, 1.0])
def test_alpha_zero_reproduces_plain_generation(arch_lab, penalty):
    """alpha = 0 is plain ``generate`` token for token: with the library's default repetition penalty (None)
    and with it turned off (1.0)."""
    prompt = "Tell me about Paris."
    gen = arch_lab.generate(prompt, layer=1, steer={3: 0.0}, max_new_tokens=12, min_new_tokens=12,
                            repetition_penalty=penalty)
    enc = arch_lab.tokenize([prompt])
    expected = DEFAULT_REPETITION_PENALTY if penalty is None else penalty
    assert gen.settings["repetition_penalty"] == expected
    with torch.no_grad():
        plain = arch_lab.hf_model.generate(**enc, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                           repetition_penalty=expected,
                                           pad_token_id=arch_lab.tokenizer.pad_token_id)
    plain_ids = plain[0, enc["input_ids"].shape[1]:].tolist()
    assert gen.steered_ids[0] == plain_ids
    assert gen.baseline_ids[0] == plain_ids
    assert gen.first_difference() is None


def test_strong_steering_changes_text_and_baseline_stays_plain(lab):
    prompt = "The weather today is"
    plain = lab.generate(prompt, max_new_tokens=10, min_new_tokens=10)
    gen = lab.generate(prompt, layer=2, steer={11: 40.0}, max_new_tokens=10, min_new_tokens=10)
    assert gen.baseline_ids == plain.steered_ids
    assert gen.steered_ids != gen.baseline_ids
    assert gen.first_difference() == 0
    again = lab.generate(prompt, layer=2, steer={11: 40.0}, max_new_tokens=10, min_new_tokens=10)
    assert again.steered_ids == gen.steered_ids  # greedy: reproducible


def test_positions_generated_leaves_the_prefill_alone(lab):
    prompt = "Once upon a time"
    kw = dict(layer=2, steer={11: 40.0}, max_new_tokens=6, min_new_tokens=6)
    gen_only = lab.generate(prompt, positions="generated", **kw)
    prompt_only = lab.generate(prompt, positions="prompt", **kw)
    # token 1 is predicted from the unedited prompt when only generated positions are steered
    assert gen_only.steered_ids[0][0] == gen_only.baseline_ids[0][0]
    assert gen_only.steered_ids[0] != gen_only.baseline_ids[0]
    assert prompt_only.steered_ids[0][0] != prompt_only.baseline_ids[0][0]


def test_several_layers_and_prompts_at_once(lab):
    steers = {(1, 4): 20.0, (3, 9): -20.0}
    gen = lab.generate(["Hello", "A much longer prompt about cats"], steer=steers, max_new_tokens=5,
                       min_new_tokens=5)
    assert len(gen.steered) == 2 and len(gen.baseline) == 2
    frame = gen.to_frame()
    assert list(frame.columns) == ["prompt", "steered", "baseline", "same"]
    assert "L1 f4 add +20" in gen._repr_html_()


def test_steering_inputs_are_checked(lab):
    with pytest.raises(ValueError, match="needs layer="):
        lab.generate("hi", steer={3: 1.0})
    with pytest.raises(IndexError, match="256 features"):
        lab.generate("hi", layer=1, steer={999: 1.0})
    with pytest.raises(ValueError, match="layer must be an int in 0..3"):
        lab.generate("hi", layer=9, steer={3: 1.0})
    with pytest.raises(ValueError, match="positions="):
        lab.generate("hi", layer=1, steer={3: 1.0}, positions="middle")
    with pytest.raises(ValueError, match="unknown steering mode"):
        parse_steer({3: 1.0}, layer=1, mode="boost")
    with pytest.raises(ValueError, match="is empty"):
        lab.generate("", layer=1, steer={3: 1.0})


def test_next_tokens_show_what_the_first_generated_token_comes_from(lab):
    prompt = "The weather today is"
    table = lab.next_tokens(prompt, layer=2, steer={11: 40.0}, top=5)
    gen = lab.generate(prompt, layer=2, steer={11: 40.0}, max_new_tokens=1)
    assert table.baseline_token[0] == lab.token_strings(gen.baseline_ids[0])[0]  # greedy takes the top token
    assert table.steered_token[0] == lab.token_strings(gen.steered_ids[0])[0]
    assert table.baseline_token.tolist() != table.steered_token.tolist()
    for column in ("baseline_p", "steered_p"):
        assert (table[column].diff().dropna() <= 0).all() and 0 < table[column].sum() <= 1 + 1e-6
    plain = lab.next_tokens(prompt, top=3)
    assert plain.baseline_token.tolist() == plain.steered_token.tolist() and len(plain) == 3
    with pytest.raises(IndexError, match="out of range"):
        lab.next_tokens(prompt, layer=2, steer={10**6: 1.0})
    with pytest.raises(ValueError, match="top"):
        lab.next_tokens(prompt, top=0)
