"""Feature labels under concurrency and faults: nothing is lost when processes and objects write at once, a
writer killed mid-write leaves a valid file, and labels for features that do not exist are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from qscope_lab.analysis.labels import FeatureLabels

WRITER = textwrap.dedent("""
    import sys
    from qscope_lab.analysis.labels import FeatureLabels
    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    labels = FeatureLabels("model|saes", path)
    for i in range(n):
        labels.set(worker, i, label=f"w{worker}-f{i}", note="x" * (i % 7))
""")


def run_writers(path, workers: int, n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n)]) for w in range(workers)]


def test_four_processes_writing_200_labels_each_lose_nothing(tmp_path):
    path = tmp_path / "labels.json"
    procs = run_writers(path, workers=4, n=200)
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    frame = FeatureLabels("model|saes", path).to_frame()
    assert len(frame) == 800
    assert set(zip(frame.layer, frame.feature)) == {(w, i) for w in range(4) for i in range(200)}
    assert (frame.label == [f"w{w}-f{i}" for w, i in zip(frame.layer, frame.feature)]).all()
    assert not list(tmp_path.glob(".labels-*"))


def test_two_objects_in_one_process_lose_nothing(tmp_path):
    path = tmp_path / "labels.json"
    a, b = FeatureLabels("m|s", path), FeatureLabels("m|s", path)

    def write(labels, layer):
        for i in range(200):
            labels.set(layer, i, label=f"{layer}:{i}")

    threads = [threading.Thread(target=write, args=(x, layer)) for x, layer in ((a, 0), (b, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a.to_frame()) == 400


def test_a_writer_killed_mid_write_leaves_a_valid_file_and_no_temp_file(tmp_path):
    path = tmp_path / "labels.json"
    FeatureLabels("model|saes", path).set(9, 9, label="before")
    for delay in (0.6, 0.9, 1.2):  # the interpreter starts in ~0.5 s; kill it while it writes
        proc = run_writers(path, workers=1, n=100_000)[0]
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text(encoding="utf-8"))  # the old or a new file, never a torn one
        assert data["model|saes/9/9"]["label"] == "before"
        labels = FeatureLabels("model|saes", path)  # the next user cleans up after the killed writer
        assert not list(tmp_path.glob(".labels-*")), list(tmp_path.glob(".labels-*"))
        assert labels.get(9, 9)["label"] == "before"


def test_features_that_do_not_exist_are_refused(lab, tmp_path):
    labels = FeatureLabels.for_lab(lab, tmp_path / "labels.json")
    with pytest.raises(IndexError, match="feature 1000000 is out of range"):
        labels.set(2, 1_000_000, label="typo")
    with pytest.raises(ValueError, match="layer must be an int in 0..3"):
        labels.set(7, 1, label="no such layer")
    with pytest.raises(TypeError, match="label must be a str"):
        labels.set(2, 1, label=5)
    assert labels.to_frame().empty and not (tmp_path / "labels.json").exists()


def test_nested_namespaces_and_bad_homes(tmp_path, monkeypatch):
    path = tmp_path / "labels.json"
    FeatureLabels("a", path).set(1, 2, label="outer")
    FeatureLabels("a/b", path).set(3, 4, label="inner")
    assert FeatureLabels("a", path).to_frame()[["layer", "feature", "label"]].values.tolist() == [[1, 2, "outer"]]
    assert FeatureLabels("a/b", path).to_frame().label.tolist() == ["inner"]

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("QSCOPE_LAB_HOME", str(not_a_dir))
    with pytest.raises(NotADirectoryError, match="QSCOPE_LAB_HOME"):
        FeatureLabels("m").set(1, 1, label="x")

    if os.geteuid() != 0:  # root writes anywhere: the read-only case only means something for other users
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="QSCOPE_LAB_HOME"):
            FeatureLabels("m", read_only / "labels.json").set(1, 1, label="x")
