"""Mistral (Jiang et al., 2023): Llama's blocks with grouped-query attention over a sliding window.

Every layer attends to the last `config.sliding_window` tokens (itself included), or to all of them when the
config sets it to null; the checkpoint keys and module tree are Llama's. Reads what transformers' MistralModel,
MistralForCausalLM and MistralForSequenceClassification read and write.
"""
from __future__ import annotations

from typing import Optional

from .llama import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
from .mistral_config import MistralConfig

__all__ = ["MistralConfig", "MistralModel", "MistralForCausalLM", "MistralForSequenceClassification"]


class MistralModel(LlamaModel):
    config_class = MistralConfig

    @staticmethod
    def sliding_window(config: MistralConfig, layer_idx: int) -> Optional[int]:
        return config.sliding_window


class MistralForCausalLM(LlamaForCausalLM):
    config_class = MistralConfig
    base_model_class = MistralModel


class MistralForSequenceClassification(LlamaForSequenceClassification):
    config_class = MistralConfig
    base_model_class = MistralModel
