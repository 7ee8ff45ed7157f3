"""The qscope-lab command: registry table, info, encode and steer on a local model + SAE folder."""

import subprocess
import sys

import pandas as pd
import pytest

from qscope_lab import SAE
from qscope_lab.cli import main
from qscope_lab.cli.steer import parse_steer_args
from qscope_lab.testing.tiny import tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli")
    model_dir, sae_dir = root / "tiny-qwen3", root / "SAE-Res-tiny-W1K-L0_8"
    tiny_model(layers=3).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for layer in range(3):
        SAE.random(64, 1024, 8, seed=layer).save(sae_dir / f"layer{layer}.sae.pt", format="qwen-scope")
    return str(model_dir), str(sae_dir)


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qscope_lab.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_saes_lists_the_registry(tmp_path):
    result = run("saes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Qwen/SAE-Res-") == 14
    out = tmp_path / "groups.csv"
    assert main(["saes", "--backbone", "Qwen3.5-27B", "--out", str(out)]) == 0
    assert list(pd.read_csv(out).repo_id) == ["Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50",
                                              "Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_100"]


def test_info_encode_steer(checkpoint, tmp_path, capsys):
    model, saes = checkpoint
    assert main(["info", "-m", model, "-s", saes, "--layer", "1"]) == 0
    out = capsys.readouterr().out
    assert "Qwen3ForCausalLM" in out and "d_sae=1024, k=8, layer=1" in out

    csv = tmp_path / "acts.csv"
    assert main(["encode", "-m", model, "-s", saes, "--layer", "2", "--top", "3", "--out", str(csv),
                 "The cat sat.", "猫在睡觉。"]) == 0
    frame = pd.read_csv(csv)
    assert set(frame.text) == {0, 1} and frame["rank"].max() == 2 and frame.feature.between(0, 1023).all()

    result = run("steer", "-m", model, "-s", saes, "--layer", "1", "--steer", "5=40", "--steer", "2:7=-10",
                 "--max-new-tokens", "6", "Hello there")
    assert result.returncode == 0, result.stderr
    assert "layer 1 feature 5 add +40" in result.stdout and "layer 2 feature 7 add -10" in result.stdout
    assert "baseline:" in result.stdout and "steered:" in result.stdout


def test_bad_input_gives_a_clear_error(checkpoint, capsys):
    model, saes = checkpoint
    assert main(["encode", "-m", model, "-s", saes, "--layer", "9", "hi"]) == 2
    assert "layer must be an int in 0..2" in capsys.readouterr().err
    assert main(["saes", "--backbone", "gpt2"]) == 2
    with pytest.raises(ValueError, match="LAYER:FEATURE=ALPHA"):
        parse_steer_args(["5"], layer=1)
    assert parse_steer_args(["5=-2.5", "3:9=1"], layer=1) == {(1, 5): -2.5, (3, 9): 1.0}
