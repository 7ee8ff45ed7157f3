"""Training signals on the embedded model: SASFT loss, language and repetition features, steered rollouts, and
the measured demo (SASFT lowers a code-switching habit more than plain SFT on the same data)."""

import copy
import time

import pandas as pd
import pytest
import torch

from qscope_lab import SAE, Lab
from qscope_lab import training as ts
from qscope_lab.training import code_switch_experiment as cse

EN = ["The weather today is fine and the children are playing outside in the garden.",
      "He opened the letter and read it twice before he said a word.",
      "The library closes at nine, so we should leave before it gets dark."]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def emb():
    return Lab.load()


@pytest.fixture(scope="module")
def data():
    return cse.code_switch_sft_data(contamination=0.3, seed=0)


@pytest.fixture(scope="module")
def zh_targets(emb, data):
    texts = {lang: texts[:24] for lang, texts in data["language_texts"].items()}
    table = ts.language_features(emb, texts, layers=[3], top=8)
    return table, ts.sasft_targets(table, "zh", alpha_language="en", top=8)


# ------------------------------------------------------------------ metrics
def test_code_switch_ratio_counts_answers_with_foreign_script():
    answers = ["all English here", "English with 中文 inside", "plain again", "数字 and more"]
    assert ts.code_switch_ratio(answers, "en") == 0.5
    assert ts.code_switched("中文回答", "zh") is False and ts.code_switched("中文 answer", "zh") is True
    assert ts.code_switch_ratio(answers, "en", min_chars=3) == 0.0
    assert 0 < ts.foreign_share(answers) < 0.5
    with pytest.raises(ValueError):
        ts.code_switch_ratio([])
    assert ts.repetition_rate("a b c a b c a b c") > 0.5 and ts.repetition_rate("one two three four five") == 0


# ------------------------------------------------------------------ the loss, by hand
def _hand_sae(d_model=4, d_sae=6):
    """Feature i reads input dimension i (W_enc rows e_i, no bias): pre-activation f_i(x) = x_i."""
    W_enc = torch.zeros(d_sae, d_model)
    W_enc[torch.arange(d_model), torch.arange(d_model)] = 1.0
    return SAE(W_enc, torch.zeros(d_sae), W_enc.T.contiguous(), torch.zeros(d_model), k=2)


def test_l_reduce_is_zero_below_alpha_and_the_excess_above():
    loss = ts.SASFTLoss((None, {0: _hand_sae()}), features={0: [0, 1]}, alphas={0: torch.tensor([1.0, 2.0])},
                        weight=0.5)
    below = torch.tensor([[[0.5, 1.9, 9.0, 9.0]]])  # features 2, 3 are not chosen: their 9s do not count
    assert float(loss.l_reduce({0: below})) == 0.0
    above = torch.tensor([[[3.0, 2.5, 0.0, 0.0]]])
    assert float(loss.l_reduce({0: above})) == pytest.approx((3 - 1) + (2.5 - 2))
    mixed = torch.tensor([[[3.0, 0.0, 0, 0], [0.0, 0.0, 0, 0]]])  # mean over the two counted tokens
    assert float(loss.l_reduce({0: mixed})) == pytest.approx(1.0)
    assert loss.last == {0: pytest.approx(1.0)}
    assert list(loss.parameters()) == []  # nothing trainable: the SAE can't move
    # one float alpha for every feature
    flat = ts.SASFTLoss((None, {0: _hand_sae()}), features={0: [0, 1]}, alphas=1.0)
    assert float(flat.l_reduce({0: above})) == pytest.approx(2.0 + 1.5)
    with pytest.raises(ValueError, match="2 features but 3 alphas"):
        ts.SASFTLoss((None, {0: _hand_sae()}), features={0: [0, 1]}, alphas={0: [1.0, 2.0, 3.0]})


