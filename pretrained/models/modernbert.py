"""ModernBERT (Warner et al., 2024): a pre-norm encoder for long inputs (8192 tokens). Rotary position embeddings
with their own theta for global and local layers; every `global_attn_every_n_layers`-th layer attends globally, the
others within a sliding window of `local_attention` tokens; a gated GELU MLP; LayerNorms and linear layers without
biases by default; a final norm.

Reads the checkpoints transformers reads (`answerdotai/ModernBERT-base`/`-large`, gte-modernbert, ...), with config.json
as v4 or v5 wrote it (see `modernbert_config`). Weights sit under `model.`; the module tree is transformers':
`model.layers.0.attn.Wqkv`, `.mlp.Wi`, `.mlp_norm`, `model.final_norm`, `head.dense`, `decoder` (tied).
transformers' unpadded flash-attention path is not reproduced: the numbers are those of its sdpa and eager paths.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..layers import (Activation, additive_mask, apply_rotary, attend, check_attention_mask, check_encoder_inputs,
                      check_heads, classification_loss, Linear, RotaryEmbedding, sliding_window_mask, span_outputs,
                      token_loss, output_flags)
from ..modeling import PreTrainedModel
from ..outputs import (BaseModelOutput, MaskedLMOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput,
                       TokenClassifierOutput)
from .bert import _head_outputs
from .modernbert_config import ModernBertConfig  # re-exported: the config lives in a torch-free module


def layer_norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, norm, dropout: no position embeddings (positions are rotary)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = layer_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        x = self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        return self.drop(self.norm(x))


class ModernBertMLP(nn.Module):
    """Gated GELU: Wo(drop(act(input) * gate)), with input and gate the two halves of Wi(x)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = Activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        input, gate = self.Wi(hidden_states).chunk(2, dim=-1)  # 2 × (B, T, intermediate)
        return self.Wo(self.drop(self.act(input) * gate))


class ModernBertRotaryEmbedding(nn.Module):
    """cos and sin of the rotary angles, per layer type: global layers use rope_parameters["full_attention"]
    (theta 160000 by default), local ones "sliding_attention" (10000). One module, as in transformers' tree; the
    per-type `RotaryEmbedding`s of layers.py it holds are plain attributes, not submodules."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        head_dim = config.hidden_size // config.num_attention_heads
        self.layer_types = sorted(set(config.layer_types))
        self.rotary = {t: RotaryEmbedding(config.rope_parameters[t], head_dim, config.max_position_embeddings)
                       for t in self.layer_types}

    def forward(self, x: Tensor, position_ids: Tensor, layer_type: str) -> tuple[Tensor, Tensor]:
        """(cos, sin), each (B or 1, T, hs) in x's dtype, for position_ids (B or 1, T)."""
        return self.rotary[layer_type](x, position_ids)


class ModernBertAttention(nn.Module):
    """Fused Wqkv, rotary on q and k (in float32, as transformers), attention (local layers: within the window), Wo."""

    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        check_heads(config.hidden_size, config.num_attention_heads)
        self.config, self.layer_idx = config, layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.Wqkv = Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout) if config.attention_dropout > 0.0 else nn.Identity()

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor],
                attention_mask: Optional[Tensor] = None, output_attentions: bool = False):
        """Returns (output (B, T, C), attention weights (B, nh, T, T) or None)."""
        B, T, C = hidden_states.shape
        qkv = self.Wqkv(hidden_states).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))  # 3 × (B, nh, T, hs)
        cos, sin = position_embeddings
        q, k = (t.to(q.dtype) for t in apply_rotary(q.float(), k.float(), cos, sin))
        eager = output_attentions or self.config.attn_implementation == "eager"
        dropout = self.config.attention_dropout if self.training else 0.0
        y, weights = attend(q, k, v, attention_mask, dropout=dropout, scale=self.head_dim ** -0.5,
                            need_weights=eager)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out_drop(self.Wo(y)), weights


class ModernBertEncoderLayer(nn.Module):
    """Pre-norm: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)). Layer 0's attn_norm is the identity (the
    embeddings were just normed)."""

    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.Identity() if layer_idx == 0 else layer_norm(config)
        self.attn = ModernBertAttention(config, layer_idx)
        self.mlp_norm = layer_norm(config)
        self.mlp = ModernBertMLP(config)
        self.attention_type = config.layer_types[layer_idx]

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                position_embeddings: Optional[tuple[Tensor, Tensor]] = None, output_attentions: bool = False):
        """Returns the new hidden states (B, T, C), as transformers' layer does; with `output_attentions`,
        (hidden states, attention weights)."""
        y, weights = self.attn(self.attn_norm(hidden_states), position_embeddings, attention_mask, output_attentions)
        x = hidden_states + y
        x = x + self.mlp(self.mlp_norm(x))
        return (x, weights) if output_attentions else x


