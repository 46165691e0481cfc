"""Qwen3 (Qwen team, 2025): Qwen2's layout without the q/k/v bias (unless `attention_bias`), with an RMSNorm
over each head of the queries and keys (`q_norm`, `k_norm`, before the rotation) and an explicit `head_dim` that
need not be hidden_size / num_attention_heads. Reads what transformers' Qwen3Model, Qwen3ForCausalLM and
Qwen3ForSequenceClassification read and write.
"""
from __future__ import annotations

from torch import Tensor

from ..layers import RMSNorm
from .llama import LlamaAttention, LlamaForCausalLM, LlamaForSequenceClassification
from .qwen2 import Qwen2Model
from .qwen3_config import Qwen3Config

__all__ = ["Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification"]


class Qwen3Attention(LlamaAttention):
    def __init__(self, config: Qwen3Config, layer_idx: int, sliding_window=None):
        super().__init__(config, layer_idx, sliding_window)
        self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)  # over each head, not the whole width
        self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def normalize_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.q_norm(q), self.k_norm(k)  # (B, T, nh|nkv, hs)


class Qwen3Model(Qwen2Model):
    config_class = Qwen3Config
    attention_class = Qwen3Attention


class Qwen3ForCausalLM(LlamaForCausalLM):
    config_class = Qwen3Config
    base_model_class = Qwen3Model


class Qwen3ForSequenceClassification(LlamaForSequenceClassification):
    config_class = Qwen3Config
    base_model_class = Qwen3Model
