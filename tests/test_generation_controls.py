"""Generation controls: sampling (temperature, top_p, seed), the repetition penalty default, chat prompts, and
the checks that refuse bad values naming the argument."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab import Steer
from qscope_lab.methods.generation import DEFAULT_REPETITION_PENALTY, RepetitionPenalty, SharedNoiseSampler, decoding

PROMPT = "The weather today is"
KW = dict(max_new_tokens=10, min_new_tokens=10)


def test_a_seed_reproduces_a_sampled_generation_and_another_seed_does_not(lab):
    a = lab.generate(PROMPT, temperature=1.0, seed=11, **KW)
    b = lab.generate(PROMPT, temperature=1.0, seed=11, **KW)
    c = lab.generate(PROMPT, temperature=1.0, seed=12, **KW)
    greedy = lab.generate(PROMPT, **KW)
    assert a.steered_ids == b.steered_ids
    assert a.steered_ids != c.steered_ids and a.steered_ids != greedy.steered_ids
    assert a.settings["seed"] == 11 and a.settings["do_sample"] and a.settings["temperature"] == 1.0
    drawn = lab.generate(PROMPT, do_sample=True, **KW)  # no seed: one is drawn and recorded
    again = lab.generate(PROMPT, do_sample=True, seed=drawn.settings["seed"], **KW)
    assert again.steered_ids == drawn.steered_ids


def test_zero_strength_equals_unsteered_token_for_token_when_sampling(lab):
    """Baseline and steered rows share their noise, so a zero steer is the unsteered sample, and a batch's
    first prompt samples the same whatever comes after it."""
    zero = lab.generate([PROMPT, "Once upon a time"], layer=2, steer={11: 0.0}, temperature=1.2, top_p=0.9,
                        seed=5, **KW)
    assert zero.steered_ids == zero.baseline_ids
    alone = lab.generate(PROMPT, temperature=1.2, top_p=0.9, seed=5, **KW)
    assert alone.steered_ids[0] == zero.steered_ids[0]
    vector = lab.generate(PROMPT, steer=Steer.from_vector(1, torch.ones(64), 0.0), temperature=1.2, seed=5, **KW)
    assert vector.steered_ids == vector.baseline_ids
    strong = lab.generate(PROMPT, layer=2, steer={11: 40.0}, temperature=1.2, seed=5, **KW)
    assert strong.steered_ids != strong.baseline_ids
    for mode in ("add", "ablate", "orthogonal"):  # the modes whose value is a strength
        nothing = lab.generate(PROMPT, layer=2, steer={11: 0.0, 40: 0.0}, mode=mode, temperature=1.2, seed=5, **KW)
        assert nothing.steered_ids == nothing.baseline_ids == alone.steered_ids, mode


def test_a_tiny_top_p_samples_the_greedy_text(lab):
    greedy = lab.generate(PROMPT, layer=2, steer={11: 10.0}, **KW)
    nucleus_of_one = lab.generate(PROMPT, layer=2, steer={11: 10.0}, top_p=1e-9, seed=3, **KW)
    assert nucleus_of_one.steered_ids == greedy.steered_ids
    assert nucleus_of_one.baseline_ids == greedy.baseline_ids


def test_the_sampler_draws_from_the_tempered_nucleus():
    """Empirical frequencies of 4000 draws against softmax(logits / T) renormalised on the top-p nucleus."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    for temperature, top_p in ((1.0, 1.0), (0.5, 1.0), (2.0, 0.8)):
        sampler = SharedNoiseSampler(decoding(temperature=temperature, top_p=top_p, seed=0), n_prompts=1)
        counts = torch.zeros(5)
        for _ in range(4000):
            out = sampler(None, logits)
            assert int((out == 0).sum()) == 1 and bool(torch.isinf(out).sum() == 4)
            counts[out.argmax()] += 1
        probs = (logits[0] / temperature).softmax(-1)
        ordered = probs.sort(descending=True)
        keep = (ordered.values.cumsum(0) - ordered.values) < top_p
        expected = torch.zeros(5)
        expected[ordered.indices[keep]] = probs[ordered.indices[keep]]
        expected /= expected.sum()
        assert torch.allclose(counts / 4000, expected, atol=0.03), (temperature, top_p, counts / 4000, expected)


def test_the_repetition_penalty_default_is_applied_shown_and_overridable(lab):
    default = lab.generate(PROMPT, **KW)
    off = lab.generate(PROMPT, repetition_penalty=1.0, **KW)
    enc = lab.tokenize([PROMPT])
    with torch.no_grad():
        plain = lab.hf_model.generate(**enc, do_sample=False, pad_token_id=lab.tokenizer.pad_token_id, **KW)
        penalised = lab.hf_model.generate(**enc, do_sample=False, pad_token_id=lab.tokenizer.pad_token_id,
                                          repetition_penalty=DEFAULT_REPETITION_PENALTY, **KW)
    n = enc["input_ids"].shape[1]
    assert off.steered_ids[0] == plain[0, n:].tolist()
    assert default.steered_ids[0] == penalised[0, n:].tolist() != off.steered_ids[0]
    assert default.settings["repetition_penalty"] == DEFAULT_REPETITION_PENALTY
    assert off.settings["repetition_penalty"] == 1.0
    assert f"repetition_penalty={DEFAULT_REPETITION_PENALTY}" in default._repr_html_()
    assert default.to_frame().attrs["settings"]["repetition_penalty"] == DEFAULT_REPETITION_PENALTY
    table = lab.sweep(PROMPT, 2, 11, alphas=[0], repetition_penalty=1.0, **KW)
    assert table.text[0] == off.text and table.attrs["settings"]["repetition_penalty"] == 1.0


