"""qscope-lab steer: the steering methods and generation controls on the command line, checked before the model
loads."""

import pytest

from qscope_lab import SAE
from qscope_lab.base.defaults import DEFAULT_REPETITION_PENALTY
from qscope_lab.cli import main
from qscope_lab.testing.tiny import tiny_model

NOWHERE = "/nonexistent/qscope-model"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli-steer")
    model_dir, sae_dir = root / "tiny-qwen3", root / "SAE-Res-tiny-W1K-L0_8"
    tiny_model(layers=3).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for layer in range(3):
        SAE.random(64, 1024, 8, seed=layer).save(sae_dir / f"layer{layer}.sae.pt", format="qwen-scope")
    return str(model_dir), str(sae_dir)


BAD = [
    (["--temperature", "0"], "--temperature", "more than 0"),
    (["--temperature", "nan"], "--temperature", "finite"),
    (["--top-p", "0"], "--top-p", "more than 0"),
    (["--top-p", "1.5"], "--top-p", "at most 1"),
    (["--repetition-penalty", "0"], "--repetition-penalty", "more than 0"),
    (["--repetition-penalty", "-1.3"], "--repetition-penalty", "more than 0"),
    (["--seed", "-1"], "--seed", "at least 0"),
    (["--seed", "1.5"], "--seed", "must be an int"),
    (["--when", "1:x"], "--when", "LAYER:FEATURE"),
    (["--when", "1:4>inf"], "--when", "finite"),
    (["--when=-1:4"], "--when", "at least 0"),
    (["--mode", "boost"], "--mode", "invalid choice"),
]


@pytest.mark.parametrize("extra,option,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_options_are_refused_before_the_model_loads(capsys, extra, option, message):
    code = main(["steer", "-m", NOWHERE, "--steer", "5=1", *extra, "hi"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith(f"qscope-lab steer: error: argument {option}"), err
    assert message in last and NOWHERE not in err


def test_help_names_the_modes_and_the_default_penalty(capsys):
    assert main(["steer", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"default: the library's {DEFAULT_REPETITION_PENALTY:g}" in out
    for mode in ("cap", "orthogonal", "clamp", "ablate"):
        assert mode in out


def test_sampling_penalty_modes_and_conditions_on_a_checkpoint(checkpoint, capsys):
    model, saes = checkpoint
    base = ["steer", "-m", model, "-s", saes, "--layer", "1", "--steer", "5=40", "--max-new-tokens", "6"]

    def run(*extra):
        assert main([*base, *extra, "Hello there"]) == 0
        return capsys.readouterr().out

    greedy = run()
    assert f"decoding: greedy, repetition_penalty {DEFAULT_REPETITION_PENALTY:g}" in greedy
    sampled = run("--temperature", "0.9", "--top-p", "0.95", "--seed", "7")
    assert "sampled (temperature 0.9, top_p 0.95, seed 7)" in sampled
    assert run("--temperature", "0.9", "--top-p", "0.95", "--seed", "7") == sampled  # reproducible
    assert "decoding: greedy, repetition_penalty 1\n" in run("--repetition-penalty", "1")
    assert "layer 1 feature 5 cap +40" in run("--mode", "cap")
    never = run("--when", "0:3>1e9")
    assert "when L0 f3 > 1e+09" in never
    lines = dict(line.split(":", 1) for line in never.splitlines() if line.startswith(("baseline", "steered")))
    assert lines["baseline"].strip() == lines["steered"].strip()  # the condition never fires: nothing steered
    assert main([*base, "--when", "2:3", "Hello there"]) == 2  # a condition after the steered layer
    assert "condition layer 2 is after the steered layer 1" in capsys.readouterr().err
