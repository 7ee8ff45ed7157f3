"""FeatureActs: ragged storage without pads, masks for sinks and special tokens, tables a user reads."""

import torch
from conftest import TEXTS

from qscope_lab import Lab
from qscope_lab.index.source import STAT_COLUMNS


def test_encode_skips_the_attention_sink_by_default(lab):
    acts = lab.encode(TEXTS, layer=1)
    first = acts.offsets[:-1]
    assert not acts.mask[first].any() and acts.mask.sum() == acts.n_tokens - len(TEXTS)
    assert 0 not in set(acts.to_frame().position)  # the sink's row is kept, but not counted
    kept = lab.encode(TEXTS, layer=1, skip_first=False)
    assert kept.mask.all() and torch.equal(kept.values, acts.values)


def test_to_frame_rows_and_positions(lab):
    acts = lab.encode(TEXTS, layer=1, batch_size=2, skip_first=False)
    frame = acts.to_frame()
    assert list(frame.columns) == ["text", "snippet", "position", "token", "feature", "name", "activation",
                                   "rank"]
    assert frame[frame.text == 0].snippet.iloc[0] == TEXTS[0][:31] + "…" if len(TEXTS[0]) > 32 else TEXTS[0]
    lengths = [len(ids) for ids in acts.token_ids]
    assert acts.n_tokens == sum(lengths)  # no pad rows stored
    for i, n in enumerate(lengths):
        rows = frame[frame.text == i]
        assert sorted(rows.position.unique()) == list(range(n))  # 0 = first real token, despite left padding
    assert (frame.activation > 0).all()
    assert frame.groupby(["text", "position"]).size().max() <= lab.sae(1).k
    first = frame[(frame.text == 0) & (frame.position == 0)]
    assert set(first.token) == {acts.tokens[0][0]} == {"The"}


def test_to_frame_leaves_out_always_on_features_and_reranks(lab):
    acts = lab.encode(TEXTS, layer=1)
    rates = acts.firing_rates()
    limit = float(rates.max()) * 0.9  # leave out the busiest feature(s) of these texts
    busy = set(torch.nonzero(rates > limit).flatten().tolist())
    assert rates.max() == acts.feature_stats().firing_rate.max()
    frame = acts.to_frame(max_firing_rate=limit)
    assert not busy & set(frame.feature) and busy <= set(acts.to_frame().feature)
    for _, token in frame.groupby(["text", "position"]):  # ranks restart at 0 and follow the activation
        assert sorted(token["rank"]) == list(range(len(token)))
        assert token.sort_values("rank").activation.is_monotonic_decreasing


def test_dense_and_feature_views_agree(lab):
    acts = lab.encode(TEXTS, layer=2)
    dense = acts.dense()
    assert dense.shape == (4, max(len(t) for t in acts.token_ids), lab.sae(2).d_sae)
    f = int(acts.indices[0, 0])
    per_text = acts.feature(f)
    for i in range(len(TEXTS)):
        n = len(acts.token_ids[i])
        assert torch.equal(per_text[i], dense[i, :n, f])
        assert torch.equal(dense[i, :n], acts.dense(i))
        assert (dense[i, n:] == 0).all()


def test_skip_first_and_special_tokens(lab):
    chat = lab.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    acts = lab.encode([chat, "plain words here"], layer=1, skip_first=True)
    frame = acts.to_frame()
    assert 0 not in set(frame[frame.text == 1].position)
    special = set(lab.tokenizer.all_special_tokens)
    assert not set(frame.token) & special
    kept = lab.encode([chat], layer=1, skip_special=False).to_frame()
    assert set(kept.token) & special


def test_feature_stats_and_top_features(lab):
    acts = lab.encode(TEXTS, layer=1)
    stats = acts.feature_stats()
    assert stats.max_activation.is_monotonic_decreasing
    assert stats.firing_count.sum() == int(((acts.values > 0) & acts.mask.unsqueeze(-1)).sum())
    assert tuple(stats.columns) == STAT_COLUMNS  # the vocabulary of every feature statistic
    top = acts.top_features(3, max_firing_rate=0.5)
    assert len(top) == 3 and (top.firing_rate <= 0.5).all()


def test_encode_is_independent_of_batching(lab):
    a = lab.encode(TEXTS, layer=3, batch_size=1)
    b = lab.encode(TEXTS, layer=3, batch_size=4)
    assert a.token_ids == b.token_ids
    assert torch.allclose(a.dense(), b.dense(), atol=1e-5)


def test_token_pieces_join_characters_split_over_byte_tokens():
    lab = Lab.load()  # the embedded default's 4k vocabulary splits rarer Han characters into byte tokens
    ids = lab.tokenizer("猫坐在垫子上。 ok")["input_ids"]
    pieces, singles = lab.token_pieces(ids), lab.token_strings(ids)
    assert "\ufffd" in "".join(singles) and "\ufffd" not in "".join(pieces)  # 猫 and 垫 are two tokens each here
    assert len(pieces) == len(ids) and "".join(pieces) == lab.tokenizer.decode(ids)
    assert [p for p, s in zip(pieces, singles) if "\ufffd" not in s] == [s for s in singles if "\ufffd" not in s]