class ModernBertPreTrainedModel(PreTrainedModel):
    config_class = ModernBertConfig
    base_model_prefix = "model"

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.tok_embeddings

    def _init_tensor(self, module, name, qualified_name, tensor):
        """transformers' scheme: truncated normals (cut at initializer_cutoff_factor std), the output projections
        scaled down by sqrt(2 * layers), the classifier by sqrt(hidden_size)."""
        if isinstance(module, nn.LayerNorm) or name == "bias":
            return super()._init_tensor(module, name, qualified_name, tensor)
        cfg = self.config
        std = cfg.initializer_range
        if qualified_name.endswith(("Wo.weight", "head.dense.weight")) or qualified_name == "decoder.weight":
            std = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)
        elif qualified_name == "classifier.weight":
            std = cfg.hidden_size ** -0.5
        cutoff = cfg.initializer_cutoff_factor if cfg.initializer_cutoff_factor is not None else 3
        nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


class ModernBertModel(ModernBertPreTrainedModel):
    """Embeddings, the layers and the final norm. Returns BaseModelOutput(last_hidden_state (B, T, C) after the final
    norm, hidden_states (the last one is last_hidden_state, as in transformers), attentions)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = layer_norm(config)
        self.rotary_emb = ModernBertRotaryEmbedding(config)
        self.post_init()

    def attention_masks(self, attention_mask: Optional[Tensor], T: int, device: torch.device) -> dict:
        """Boolean masks (True: attend) per layer type, as transformers' sdpa path uses them: global layers see every
        real token, (B, 1, 1, T); local ones only those within the window, (B or 1, 1, T, T); None: all visible."""
        real = None if attention_mask is None or bool(attention_mask.all()) \
            else attention_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, T)
        window = sliding_window_mask(T, self.config.sliding_window, device)  # (1, 1, T, T)
        local = real if window is None else window if real is None else window & real
        return {"full_attention": real, "sliding_attention": local}

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        input_ids = check_encoder_inputs(input_ids, inputs_embeds, position_ids, cfg.vocab_size, None)
        x = self.embeddings(input_ids, inputs_embeds)  # (B, T, C)
        B, T, _ = x.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=x.device)[None]  # (1, T): rotary needs no padding-aware positions
        attention_mask = check_attention_mask(attention_mask, B, T)
        masks = self.attention_masks(attention_mask, T, x.device)
        if output_attentions or cfg.attn_implementation == "eager":  # the explicit softmax adds float masks
            masks = {kind: additive_mask(mask, x.dtype) for kind, mask in masks.items()}
        rotary = {t: self.rotary_emb(x, position_ids, t) for t in self.rotary_emb.layer_types}
        states, attentions = [x], []
        for layer in self.layers:
            args = (x, masks[layer.attention_type], rotary[layer.attention_type])
            if output_attentions:
                x, weights = layer(*args, output_attentions=True)
                attentions.append(weights)
            else:
                x = layer(*args)
            states.append(x)
        x = self.final_norm(x)
        states[-1] = x
        out = BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None,
                              attentions=tuple(attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


class ModernBertPredictionHead(nn.Module):
    """norm(act(dense(x))), before the MLM decoder or a classifier."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = Activation(config.classifier_activation)
        self.norm = layer_norm(config)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.norm(self.act(self.dense(hidden_states)))


class ModernBertForMaskedLM(ModernBertPreTrainedModel):
    """head -> decoder (tied to the token embeddings). With config.sparse_prediction and labels, logits are computed
    only where labels are not sparse_pred_ignore_index, flattened to (N, vocab), as in transformers."""

    _tied_weights_keys = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        x = out.last_hidden_state  # (B, T, C)
        if self.config.sparse_prediction and labels is not None:
            labels = labels.to(x.device).reshape(-1)
            keep = labels != self.config.sparse_pred_ignore_index
            x, labels = x.reshape(labels.shape[0], -1)[keep], labels[keep]  # (N, C), (N,)
        logits = self.decoder(self.head(x))  # (B, T, vocab) or (N, vocab)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, MaskedLMOutput, loss, logits=logits)


class ModernBertForSequenceClassification(ModernBertPreTrainedModel):
    """Pooled (config.classifier_pooling: the first token, "cls", or the masked mean, "mean") -> head -> drop ->
    classifier."""

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        x = out.last_hidden_state  # (B, T, C)
        if self.config.classifier_pooling == "cls":
            pooled = x[:, 0]
        else:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if attention_mask is None \
                else attention_mask.reshape(x.shape[:2])
            pooled = (x * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)  # (B, C)
        logits = self.classifier(self.drop(self.head(pooled)))  # (B, num_labels)
        loss = None if labels is None else classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return _head_outputs(out, return_dict, SequenceClassifierOutput, loss, logits=logits)


class ModernBertForTokenClassification(ModernBertPreTrainedModel):
    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.classifier(self.drop(self.head(out.last_hidden_state)))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, TokenClassifierOutput, loss, logits=logits)


class ModernBertForQuestionAnswering(ModernBertPreTrainedModel):
    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, start_positions=None,
                end_positions=None, inputs_embeds=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.classifier(self.drop(self.head(out.last_hidden_state)))  # (B, T, 2)
        start, end, loss = span_outputs(logits, start_positions, end_positions)
        return _head_outputs(out, return_dict, QuestionAnsweringModelOutput, loss,
                             start_logits=start, end_logits=end)
