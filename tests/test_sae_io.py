"""Checkpoint formats: exact Qwen-Scope files, SAELens folders, our safetensors; safety; lazy suites."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qscope_lab import SAE, SAESuite, UnsafeCheckpointError

GROUP_DIR = "SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"  # a hub-pattern folder name carries k


def write_qwen_scope(folder: Path, layers=range(3), d_model=32, d_sae=128) -> dict[int, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    states = {}
    for layer in layers:
        gen = torch.Generator().manual_seed(layer)
        states[layer] = {"W_enc": torch.randn(d_sae, d_model, generator=gen),
                         "W_dec": torch.randn(d_model, d_sae, generator=gen),
                         "b_enc": torch.randn(d_sae, generator=gen), "b_dec": torch.randn(d_model, generator=gen)}
        torch.save(states[layer], folder / f"layer{layer}.sae.pt")
    return states


def test_qwen_scope_file_round_trips_exactly(tmp_path):
    states = write_qwen_scope(tmp_path / GROUP_DIR)
    sae = SAE.load(tmp_path / GROUP_DIR / "layer1.sae.pt")
    assert (sae.k, sae.d_model, sae.d_sae, sae.layer) == (50, 32, 128, 1)
    for name, tensor in states[1].items():
        assert torch.equal(getattr(sae, name), tensor)
    assert sae.W_enc.is_contiguous() and sae.W_dec.is_contiguous()  # stored orientation used as is
    out = tmp_path / "copy" / "layer1.sae.pt"
    sae.save(out, format="qwen-scope")
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    assert all(torch.equal(raw[n], states[1][n]) and raw[n].dtype == torch.float32 for n in raw)


def test_k_comes_from_argument_or_name(tmp_path):
    write_qwen_scope(tmp_path / "plain", layers=[0])
    with pytest.raises(ValueError, match="pass k="):
        SAE.load(tmp_path / "plain" / "layer0.sae.pt")
    assert SAE.load(tmp_path / "plain" / "layer0.sae.pt", k=7).k == 7
    assert SAE.load(tmp_path / "plain", k=9).k == 9  # folder with one layer


def test_pickle_that_runs_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / GROUP_DIR / "layer0.sae.pt"
    path.parent.mkdir()
    with open(path, "wb") as handle:
        pickle.dump({"W_enc": Exploit()}, handle)
    with pytest.raises(UnsafeCheckpointError, match="Nothing from it was executed"):
        SAE.load(path)
    assert not marker.exists()
    # the same through torch.save's zip format
    torch.save({"W_enc": Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError):
        SAE.load(path)
    assert not marker.exists()


def test_shape_mismatch_names_both_shapes(tmp_path):
    folder = tmp_path / GROUP_DIR
    states = write_qwen_scope(folder, layers=[0])
    bad = dict(states[0], W_dec=states[0]["W_dec"].T.contiguous())  # SAELens orientation in a .pt
    torch.save(bad, folder / "layer0.sae.pt")
    with pytest.raises(ValueError, match=r"W_dec has shape \(128, 32\).*W_enc \(128, 32\).*\(32, 128\)"):
        SAE.load(folder / "layer0.sae.pt")
    torch.save({"W_enc": states[0]["W_enc"]}, folder / "layer0.sae.pt")
    with pytest.raises(ValueError, match="expected keys"):
        SAE.load(folder / "layer0.sae.pt")


def test_saelens_folder_matches_qwen_scope(tmp_path):
    states = write_qwen_scope(tmp_path / GROUP_DIR, layers=[2])
    st = states[2]
    folder = tmp_path / "blocks.2.hook_resid_post"
    folder.mkdir()
    save_file({"W_enc": st["W_enc"].T.contiguous(), "W_dec": st["W_dec"].T.contiguous(),
               "b_enc": st["b_enc"], "b_dec": st["b_dec"]}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "k": 50, "d_in": 32, "d_sae": 128, "apply_b_dec_to_input": False,
        "hook_name": "blocks.2.hook_resid_post"}))
    a, b = SAE.load(folder), SAE.load(tmp_path / GROUP_DIR / "layer2.sae.pt")
    assert a.layer == 2 and a.k == 50
    x = torch.randn(6, 32)
    assert torch.allclose(a.encode(x), b.encode(x), atol=1e-5)
    assert torch.allclose(a.decode(a.encode(x)), b.decode(b.encode(x)), atol=1e-5)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(dict(cfg, architecture="jumprelu")))
    with pytest.raises(ValueError, match="only TopK"):
        SAE.load(folder)


def test_qscope_safetensors_in_bfloat16(tmp_path):
    sae = SAE.random(32, 128, 5, seed=1)
    sae.meta["layer"] = 3
    path = sae.save(tmp_path / "layer3.sae.safetensors", dtype=torch.bfloat16)
    assert path.stat().st_size < 2 * 2 * 32 * 128 + 4096  # two bf16 matrices plus header
    back = SAE.load(path)
    assert (back.k, back.layer, back.dtype) == (5, 3, torch.float32)
    assert torch.allclose(back.W_dec, sae.W_dec, atol=1e-2)


def test_suite_loads_lazily_with_a_byte_budget(tmp_path):
    write_qwen_scope(tmp_path / GROUP_DIR, layers=range(5))
    one_layer = 4 * (2 * 32 * 128 + 128 + 32)
    suite = SAESuite.open(tmp_path / GROUP_DIR, cache_bytes=2 * one_layer)
    assert suite.layers == [0, 1, 2, 3, 4] and suite.loads == 0 and suite.k == 50
    suite[3]
    suite[3]
    assert suite.loads == 1
    suite[1]
    suite[4]
    assert suite.cached_layers == [1, 4]  # layer 3 was least recently used
    suite[3]
    assert suite.loads == 4
    with pytest.raises(KeyError, match="no SAE for layer 7"):
        suite[7]


def test_folder_errors_are_clear(tmp_path):
    write_qwen_scope(tmp_path / GROUP_DIR, layers=[0, 1])
    with pytest.raises(ValueError, match=r"holds layers \[0, 1\]: pass layer="):
        SAE.load(tmp_path / GROUP_DIR)
    with pytest.raises(FileNotFoundError, match="no SAE for layer 5"):
        SAE.load(tmp_path / GROUP_DIR, layer=5)
    write_qwen_scope(tmp_path / "unnamed", layers=[0])
    with pytest.raises(ValueError, match="carry no config: pass k="):
        SAESuite.open(tmp_path / "unnamed")
    assert SAESuite.open(tmp_path / "unnamed", k=12)[0].k == 12
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="contains no SAE files"):
        SAESuite.open(tmp_path / "empty")


def test_suite_of_saelens_folders_finds_layers_from_their_configs(tmp_path):
    for layer in (1, 3):
        sae = SAE.random(16, 32, 4, seed=layer)
        folder = tmp_path / "release" / f"blocks.{layer}.hook_resid_post"
        folder.mkdir(parents=True)
        save_file({"W_enc": sae.W_enc.T.contiguous(), "W_dec": sae.W_dec.T.contiguous(), "b_enc": sae.b_enc,
                   "b_dec": sae.b_dec}, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "k": 4,
                                                     "hook_name": f"blocks.{layer}.hook_resid_post"}))
    suite = SAESuite.open(tmp_path / "release")
    assert suite.layers == [1, 3] and suite.loads == 0
    assert torch.allclose(suite[3].W_dec, SAE.random(16, 32, 4, seed=3).W_dec)


def test_an_explicit_k_wins_over_the_files_own(tmp_path):
    """Issue 29: ``SAE.load(path, k=8)`` of a file written with k=64 gave k=64 in silence."""
    path = SAE.random(32, 128, 64, seed=3).save(tmp_path / "layer0.sae.safetensors")
    assert SAE.load(path).k == 64
    x = torch.randn(5, 32)
    for sae in (SAE.load(path, k=8), SAESuite.open(path, k=8)[0], SAESuite.open(tmp_path, k=8)[0]):
        assert sae.k == 8
        values, _ = sae.encode_sparse(x)
        assert values.shape == (5, 8) and ((sae.encode(x) != 0).sum(-1) <= 8).all()
    assert SAESuite.open(tmp_path, k=8).k == 8
    mine = SAE.random(32, 128, 64, seed=4)
    suite = SAESuite.open({0: mine}, k=8)
    assert suite[0].k == 8 and suite.k == 8 and mine.k == 64  # the caller's SAE object is left as it was
    assert suite[0].W_dec.data_ptr() == mine.W_dec.data_ptr()  # same weights, not a copy
    named = tmp_path / GROUP_DIR  # a hub-pattern name (k=50) does not override a file's own config
    SAE.random(32, 128, 64, seed=5).save(named / "layer1.sae.safetensors")
    assert SAESuite.open(named)[1].k == 64 and SAESuite.open(named, k=8)[1].k == 8
    with pytest.raises(ValueError, match="k must be at least 1"):
        SAE.load(path, k=0)


def test_lab_load_with_k_encodes_with_at_most_k_features():
    from qscope_lab import Lab

    text = "The weather today is sunny, and the cat sat on the mat."
    default = Lab.load()
    assert default.sae(2).k == 64 and int((default.encode(text, layer=2).values > 0).sum(-1).max()) > 8
    lab = Lab.load(k=8)
    acts = lab.encode(text, layer=2)
    assert lab.sae(2).k == 8 and acts.values.shape[-1] == 8
    assert int((acts.values > 0).sum(-1).max()) <= 8
    assert lab.info().set_index("field").loc["k", "value"] == "8"


def test_finiteness_check_runs_once_per_unchanged_file(tmp_path):
    """The pass over the weights is remembered by (path, size, mtime): a reload skips it, a rewrite repeats it."""
    import os

    from qscope_lab.saes import formats

    states = write_qwen_scope(tmp_path / GROUP_DIR, layers=[0])
    path = tmp_path / GROUP_DIR / "layer0.sae.pt"
    os.utime(path, (1_000_000_000, 1_000_000_000))
    formats.forget_checks()
    before = dict(formats.CHECKS)
    first, second = SAE.load(path), SAE.load(path)
    assert formats.CHECKS["run"] - before["run"] == 1 and formats.CHECKS["skipped"] - before["skipped"] == 1
    assert torch.equal(first.W_enc, second.W_enc)
    broken = dict(states[0], W_enc=states[0]["W_enc"].clone())
    broken["W_enc"][77, 3] = float("nan")  # same size on disk, new contents
    torch.save(broken, path)
    os.utime(path, (1_000_000_100, 1_000_000_100))
    with pytest.raises(ValueError, match="W_enc holds 1 NaN or infinite value"):
        SAE.load(path)
    torch.save(states[0], path)  # just written (mtime now): checked on every read, as git treats racy files
    runs = formats.CHECKS["run"]
    SAE.load(path), SAE.load(path)
    assert formats.CHECKS["run"] == runs + 2


def test_non_finite_values_are_counted_in_slices_without_a_float64_copy(monkeypatch):
    from qscope_lab.saes import formats

    monkeypatch.setattr(formats, "CHECK_CHUNK_ELEMENTS", 64)  # many slices even for a small tensor
    t = torch.zeros(300, 50)
    t[0, 0], t[150, 7], t[299, 49] = float("nan"), float("inf"), -float("inf")
    assert formats._nonfinite(t) == 3 and formats._nonfinite(t.T) == 3  # a transposed view: no copy needed
    assert formats._nonfinite(torch.zeros(0, 5)) == 0 and formats._nonfinite(torch.tensor(float("nan"))) == 1


def test_layer_sizes_come_from_file_headers_without_reading_weights(tmp_path):
    write_qwen_scope(tmp_path / GROUP_DIR, layers=range(3))
    sae = SAE.random(32, 128, 4, seed=0)
    sae.meta["layer"] = 5
    sae.save(tmp_path / "st" / "layer5.sae.safetensors")
    for folder, layer in ((tmp_path / GROUP_DIR, 1), (tmp_path / "st", 5)):
        suite = SAESuite.open(folder, k=4)
        assert suite.layer_nbytes(layer) == 4 * (2 * 32 * 128 + 32 + 128) and suite.loads == 0
        assert suite[layer].nbytes == suite.layer_nbytes(layer) and suite.load_counts == {layer: 1}


def test_finite_values_whose_sum_overflows_pass_the_check():
    from qscope_lab.saes import formats

    huge = torch.full((4, 8), 3e38)  # every value finite; their float32 sum is not
    formats.check_values({"W_enc": huge, "W_dec": huge.T, "b_enc": huge[0], "b_dec": huge[:, 0]}, "big.pt")
    half = torch.full((4, 8), 60000.0, dtype=torch.float16)  # fp16 sums overflow at 65504: summed in float32
    assert formats._nonfinite(half) == 0
