"""DistilBERT (Sanh et al., 2019): a 6-layer post-LayerNorm BERT distilled from bert-base, without token types or
pooler.

Reads the checkpoints transformers reads (`distilbert-base-uncased`, its SST-2 and SQuAD fine-tunes, ...). Attribute
paths are checkpoint keys and the module tree is transformers': `distilbert.transformer.layer.0.attention.q_lin`,
`.sa_layer_norm`, `.ffn.lin1`, `.output_layer_norm`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..layers import (Activation, attend, check_attention_mask, check_encoder_inputs, check_heads,
                      classification_loss, FusedLinears, Linear, linear_activation, merge_heads, padding_mask,
                      span_outputs, split_heads, token_loss, output_flags)
from ..modeling import PreTrainedModel
from ..outputs import (BaseModelOutput, MaskedLMOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput,
                       TokenClassifierOutput)
from .bert import _head_outputs
from .distilbert_config import DistilBertConfig  # re-exported: the config lives in a torch-free module

LAYER_NORM_EPS = 1e-12  # fixed in DistilBERT, not a config field


class Embeddings(nn.Module):
    """Word + learned (or sinusoidal, stored as weights) position embeddings, LayerNorm, dropout."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None) -> Tensor:
        x = self.word_embeddings(input_ids) if input_ids is not None else inputs_embeds  # (B, T, C)
        if position_ids is None:
            position_ids = torch.arange(x.size(1), device=x.device)[None]
        return self.dropout(self.LayerNorm(x + self.position_embeddings(position_ids)))


class DistilBertSelfAttention(FusedLinears, nn.Module):
    """Multi-head self-attention with its output projection (`out_lin`) inside, unlike BERT."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        check_heads(config.dim, config.n_heads)
        self.n_heads = config.n_heads
        self.q_lin, self.k_lin = Linear(config.dim, config.dim), Linear(config.dim, config.dim)
        self.v_lin, self.out_lin = Linear(config.dim, config.dim), Linear(config.dim, config.dim)
        self.dropout = nn.Dropout(config.attention_dropout)  # applied inside attend(), as transformers does
        self.config = config

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"qkv": (self.q_lin, self.k_lin, self.v_lin)}

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        qkv = self.linears(hidden_states, self.q_lin, self.k_lin, self.v_lin)
        q, k, v = (split_heads(y, self.n_heads) for y in qkv)
        eager = output_attentions or self.config.attn_implementation == "eager"
        y, weights = attend(q, k, v, attention_mask, dropout=self.dropout.p if self.training else 0.0,
                            need_weights=eager)  # (B, nh, T, hs)
        return self.out_lin(merge_heads(y)), weights  # (B, T, C)


class FFN(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.lin1 = Linear(config.dim, config.hidden_dim)
        self.lin2 = Linear(config.hidden_dim, config.dim)
        self.activation = Activation(config.activation)

    def forward(self, input: Tensor) -> Tensor:
        return self.dropout(self.lin2(linear_activation(input, self.lin1, self.activation)))


class TransformerBlock(nn.Module):
    """Post-LN: attention -> `sa_layer_norm(+ residual)` -> FFN -> `output_layer_norm(+ residual)`."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False):
        """Returns the new hidden states (B, T, C), as transformers' block does; with `output_attentions`,
        (hidden states, attention weights (B, nh, T, T))."""
        y, weights = self.attention(hidden_states, attention_mask, output_attentions)
        x = self.sa_layer_norm(y + hidden_states)
        x = self.output_layer_norm(self.ffn(x) + x)
        return (x, weights) if output_attentions else x


