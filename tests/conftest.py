"""Shared fixtures: the real Qwen3 tokenizer and tiny random-weight models of every Qwen-Scope architecture."""

from __future__ import annotations

import pytest
import torch

from qscope_lab import SAE, Lab
from qscope_lab.testing.tiny import ARCHITECTURES, qwen3_tokenizer, tiny_model

TEXTS = ["The cat sat on the mat.", "猫坐在垫子上。", "def add(a, b):\n    return a + b", "42"]
D_MODEL, D_SAE, K, N_LAYERS = 64, 256, 8, 4


@pytest.fixture(scope="session")
def tokenizer():
    return qwen3_tokenizer()


def random_saes(n_layers: int = N_LAYERS, d_model: int = D_MODEL) -> dict[int, SAE]:
    return {layer: SAE.random(d_model, D_SAE, K, seed=layer) for layer in range(n_layers)}


@pytest.fixture(scope="session")
def lab(tokenizer) -> Lab:
    """A dense Qwen3 Lab with random SAEs at every layer: the default subject of behaviour tests."""
    return Lab.load(tiny_model("Qwen3ForCausalLM"), tokenizer=tokenizer, saes=random_saes())


@pytest.fixture(scope="session", params=ARCHITECTURES)
def arch_lab(request, tokenizer) -> Lab:
    return Lab.load(tiny_model(request.param, seed=1), tokenizer=tokenizer, saes=random_saes())


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


def pytest_collection_modifyitems(config, items):
    """Real-browser tests last: Playwright's sync API keeps an asyncio loop marked as running in this thread for
    the rest of the session, which would make every later test look as if it ran inside a kernel."""
    browser = [item for item in items if "/tests/browser/" in str(item.fspath).replace("\\", "/")]
    if browser:
        others = [item for item in items if item not in browser]
        items[:] = others + browser
