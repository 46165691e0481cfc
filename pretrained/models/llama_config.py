"""LlamaConfig, and the base of the configs of the Llama family (Mistral, Qwen2, Qwen3): torch-free.

Fields, defaults and the config.json they write are transformers 5's. Rotary settings are read in both forms
transformers has written (v4: `rope_theta` + `rope_scaling`; v5: `rope_parameters`) and kept in v5's.
"""
from __future__ import annotations

from typing import Optional

from ..configuration import ConfigError, PretrainedConfig, pop_legacy_rope_keys, standard_rope_parameters


class RotaryDecoderConfig(PretrainedConfig):
    """What the Llama family's configs derive after their fields are set; declares no fields of its own.

    Subclasses declare `num_attention_heads`, `num_key_value_heads`, `max_position_embeddings` and
    `rope_parameters` (and optionally `head_dim`, `sliding_window`, `use_sliding_window`, `layer_types`,
    `max_window_layers`), and may extend `derive()`.
    """

    def __init__(self, **kwargs):
        legacy = pop_legacy_rope_keys(kwargs)
        super().__init__(**kwargs)
        self.rope_parameters = standard_rope_parameters(self.rope_parameters, legacy, self.max_position_embeddings)
        self.derive()

    def derive(self) -> None:
        """Fill the fields transformers derives: num_key_value_heads (= num_attention_heads when unset)."""
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads

    def derive_head_dim(self) -> None:
        """head_dim = hidden_size // num_attention_heads when unset (Llama, Mistral)."""
        if self.head_dim is None:
            if not self.num_attention_heads:
                raise ConfigError(f"num_attention_heads must be a positive integer, got {self.num_attention_heads!r}")
            self.head_dim = self.hidden_size // self.num_attention_heads

    def derive_layer_types(self) -> None:
        """Qwen2 / Qwen3: sliding_window only counts with use_sliding_window; then the layers from
        max_window_layers on are "sliding_attention", the others "full_attention" (unless layer_types is given)."""
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                                else "full_attention" for i in range(self.num_hidden_layers)]


class LlamaConfig(RotaryDecoderConfig):
    model_type = "llama"

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: Optional[int] = None  # None: num_attention_heads (multi-head attention)
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int | list[int]] = 2
    pretraining_tp: Optional[int] = 1
    tie_word_embeddings: bool = False
    rope_parameters: Optional[dict] = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    head_dim: Optional[int] = None  # None: hidden_size // num_attention_heads

    def derive(self) -> None:
        super().derive()
        self.derive_head_dim()
