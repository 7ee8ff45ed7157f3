"""Steering methods beyond addition: projection capping, orthogonal decomposition, error-preserving clamp,
conditional (CAST-style) steers, difference-of-means vectors; each checked on the residual stream it edits."""

import pytest
import torch
from conftest import TEXTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import Steer
from qscope_lab.core.steering import Condition, apply_steering, cap_projections

LAYER = 2


@pytest.fixture(scope="module")
def stream(lab):
    """The clean layer-2 output of TEXTS, the real-position mask and the encoding."""
    enc = lab.tokenize(TEXTS)
    return enc, lab.residuals(enc, [LAYER])[LAYER], enc["attention_mask"].bool()


def unit(sae, feature):
    d = sae.W_dec[:, feature]
    return d / d.norm()


def test_cap_never_leaves_a_component_above_its_cap(lab, stream):
    enc, clean, real = stream
    feature = 17
    u = unit(lab.sae(LAYER), feature)
    before = clean @ u
    cap = float(before[real].median())  # about half the positions are above it
    capped = lab.residuals(enc, [LAYER], steer=[Steer(LAYER, feature, cap, "cap")])[LAYER]
    after = capped @ u
    above = (before > cap) & real
    assert 2 <= int(above.sum()) < int(real.sum())
    assert float(after[real].max()) <= cap + 1e-5
    assert torch.allclose(after[above], torch.full_like(after[above], cap), atol=1e-5)
    assert torch.equal(capped[~above], clean[~above])  # at or under the cap, and pads: untouched, bit for bit
    orth_before = clean - before.unsqueeze(-1) * u
    orth_after = capped - after.unsqueeze(-1) * u
    assert torch.allclose(orth_after[above], orth_before[above], atol=1e-5)  # only the component moved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), cap=st.floats(-5, 5), n_caps=st.integers(1, 4),
       sign=st.sampled_from([1.0, -1.0]), tie=st.floats(0, 3))
def test_caps_hold_for_any_stream_and_directions(seed, cap, n_caps, sign, tie):
    """Property: after capping, no position has a component above any of its caps (several caps along random
    directions, strongly correlated or anti-correlated, included), and a position already under every cap is
    unchanged."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 7, 16, generator=g) * 3
    dirs = torch.randn(n_caps, 16, generator=g)
    dirs[1:] += sign * tie * dirs[0]  # correlated with the first (cosines near +-1 for a large tie)
    us = dirs / dirs.norm(dim=-1, keepdim=True)
    out = cap_projections(x, [(u, cap, None) for u in us])
    for u in us:
        assert float((out @ u).max()) <= cap + 1e-4
    under = torch.stack([(x @ u) <= cap for u in us]).all(0)
    assert torch.equal(out[under], x[under])


def test_orthogonal_scales_the_component_along_the_direction(lab, stream):
    enc, clean, real = stream
    feature = 17
    u = unit(lab.sae(LAYER), feature)
    for s in (1.5, -1.0):
        out = lab.residuals(enc, [LAYER], steer=[Steer(LAYER, feature, s, "orthogonal")])[LAYER]
        assert torch.allclose((out @ u)[real], (1 + s) * (clean @ u)[real], atol=1e-4)
        rest = out - (out @ u).unsqueeze(-1) * u
        assert torch.allclose(rest[real], (clean - (clean @ u).unsqueeze(-1) * u)[real], atol=1e-4)
    zero = lab.residuals(enc, [LAYER], steer=[Steer(LAYER, feature, 0.0, "orthogonal")])[LAYER]
    assert torch.equal(zero, clean)


def test_clamp_edits_the_latent_and_keeps_the_sae_error(lab, stream):
    """Error-preserving: h' = decode(a') + (h - decode(a)), a' the SAE latent with feature f set to the value."""
    enc, clean, real = stream
    sae = lab.sae(LAYER)
    h = clean[0][real[0]]
    values, indices = sae.encode_sparse(h)
    f = int(indices[1, 0])  # the strongest feature at the second real position
    out = apply_steering(h.unsqueeze(0), sae, [Steer(LAYER, f, 7.0, "clamp")], torch.ones(1, len(h), dtype=bool))[0]
    a = sae.encode(h)
    a_new = a.clone()
    a_new[:, f] = 7.0
    expected = sae.decode(a_new) + (h - sae.decode(a))
    assert torch.allclose(out, expected, atol=1e-5)
    assert (sae.encode(out)[:, f] - 7.0).abs()[1] < 0.5  # the edited stream reads back near the target


