"""The 14 Qwen-Scope SAE groups as data, so users can browse them and code can resolve hub ids offline."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_NAME_PATTERN = re.compile(r"SAE-Res-(?P<backbone>.+)-W(?P<width>\d+)K-L0_(?P<k>\d+)$")


@dataclass(frozen=True)
class SAEGroup:
    """One Qwen-Scope release: TopK SAEs on the residual stream (block outputs) of every layer of a backbone."""

    repo_id: str
    backbone: str          # HF id of the model the SAEs were trained on
    architecture: str      # transformers model_type of the backbone
    model_class: str       # transformers class of the released checkpoint
    n_layers: int
    d_model: int
    d_sae: int
    k: int

    @property
    def config(self) -> BackboneConfig:
        """The backbone's published shapes (``BACKBONE_CONFIGS``)."""
        return BACKBONE_CONFIGS[self.backbone]

    @property
    def filenames(self) -> list[str]:
        return [layer_filename(n) for n in range(self.n_layers)]

    @property
    def bytes_per_layer(self) -> int:
        """float32 W_enc + W_dec + biases, as stored in each ``layer{n}.sae.pt``."""
        return 4 * (2 * self.d_sae * self.d_model + self.d_sae + self.d_model)


@dataclass(frozen=True)
class BackboneConfig:
    """The shapes of a backbone's text model as its published ``config.json`` gives them, so stand-ins, memory
    plans and benchmarks use real sizes offline (the Hub is not needed to know how big a layer is).

    Qwen3.5 backbones are hybrid: ``linear_*`` describe their Gated-DeltaNet layers, one layer in
    ``full_attention_interval`` is full attention; MoE backbones give their experts."""

    n_layers: int
    hidden: int
    intermediate: int  # dense MLP width (0 where every layer is MoE and the key is absent)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    max_positions: int
    rope_theta: float
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_expert_intermediate: int = 0
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_head_dim: int = 0  # key and value head dims are equal (128) in every released Qwen3.5
    linear_conv_kernel: int = 0
    full_attention_interval: int = 0
    partial_rotary_factor: float = 1.0
    attn_output_gate: bool = False

    @property
    def hybrid(self) -> bool:
        return self.full_attention_interval > 0

    def layer_types(self, n_layers: int | None = None) -> list[str]:
        """Per layer "full_attention" or "linear_attention" (the config's ``layer_types``)."""
        n = self.n_layers if n_layers is None else n_layers
        if not self.hybrid:
            return ["full_attention"] * n
        return ["full_attention" if (i + 1) % self.full_attention_interval == 0 else "linear_attention"
                for i in range(n)]


# Published config.json values (text model). Qwen3: the Base checkpoints' files; Qwen3-30B-A3B-Base's MoE routing
# fields as in the post-trained Qwen3-30B-A3B. Qwen3.5: text_config of each release; rope_theta sits in its
# rope_parameters with partial_rotary_factor 0.25, head_dim 256, linear key/value head dim 128, conv kernel 4.
def _qwen35(n_layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, tied: bool,
            linear_value_heads: int, **moe: int) -> BackboneConfig:
    """What every Qwen3.5 text config shares, around the numbers that differ."""
    return BackboneConfig(n_layers, hidden, intermediate, heads, kv_heads, head_dim=256, vocab=248320,
                          tied_embeddings=tied, max_positions=262144, rope_theta=1e7, linear_key_heads=16,
                          linear_value_heads=linear_value_heads, linear_head_dim=128, linear_conv_kernel=4,
                          full_attention_interval=4, partial_rotary_factor=0.25, attn_output_gate=True, **moe)


BACKBONE_CONFIGS: dict[str, BackboneConfig] = {
    "Qwen/Qwen3-1.7B-Base": BackboneConfig(28, 2048, 6144, 16, 8, 128, 151936, True, 32768, 1e6),
    "Qwen/Qwen3-8B-Base": BackboneConfig(36, 4096, 12288, 32, 8, 128, 151936, False, 32768, 1e6),
    "Qwen/Qwen3-30B-A3B-Base": BackboneConfig(48, 2048, 6144, 32, 4, 128, 151936, False, 32768, 1e6,
                                              experts=128, experts_per_token=8, moe_intermediate=768),
    "Qwen/Qwen3.5-2B-Base": _qwen35(24, 2048, 6144, 8, 2, tied=True, linear_value_heads=16),
    "Qwen/Qwen3.5-9B-Base": _qwen35(32, 4096, 12288, 16, 4, tied=False, linear_value_heads=32),
    "Qwen/Qwen3.5-27B": _qwen35(64, 5120, 17408, 24, 4, tied=False, linear_value_heads=48),
    "Qwen/Qwen3.5-35B-A3B-Base": _qwen35(40, 2048, 0, 16, 2, tied=False, linear_value_heads=32, experts=256,
                                         experts_per_token=8, moe_intermediate=512, shared_expert_intermediate=512),
}


