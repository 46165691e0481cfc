"""Model outputs: small dataclasses with transformers' field names.

Fields are read as attributes (`out.logits`), by name (`out["logits"]`) or by position among the fields
that are set (`out[0]`), as with transformers' ModelOutput.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

Tensor = Any  # torch.Tensor; kept loose so that importing this module does not import torch


class ModelOutput:
    """Base of all outputs: attribute, key and index access over the fields that are not None."""

    def _set_items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def keys(self) -> list[str]:
        return [k for k, _ in self._set_items()]

    def values(self) -> list[Any]:
        return [v for _, v in self._set_items()]

    def items(self) -> list[tuple[str, Any]]:
        return self._set_items()

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; it has {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._set_items())


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Tensor = None
    pooler_output: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Tensor = None
    past_key_values: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    past_key_values: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Tensor = None
    start_logits: Tensor = None
    end_logits: Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    past_key_values: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: Tensor = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Tensor = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Tensor = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqSequenceClassifierOutput(ModelOutput):
    loss: Tensor = None
    logits: Tensor = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Tensor = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None