def test_only_completion_tokens_of_kept_samples_count():
    loss = ts.SASFTLoss((None, {0: _hand_sae()}), features={0: [0]}, alphas=0.0)
    h = torch.zeros(2, 4, 4)
    h[:, :2, 0] = 100.0  # the prompt positions fire hard
    h[0, 2:, 0] = 1.0    # sample 0's completion: excess 1 per token
    h[1, 2:, 0] = 3.0    # sample 1's completion: excess 3 per token
    labels = torch.full((2, 4), ts.IGNORE_INDEX)
    labels[:, 2:] = 7
    assert float(loss.l_reduce({0: h})) == pytest.approx((200 + 2 + 200 + 6) / 8)  # no mask: every token
    assert float(loss.l_reduce({0: h}, labels=labels)) == pytest.approx((2 + 6) / 4)
    assert float(loss.l_reduce({0: h}, completion_mask=labels != ts.IGNORE_INDEX)) == pytest.approx(2.0)
    assert float(loss.l_reduce({0: h}, labels=labels, sample_mask=torch.tensor([True, False]))) == 1.0
    assert float(loss.l_reduce({0: h}, labels=labels, sample_mask=torch.tensor([False, False]))) == 0.0
    shifted = ts.completion_mask_from_labels(labels, shift=True)
    assert shifted[0].tolist() == [False, True, True, False]


# ------------------------------------------------------------------ the loss on the real model
def test_gradients_reach_the_model_not_the_sae(emb, zh_targets):
    _, (features, alphas) = zh_targets
    model = copy.deepcopy(emb.hf_model)
    for p in model.parameters():
        p.requires_grad_(True)
    sae = emb.sae(3)
    loss_fn = ts.SASFTLoss(emb, features, alphas, weight=1.0)
    enc = emb.tokenize(["今天天气很好，孩子们在花园里玩。", "这家酒店的服务非常好，房间也很干净。"])
    with loss_fn.attach(model):
        model(**enc)
        loss = loss_fn(completion_mask=enc["attention_mask"].bool())
        assert loss_fn.attached
    assert not loss_fn.attached and not loss_fn._hidden
    assert loss.item() > 0  # Chinese text lifts Chinese features above their English mean
    loss.backward()
    blocks = model.get_submodule(emb.layers_path)
    assert blocks[3].mlp.down_proj.weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in sae.parameters())
    assert all(p.grad is None for p in emb.hf_model.parameters())  # the Lab's model is untouched
    # with the hooks off, a forward leaves nothing to compute a loss from
    model(**enc)
    with pytest.raises(RuntimeError, match="hooks attached"):
        loss_fn()


def test_pre_activations_match_the_sae(emb, zh_targets):
    _, (features, alphas) = zh_targets
    loss_fn = ts.SASFTLoss(emb, features, alphas)
    h = emb.residuals(emb.tokenize(EN[:1]), [3])[3]
    full = emb.sae(3).pre_activations(h)[..., features[3]]
    assert torch.allclose(loss_fn.pre_activations(3, h), full, atol=1e-5)


def test_sasft_trainer_adds_the_term(emb, data, zh_targets, tmp_path):
    from transformers import TrainingArguments

    _, (features, alphas) = zh_targets
    model = copy.deepcopy(emb.hf_model)
    for p in model.parameters():
        p.requires_grad_(True)
    tok = emb.tokenizer
    train = data["train"].head(8)
    rows = [{"input_ids": ids, "labels": [ts.IGNORE_INDEX] * plen + ids[plen:], "sasft_mask": lang != "zh",
             "note": "dropped by remove_unused_columns"}
            for (ids, plen), lang in zip(cse._encode_pairs(tok, train), train.language)]

    def collate(items):
        assert "note" not in items[0] and "sasft_mask" in items[0]  # the mask survives the column filter
        batch = cse._collate([(x["input_ids"], x["labels"].count(ts.IGNORE_INDEX)) for x in items],
                            tok.pad_token_id)
        batch["sasft_mask"] = torch.tensor([x["sasft_mask"] for x in items])
        return batch

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    sasft = ts.SASFTLoss((model, {3: emb.sae(3)}), features, alphas, weight=0.5)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True,
                             logging_steps=1, remove_unused_columns=True, disable_tqdm=True)
    trainer = ts.SASFTTrainer(model=model, args=args, train_dataset=Rows(), data_collator=collate, sasft=sasft)
    batch = collate([{k: v for k, v in r.items() if k != "note"} for r in rows[:4]])
    total = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        ce = model(**{k: v for k, v in batch.items() if k != "sasft_mask"}).loss
    assert sasft.last and total.item() == pytest.approx(float(ce) + 0.5 * sum(sasft.last.values()), rel=1e-4)
    before = model.get_input_embeddings().weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, model.get_input_embeddings().weight)
    sasft.detach()


