"""GPT-2's configuration, importable without torch (`from pretrained import GPT2Config` loads only this file).

Each architecture keeps its config class in `models/<family>_config.py`, importing nothing but
`..configuration`, and re-exports it from `models/<family>.py`; `pretrained.auto` reads configs from here.
"""
from __future__ import annotations

from typing import Optional

from ..configuration import PretrainedConfig


class GPT2Config(PretrainedConfig):
    model_type = "gpt2"
    attribute_map = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None  # None means 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: Optional[str] = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    scale_attn_weights: bool = True
    use_cache: bool = True
    bos_token_id: Optional[int] = 50256
    eos_token_id: Optional[int] = 50256
    pad_token_id: Optional[int] = None
    scale_attn_by_inverse_layer_idx: bool = False
    # Kept for config.json but not used: in transformers it only changes mixed-precision numerics of eager attention.
    reorder_and_upcast_attn: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
