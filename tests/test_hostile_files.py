"""Hostile SAE files: truncated, zero-byte, random bytes, NaN weights, integer tensors, wrong shapes and pickle
payloads, in every format and through every entry point (SAE.load, Lab.load, the CLI). Each gives an error
that names the file and what is wrong with it; a payload never runs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qscope_lab import SAE, Lab
from qscope_lab.cli.main import main
from qscope_lab.testing.tiny import tiny_model

D_MODEL, D_SAE, K = 64, 256, 8
GROUP = "SAE-Res-tiny-W1K-L0_8"  # a hub-pattern folder name: k = 8


class Exploit:
    """Unpickling this touches the marker named by $QSCOPE_PWNED: proof that code ran."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["QSCOPE_PWNED"]),))


def good_state() -> dict[str, torch.Tensor]:
    sae = SAE.random(D_MODEL, D_SAE, K, seed=3)
    return {name: getattr(sae, name).detach().clone() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}


def write_pt(path: Path, state) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_saelens(folder: Path, state, cfg=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = cfg if cfg is not None else {"architecture": "topk", "k": K, "hook_name": "blocks.1.hook_resid_post",
                                       "d_in": D_MODEL, "d_sae": D_SAE}
    (folder / "cfg.json").write_text(json.dumps(cfg) if isinstance(cfg, dict) else cfg)
    tensors = {"W_enc": state["W_enc"].T.contiguous(), "W_dec": state["W_dec"].T.contiguous(),
               "b_enc": state["b_enc"], "b_dec": state["b_dec"]}
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def write_qscope(path: Path, state) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sae = SAE(state["W_enc"].float(), state["b_enc"].float(), state["W_dec"].float(), state["b_dec"].float(), k=K,
              meta={"layer": 1})
    sae.save(path)
    if any(not t.is_floating_point() or not torch.isfinite(t).all() for t in state.values()):
        from safetensors.torch import load_file
        from safetensors.torch import save_file as save

        from qscope_lab.saes.formats import read_qscope_meta

        meta = {key: json.dumps(value) for key, value in read_qscope_meta(path).items()}
        tensors = load_file(path)
        tensors.update({name: t.contiguous() for name, t in state.items()})
        save(tensors, str(path), metadata=meta)
    return path


def nan_state():
    state = good_state()
    state["W_enc"][3, 5] = float("nan")
    return state


def int_state():
    return {name: (t * 100).to(torch.int64) for name, t in good_state().items()}


def transposed_state():
    state = good_state()
    state["W_dec"] = state["W_dec"].T.contiguous()
    return state


# (name, how to write the file at a folder, the message it must give)
def _pt(state):
    return lambda folder: write_pt(folder / GROUP / "layer1.sae.pt", state)


def _truncated_pt(folder: Path) -> Path:
    path = write_pt(folder / GROUP / "layer1.sae.pt", good_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bytes(name: str, data: bytes):
    def write(folder: Path) -> Path:
        path = folder / GROUP / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path
    return write


def _legacy_pickle(folder: Path) -> Path:
    path = folder / GROUP / "layer1.sae.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({"W_enc": Exploit()}, handle, protocol=2)
    return path


def _saelens_bad_json(folder: Path) -> Path:
    return write_saelens(folder / "sl", good_state(), cfg="{not json")


def _saelens_truncated(folder: Path) -> Path:
    out = write_saelens(folder / "sl", good_state())
    weights = out / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    return out


def _saelens_missing_tensor(folder: Path) -> Path:
    out = folder / "sl"
    write_saelens(out, good_state())
    state = good_state()
    save_file({"W_enc": state["W_enc"].T.contiguous(), "b_enc": state["b_enc"]}, str(out / "sae_weights.safetensors"))
    return out


CASES = [
    ("zero-byte .pt", _bytes("layer1.sae.pt", b""), r"is empty \(0 bytes\): not a torch checkpoint"),
    ("random bytes .pt", _bytes("layer1.sae.pt", os.urandom(4096).replace(b"\x80", b"\x01").replace(b"PK", b"pk")),
     "is not a torch checkpoint"),
    ("truncated .pt", _truncated_pt, "is truncated"),
    ("pickle payload (zip)", _pt({"W_enc": Exploit()}), "Nothing from it was executed"),
    ("pickle payload (legacy)", _legacy_pickle, "Nothing from it was executed"),
    ("NaN weights .pt", _pt(nan_state()), r"W_enc holds 1 NaN or infinite value"),
    ("integer tensors .pt", _pt(int_state()), "holds int64 values, not floats"),
    ("wrong shapes .pt", _pt(transposed_state()), r"W_dec looks transposed"),
    ("missing tensor .pt", _pt({"W_enc": good_state()["W_enc"]}), "expected keys"),
    ("zero-byte .safetensors", _bytes("layer1.sae.safetensors", b""), "not a readable safetensors file"),
    ("random bytes .safetensors", _bytes("layer1.sae.safetensors", os.urandom(2048)), "not a readable safetensors"),
    ("NaN weights .safetensors", lambda f: write_qscope(f / GROUP / "layer1.sae.safetensors", nan_state()),
     "NaN or infinite"),
    ("integer tensors .safetensors", lambda f: write_qscope(f / GROUP / "layer1.sae.safetensors", int_state()),
     "not floats"),
    ("SAELens cfg.json not JSON", _saelens_bad_json, r"cfg.json is not valid JSON"),
    ("SAELens truncated weights", _saelens_truncated, "not a readable safetensors file"),
    ("SAELens missing tensor", _saelens_missing_tensor, "no tensor W_dec"),
]


@pytest.fixture
def pwned(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("QSCOPE_PWNED", str(marker))
    return marker


@pytest.mark.parametrize("name,write,message", CASES, ids=[c[0] for c in CASES])
def test_sae_load_names_the_file_and_the_damage(tmp_path, pwned, name, write, message):
    path = write(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        SAE.load(path)
    text = str(info.value)
    assert str(path) in text or str(path.parent) in text, text
    assert pytest.importorskip("re").search(message, text), text
    assert not pwned.exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("hostile") / "tiny"
    tiny_model(layers=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name,write,message", [c for c in CASES if c[0] in (
    "zero-byte .pt", "truncated .pt", "pickle payload (zip)", "NaN weights .pt", "SAELens cfg.json not JSON")],
    ids=lambda c: c if isinstance(c, str) else "")
def test_lab_and_cli_name_the_file(tmp_path, pwned, model_dir, capsys, name, write, message):
    path = write(tmp_path)
    saes = path.parent if path.suffix else path  # a group folder, or a SAELens folder
    with pytest.raises(ValueError, match=message):
        Lab.load(model_dir, saes=saes).sae(1)  # a group folder is read lazily, a SAELens folder at once
    assert main(["info", "-m", str(model_dir), "-s", str(saes), "--layer", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("qscope-lab info: error:"), err  # one line
    assert "weights_only=False" not in err and "Traceback" not in err
    assert pwned.exists() is False


def test_missing_local_paths_are_not_taken_for_hub_ids(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such file or folder: ./nowhere/layer3.sae.pt"):
        SAE.load("./nowhere/layer3.sae.pt")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        SAE.load(str(tmp_path / "missing"), layer=3)
    assert main(["info", "-s", str(tmp_path / "missing"), "--layer", "1"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys):
    cases = [
        (["steer", "--steer", "5=nan", "hi"], "alpha must be a finite number"),
        (["steer", "--device", "cuda:3", "--steer", "5=1", "hi"], "device='cuda:3'"),
        (["encode", "--layer", "9", "hi"], "layer must be an int in 0..3"),
        (["encode", "--out", str(tmp_path / "no" / "such" / "x.csv"), "hi"], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, (argv, err)