def firing_feature(lab, enc, layer, real):
    """A feature of ``layer`` that fires on some real positions of TEXTS but not all: (feature, fires mask)."""
    h = lab.residuals(enc, [layer])[layer]
    acts = lab.sae(layer).encode(h)
    counts = ((acts > 0) & real.unsqueeze(-1)).sum((0, 1))
    n = int(real.sum())
    for f in torch.argsort(counts, descending=True).tolist():
        if 3 <= counts[f] <= n - 3:
            return f, (acts[..., f] > 0) & real
    raise AssertionError("no partially firing feature")


@pytest.mark.parametrize("condition_layer", [1, LAYER])
def test_a_conditional_steer_changes_only_the_positions_where_it_fires(lab, stream, condition_layer):
    enc, clean, real = stream
    detector, fires = firing_feature(lab, enc, condition_layer, real)
    steer = Steer(LAYER, 5, 6.0, when=Condition(condition_layer, detector, 0.0))
    out = lab.residuals(enc, [LAYER], steer=[steer])[LAYER]
    changed = (out != clean).any(-1)
    assert torch.equal(changed, fires)
    assert torch.equal(out[~fires], clean[~fires])  # everywhere else bit-identical to the unsteered stream
    d = lab.sae(LAYER).W_dec[:, 5]
    assert torch.allclose(out[fires] - clean[fires], (6.0 * d).expand(int(fires.sum()), -1), atol=1e-5)


def test_a_score_condition_and_a_mixed_group(lab, stream):
    """A callable detector (here: the position's norm above the median), beside an unconditional steer."""
    enc, clean, real = stream
    h1 = lab.residuals(enc, [1])[1]
    norms = h1.norm(dim=-1)
    cut = float(norms[real].median())
    when = Condition(1, score=lambda h: h.norm(dim=-1), threshold=cut, name="norm")
    fires = (norms > cut) & real
    cond, plain = Steer(LAYER, 5, 6.0, when=when), Steer(LAYER, 9, 2.0)
    out = lab.residuals(enc, [LAYER], steer=[cond, plain])[LAYER]
    W = lab.sae(LAYER).W_dec
    expected = clean + real.unsqueeze(-1) * 2.0 * W[:, 9] + fires.unsqueeze(-1) * 6.0 * W[:, 5]
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(out[~real], clean[~real])
    assert "when L1 norm > " in cond.label


def test_conditional_steering_in_generation(lab):
    prompt = "The weather today is"
    kw = dict(max_new_tokens=8, min_new_tokens=8)
    never = lab.generate(prompt, steer=[Steer(LAYER, 11, 40.0, when=(1, 3, 1e6))], **kw)
    assert never.steered_ids == never.baseline_ids  # the detector never fires: unsteered, token for token
    always = Condition(1, score=lambda h: torch.ones(h.shape[:-1]), threshold=0.5, name="always")
    cond = lab.generate(prompt, steer=[Steer(LAYER, 11, 40.0, when=always)], **kw)
    plain = lab.generate(prompt, steer=[Steer(LAYER, 11, 40.0)], **kw)
    assert cond.steered_ids == plain.steered_ids != plain.baseline_ids
    dict_form = lab.generate(prompt, layer=LAYER, steer={11: 40.0}, when=(1, 3, 1e6), **kw)
    assert dict_form.steered_ids == never.steered_ids
    assert "when L1 f3 &gt; 1e+06" in dict_form._repr_html_()


def test_conditions_are_checked(lab):
    with pytest.raises(ValueError, match="condition layer 3 is after the steered layer 2"):
        Steer(2, 5, 1.0, when=(3, 4, 0.0))
    with pytest.raises(ValueError, match="exactly one of feature"):
        Condition(1)
    with pytest.raises(ValueError, match="condition threshold must be a finite"):
        Condition(1, 4, float("nan"))
    with pytest.raises(IndexError, match="condition feature \\(layer 1\\) 999 is out of range"):
        lab.generate("hi", layer=2, steer={5: 1.0}, when=(1, 999, 0.0))
    with pytest.raises(ValueError, match="condition score returned shape"):
        lab.generate("hi there", steer=[Steer(2, 5, 1.0, when=Condition(1, score=lambda h: h.sum()))])
    with pytest.raises(TypeError, match="when must be a Condition"):
        Steer(2, 5, 1.0, when="feature 4")