# ------------------------------------------------------------------ finding features
def test_language_features_find_chinese_features(zh_targets):
    table, (features, alphas) = zh_targets
    zh = table[table.language == "zh"].sort_values("rank")
    assert (zh.monolinguality > 1.0).all() and (zh.fire_in > 0.5).all(), zh
    assert (zh.mean_in > 10 * zh.mean_others).all(), zh   # far stronger on Chinese than elsewhere
    assert zh.fire_others.median() < 0.1, zh  # and most of them rarely fire elsewhere at all
    assert (zh.alpha_zh > 0).all() and (zh.alpha_en < 0).all()  # pre-activation: high on Chinese, below 0 on English
    assert set(table.language) == {"en", "zh", "code"}
    assert len(features[3]) == 8 and alphas[3].shape == (8,)


def test_repetition_features_rise(emb):
    table = ts.repetition_features(emb, EN, layer=3, top=5, repeats=4)
    assert (table.rise > 0).all() and table.rise.iloc[0] > 0.5, table
    assert (table.copy_3 > table.copy_0).all()


def test_steered_rollouts_have_one_steered_rollout_per_group(emb):
    prompts = ["The old man walked", "def parse(line):"]
    frame = ts.steered_rollouts(emb, prompts, features=[5, 9], alphas=8.0, layer=2, group_size=3,
                                max_new_tokens=8, seed=1)
    assert len(frame) == 6 and list(frame.columns[:6]) == ["prompt", "group", "rollout", "steered", "alpha", "text"]
    per_group = frame.groupby("group").steered.sum()
    assert (per_group == 1).all()
    assert (frame[frame.steered].alpha == 8.0).all() and (frame[~frame.steered].alpha == 0.0).all()
    with pytest.raises(ValueError, match="layer="):
        ts.steered_rollouts(emb, prompts, features=[5], group_size=2)


# ------------------------------------------------------------------ the measured demo
def test_sasft_lowers_the_code_switch_ratio_more_than_plain_sft(emb):
    start = time.time()
    frame = cse.code_switch_experiment(emb, steps=30, weight=0.25, habit_steps=60, lr=1e-4, seed=0)
    rows = frame.set_index("arm")
    print(frame.to_string(), f"\n{time.time() - start:.0f}s")
    assert rows.loc["base", "code_switch_ratio"] == 0.0
    habit = rows.loc["habit", "code_switch_ratio"]
    assert habit >= 0.2  # the contaminated SFT gave the model the habit
    sft, sasft = rows.loc["sft", "code_switch_ratio"], rows.loc["sasft", "code_switch_ratio"]
    assert habit - sasft > habit - sft  # the criterion
    assert sasft <= 0.5 * sft, frame
    assert rows.loc["sasft", "zh_han_share"] > 0.3  # Chinese prompts still get Chinese answers
    # English answering is no worse than after plain SFT (answer-token CE on held-out clean English pairs)
    assert rows.loc["sasft", "answer_ce_en"] <= rows.loc["sft", "answer_ce_en"] + 0.05
    assert time.time() - start < 120


def test_cli_language_features_writes_csv(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    from qscope_lab.cli import training as training_commands

    training_commands.register(parser.add_subparsers(dest="command"))
    zh, en = tmp_path / "zh.txt", tmp_path / "en.txt"
    zh.write_text("今天天气很好，孩子们在花园里玩。\n这家酒店的服务非常好，房间也很干净。\n", encoding="utf-8")
    en.write_text("\n".join(EN) + "\n", encoding="utf-8")
    out = tmp_path / "lf.csv"
    args = parser.parse_args(["language-features", "--layer", "3", "--top", "3", "--texts", f"zh={zh}",
                              "--texts", f"en={en}", "--out", str(out)])
    args.func(args)
    frame = pd.read_csv(out)
    assert len(frame) == 6 and set(frame.language) == {"zh", "en"} and (frame.monolinguality > 0).all()
    with pytest.raises(ValueError, match="LANG=FILE"):
        training_commands.texts_by_language(["nofile"])