def layer_filename(layer: int) -> str:
    return f"layer{layer}.sae.pt"


def _group(backbone: str, arch: str, cls: str, n_layers: int, d_model: int, width: int, k: int) -> SAEGroup:
    name = backbone.split("/", 1)[1]
    return SAEGroup(
        repo_id=f"Qwen/SAE-Res-{name}-W{width // 1024}K-L0_{k}",
        backbone=backbone, architecture=arch, model_class=cls,
        n_layers=n_layers, d_model=d_model, d_sae=width, k=k,
    )


_BACKBONES = [
    # backbone, model_type, released class, layers, d_model, (width, k) x 2
    ("Qwen/Qwen3-1.7B-Base", "qwen3", "Qwen3ForCausalLM", 28, 2048, [(32768, 50), (32768, 100)]),
    ("Qwen/Qwen3-8B-Base", "qwen3", "Qwen3ForCausalLM", 36, 4096, [(65536, 50), (65536, 100)]),
    ("Qwen/Qwen3-30B-A3B-Base", "qwen3_moe", "Qwen3MoeForCausalLM", 48, 2048, [(32768, 50), (131072, 100)]),
    ("Qwen/Qwen3.5-2B-Base", "qwen3_5", "Qwen3_5ForConditionalGeneration", 24, 2048, [(32768, 50), (32768, 100)]),
    ("Qwen/Qwen3.5-9B-Base", "qwen3_5", "Qwen3_5ForConditionalGeneration", 32, 4096, [(65536, 50), (65536, 100)]),
    ("Qwen/Qwen3.5-27B", "qwen3_5", "Qwen3_5ForConditionalGeneration", 64, 5120, [(81920, 50), (81920, 100)]),
    ("Qwen/Qwen3.5-35B-A3B-Base", "qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", 40, 2048,
     [(32768, 50), (131072, 100)]),
]

GROUPS: tuple[SAEGroup, ...] = tuple(
    _group(b, a, c, n, d, w, k) for b, a, c, n, d, widths in _BACKBONES for w, k in widths
)
_BY_REPO = {g.repo_id.lower(): g for g in GROUPS}


def parse_group_name(name: str) -> tuple[str, int, int] | None:
    """``...SAE-Res-{backbone}-W{N}K-L0_{k}`` -> (backbone name, d_sae, k); None if the name is not in that pattern.

    Works on hub ids and on local folder names that keep the hub name (how ``hf download`` lays them out).
    """
    match = _NAME_PATTERN.search(str(name).rstrip("/").split("/")[-1])
    if match is None:
        return None
    return match["backbone"], int(match["width"]) * 1024, int(match["k"])


def find_group(repo_id: str) -> SAEGroup | None:
    """The registered group for a hub id (case-insensitive), or None."""
    return _BY_REPO.get(str(repo_id).lower())


def groups_for_backbone(backbone: str) -> list[SAEGroup]:
    key = str(backbone).rstrip("/").split("/")[-1].lower()
    return [g for g in GROUPS if g.backbone.split("/")[-1].lower() == key]


def default_group(backbone: str) -> SAEGroup | None:
    """The k=50 group of a backbone: the sparser, cheaper and more interpretable of the two."""
    groups = sorted(groups_for_backbone(backbone), key=lambda g: (g.k, g.d_sae))
    return groups[0] if groups else None


def registry_rows() -> list[dict]:
    """All groups as plain rows, with the size of one layer file and of the whole group (no pandas: the CLI's
    static table prints these without paying pandas' import)."""
    rows = []
    for g in GROUPS:
        row = asdict(g)
        row["layer_file_gb"] = round(g.bytes_per_layer / 1e9, 2)
        row["group_gb"] = round(g.bytes_per_layer * g.n_layers / 1e9, 1)
        rows.append(row)
    return rows


def registry_frame() -> pd.DataFrame:
    """All groups as a table, with the size of one layer file and of the whole group."""
    import pandas as pd

    return pd.DataFrame(registry_rows())