def test_diff_means_is_the_difference_of_per_text_mean_residuals(lab):
    positives = ["The cat sat on the mat.", "A dog ran in the park today."]
    negatives = ["猫坐在垫子上。", "今天狗在公园里跑。"]
    steer = lab.diff_means(positives, negatives, layer=1)

    def mean_of(texts):
        out = []
        for text in texts:
            enc = lab.tokenize([text])
            h = lab.residuals(enc, [1])[1][0]
            out.append(h[1:].mean(0))  # position 0, the attention sink, is not counted
        return torch.stack(out).mean(0)

    expected = mean_of(positives) - mean_of(negatives)
    assert steer.feature is None and steer.layer == 1 and steer.mode == "add"
    assert steer.value == pytest.approx(float(expected.norm()), rel=1e-5)
    assert torch.allclose(steer.vector * steer.value, expected, atol=1e-5)
    enc = lab.tokenize(TEXTS)
    clean = lab.residuals(enc, [1])[1]
    out = lab.residuals(enc, [1], steer=[steer])[1]
    real = enc["attention_mask"].bool()
    assert torch.allclose((out - clean)[real], expected.expand(int(real.sum()), -1), atol=1e-5)
    kw = dict(max_new_tokens=8, min_new_tokens=8)
    zero = lab.generate("Hello there", steer=steer.with_value(0.0), **kw)
    assert zero.steered_ids == zero.baseline_ids
    strong = lab.generate("Hello there", steer=steer.with_value(60.0), **kw)
    assert strong.steered_ids != strong.baseline_ids and "diff-means L1 add +60" in strong._repr_html_()
    table = lab.sweep("Hello there", feature=steer, alphas=[0, 60.0], max_new_tokens=8, min_new_tokens=8)
    assert table.text.tolist() == [zero.baseline[0], strong.steered[0]]


def test_vector_steers_are_checked(lab):
    with pytest.raises(ValueError, match="d_model=64"):
        lab.generate("hi", steer=Steer.from_vector(1, torch.ones(10)))
    with pytest.raises(ValueError, match="zero vector"):
        Steer.from_vector(1, torch.zeros(64))
    with pytest.raises(ValueError, match="NaN or inf"):
        Steer.from_vector(1, [float("nan")] * 64)
    with pytest.raises(ValueError, match="a vector steer can use add, cap or orthogonal"):
        Steer.from_vector(1, torch.ones(64), mode="clamp")
    with pytest.raises(ValueError, match="not both"):
        Steer(1, 3, 1.0, vector=torch.ones(64))
    with pytest.raises(ValueError, match="no counted token"):
        lab.diff_means(["a"], ["b c d"], layer=1)
    with pytest.raises(ValueError, match="layer must be an int in 0..3"):
        lab.diff_means(["a b c"], ["b c d"], layer=7)


def test_steers_round_trip_through_dicts_and_compare_by_value():
    v = torch.linspace(-1, 1, 64)
    steers = [Steer(2, 17, 8.0), Steer(1, 3, 0.5, "cap", when=(0, 9, 0.25)),
              Steer.from_vector(3, v, 4.0, "orthogonal", name="dm")]
    for s in steers:
        again = Steer.from_dict(s.to_dict())
        assert again == s and hash(again) == hash(s)
    assert Steer.from_vector(3, v, 4.0) != Steer.from_vector(3, v + 1, 4.0)
    assert steers[0].with_value(2.0) == Steer(2, 17, 2.0)
    assert "norm" in repr(steers[2]) and "tensor(" not in repr(steers[2])
    with pytest.raises(ValueError, match="cannot be written"):
        Steer(2, 1, 1.0, when=Condition(1, score=abs)).to_dict()
    with pytest.raises(ValueError, match="unknown steer field"):
        Steer.from_dict({"layer": 1, "feature": 2, "value": 1.0, "strength": 3})


@settings(max_examples=80, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)),
       mode=st.sampled_from(["add", "clamp", "ablate", "cap", "orthogonal"]))
