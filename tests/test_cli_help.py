"""What a new user of ``qscope-lab`` meets first: plain-text help that explains every option and ends with examples
that run (the snippet test runs them, from docs/cli.md), bad arguments refused before the model loads, and an
index build whose progress bar counts documents."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_readme import PAGES, blocks

from qscope_lab.cli.main import build_parser
from qscope_lab.cli.options import DTYPES, check_features, check_layers, dtype, model_layers, sae_width, text

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line, named as typed: "qscope-lab", "qscope-lab steer", "qscope-lab index build"."""
    found, todo = [], [("qscope-lab", build_parser())]
    while todo:
        name, parser = todo.pop(0)
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def help_of(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "100"
    return parser.format_help()


def test_the_command_line_has_every_command():
    names = {name for name, _ in parsers()}
    assert {"qscope-lab steer", "qscope-lab classify", "qscope-lab coverage", "qscope-lab synthesize",
            "qscope-lab sasft-demo", "qscope-lab index build", "qscope-lab index export"} <= names
    assert len(names) == 14, sorted(names)


@pytest.mark.parametrize("name,parser", parsers(), ids=[n for n, _ in parsers()])
def test_help_is_plain_text_and_explains_every_option(name, parser):
    page = help_of(parser)
    for markup in ("``", ":class:", ":func:", ":meth:", "`"):
        assert markup not in page, f"{name} --help shows reST markup {markup!r}:\n{page}"
    assert not re.search(r"(?m)^\s*\.\. \w+::", page), f"{name} --help shows a reST directive"
    assert parser.description and len(parser.description) > 40, f"{name}: no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 10, \
            f"{name} {label}: no help"
        default = action.default
        if action.option_strings and default not in (None, False) and not isinstance(action, argparse._StoreTrueAction):
            assert "default" in action.help, f"{name} {label}: the help does not say the default {default!r}"
    if name != "qscope-lab":
        assert parser.epilog and parser.epilog.startswith("examples"), f"{name}: no examples"


def test_the_steering_options_say_what_they_do():
    page = " ".join(help_of(dict(parsers())["qscope-lab steer"]).split())
    for phrase in ("LAYER:FEATURE=ALPHA", "negative suppresses", "generated (only the new tokens",
                   "tokens generated after the prompt", "clamp: set the feature's activation to ALPHA"):
        assert phrase in page, phrase
    page = " ".join(help_of(dict(parsers())["qscope-lab classify"]).split())
    assert "how many of the best layers the rule draws features from (default 1" in page
    assert "text,label" in page  # the file format, with a line of examples/seeds.csv


def test_sasft_demo_help_gives_its_real_duration():
    summary = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    line = next(c.help for c in summary._choices_actions if c.dest == "sasft-demo")
    assert "minutes" not in line and "30 s" in line


def shell_lines() -> set[str]:
    """The shell commands of every bash block the snippet test runs (comments and spacing dropped)."""
    lines = set()
    for page in PAGES:
        for lang, code, why in blocks(page):
            if lang == "bash" and why is None:
                lines |= {" ".join(line.split("  #")[0].split()) for line in code.splitlines()}
    return lines


def test_every_help_example_runs_in_the_snippet_test():
    """Each example under a command's --help is a line of a docs shell block, so tests/test_readme.py runs it
    verbatim (on the shipped examples/ files) and the help cannot show a command that fails."""
    run, examples = shell_lines(), []
    for _name, parser in parsers():
        for line in (parser.epilog or "").splitlines()[1:]:
            if line.strip().startswith("qscope-lab "):
                examples.append(" ".join(line.split()))
    assert len(examples) >= 20
    missing = [e for e in examples if e not in run]
    assert not missing, f"help examples no docs shell block runs: {missing}"
    for example in examples:
        for path in re.findall(r"examples/[\w.]+", example):
            assert (REPO / path).is_file(), f"{example}: {path} is not shipped"


def test_the_example_files_are_in_the_formats_the_help_shows():
    """Lines a help shows under "examples/NAME:" are lines of that shipped file, and the files parse as shown."""
    import pandas as pd

    shown = 0
    for name, parser in parsers():
        lines = (parser.description or "").splitlines()
        for i, line in enumerate(lines):
            found = re.search(r"(examples/[\w.]+):$", line)
            if found:
                content = (REPO / found[1]).read_text(encoding="utf-8").splitlines()
                sample = [x.strip() for x in lines[i + 1:] if x.startswith("  ")]
                assert sample and all(x in content for x in sample), (name, found[1], sample)
                shown += 1
    assert shown >= 4

    seeds = pd.read_csv(REPO / "examples" / "seeds.csv")
    assert list(seeds.columns) == ["text", "label"] and sorted(seeds.label.unique()) == [0, 1]
    rows = [json.loads(line) for line in (REPO / "examples" / "corpus.jsonl").read_text().splitlines()]
    assert {row["source"] for row in rows} == {"en", "zh", "code"} and all(row["text"].strip() for row in rows)
    assert all(line.strip() for line in (REPO / "examples" / "mixed.txt").read_text().splitlines())


# ---------------------------------------------------------------------------------------------- before the model loads
BAD_LAYERS = [
    (["encode", "--layer", "4", "hi"], "--layer 4"),
    (["info", "--layer", "9"], "--layer 9"),
    (["steer", "--layer", "7", "--steer", "1=2", "hi"], "--layer 7"),
    (["steer", "--steer", "5:1=2", "hi"], "--steer 5"),
    (["steer", "--steer", "2:1=2", "--when", "4:1", "hi"], "--when 4"),
    (["coverage", "--layer", "4", "--benchmark", "examples/mixed.txt"], "--layer 4"),
    (["synthesize", "--layer", "4", "--seeds", "examples/seeds.txt", "--targets", "1"], "--layer 4"),
    (["language-features", "--layer", "1", "--layer", "4"], "--layer 4"),
    (["sasft-demo", "--layer", "4"], "--layer 4"),
    (["index", "build", "--corpus", "examples/corpus.jsonl", "--out", "never-written", "--layers", "1", "4"],
     "--layers 4"),
]
BAD_OTHER = [
    (["encode", "--dtype", "float8", "hi"], "argument --dtype: use float32, bfloat16 or float16"),
    (["encode", "  "], "argument TEXT: a text is empty"),
    (["steer", "--steer", "1=2", ""], "argument prompt: the prompt is empty"),
    (["index", "build", "--corpus", "empty.txt", "--out", "never-written"], "no documents"),
    (["encode", "-m", "./no-such-model", "hi"], "-m ./no-such-model: no checkpoint folder there"),
    (["classify", "-m", "no-such-model", "--train", "examples/seeds.csv"], "-m no-such-model: no checkpoint"),
    (["steer", "--steer", "1:99999=2", "hi"], "--steer 99999: feature must be an int in 0..2047"),
    (["steer", "--steer", "2:1=2", "--when", "1:5000", "hi"], "--when 5000: feature must be an int in 0..2047"),
    (["synthesize", "--seeds", "examples/seeds.txt", "--targets", "3,2048"], "--targets 2048: feature must"),
    (["steer", "-m", "Qwen/Qwen3-1.7B-Base", "--steer", "3:40000=2", "hi"],  # the registry knows its width
     "--steer 40000: feature must be an int in 0..32767 (the SAE has 32,768 features)"),
]


def test_bad_arguments_are_refused_before_the_model_loads(tmp_path):
    """One process runs every bad command line: each exits 2 with one line naming the option, the layer and the
    model's range, and at the end the Lab module was never imported (no model was loaded for any of them)."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "empty.txt").write_text("\n  \n")
    script = (
        "import contextlib, io, json, sys\n"
        "from qscope_lab.cli.main import main\n"
        "out = []\n"
        f"for argv in {[argv for argv, _ in BAD_LAYERS + BAD_OTHER]!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = main(argv)\n"
        "    out.append([code, err.getvalue()])\n"
        "print(json.dumps({'runs': out, 'lab': 'qscope_lab.lab' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    for (argv, expected), (code, err) in zip(BAD_LAYERS + BAD_OTHER, result["runs"]):
        assert code == 2, (argv, err)
        assert "Traceback" not in err and expected in err.strip().splitlines()[-1], (argv, err)
        if (argv, expected) in BAD_LAYERS:  # one line, ours
            assert len(err.strip().splitlines()) == 1
            assert "layer must be an int in 0..3 (the model has 4 layers)" in err, err
    assert not result["lab"], "the Lab (and so a model) was loaded before a refusal"
    assert not (tmp_path / "never-written").exists()


def test_a_layer_of_a_local_checkpoint_is_checked_against_its_config(tmp_path):
    folder = tmp_path / "vl-checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 28}}))
    assert model_layers(str(folder)) == 28
    assert model_layers(None) == 4  # the embedded default
    with pytest.raises(FileNotFoundError, match="nowhere: no checkpoint folder there"):
        model_layers(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        model_layers(str(tmp_path))
    assert model_layers("Qwen/not-in-the-local-cache") is None
    check_layers(argparse.Namespace(model=str(folder)), layer=[27])
    with pytest.raises(ValueError, match=r"--layer 28: layer must be an int in 0\.\.27 \(the model has 28 layers\)"):
        check_layers(argparse.Namespace(model=str(folder)), layer=[28])


@settings(max_examples=200, deadline=None)
@given(n_layers=st.integers(1, 96), layers=st.lists(st.one_of(st.none(), st.integers(-5, 120)), max_size=5))
def test_check_layers_refuses_exactly_the_layers_a_model_lacks(n_layers, layers):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps({"num_hidden_layers": n_layers}))
        args = argparse.Namespace(model=tmp)
        bad = [x for x in layers if x is not None and not 0 <= x < n_layers]
        if bad:
            with pytest.raises(ValueError) as refused:
                check_layers(args, when=layers)
            assert str(refused.value).startswith(f"--when {bad[0]}: layer must be an int in 0..{n_layers - 1}")
        else:
            check_layers(args, when=layers)


@settings(max_examples=200, deadline=None)
@given(features=st.lists(st.integers(-3, 5000), max_size=6))
def test_check_features_refuses_exactly_the_ids_the_sae_lacks(features):
    args = argparse.Namespace(model=None, saes=None)  # the embedded default: 2048 features per layer
    bad = [f for f in features if not 0 <= f < 2048]
    if bad:
        with pytest.raises(ValueError, match=rf"^--steer {bad[0]}: feature must be an int in 0\.\.2047"):
            check_features(args, "--steer", features)
    else:
        check_features(args, "--steer", features)


def test_the_sae_width_is_known_only_where_it_is_certain(tmp_path):
    assert sae_width(argparse.Namespace(model=None, saes=None)) == 2048
    assert sae_width(argparse.Namespace(model=None, saes="Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50")) == 65536
    assert sae_width(argparse.Namespace(model="Qwen/Qwen3-1.7B-Base", saes=None)) == 32768
    assert sae_width(argparse.Namespace(model=str(tmp_path), saes=str(tmp_path / "SAE-Res-x-W1K-L0_8"))) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=12)))
def test_dtype_is_one_of_three_whatever_is_typed(value):
    key = value.strip().lower().removeprefix("torch.")
    if key in DTYPES:
        assert dtype(value) in {"float32", "bfloat16", "float16"}
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="use float32, bfloat16 or float16"):
            dtype(value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(" \t\n\u3000a猫"), max_size=6))
def test_an_empty_text_is_refused_and_any_other_kept_as_typed(value):
    parse = text("the prompt")
    if value.strip():
        assert parse(value) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="the prompt is empty"):
            parse(value)


# ---------------------------------------------------------------------------------------------- index progress
def test_index_build_progress_counts_documents_and_the_summary_has_its_own_line(tmp_path):
    """The bar is sized by the corpus's documents (12 in examples/corpus.jsonl), not by its one file ("0/1" then
    "12it"), and the summary starts a line of its own in a log that holds both streams."""
    done = subprocess.run(f"{Path(sys.executable).parent / 'qscope-lab'} index build --corpus "
                          f"{REPO / 'examples' / 'corpus.jsonl'} --out idx --layers 2 --shard-documents 4 2>&1",
                          shell=True, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    log = done.stdout
    assert "/12 [" in log and "0/1 " not in log and not re.search(r"\d+it \[", log), log
    summary = "indexed 12 documents"
    assert re.search(rf"(?m)^{summary}", log) and log.rstrip().splitlines()[-1].startswith(summary), repr(log)
    bar = log[: log.index(summary)]
    assert bar.endswith("\n"), repr(log)
