"""Shared fixtures: the real Qwen3 tokenizer, tiny random-weight models of every Qwen-Scope architecture, and a
real OpenAI-compatible server (``transformers serve``) on the embedded model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from qscope_lab import SAE, Lab, embedded
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


SERVER_MAX_LEN = 1024  # the server refuses longer requests: a real per-item server error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    """``transformers serve`` on the embedded model, one per session (the LLM explainer's tests, local and on
    Ray): (base_url, model name)."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if exe is None:
        pytest.skip("transformers serve is not installed (pip install 'transformers[serving]')")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    model = str(embedded.MODEL_DIR)
    proc = subprocess.Popen([exe, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             "--max-model-len", str(SERVER_MAX_LEN), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=1) as reply:
                    name = json.loads(reply.read())["data"][0]["id"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("transformers serve did not answer within 120 s")
        yield base + "/v1", name
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A scratch ``QSCOPE_LAB_HOME`` for one test module (labels, explanations of the shipped index)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def elab(home):
    """The embedded default, writing its labels and explanations under ``home``, never the user's own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("QSCOPE_LAB_HOME", str(home))
    lab = Lab.load()
    yield lab
    mp.undo()


def start_ray():
    """A local Ray of 2 CPUs (the caller shuts it down); tried twice: a raylet has 30 s to register, and on two
    busy shared cores it sometimes misses that."""
    ray = pytest.importorskip("ray")
    for attempt in range(2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return ray
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    return ray
