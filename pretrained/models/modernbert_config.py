"""ModernBERT's configuration, importable without torch; re-exported from `models/modernbert.py`.

Reads both forms transformers has written: v5's `layer_types` + nested `rope_parameters` ({"full_attention":
{"rope_theta": 160000.0, "rope_type": "default"}, "sliding_attention": {...}}), and v4's
`global_attn_every_n_layers` (layer i is global when i % n == 0), `global_rope_theta`, `local_rope_theta` and
`rope_scaling`, which are folded into the v5 fields as transformers does.
"""
from __future__ import annotations

import copy
from typing import Optional

from ..configuration import ConfigError, PretrainedConfig

LAYER_TYPES = ("full_attention", "sliding_attention")
DEFAULT_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}
CLASSIFIER_POOLING = ("cls", "mean")


class ModernBertConfig(PretrainedConfig):
    model_type = "modernbert"

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: Optional[int] = 50283
    eos_token_id: Optional[int] = 50282
    bos_token_id: Optional[int] = 50281
    cls_token_id: Optional[int] = 50281
    sep_token_id: Optional[int] = 50282
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: Optional[list] = None
    rope_parameters: Optional[dict] = None
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    deterministic_flash_attn: bool = False
    sparse_prediction: bool = False
    sparse_pred_ignore_index: int = -100
    tie_word_embeddings: bool = True

    def __init__(self, **kwargs):
        # v4 keys, consumed as transformers consumes them (global_attn_every_n_layers stays, as an extra key)
        every_n = kwargs.get("global_attn_every_n_layers", 3)
        thetas = {"full_attention": kwargs.pop("global_rope_theta", None),
                  "sliding_attention": kwargs.pop("local_rope_theta", None)}
        rope_scaling = kwargs.pop("rope_scaling", None)
        kwargs.pop("reference_compile", None)  # a torch.compile switch of transformers, not saved by it either
        super().__init__(**kwargs)
        if self.layer_types is None:
            if not isinstance(every_n, int) or isinstance(every_n, bool) or every_n < 1:
                raise ConfigError(f"global_attn_every_n_layers must be a positive integer, got {every_n!r}")
            self.layer_types = ["sliding_attention" if i % every_n else "full_attention"
                                for i in range(self.num_hidden_layers)]
        params = copy.deepcopy(self.rope_parameters) if self.rope_parameters is not None else {}
        if not isinstance(params, dict):
            raise ConfigError(f"rope_parameters must be a mapping of layer type to rope settings, got {params!r}")
        for layer_type in LAYER_TYPES:
            entry = dict(params.get(layer_type) or {})
            entry.setdefault("rope_type", "default")
            if rope_scaling is not None:
                entry.update(rope_scaling)
            entry.setdefault("rope_theta", thetas[layer_type] if thetas[layer_type] is not None
                             else DEFAULT_THETA[layer_type])
            params[layer_type] = entry
        self.rope_parameters = params
        self._check()

    def _check(self) -> None:
        bad = [t for t in self.layer_types if t not in LAYER_TYPES] if isinstance(self.layer_types, list) else None
        if bad is None or bad or len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(f"layer_types must list one of {', '.join(LAYER_TYPES)} for each of the "
                              f"{self.num_hidden_layers} layers, got {self.layer_types!r}")
        if self.classifier_pooling not in CLASSIFIER_POOLING:
            raise ConfigError(f"classifier_pooling={self.classifier_pooling!r} is not one of "
                              f"{', '.join(CLASSIFIER_POOLING)}")

    @property
    def sliding_window(self) -> int:
        """Half the local window: a token sees the tokens at most this far away in sliding-attention layers."""
        return self.local_attention // 2

    @sliding_window.setter
    def sliding_window(self, value: int) -> None:
        self.local_attention = value * 2
