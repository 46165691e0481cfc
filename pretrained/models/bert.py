"""BERT (Devlin et al., 2018): a post-LayerNorm Transformer encoder.

Reads the checkpoints transformers reads: `bert-base-*` (including the original `.bin` files with
`LayerNorm.gamma/beta`), sentence-transformers models such as all-MiniLM-L6-v2 (saved without the `bert.`
prefix) and anything `BertModel`/`BertFor*` saved. Attribute paths are checkpoint keys:
`encoder.layer.0.attention.self.query.weight` is `model.encoder.layer[0].attention["self"]["query"].weight`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import (activation, as_batch, attend, check_attention_mask, check_heads, check_input_ids, check_length,
                      check_position_ids, classification_loss, Linear, merge_heads, padding_mask, split_heads,
                      token_loss)
from ..modeling import PreTrainedModel
from .bert_config import BertConfig  # re-exported: the config lives in a torch-free module
from ..outputs import (BaseModelOutputWithPooling, MaskedLMOutput, QuestionAnsweringModelOutput,
                       SequenceClassifierOutput, TokenClassifierOutput)


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Optional[Tensor], token_type_ids: Optional[Tensor], position_ids: Optional[Tensor],
                inputs_embeds: Optional[Tensor]) -> Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=x.device)[None]
        if token_type_ids is None:
            token_type_ids = torch.zeros(1, T, dtype=torch.long, device=x.device)
        x = x + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertLayer(nn.Module):
    """Self-attention and feed-forward, each followed by residual + LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_eps
        self.n_head = config.num_attention_heads
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": Linear(C, C), "key": Linear(C, C), "value": Linear(C, C)}),
            "output": nn.ModuleDict({"dense": Linear(C, C), "LayerNorm": nn.LayerNorm(C, eps=eps)}),
        })
        self.intermediate = nn.ModuleDict({"dense": Linear(C, config.intermediate_size)})
        self.output = nn.ModuleDict({"dense": Linear(config.intermediate_size, C),
                                     "LayerNorm": nn.LayerNorm(C, eps=eps)})
        self.act = activation(config.hidden_act)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, mask: Optional[Tensor], need_weights: bool) -> tuple[Tensor, Optional[Tensor]]:
        qkv, out = self.attention["self"], self.attention["output"]
        q, k, v = (split_heads(qkv[name](x), self.n_head) for name in ("query", "key", "value"))  # (B, nh, T, hs)
        y, weights = attend(q, k, v, mask, dropout=self.attn_dropout if self.training else 0.0,
                            need_weights=need_weights)
        x = out["LayerNorm"](self.dropout(out["dense"](merge_heads(y))) + x)  # (B, T, C)
        h = self.act(self.intermediate["dense"](x))  # (B, T, intermediate)
        x = self.output["LayerNorm"](self.dropout(self.output["dense"](h)) + x)
        return x, weights


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # position_ids were a saved buffer in older checkpoints; the original TF conversions used gamma/beta.
    _keys_to_ignore_on_load_unexpected = [r"embeddings\.position_ids$"]
    _checkpoint_renames = [(r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias")]

    def _init_tensor(self, module, name, qualified_name, tensor):
        if qualified_name.endswith("cls.predictions.bias"):  # the MLM output bias starts at zero
            tensor.zero_()
        else:
            super()._init_tensor(module, name, qualified_name, tensor)


class BertModel(BertPreTrainedModel):
    """Embeddings, encoder and (optionally) the pooler over the first token.

    Returns BaseModelOutputWithPooling(last_hidden_state (B, T, C), pooler_output (B, C), hidden_states,
    attentions).
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        check_heads(config.hidden_size, config.num_attention_heads)
        self.embeddings = BertEmbeddings(config)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(BertLayer(config)
                                                             for _ in range(config.num_hidden_layers))})
        self.pooler = nn.ModuleDict({"dense": Linear(config.hidden_size, config.hidden_size)}) \
            if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_ids = as_batch(input_ids)
            check_input_ids(input_ids, cfg.vocab_size)
            T = input_ids.shape[1]
        else:
            T = inputs_embeds.shape[1]
        if position_ids is None:
            check_length(T, cfg.max_position_embeddings)
        else:
            check_position_ids(position_ids, cfg.max_position_embeddings)
        if token_type_ids is not None:
            check_input_ids(as_batch(token_type_ids, "token_type_ids"), cfg.type_vocab_size, "token_type_ids")

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        mask = padding_mask(attention_mask, x.dtype)  # (B, 1, 1, T) or None
        hidden_states, attentions = [x], []
        for layer in self.encoder["layer"]:
            x, weights = layer(x, mask, output_attentions or cfg.attn_implementation == "eager")
            hidden_states.append(x)
            attentions.append(weights)
        pooled = torch.tanh(self.pooler["dense"](x[:, 0])) if self.pooler is not None else None  # (B, C)

        out = BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


def _head_outputs(out, return_dict: bool, cls, loss, **fields):
    """Wrap a head's results like transformers: a dataclass, or a tuple (loss first when there is one)."""
    result = cls(loss=loss, **fields, hidden_states=out.hidden_states, attentions=out.attentions)
    return result if return_dict else result.to_tuple()


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled first token -> dropout -> linear over `num_labels`; `labels` give the loss `problem_type` asks."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None if labels is None else classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return _head_outputs(out, return_dict, SequenceClassifierOutput, loss, logits=logits)


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.ModuleDict({"dense": Linear(config.hidden_size, config.hidden_size),
                                        "LayerNorm": nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)})
        self.act = activation(config.hidden_act)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        x = self.transform["LayerNorm"](self.act(self.transform["dense"](x)))
        return self.decoder(x)  # (B, T, vocab); decoder.bias is self.bias


class BertForMaskedLM(BertPreTrainedModel):
    """Masked-token prediction; the decoder shares its weight with the word embeddings."""

    _tied_weights_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    _aliased_weights_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
    _keys_to_ignore_on_load_unexpected = BertPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^bert\.pooler\.", r"^cls\.seq_relationship\."]

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = nn.ModuleDict({"predictions": BertLMPredictionHead(config)})
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        logits = self.cls["predictions"](out.last_hidden_state)  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, MaskedLMOutput, loss, logits=logits)


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token (NER, POS)."""

    _keys_to_ignore_on_load_unexpected = BertPreTrainedModel._keys_to_ignore_on_load_unexpected + [r"^bert\.pooler\."]

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, TokenClassifierOutput, loss, logits=logits)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: start and end logits for every token."""

    _keys_to_ignore_on_load_unexpected = BertPreTrainedModel._keys_to_ignore_on_load_unexpected + [r"^bert\.pooler\."]

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        start, end = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)  # 2 × (B, T, 1)
        start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()  # (B, T)
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start.size(1)  # positions outside the sequence are clamped to T and ignored, as in transformers
            s = start_positions.view(-1).clamp(0, T)
            e = end_positions.view(-1).clamp(0, T)
            loss = (F.cross_entropy(start, s, ignore_index=T) + F.cross_entropy(end, e, ignore_index=T)) / 2
        return _head_outputs(out, return_dict, QuestionAnsweringModelOutput, loss,
                             start_logits=start, end_logits=end)
