"""The qscope-lab command: registry table, info, encode and steer on a local model + SAE folder."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# ---------------------------------------------------------------------------------------------- numeric options
ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "/nonexistent/model"  # never reached: every number is refused while parsing, before any model loads
BAD_NUMBERS = [
    (["sasft-demo", "--steps", "-1"], "--steps", "at least 1"),
    (["sasft-demo", "--steps", "0"], "--steps", "at least 1"),
    (["sasft-demo", "--weight", "nan"], "--weight", "finite"),
    (["sasft-demo", "--weight", "0.25", "--weight", "inf"], "--weight", "finite"),
    (["sasft-demo", "--weight", "-0.5"], "--weight", "at least 0"),
    (["sasft-demo", "--habit-steps", "-1"], "--habit-steps", "at least 0"),
    (["sasft-demo", "--features", "0"], "--features", "at least 1"),
    (["sasft-demo", "--layer", "-1"], "--layer", "at least 0"),
    (["sasft-demo", "--seed", "-3"], "--seed", "at least 0"),
    (["sasft-demo", "--steps", "1.5"], "--steps", "must be an int"),
    (["language-features", "--top", "0"], "--top", "at least 1"),
    (["language-features", "--layer", "-2"], "--layer", "at least 0"),
    (["encode", "--top", "0", "hi"], "--top", "at least 1"),
    (["encode", "--max-firing-rate", "0", "hi"], "--max-firing-rate", "more than 0"),
    (["encode", "--max-firing-rate", "nan", "hi"], "--max-firing-rate", "finite"),
    (["encode", "--max-firing-rate", "1.5", "hi"], "--max-firing-rate", "at most 1"),
    (["encode", "--layer", "-1", "hi"], "--layer", "at least 0"),
    (["encode", "--k", "0", "hi"], "--k", "at least 1"),
    (["info", "--layer", "-1"], "--layer", "at least 0"),
    (["steer", "--steer", "5=1", "--max-new-tokens", "0", "hi"], "--max-new-tokens", "at least 1"),
    (["steer", "--steer", "5=1", "--layer", "-1", "hi"], "--layer", "at least 0"),
    (["classify", "--train", "t.csv", "--n-layers", "0"], "--n-layers", "at least 1"),
    (["classify", "--train", "t.csv", "--top-k", "33"], "--top-k", "from 1 to 32"),
    (["classify", "--train", "t.csv", "--statistic", "bogus"], "--statistic", "invalid choice"),
    (["coverage", "--benchmark", "a.txt", "--batch-size", "0"], "--batch-size", "at least 1"),
    (["coverage", "--benchmark", "a.txt", "--max-length", "-1"], "--max-length", "at least 0"),
    (["coverage", "--benchmark", "a.txt", "--max-length", "1"], "--max-length", "at least 2"),
    (["coverage", "--benchmark", "a.txt", "--n-orders", "0"], "--n-orders", "at least 1"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--alphas", "4,nan"], "--alphas", "finite"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--alphas", "1e30"], "--alphas", "at most 10000"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--alphas", ","], "--alphas", "comma-separated"),
    (["synthesize", "--seeds", "s.txt", "--targets", "a,b"], "--targets", "feature ids"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--n-targets", "0"], "--n-targets", "at least 1"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--per-target", "0"], "--per-target", "at least 1"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--max-new-tokens", "0"], "--max-new-tokens",
     "at least 1"),
    (["synthesize", "--seeds", "s.txt", "--targets", "1", "--seed", "-1"], "--seed", "at least 0"),
]


@pytest.mark.parametrize("argv,option,message", BAD_NUMBERS, ids=[" ".join(c[0]) for c in BAD_NUMBERS])
def test_every_numeric_option_is_refused_while_parsing(capsys, argv, option, message):
    """Exit code 2 and argparse's one error line naming the option, before the model (here a path that does not
    exist) is ever looked at; today ``sasft-demo --steps -1`` and ``--weight nan`` ran and exited 0."""
    command = argv[0]
    code = main([command, "-m", NOWHERE, *argv[1:]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith(f"qscope-lab {command}: error: argument {option}"), err
    assert message in last and NOWHERE not in err and "Traceback" not in err


def test_sasft_demo_recipe_refuses_bad_numbers():
    for args, message in ((["--steps", "-1"], "argument --steps: must be at least 1"),
                          (["--weights", "0.1", "nan"], "argument --weights: must be a finite number"),
                          (["--lr", "0"], "argument --lr: must be more than 0")):
        result = subprocess.run([sys.executable, str(ROOT / "recipes" / "sasft_demo.py"), *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_help_returns_zero():
    assert main(["saes", "--help"]) == 0


# ---------------------------------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/wchan to interrupt at a known "
                                                                  "point")
def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path):
    """A real SIGINT while the command is inside its work (blocked opening its --out, a FIFO nobody reads)."""
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "qscope_lab.cli", "saes", "--out", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
        if "fifo" in wchan or "partner" in wchan:  # inside open(): the command is running
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the command never reached its output file")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "qscope-lab saes: interrupted: this command does not resume; run it again to start over"


def test_an_interrupted_index_build_says_how_to_resume():
    from qscope_lab.cli.main import build_parser, resume_hint

    args = build_parser().parse_args(["index", "build", "--corpus", "docs.jsonl", "--out", "my-index"])
    assert "run the same command again to resume the build at my-index" in resume_hint(args)


def test_classify_save_refuses_to_replace_a_notebook_before_the_model_loads(tmp_path, capsys):
    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text('{"cells": [], "nbformat": 4}')
    train = tmp_path / "t.csv"
    pd.DataFrame({"text": ["a b", "c d"], "label": [0, 1]}).to_csv(train, index=False)
    assert main(["classify", "-m", NOWHERE, "--train", str(train), "--save", str(notebook)]) == 2
    err = capsys.readouterr().err
    assert "analysis.ipynb exists and is not a SeedClassifier file" in err and "--overwrite" in err
    assert notebook.read_text() == '{"cells": [], "nbformat": 4}'


def test_ctrl_c_arriving_inside_a_finaliser_still_stops_the_command():
    """A SIGINT that lands while a ``__del__`` runs (a progress bar being collected) is dropped by Python
    ("Exception ignored in ...") and the command would run on: ``ctrl_c_lands`` raises it again outside."""
    from qscope_lab.cli.main import ctrl_c_lands

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside __del__

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_lands():
            Finalised()  # collected at once: the interrupt arrives inside its __del__
            time.sleep(2)
    assert time.perf_counter() - start < 1.0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
