"""BERT's configuration, importable without torch (`from pretrained import BertConfig` loads only this file).

Each architecture keeps its config class in `models/<family>_config.py`, importing nothing but
`..configuration`, and re-exports it from `models/<family>.py`; `pretrained.auto` reads configs from here.
"""
from __future__ import annotations

from typing import Optional

from ..configuration import PretrainedConfig


class BertConfig(PretrainedConfig):
    model_type = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: Optional[int] = 0
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    use_cache: bool = True
    classifier_dropout: Optional[float] = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