class Transformer(nn.Module):
    """The stack of blocks (DistilBERT's encoder)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.n_layers = config.n_layers
        self.layer = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> BaseModelOutput:
        """`attention_mask`: the additive (B, 1, 1, T) mask, or None."""
        states, attentions = [hidden_states], []
        for block in self.layer:
            if output_attentions:
                hidden_states, weights = block(hidden_states, attention_mask, True)
                attentions.append(weights)
            else:
                hidden_states = block(hidden_states, attention_mask)
            states.append(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states,
                               hidden_states=tuple(states) if output_hidden_states else None,
                               attentions=tuple(attentions) if output_attentions else None)


def sinusoidal_table(n_pos: int, dim: int) -> Tensor:
    """The fixed position table of `sinusoidal_pos_embds=True`: sin on even channels, cos on odd ones."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)  # (n_pos, dim), float64
    table = torch.empty(n_pos, dim)
    table[:, 0::2] = torch.sin(angle[:, 0::2]).float()
    table[:, 1::2] = torch.cos(angle[:, 1::2]).float()
    return table


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    _keys_to_ignore_on_load_unexpected = [r"embeddings\.position_ids$"]  # a buffer in older checkpoints

    def _init_tensor(self, module, name, qualified_name, tensor):
        if self.config.sinusoidal_pos_embds and qualified_name.endswith("embeddings.position_embeddings.weight"):
            tensor.copy_(sinusoidal_table(*tensor.shape))
        else:
            super()._init_tensor(module, name, qualified_name, tensor)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings


class DistilBertModel(DistilBertPreTrainedModel):
    """Embeddings and the Transformer stack. Returns BaseModelOutput(last_hidden_state (B, T, C), hidden_states,
    attentions)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)
        self.post_init()

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        input_ids = check_encoder_inputs(input_ids, inputs_embeds, position_ids, cfg.vocab_size,
                                         cfg.max_position_embeddings)
        x = self.embeddings(input_ids, inputs_embeds, position_ids)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        out = self.transformer(x, padding_mask(attention_mask, x.dtype), output_attentions, output_hidden_states)
        return out if return_dict else out.to_tuple()


class DistilBertForMaskedLM(DistilBertPreTrainedModel):
    """vocab_transform -> activation -> vocab_layer_norm -> vocab_projector (tied to the word embeddings)."""

    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.activation = Activation(config.activation)
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.vocab_projector = Linear(config.dim, config.vocab_size)
        self.post_init()
        self.mlm_loss_fct = nn.CrossEntropyLoss()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.distilbert(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                              output_hidden_states, return_dict=True)
        x = self.vocab_layer_norm(self.activation(self.vocab_transform(out.last_hidden_state)))
        logits = self.vocab_projector(x)  # (B, T, vocab)
        loss = None if labels is None else self.mlm_loss_fct(logits.view(-1, logits.size(-1)),
                                                              labels.to(logits.device).view(-1))
        return _head_outputs(out, return_dict, MaskedLMOutput, loss, logits=logits)


class DistilBertForSequenceClassification(DistilBertPreTrainedModel):
    """First token -> pre_classifier -> ReLU -> dropout -> classifier."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = Linear(config.dim, config.dim)
        self.classifier = Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.distilbert(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                              output_hidden_states, return_dict=True)
        pooled = torch.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (B, C)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None if labels is None else classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return _head_outputs(out, return_dict, SequenceClassifierOutput, loss, logits=logits)


class DistilBertForTokenClassification(DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.distilbert(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                              output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, TokenClassifierOutput, loss, logits=logits)


class DistilBertForQuestionAnswering(DistilBertPreTrainedModel):
    """Start and end logits for every token; the config must have 2 labels, as transformers requires."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"DistilBertForQuestionAnswering needs num_labels=2 (start, end), got {config.num_labels}")
        self.distilbert = DistilBertModel(config)
        self.qa_outputs = Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, start_positions=None,
                end_positions=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.distilbert(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                              output_hidden_states, return_dict=True)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))  # (B, T, 2)
        start, end, loss = span_outputs(logits, start_positions, end_positions)
        return _head_outputs(out, return_dict, QuestionAnsweringModelOutput, loss,
                             start_logits=start, end_logits=end)
