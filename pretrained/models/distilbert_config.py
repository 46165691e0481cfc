"""DistilBERT's configuration, importable without torch (`from pretrained import DistilBertConfig` loads only this
file); re-exported from `models/distilbert.py`."""
from __future__ import annotations

from typing import Optional

from ..configuration import PretrainedConfig


class DistilBertConfig(PretrainedConfig):
    model_type = "distilbert"
    attribute_map = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 4 * 768
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    pad_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    tie_word_embeddings: bool = True
