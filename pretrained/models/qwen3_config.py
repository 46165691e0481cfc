"""Qwen3Config (torch-free): transformers 5's fields and defaults; unlike Qwen2, an explicit `head_dim`
(128 by default, independent of hidden_size / num_attention_heads) and `attention_bias` (False)."""
from __future__ import annotations

from typing import Optional

from .llama_config import RotaryDecoderConfig


class Qwen3Config(RotaryDecoderConfig):
    model_type = "qwen3"

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: Optional[int] = 32
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: Optional[dict] = None
    attention_bias: bool = False
    use_sliding_window: bool = False
    sliding_window: Optional[int] = 4096
    max_window_layers: int = 28
    layer_types: Optional[list[str]] = None
    attention_dropout: float = 0.0
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int | list[int]] = None

    def derive(self) -> None:
        super().derive()
        self.derive_layer_types()
