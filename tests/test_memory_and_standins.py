"""Memory plans for the 14 groups add up, a loaded Lab reports what it holds, and stand-ins of every backbone
class load and run through the same calls as the real checkpoints."""

from __future__ import annotations

import pytest
import torch

from qscope_lab import Lab
from qscope_lab.analysis import memory
from qscope_lab.saes.registry import GROUPS, default_group, find_group
from qscope_lab.testing.standins import stage


def test_plan_adds_model_sae_layers_and_workspace():
    table = memory.plan()
    assert len(table) == 14 and table.repo_id.tolist() == [g.repo_id for g in GROUPS]
    row = memory.plan("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50").iloc[0]
    assert row.model_gb == pytest.approx(2.03 * 2, abs=0.05)               # bf16 weights
    assert row.sae_gb == pytest.approx(0.537 * 1.5, abs=0.01)              # one float32 layer + decoder copy
    assert row.workspace_gb == pytest.approx(2 * 4096 * 32768 * 4 / 1e9, abs=0.01)
    assert row.smallest_gpu_gb == 16
    bf16 = memory.plan("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", sae_dtype="bfloat16", cached_layers=4).iloc[0]
    assert bf16.sae_gb == pytest.approx(row.sae_gb * 2, abs=0.02)          # 4 layers at half the bytes
    big = memory.plan("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_100", model_dtype=torch.float32).iloc[0]
    assert big.smallest_gpu_gb is None or big.smallest_gpu_gb >= big.total_gb * 1.2


def test_plan_names_bad_input():
    with pytest.raises(ValueError, match="not a Qwen-Scope group"):
        memory.plan("Qwen/SAE-Res-Qwen9-W1K-L0_5")
    with pytest.raises(ValueError, match="torch dtype"):
        memory.plan(model_dtype="float-ish")
    with pytest.raises(ValueError, match="at least 1"):
        memory.plan(cached_layers=0)


def test_measure_reports_weights_and_cached_saes():
    lab = Lab.load()
    lab.saes.clear()
    lab.encode("The cat sat.", layer=1)
    table = memory.measure(lab).set_index("what")
    weights = sum(p.numel() * p.element_size() for p in lab.hf_model.parameters())
    assert table.loc["model weights", "gb"] == pytest.approx(weights / 1e9, abs=2e-4)
    assert table.loc["SAE layers cached", "gb"] == pytest.approx(lab.sae(1).nbytes / 1e9, abs=2e-4)
    assert "[1]" in table.loc["SAE layers cached", "detail"]


@pytest.mark.parametrize("backbone", ["Qwen/Qwen3-8B-Base", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3.5-9B-Base",
                                      "Qwen/Qwen3.5-35B-A3B-Base"])
def test_standins_load_as_the_released_class(backbone, tmp_path):
    group = default_group(backbone)
    model_dir, sae_dir = stage(group.repo_id, tmp_path)
    assert sae_dir.name.endswith(f"-W1K-L0_{group.k}") and (sae_dir / "layer3.sae.pt").is_file()
    lab = Lab.load(model_dir, saes=sae_dir, dtype=torch.bfloat16)
    assert type(lab.hf_model).__name__ == group.model_class
    assert lab.sae(2).k == group.k and lab.sae(2).dtype == torch.float32
    gen = lab.generate("The cat", layer=2, steer={3: 50.0}, max_new_tokens=3)
    assert gen.steered_ids != gen.baseline_ids
    assert stage(group, tmp_path) == (model_dir, sae_dir)  # staged once, reused


def test_stage_refuses_unknown_groups_and_odd_widths(tmp_path):
    with pytest.raises(ValueError, match="not a Qwen-Scope group"):
        stage("Qwen/Qwen3-8B-Base", tmp_path)
    with pytest.raises(ValueError, match="multiple of 1024"):
        stage(find_group("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"), tmp_path, width=1000)
