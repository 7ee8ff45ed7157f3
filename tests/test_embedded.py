"""The embedded default: offline, small, and its SAEs faithful with features that mean something."""

import json
import unicodedata

import pytest
import torch

from qscope_lab import Lab, embedded
from qscope_lab.analysis.features import span_labels
from qscope_lab.analysis.text_predicates import han_share, is_han

EVAL = json.loads((embedded.HERE / "evaluation.json").read_text())
EN = ["The weather today is fine and the children are playing outside in the garden.",
      "He opened the letter and read it twice before he said a word."]
ZH = ["今天天气很好，孩子们在花园里玩。", "这家酒店的服务非常好，房间也很干净。"]
CODE = ["def mean(values):\n    total = sum(values)\n    return total / len(values)\n"]


@pytest.fixture(scope="module")
def default_lab():
    return Lab.load()


def test_loads_offline_with_an_sae_at_every_layer(default_lab, monkeypatch):
    lab = default_lab
    assert lab.name == "qscope-embedded" and lab.architecture == "Qwen3ForCausalLM"
    assert type(lab.tokenizer).__name__ == "Qwen2Tokenizer"
    assert lab.saes.layers == list(range(lab.n_layers))
    sae = lab.sae(0)
    assert (sae.d_sae, sae.k, sae.dtype) == (16 * lab.d_model, 64, torch.float32)
    chat = lab.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>user\nhi<|im_end|>")


def test_shipped_files_fit_the_budget():
    total = sum(p.stat().st_size for p in embedded.HERE.rglob("*") if p.is_file())
    assert total < 20 * 1024 * 1024, total


def _shown(tokens) -> str:
    """A context as a reader compares it: NFKC, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", "".join(tokens)).split())


def test_no_feature_shows_the_same_text_twice_in_the_shipped_index(default_lab):
    """Every feature of every layer of the shipped index: its top contexts never repeat a text (the held-out
    documents are deduplicated and the index keeps distinct windows), and none is cut short for it beyond one."""
    index = default_lab.index
    assert index.params["distinct_contexts"]
    short = 0
    for layer in index.layers:
        stats = index.stats(layer)
        for feature in stats.index[stats.firing_count > 0].tolist():
            shown = [_shown(t) for t in index.top_contexts(layer, feature).tokens]
            assert len(shown) == len(set(shown)), (layer, feature, shown)
            short += len(shown) < min(index.params["n_top"], stats.firing_count[feature])
    assert short < 0.01 * sum(len(index.stats(x)) for x in index.layers)  # windows that read alike, dropped


def test_reconstruction_is_faithful(default_lab):
    report = default_lab.reconstruct(EN + ZH + CODE, layer=list(range(default_lab.n_layers)))
    assert (report.fvu < 0.2).all(), report
    assert (report.ce_delta < 0.2).all(), report
    for row in EVAL["sae_quality"]:  # the model card's held-out numbers, per layer and language
        assert row["fve"] >= 0.88, row  # the targets, met in all 12 (layer, language) pairs
        assert row["ce_delta"] <= 0.10, row
    for name in ("han", "digit", "code"):
        assert EVAL["features"][name]["precision"] >= 0.9, name


def test_han_feature_fires_on_chinese_only(default_lab):
    han = EVAL["features"]["han"]
    zh = ZH + ["我昨天看完了这本书，今天又买了一本。", "他们已经走了，我们也该回家了。"]
    acts = default_lab.encode(EN + zh, layer=han["layer"], skip_first=True)
    per_text = acts.feature(han["feature"])
    fired = torch.cat(per_text) > 0
    in_han = span_labels(default_lab.tokenizer, acts, is_han)  # byte tokens of a split character count as Han
    precision = int((fired & in_han).sum()) / max(int(fired.sum()), 1)
    assert precision >= 0.9 and int(fired.sum()) >= 0.3 * int(in_han.sum())
    assert all((v == 0).all() for v in per_text[:len(EN)])


def test_chinese_feature_steers_english_into_chinese(default_lab):
    steer = EVAL["steering"]
    best = max((r for r in steer["sweep"] if r["prompts"] == "en"), key=lambda r: r["han_share"])
    gen = default_lab.generate("The weather today is", layer=steer["layer"],
                               steer={steer["feature"]: float(best["alpha"])}, max_new_tokens=32, min_new_tokens=32)
    assert han_share(gen.steered[0]) > 0.5 > han_share(gen.baseline[0])