def test_the_penalty_is_transformers_except_on_special_tokens(lab):
    """Seen ordinary tokens are penalised as transformers does; pad / end-of-text / chat markers are not (a
    padded row or a chat prompt would otherwise stop less often than the same prompt alone)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    tok = lab.tokenizer
    special = [tok.pad_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    ids = torch.tensor([[special[0], special[0], 100, 200, special[1], 300]])
    scores = torch.randn(1, len(tok)) * 3
    ours = RepetitionPenalty(1.3, tok.all_special_ids)(ids, scores.clone())
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    ordinary = torch.ones(len(tok), dtype=torch.bool)
    ordinary[special] = False
    assert torch.equal(ours[0, ordinary], theirs[0, ordinary])
    assert not torch.equal(ours[0, [100, 200, 300]], scores[0, [100, 200, 300]])
    assert torch.equal(ours[0, special], scores[0, special])


def test_chat_prompts_use_the_tokenizers_chat_template(lab):
    tok = lab.tokenizer
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
    gen = lab.generate(messages, chat=True, repetition_penalty=1.0, **KW)
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert gen.prompts == [tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    assert gen.prompts[0].endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = lab.hf_model.generate(torch.tensor([list(ids)]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    do_sample=False, pad_token_id=tok.pad_token_id, **KW)
    expected = out[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(expected) if t in {tok.eos_token_id, tok.pad_token_id}), len(expected))
    assert gen.steered_ids[0] == expected[:cut]
    plain_user = lab.generate(["Name a colour.", "Hi"], chat=True, **KW)
    assert plain_user.prompts[0] == tok.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                                            tokenize=False, add_generation_prompt=True)
    no_think = lab.generate("Name a colour.", chat={"enable_thinking": False}, **KW)
    assert no_think.prompts[0].endswith("<think>\n\n</think>\n\n") and no_think.settings["chat"]
    with pytest.raises(TypeError, match="chat must be True, False or a dict"):
        lab.generate("hi", chat="yes")
    with pytest.raises(ValueError, match="str 'role' and 'content'"):
        lab.generate([{"role": "user"}], chat=True)


def test_chat_needs_a_chat_template(lab, monkeypatch):
    monkeypatch.setattr(lab.tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="has no chat template"):
        lab.generate("hi", chat=True)


def test_sampling_options_that_would_be_ignored_are_refused(lab):
    with pytest.raises(ValueError, match="temperature=0.7 with do_sample=False"):
        lab.generate("hi", temperature=0.7, do_sample=False)
    with pytest.raises(ValueError, match="top_k is not a generate option here"):
        lab.generate("hi", temperature=0.7, top_k=5)
    with pytest.raises(TypeError, match="do_sample must be True, False or None"):
        lab.generate("hi", do_sample="yes")


@settings(max_examples=80, deadline=None)
@given(temperature=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
       top_p=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
       penalty=st.floats(allow_nan=True, allow_infinity=True),
       seed=st.one_of(st.integers(-5, 2**64), st.none()))
def test_decoding_options_are_checked_naming_the_argument(temperature, top_p, penalty, seed):
    def bad_number(x):
        return x is not None and not math.isfinite(x)

    problems = []
    if bad_number(temperature) or (temperature is not None and temperature <= 0):
        problems.append("temperature")
    if bad_number(top_p) or (top_p is not None and not 0 < top_p <= 1):
        problems.append("top_p")
    if seed is not None and not 0 <= seed <= 2**63 - 1:
        problems.append("seed")
    if bad_number(penalty) or penalty <= 0:
        problems.append("repetition_penalty")
    if problems:
        with pytest.raises(ValueError) as err:
            decoding(temperature=temperature, top_p=top_p, seed=seed, repetition_penalty=penalty)
        assert any(str(err.value).startswith(name) for name in problems), str(err.value)
    else:
        d = decoding(temperature=temperature, top_p=top_p, seed=seed, repetition_penalty=penalty)
        assert d.repetition_penalty == penalty
        assert d.do_sample == (temperature is not None or top_p is not None)
        if d.do_sample:
            assert d.seed is not None and (seed is None or d.seed == seed)


BAD_OPTIONS = [("temperature", 0), ("temperature", -1.0), ("temperature", float("nan")), ("temperature", "0.9"),
               ("top_p", 0.0), ("top_p", 1.5), ("top_p", float("inf")), ("top_p", True),
               ("repetition_penalty", 0), ("repetition_penalty", -2.0), ("repetition_penalty", float("nan")),
               ("seed", -1), ("seed", 1.5)]


@pytest.mark.parametrize("name,value", BAD_OPTIONS, ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_lab_generate_and_sweep_name_the_bad_option(lab, name, value):
    with pytest.raises((TypeError, ValueError), match=f"^{name} "):
        lab.generate("hi", **{name: value})
    with pytest.raises((TypeError, ValueError), match=f"^{name} "):
        lab.sweep("hi", 2, 11, alphas=[0, 4], **{name: value})
