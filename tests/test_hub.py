"""Hub ids work from the local cache, only the file asked for is used, and offline failures are fast and clear."""

import time

import pytest
import torch

from qscope_lab import SAE, HubUnavailableError, Lab
from qscope_lab.saes import hub
from qscope_lab.testing.tiny import tiny_model

REPO = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own, with the Hub unreachable (a closed loopback port)."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.forget_probe()
    yield cache
    hub.forget_probe()


def cache_snapshot(cache, repo: str, kind: str = "models"):
    """Lay out a repo in the HF cache format (refs/main -> snapshots/<commit>/) as hf download would."""
    root = cache / f"{kind}--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    return snap


def test_missing_layer_fails_fast_naming_file_and_remedy(hf_cache):
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as err:
        SAE.load(REPO, layer=3)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "layer3.sae.pt" in message and REPO in message and "hf download" in message
    assert "cannot be reached" in message


def test_offline_flag_is_respected(hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set"):
        SAE.load(REPO, layer=0)


def test_cached_layer_loads_offline_and_only_that_file(hf_cache):
    snap = cache_snapshot(hf_cache, REPO)
    SAE.random(2048, 64, 50, seed=0).save(snap / "layer5.sae.pt", format="qwen-scope")
    sae = SAE.load(REPO, layer=5)
    assert (sae.k, sae.d_model, sae.d_sae, sae.layer) == (50, 2048, 64, 5)
    assert sae.meta["repo_id"] == REPO
    with pytest.raises(HubUnavailableError, match="layer6.sae.pt"):
        SAE.load(REPO, layer=6)


def test_model_hub_id_offline(hf_cache, tokenizer):
    with pytest.raises(HubUnavailableError, match="Qwen/Qwen3-1.7B-Base"):
        Lab.load("Qwen/Qwen3-1.7B-Base")
    snap = cache_snapshot(hf_cache, "tiny-org/tiny-qwen3")
    tiny_model(layers=2).save_pretrained(snap)
    tokenizer.save_pretrained(snap)
    lab = Lab.load("tiny-org/tiny-qwen3", saes={0: SAE.random(64, 128, 4)})
    assert lab.n_layers == 2 and lab.name == "tiny-org/tiny-qwen3"
    assert lab.encode("hello", layer=0).n_tokens == 1


def test_registered_backbone_gets_its_group_lazily_and_width_is_checked(hf_cache, tokenizer):
    snap = cache_snapshot(hf_cache, "Qwen/Qwen3-1.7B-Base")
    tiny_model(layers=2).save_pretrained(snap)
    tokenizer.save_pretrained(snap)
    with pytest.raises(ValueError, match="d_model=2048 but .*hidden_size=64"):
        Lab.load("Qwen/Qwen3-1.7B-Base")  # the 1.7B SAEs cannot sit on a 64-wide model
    lab = Lab.load(snap)
    assert lab.saes is None
    with pytest.raises(ValueError, match="has no SAEs"):
        lab.sae(0)


def test_device_and_dtype_are_applied(tokenizer):
    lab = Lab.load(tiny_model(), tokenizer=tokenizer, dtype="bfloat16", saes={1: SAE.random(64, 128, 4)})
    assert next(lab.hf_model.parameters()).dtype == torch.bfloat16
    assert lab.sae(1).dtype == torch.float32  # SAEs encode in float32, as Qwen-Scope specifies
    acts = lab.encode("The cat sat.", layer=1)
    assert acts.values.dtype == torch.float32
