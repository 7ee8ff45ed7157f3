from qscope_lab import GROUPS, registry_frame
from qscope_lab.saes.registry import default_group, find_group, parse_group_name


def test_fourteen_groups_with_hub_names():
    assert len(GROUPS) == 14
    repos = {g.repo_id for g in GROUPS}
    assert "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50" in repos
    assert "Qwen/SAE-Res-Qwen3-30B-A3B-Base-W128K-L0_100" in repos
    assert "Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50" in repos  # the instruct group has no -Base
    assert all(g.d_sae == parse_group_name(g.repo_id)[1] and g.k == parse_group_name(g.repo_id)[2] for g in GROUPS)


def test_registry_table_sizes():
    table = registry_frame()
    assert len(table) == 14
    row = table[table.repo_id == "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"].iloc[0]
    assert (row.n_layers, row.d_model, row.d_sae, row.k) == (28, 2048, 32768, 50)
    assert row.layer_file_gb == 0.54  # the ~537 MB per layer of the model card


def test_lookup_helpers():
    assert find_group("qwen/sae-res-qwen3.5-2b-base-w32k-l0_100").k == 100
    assert default_group("Qwen/Qwen3.5-9B-Base").repo_id == "Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_50"
    assert default_group("gpt2") is None
    assert parse_group_name("/data/SAE-Res-Qwen3-8B-Base-W64K-L0_100/") == ("Qwen3-8B-Base", 65536, 100)
    assert parse_group_name("my-folder") is None
