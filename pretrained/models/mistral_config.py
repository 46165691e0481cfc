"""MistralConfig (torch-free): transformers 5's fields and defaults (Mistral-7B's shapes, 8 kv heads, a 4096-token
sliding window)."""
from __future__ import annotations

from typing import Optional

from .llama_config import RotaryDecoderConfig


class MistralConfig(RotaryDecoderConfig):
    model_type = "mistral"

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: Optional[int] = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096 * 32
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int | list[int]] = 2
    tie_word_embeddings: bool = False
    rope_parameters: Optional[dict] = None
    sliding_window: Optional[int] = 4096  # None: full causal attention on every layer
    attention_dropout: float = 0.0

    def derive(self) -> None:
        super().derive()
        self.derive_head_dim()
