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


# Parameter counts the model cards publish (Qwen3: 1.7B, 8.2B, 30.5B; Qwen3.5 text models: the names' sizes less
# the vision tower), against the registry's shapes built on the meta device (no memory, no download)
PUBLISHED_TEXT_PARAMS = {"Qwen/Qwen3-1.7B-Base": 1.7e9, "Qwen/Qwen3-8B-Base": 8.2e9,
                         "Qwen/Qwen3-30B-A3B-Base": 30.5e9, "Qwen/Qwen3.5-27B": 26.9e9}


@pytest.mark.parametrize("backbone", sorted(PUBLISHED_TEXT_PARAMS))
def test_registry_shapes_build_the_published_model_size(backbone):
    import transformers

    from qscope_lab.saes.registry import BACKBONE_CONFIGS
    from qscope_lab.testing.tiny import real_config

    group = default_group(backbone)
    shapes = BACKBONE_CONFIGS[backbone]
    assert (shapes.n_layers, shapes.hidden) == (group.n_layers, group.d_model) and group.config is shapes
    with torch.device("meta"):
        model = getattr(transformers, group.model_class)(real_config(group.model_class, shapes))
    text = sum(p.numel() for name, p in model.named_parameters() if "visual" not in name)
    assert text == pytest.approx(PUBLISHED_TEXT_PARAMS[backbone], rel=0.03)
    if shapes.hybrid:
        types = model.config.get_text_config().layer_types
        assert types.count("full_attention") == shapes.n_layers // 4 and types[3] == "full_attention"


def test_real_shape_standin_at_reduced_depth(tmp_path):
    """shape="real": the backbone's own widths (here the 1.7B's 2048 hidden, 16/8 heads) at 1 layer, with a
    1K-wide SAE so the test stays small; Lab.load reads it like a download."""
    group = default_group("Qwen/Qwen3-1.7B-Base")
    model_dir, sae_dir = stage(group, tmp_path, n_layers=1, width=1024, shape="real", dtype="bfloat16")
    lab = Lab.load(model_dir, saes=sae_dir)
    attn = lab.blocks[0].self_attn
    assert lab.n_layers == 1 and lab.d_model == 2048
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (16 * 128, 8 * 128)
    assert lab.blocks[0].mlp.up_proj.out_features == 6144
    acts = lab.encode("The cat sat.", layer=0)
    assert acts.d_sae == 1024 and acts.indices.shape[-1] == group.k
    with pytest.raises(ValueError, match="n_layers must be in 1..28"):
        stage(group, tmp_path, n_layers=29, shape="real")
