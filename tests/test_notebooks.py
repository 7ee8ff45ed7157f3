"""Every notebook in notebooks/ runs top to bottom, offline, on the embedded default; none is committed with
outputs (a notebook's outputs belong to whoever runs it)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qscope_lab.saes.registry import default_group

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stale, f"{path.name}: cells {stale} carry outputs; clear them before committing"


def execute(path: Path, tmp_path, monkeypatch) -> str:
    """Run the notebook in a fresh kernel, offline; returns its text outputs joined."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("QSCOPE_LAB_HOME", str(tmp_path))  # labels written by the notebook stay out of ~
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    text = execute(path, tmp_path, monkeypatch)
    if path.stem == "saes_from_scratch":  # every exercise's worked solution passes its check
        assert text.count("✅") == 4 and text.count("❌") == 1  # the one ❌ is the b_dec mistake shown on purpose


@pytest.mark.parametrize("backbone", ["Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3.5-35B-A3B-Base"])
def test_gpu_notebook_dry_runs_on_every_architecture(backbone, tmp_path, monkeypatch):
    """The default run covers Qwen3.5-2B (hybrid, vision-language class); these cover dense, MoE and hybrid MoE."""
    monkeypatch.setenv("QSCOPE_BACKBONE", backbone)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # stand-ins staged per test
    text = execute(NOTEBOOKS[0].parent / "real_qwen_scope.ipynb", tmp_path, monkeypatch)
    group = default_group(backbone)
    assert f"{group.repo_id} -> Lab(" in text and f"standin-{backbone.split('/')[1]}" in text
