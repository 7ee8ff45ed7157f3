"""qscope_lab agrees with SAELens' own Qwen-Scope loader to float32 precision.

The expected values were produced by SAELens 6.54 (tests/data/make_saelens_reference.py) from the committed
Qwen-Scope-format checkpoint; SAELens itself is not a runtime or test dependency.
"""

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from qscope_lab import SAE

DATA = Path(__file__).parent / "data" / "saelens_reference"


def test_encode_decode_match_saelens():
    expected = load_file(DATA / "expected.safetensors")
    with safe_open(str(DATA / "expected.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    sae = SAE.load(DATA / "layer3.sae.pt", k=int(meta["k"]))
    assert sae.layer == 3
    acts = sae.encode(expected["x"])
    assert torch.equal(acts > 0, expected["acts"] > 0)  # the same features fire
    assert torch.allclose(acts, expected["acts"], rtol=1e-5, atol=1e-5)
    assert torch.allclose(sae.decode(acts), expected["x_hat"], rtol=1e-5, atol=1e-5)
    values, indices = sae.encode_sparse(expected["x"])
    assert torch.allclose(sae.decode_sparse(values, indices), expected["x_hat"], rtol=1e-5, atol=1e-5)
