"""BERT (Devlin et al., 2018): a post-LayerNorm Transformer encoder.

Reads the checkpoints transformers reads: `bert-base-*` (including the original `.bin` files with
`LayerNorm.gamma/beta`), sentence-transformers models such as all-MiniLM-L6-v2 (saved without the `bert.`
prefix) and anything `BertModel`/`BertFor*` saved. Attribute paths are checkpoint keys:
`encoder.layer.0.attention.self.query.weight` is `model.encoder.layer[0].attention.self.query.weight`. The
module tree is transformers' (embeddings, encoder, layer, attention, self, output, intermediate, pooler, cls...),
so forward hooks fire on the same module names; RoBERTa-like families reuse these blocks unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import (Activation, as_batch, attend, check_attention_mask, check_heads, check_input_ids,
                      classification_loss, FusedLinears, Linear, linear_activation, merge_heads, padding_mask,
                      split_heads, token_loss, output_flags, check_encoder_inputs)
from ..modeling import PreTrainedModel
from .bert_config import BertConfig  # re-exported: the config lives in a torch-free module
from ..outputs import (BaseModelOutput, BaseModelOutputWithPooling, MaskedLMOutput, QuestionAnsweringModelOutput,
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

    def forward(self, input_ids: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=x.device)[None]
        if token_type_ids is None:
            token_type_ids = torch.zeros(1, T, dtype=torch.long, device=x.device)
        x = x + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(FusedLinears, nn.Module):
    """Multi-head self-attention: query/key/value projections and softmax(q k^T / sqrt(hs) + mask) v.

    Returns (context (B, T, C) before the output projection, weights (B, nh, T, T) or None). The weights are
    computed (explicit softmax instead of SDPA) when `output_attentions` or config.attn_implementation == "eager".
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        check_heads(C, config.num_attention_heads)
        self.config, self.num_attention_heads = config, config.num_attention_heads
        self.query, self.key, self.value = Linear(C, C), Linear(C, C), Linear(C, C)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)  # its p is applied inside `attend`

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"qkv": (self.query, self.key, self.value)}

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        nh = self.num_attention_heads
        qkv = self.linears(hidden_states, self.query, self.key, self.value)
        q, k, v = (split_heads(y, nh) for y in qkv)  # (B, nh, T, hs)
        y, weights = attend(q, k, v, attention_mask, dropout=self.dropout.p if self.training else 0.0,
                            need_weights=output_attentions or self.config.attn_implementation == "eager")
        return merge_heads(y), weights  # (B, T, C)


class BertSelfOutput(nn.Module):
    """Output projection of the attention, then residual + LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)  # (B, T, C)


class BertAttention(nn.Module):
    """`self` (attention) then `output` (projection, residual, LayerNorm). Returns (output (B, T, C), weights)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        y, weights = self.self(hidden_states, attention_mask, output_attentions)
        return self.output(y, hidden_states), weights


class BertIntermediate(nn.Module):
    """The feed-forward's expansion: act(dense(x)), (B, T, intermediate_size)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = Activation(config.hidden_act)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return linear_activation(hidden_states, self.dense, self.intermediate_act_fn)


class BertOutput(nn.Module):
    """The feed-forward's projection back to C, then residual + LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)  # (B, T, C)


class BertLayer(nn.Module):
    """Self-attention and feed-forward, each followed by residual + LayerNorm (post-LN).

    Returns (hidden_states (B, T, C), attention weights (B, nh, T, T) or None).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        x, weights = self.attention(hidden_states, attention_mask, output_attentions)  # (B, T, C)
        return self.output(self.intermediate(x), x), weights


class BertEncoder(nn.Module):
    """The stack of layers. Returns BaseModelOutput(last_hidden_state (B, T, C), hidden_states, attentions).

    `attention_mask` is the additive (B, 1, 1, T) mask the model builds, or a (B, T) mask of 1 / 0, or None.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool = True):
        x = hidden_states  # (B, T, C)
        if attention_mask is not None and attention_mask.dim() == 2:
            attention_mask = padding_mask(check_attention_mask(attention_mask, x.size(0), x.size(1)), x.dtype)
        all_hidden, all_attentions = [x], []
        for layer in self.layer:
            x, weights = layer(x, attention_mask, output_attentions)
            all_hidden.append(x)
            all_attentions.append(weights)
        out = BaseModelOutput(last_hidden_state=x, hidden_states=tuple(all_hidden) if output_hidden_states else None,
                              attentions=tuple(all_attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


class BertPooler(nn.Module):
    """tanh(dense(first token)), (B, C)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


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
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        input_ids = check_encoder_inputs(input_ids, inputs_embeds, position_ids, cfg.vocab_size,
                                         cfg.max_position_embeddings)
        if token_type_ids is not None:
            check_input_ids(as_batch(token_type_ids, "token_type_ids"), cfg.type_vocab_size, "token_type_ids")

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        mask = padding_mask(attention_mask, x.dtype)  # (B, 1, 1, T) or None
        enc = self.encoder(x, mask, output_attentions, output_hidden_states, return_dict=True)
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None  # (B, C)

        out = BaseModelOutputWithPooling(last_hidden_state=enc.last_hidden_state, pooler_output=pooled,
                                         hidden_states=enc.hidden_states, attentions=enc.attentions)
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


class BertPredictionHeadTransform(nn.Module):
    """LayerNorm(act(dense(x))), (B, T, C), before the MLM decoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = Activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """transform, then the decoder over the vocabulary, (B, T, vocab); decoder.bias is `bias`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(nn.Module):
    """`cls` of the masked-LM model: holds `predictions`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output: Tensor) -> Tensor:
        return self.predictions(sequence_output)  # (B, T, vocab)


class BertForMaskedLM(BertPreTrainedModel):
    """Masked-token prediction; the decoder shares its weight with the word embeddings."""

    _tied_weights_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    _aliased_weights_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
    _keys_to_ignore_on_load_unexpected = BertPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^bert\.pooler\.", r"^cls\.seq_relationship\."]

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions, output_hidden_states, return_dict=True)
        logits = self.cls(out.last_hidden_state)  # (B, T, vocab)
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
