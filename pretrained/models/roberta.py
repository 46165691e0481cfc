"""RoBERTa (Liu et al., 2019) and the families that reuse it under their own model_type: XLM-RoBERTa (multilingual:
e5, bge-m3, most rerankers) and CamemBERT.

BERT's encoder blocks, unchanged (`roberta.encoder.layer.0.attention.self.query` ...); what makes the family is
fairseq's positions: real tokens count from padding_idx + 1 and padding keeps padding_idx (`padded_position_ids`),
so a 514-row position table holds 512 tokens. Heads: `lm_head` (dense, gelu, layer_norm, decoder tied to the word
embeddings) and `classifier` (dense, tanh, out_proj over the first token), which MPNet shares.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..layers import (as_batch, check_attention_mask, check_encoder_inputs, check_input_ids, classification_loss,
                      Linear, padded_position_ids, padding_mask, span_outputs, token_loss, output_flags)
from ..modeling import PreTrainedModel
from ..outputs import (BaseModelOutputWithPooling, MaskedLMOutput, QuestionAnsweringModelOutput,
                       SequenceClassifierOutput, TokenClassifierOutput)
from .bert import _head_outputs, BertEmbeddings, BertEncoder, BertPooler
from .roberta_config import CamembertConfig, RobertaConfig, XLMRobertaConfig  # re-exported (torch-free module)


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with positions counted from padding_idx + 1 over real tokens (or, from inputs_embeds,
    padding_idx + 1, + 2, ...), as transformers computes them."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=self.padding_idx)

    def forward(self, input_ids: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        if position_ids is None:
            position_ids = padded_position_ids(input_ids, self.padding_idx, inputs_embeds)  # (B, T)
        return super().forward(input_ids, token_type_ids, position_ids, inputs_embeds)


class RobertaPreTrainedModel(PreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"
    _keys_to_ignore_on_load_unexpected = [r"embeddings\.position_ids$"]  # a buffer in older checkpoints

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings


class RobertaModel(RobertaPreTrainedModel):
    """Embeddings, BERT's encoder and (optionally) its pooler. Returns BaseModelOutputWithPooling(last_hidden_state
    (B, T, C), pooler_output (B, C), hidden_states, attentions)."""

    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        if cfg.pad_token_id is None:
            raise ValueError(f"{type(self).__name__} needs config.pad_token_id: positions are counted after it")
        input_ids = check_encoder_inputs(input_ids, inputs_embeds, position_ids, cfg.vocab_size,
                                         cfg.max_position_embeddings, cfg.pad_token_id)
        if token_type_ids is not None:
            check_input_ids(as_batch(token_type_ids, "token_type_ids"), cfg.type_vocab_size, "token_type_ids")
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        enc = self.encoder(x, padding_mask(attention_mask, x.dtype), output_attentions, output_hidden_states)
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None  # (B, C)
        out = BaseModelOutputWithPooling(last_hidden_state=enc.last_hidden_state, pooler_output=pooled,
                                         hidden_states=enc.hidden_states, attentions=enc.attentions)
        return out if return_dict else out.to_tuple()


class RobertaLMHead(nn.Module):
    """dense -> GELU (the erf form, whatever hidden_act) -> layer_norm -> decoder (tied to the word embeddings)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: Tensor) -> Tensor:
        x = self.layer_norm(nn.functional.gelu(self.dense(features)))
        return self.decoder(x)  # (B, T, vocab); decoder.bias is self.bias


class RobertaClassificationHead(nn.Module):
    """First token -> dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        p = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.out_proj = Linear(config.hidden_size, config.num_labels)

    def forward(self, features: Tensor) -> Tensor:
        x = self.dropout(torch.tanh(self.dense(self.dropout(features[:, 0]))))  # (B, C)
        return self.out_proj(x)  # (B, num_labels)


_NO_POOLER = RobertaPreTrainedModel._keys_to_ignore_on_load_unexpected + [r"^roberta\.pooler\."]


class RobertaForMaskedLM(RobertaPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight"}
    _aliased_weights_keys = {"lm_head.decoder.bias": "lm_head.bias"}
    _keys_to_ignore_on_load_unexpected = _NO_POOLER

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, MaskedLMOutput, loss, logits=logits)


class RobertaForSequenceClassification(RobertaPreTrainedModel):
    """The classification head over the first token (<s>); `labels` give the loss `problem_type` asks."""

    _keys_to_ignore_on_load_unexpected = _NO_POOLER

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(out.last_hidden_state)  # (B, num_labels)
        loss = None if labels is None else classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return _head_outputs(out, return_dict, SequenceClassifierOutput, loss, logits=logits)


class RobertaForTokenClassification(RobertaPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = _NO_POOLER

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, TokenClassifierOutput, loss, logits=logits)


class RobertaForQuestionAnswering(RobertaPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = _NO_POOLER

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states, return_dict=True)
        start, end, loss = span_outputs(self.qa_outputs(out.last_hidden_state), start_positions, end_positions)
        return _head_outputs(out, return_dict, QuestionAnsweringModelOutput, loss,
                             start_logits=start, end_logits=end)


# -- XLM-RoBERTa and CamemBERT: RoBERTa under their own config classes (and model_type) ----------------------------
class XLMRobertaModel(RobertaModel):
    config_class = XLMRobertaConfig


class XLMRobertaForMaskedLM(RobertaForMaskedLM):
    config_class = XLMRobertaConfig


class XLMRobertaForSequenceClassification(RobertaForSequenceClassification):
    config_class = XLMRobertaConfig


class XLMRobertaForTokenClassification(RobertaForTokenClassification):
    config_class = XLMRobertaConfig


class XLMRobertaForQuestionAnswering(RobertaForQuestionAnswering):
    config_class = XLMRobertaConfig


class CamembertModel(RobertaModel):
    config_class = CamembertConfig


class CamembertForMaskedLM(RobertaForMaskedLM):
    config_class = CamembertConfig


class CamembertForSequenceClassification(RobertaForSequenceClassification):
    config_class = CamembertConfig


class CamembertForTokenClassification(RobertaForTokenClassification):
    config_class = CamembertConfig


class CamembertForQuestionAnswering(RobertaForQuestionAnswering):
    config_class = CamembertConfig
