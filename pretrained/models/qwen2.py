"""Qwen2 / Qwen2.5 (Qwen team, 2024): Llama's blocks with a bias on the query, key and value projections (not on
the output projection), and sliding-window attention on the layers `config.layer_types` marks
"sliding_attention" (none unless `use_sliding_window`). Reads what transformers' Qwen2Model, Qwen2ForCausalLM and
Qwen2ForSequenceClassification read and write (Qwen2.5 checkpoints, tied embeddings in the small ones).
"""
from __future__ import annotations

from typing import Optional

from .llama import LlamaAttention, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
from .qwen2_config import Qwen2Config

__all__ = ["Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"]


class Qwen2Attention(LlamaAttention):
    @staticmethod
    def biases(config) -> tuple[bool, bool]:
        return True, False  # q/k/v have a bias, o_proj has none


class Qwen2Model(LlamaModel):
    config_class = Qwen2Config
    attention_class = Qwen2Attention

    @staticmethod
    def sliding_window(config: Qwen2Config, layer_idx: int) -> Optional[int]:
        return config.sliding_window if config.layer_types[layer_idx] == "sliding_attention" else None


class Qwen2ForCausalLM(LlamaForCausalLM):
    config_class = Qwen2Config
    base_model_class = Qwen2Model


class Qwen2ForSequenceClassification(LlamaForSequenceClassification):
    config_class = Qwen2Config
    base_model_class = Qwen2Model
