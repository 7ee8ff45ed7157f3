"""The labels file as a user's disk holds it: a symbolic link is written through (the link kept), the file keeps
its permission bits, a 0-byte file is refused and never overwritten, a full disk loses nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from qscope_lab.analysis.labels import FeatureLabels

NS = "model|saes"


def test_a_symlinked_labels_file_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "dotfiles" / "labels.json"
    real.parent.mkdir()
    FeatureLabels(NS, real).set(1, 2, label="first")
    home = tmp_path / "home"
    home.mkdir()
    link = home / "labels.json"
    link.symlink_to(real)
    labels = FeatureLabels(NS, link)
    labels.set(3, 4, label="through the link")
    assert link.is_symlink() and os.readlink(link) == str(real)  # still a link, to the same file
    stored = json.loads(real.read_text(encoding="utf-8"))
    assert stored[f"{NS}/1/2"]["label"] == "first" and stored[f"{NS}/3/4"]["label"] == "through the link"
    assert labels.get(1, 2)["label"] == "first"
    assert not list(home.glob(".labels-*")) and not list(real.parent.glob(".labels-*"))


def test_a_dangling_link_creates_its_target(tmp_path):
    real, link = tmp_path / "store" / "labels.json", tmp_path / "labels.json"
    real.parent.mkdir()
    link.symlink_to(real)
    FeatureLabels(NS, link).set(0, 1, label="x")
    assert link.is_symlink() and json.loads(real.read_text())[f"{NS}/0/1"]["label"] == "x"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_the_file_keeps_its_mode_and_a_new_file_gets_the_umask_default(tmp_path):
    path = tmp_path / "labels.json"
    labels = FeatureLabels(NS, path)
    old = os.umask(0o022)
    try:
        labels.set(1, 1, label="new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0o666 & ~umask, as any new file (mkstemp gave 0o600)
    os.chmod(path, 0o664)  # shared with the group on purpose
    labels.set(1, 2, label="again")
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


@pytest.mark.parametrize("call", ["get", "set", "to_frame"])
def test_a_zero_byte_file_is_refused_and_never_overwritten(tmp_path, call):
    path = tmp_path / "labels.json"
    path.write_bytes(b"")
    labels = FeatureLabels(NS, path)
    action = {"get": lambda: labels.get(1, 1), "set": lambda: labels.set(1, 1, label="would erase"),
              "to_frame": labels.to_frame}[call]
    with pytest.raises(ValueError, match=r"labels\.json is empty \(0 bytes\)"):
        action()
    assert path.read_bytes() == b"" and not list(tmp_path.glob(".labels-*"))


def test_an_absent_file_is_empty_and_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "labels.json"
    assert FeatureLabels(NS, path).get(1, 1) == {"label": "", "note": ""}
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="labels.json is not a labels file"):
        FeatureLabels(NS, path).get(1, 1)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "64k"):
    """A real, tiny file system at ``folder`` (root only): writes past its size fail with ENOSPC."""
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (to fill a disk for real) needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write a filler file until the file system refuses (ENOSPC)."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def test_a_full_disk_keeps_the_old_labels(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        path = disk / "labels.json"
        labels = FeatureLabels(NS, path)
        labels.set(1, 1, label="kept")
        before = path.read_bytes()
        fill(disk)
        with pytest.raises(OSError) as info:
            labels.set(1, 2, label="x" * 20_000)
        assert info.value.errno == errno.ENOSPC
        assert path.read_bytes() == before and labels.get(1, 1)["label"] == "kept"
        assert not list(disk.glob(".labels-*"))
