"""What a feature index accepts as a corpus, and what it refuses by name: missing paths (alone, in a list, on the
command line), DataFrames (read by their text column), texts that are not valid Unicode; long documents chunked
whole; the CLI's checks before the model loads and its one-line Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from qscope_lab import FeatureIndex, Lab
from qscope_lab.cli.main import main
from qscope_lab.embedded import reference_documents
from qscope_lab.index.corpus import documents

OPTIONS = {"n_top": 3, "context_length": 256, "batch_size": 8, "window": 2}


@pytest.fixture(scope="module")
def elab() -> Lab:
    return Lab.load(index=False)


def texts(corpus) -> list[tuple[str, str]]:
    return [(d.source, d.text) for d in documents(corpus)]


def test_a_missing_path_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for corpus in ["missing.jsonl", Path("missing.jsonl"), "data/missing", "missing.parquet", ["missing.jsonl"],
                   ["a real text", "missing.txt"], [Path("missing")], {"web": "nowhere.csv"}]:
        with pytest.raises(FileNotFoundError, match=r"missing|nowhere"):
            texts(corpus)


def test_missing_paths_refused_by_build_before_anything_is_indexed(elab, tmp_path):
    for corpus in ("missing.jsonl", [str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt")]):
        with pytest.raises(FileNotFoundError, match=r"missing\.jsonl|a\.jsonl"):
            FeatureIndex.build(elab, corpus, [1], tmp_path / "idx", overwrite=True, **OPTIONS)


def test_texts_that_are_not_paths_stay_texts_and_rows_pass_any_literal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert texts("The U.S. is big") == [("corpus", "The U.S. is big")]
    assert texts("see and/or compare") == [("corpus", "see and/or compare")]
    assert texts(["one text", "another: a/b c"]) == [("corpus", "one text"), ("corpus", "another: a/b c")]
    assert texts([{"text": "notes.txt"}]) == [("corpus", "notes.txt")]  # a file name as a literal text
    (tmp_path / "real.txt").write_text("line one\nline two\n", encoding="utf-8")
    assert texts("real.txt") == texts(["real.txt"]) == [("real", "line one"), ("real", "line two")]


def test_a_dataframe_is_read_by_its_text_column(elab, tmp_path):
    frame = pd.DataFrame({"id": [10, 11, 12], "text": ["The cat sat.", "猫坐在垫子上。", "def f(): pass"],
                          "source": ["en", "zh", "code"]})
    assert texts(frame) == [("en", "The cat sat."), ("zh", "猫坐在垫子上。"), ("code", "def f(): pass")]
    assert texts(frame[["text"]]) == [("corpus", t) for t in frame.text]
    assert texts({"web": frame[["text"]]}) == [("web", t) for t in frame.text]
    with pytest.raises(ValueError, match="'text' column"):
        texts(frame.rename(columns={"text": "body"}))
    index = FeatureIndex.build(elab, frame, [1], tmp_path / "frame", **OPTIONS)
    assert index.documents == 3 and sorted(index.sources) == ["code", "en", "zh"]


@pytest.mark.parametrize("bad", ["\ud800", "ok \udfff ok"])
def test_a_lone_surrogate_is_refused_naming_the_document(elab, tmp_path, bad):
    with pytest.raises(ValueError, match=r"corpus item 1 \(document 1, source 'corpus'\).*surrogate"):
        texts(["fine", bad])
    with pytest.raises(ValueError, match=r"corpus item 1 .*surrogate"):
        FeatureIndex.build(elab, ["fine", bad], [1], tmp_path / "bad", **OPTIONS)
    with pytest.raises(ValueError, match=r"document 0, source 'x\\udc80'"):
        texts([{"text": "fine", "source": "x\udc80"}])


def test_a_document_longer_than_the_model_is_indexed_whole(elab, tmp_path, capfd):
    text = " ".join(r["text"] for r in reference_documents() if r["lang"] == "en")
    n = len(elab.tokenizer(text)["input_ids"])
    assert n > 2 * elab.max_positions  # the model reads at most 1,024 positions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = FeatureIndex.build(elab, [text], [1], tmp_path / "long", **OPTIONS)
    assert "Token indices sequence length" not in capfd.readouterr().err
    chunks = math.ceil(n / OPTIONS["context_length"])
    assert index.meta["chunks"] == chunks
    assert index.tokens == n - chunks  # every token counted but each chunk's first (skip_first)
    assert int(index.stats(1).firing_count.max()) > 0


def test_cli_checks_arguments_before_the_model_loads(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"text": "a text"}) + "\n", encoding="utf-8")
    nowhere = str(tmp_path / "no-such-model")  # loading it would fail with another message
    cases = [(["--corpus", "missing.jsonl"], "missing.jsonl"), (["--corpus", str(corpus), "--n-top", "0"], "n_top"),
             (["--corpus", str(corpus), "--layers", "-1"], "--layers"),
             (["--corpus", str(corpus), "--workers", "0"], "--workers")]
    for extra, named in cases:
        assert main(["index", "build", "-m", nowhere, "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err
        assert named in err and "no-such-model" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    assert main(["index", "build", "-m", nowhere, "--corpus", str(corpus), "--out", str(tmp_path / "busy")]) == 2
    assert "not a feature index" in capsys.readouterr().err


def test_ctrl_c_during_a_build_prints_one_line_exits_130_and_the_build_resumes(tmp_path):
    rows = [{"text": r["text"], "source": r["source"]} for r in reference_documents()] * 2
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "idx"
    command = [sys.executable, "-m", "qscope_lab.cli", "index", "build", "--corpus", str(corpus), "--out", str(out),
               "--layers", "1", "--shard-documents", "8", "--context-length", "64", "--n-top", "3"]
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until some shards are done
        try:
            if len(json.loads((out / "manifest.json").read_text())["shards"]) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("qscope-lab index: interrupted") and "resume" in last and str(out) in last
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"indexed {len(rows)} documents" in done.stdout


def test_a_context_longer_than_the_model_is_refused(tmp_path):
    """Documents are chunked to context_length, never cut: a chunk the model cannot read is refused up front."""
    from qscope_lab import FeatureIndex, Lab

    lab = Lab.load(index=False)
    with pytest.raises(ValueError, match="context_length=4096 is longer than the 1024 positions"):
        FeatureIndex.build(lab, ["A short text."], layers=[1], path=tmp_path / "idx", context_length=4096)
    assert not (tmp_path / "idx").exists()