def test_steer_values_are_finite_and_bounded(value, mode):
    ok = isinstance(value, int) or (value == value and abs(value) != float("inf"))
    if ok and abs(value) <= 1e4:
        assert Steer(1, 2, value, mode).value == float(value)
    else:
        with pytest.raises(ValueError, match="steering (alpha|clamp value|ablation lambda|projection cap|"
                                             "orthogonal scale) of feature 2"):
            Steer(1, 2, value, mode)


@settings(max_examples=60, deadline=None)
@given(threshold=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none()))
def test_condition_thresholds_are_finite_numbers(threshold):
    if isinstance(threshold, float) and threshold == threshold and abs(threshold) != float("inf"):
        assert Condition(1, 2, threshold).threshold == threshold
    elif isinstance(threshold, float):
        with pytest.raises(ValueError, match="condition threshold must be a finite number"):
            Condition(1, 2, threshold)
    else:
        with pytest.raises(TypeError, match="condition threshold must be a number"):
            Condition(1, 2, threshold)


ZH = ["今天天气很好，我们去公园散步。", "这本书我已经读了三遍。", "他每天早上六点起床跑步。",
      "我们明天一起去图书馆吧。", "这个城市的夜景非常美丽。", "妈妈做的饭总是最好吃的。"]
EN = ["The weather is lovely today, let us walk in the park.", "I have read this book three times.",
      "He gets up at six every morning to run.", "Let us go to the library together tomorrow.",
      "The night view of this city is beautiful.", "Mother's cooking is always the best."]


def test_a_seed_classifier_condition_steers_where_it_calls_the_token_positive():
    """CAST with a SeedClassifier as detector, on the embedded default: Chinese vs English seeds; in a mixed
    text the steer lands on the positions the classifier calls Chinese, mostly Han characters, and nowhere else."""
    from qscope_lab import Lab
    from qscope_lab.analysis.text_predicates import han_share
    from qscope_lab.workflows.classify.classifier import SeedClassifier

    lab = Lab.load()
    clf = SeedClassifier(lab, statistic="mean", top_k=20, select="delta", progress=False)
    clf.fit(ZH + EN, [1] * len(ZH) + [0] * len(EN))
    when = Condition.from_classifier(clf)
    steer_layer = lab.n_layers - 1
    assert when.layer == clf.layer_ <= steer_layer
    text = "The cat sat on the mat, 猫坐在垫子上，and then it slept."
    enc = lab.tokenize([text])
    clean = lab.residuals(enc, [steer_layer])[steer_layer]
    out = lab.residuals(enc, [steer_layer], steer=[Steer(steer_layer, 7, 5.0, when=when)])[steer_layer]
    changed = (out != clean).any(-1)[0]
    h = lab.residuals(enc, [when.layer])[when.layer]
    assert torch.equal(changed, when.fires(h, lab.sae(when.layer))[0])
    pieces = lab.token_pieces(enc["input_ids"][0].tolist())
    han = torch.tensor([han_share(p) > 0 for p in pieces])
    assert changed.any() and not changed.all()
    assert changed[han].float().mean() > 0.5 > changed[~han].float().mean()
    with pytest.raises(ValueError, match="fit the classifier first"):
        Condition.from_classifier(SeedClassifier(lab))


def test_diff_means_steering_needs_no_sae(tokenizer):
    """A difference-of-means vector is a raw direction: a Lab without SAEs builds it and steers with it."""
    from qscope_lab import Lab
    from qscope_lab.testing.tiny import tiny_model

    bare = Lab.load(tiny_model("Qwen3ForCausalLM"), tokenizer=tokenizer, saes={})
    steer = bare.diff_means(["The cat sat on the mat.", "A dog ran."], ["猫坐在垫子上。", "狗跑了。"], layer=2)
    gen = bare.generate("Hello there", steer=steer.with_value(80.0), max_new_tokens=6, min_new_tokens=6)
    assert gen.steered_ids != gen.baseline_ids
    capped = bare.generate("Hello there", steer=Steer.from_vector(2, steer.vector, -1.0, "cap"), max_new_tokens=4)
    assert len(capped.steered) == 1
    with pytest.raises(ValueError, match="no SAEs"):
        bare.generate("Hello there", layer=2, steer={3: 1.0})
