"""GPT-2 (Radford et al., 2019): a pre-LayerNorm Transformer decoder with learned absolute positions.

Reads the checkpoints transformers reads: the canonical `openai-community/gpt2*` files (keys without the
`transformer.` prefix, with the old `h.{i}.attn.bias` / `attn.masked_bias` buffers, which are ignored) and
anything `GPT2Model`/`GPT2*` saved. GPT-2 keeps OpenAI's Conv1D layout, weight (in, out), so attribute paths
are checkpoint keys and nothing is transposed: `h.0.attn.c_attn.weight` is `model.h[0].attn.c_attn.weight`. The
module tree is transformers' (h, attn, mlp, ...), so forward hooks fire on the same module names.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..configuration import ConfigError
from ..generation import GenerationMixin
from ..layers import (Activation, as_batch, attend, causal_attention_mask, check_attention_mask, check_heads,
                      check_input_ids, check_length, check_position_ids, classification_loss, decoder_cache, KVCache,
                      Linear, linear, linear_activation, merge_heads, prepack, split_heads, token_loss,
                      output_flags, input_embeddings)
from ..modeling import PreTrainedModel
from .gpt2_config import GPT2Config  # re-exported: the config lives in a torch-free module
from ..outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutputWithPast

logger = logging.getLogger(__name__)


class Conv1D(nn.Module):
    """OpenAI's linear layer: weight stored (in, out), the transpose of nn.Linear, as the checkpoints hold it.

    Args are in transformers' order: `nf` outputs, `nx` inputs.
    """

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))

    exact: Optional[bool] = None  # as layers.Linear.exact
    weight_transposed = True

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, exact=self.exact, transposed=True)

    fusable_forward = forward  # layers.linear_activation may fuse it with the MLP's activation

    def prepack(self) -> bool:
        return prepack(self.weight, self.exact, transposed=True)


class GPT2Attention(nn.Module):
    """Causal multi-head self-attention: one Conv1D for q, k, v (c_attn), one for the output (c_proj).

    `attention_mask` is the additive mask GPT2Model builds, causal and padding together, (B or 1, 1, T, S); when
    None, the attention is causal over the cached and new keys (and SDPA takes its causal kernel). New keys and
    values are appended to `cache`, a KVCache, when one is given.

    Returns (output (B, T, C), weights (B, nh, T, S) or None); the weights are computed when `output_attentions`
    or config.attn_implementation == "eager".
    """

    def __init__(self, config: GPT2Config, layer_idx: int = 0):
        super().__init__()
        C = config.n_embd
        check_heads(C, config.n_head)
        self.config, self.n_head, self.layer_idx = config, config.n_head, layer_idx
        self.c_attn = Conv1D(3 * C, C)
        self.c_proj = Conv1D(C, C)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)  # its p is applied inside `attend`
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.scale = (C // config.n_head) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)

    def forward(self, hidden_states: Tensor, cache: Optional[KVCache] = None, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        C = hidden_states.size(-1)
        q, k, v = self.c_attn(hidden_states).split(C, dim=-1)  # 3 × (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, S, hs)
        is_causal = False
        if attention_mask is None:  # causal over the keys: SDPA's causal kernel, none for one new token, or a mask
            attention_mask, is_causal = causal_attention_mask(None, q.size(2), k.size(2), q.dtype, q.device)
        y, weights = attend(q, k, v, attention_mask, dropout=self.attn_dropout.p if self.training else 0.0,
                            is_causal=is_causal, scale=self.scale,
                            need_weights=output_attentions or self.config.attn_implementation == "eager")
        return self.resid_dropout(self.c_proj(merge_heads(y))), weights  # (B, T, C)


class GPT2MLP(nn.Module):
    """dropout(c_proj(act(c_fc(x)))), with the inner size n_inner (4 * n_embd when None)."""

    def __init__(self, intermediate_size: int, config: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, intermediate_size)
        self.act = Activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.dropout(self.c_proj(linear_activation(hidden_states, self.c_fc, self.act)))  # (B, T, C)


class GPT2Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)) (pre-LN). Returns (hidden_states (B, T, C), weights or None)."""

    def __init__(self, config: GPT2Config, layer_idx: int = 0):
        super().__init__()
        C, eps = config.n_embd, config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = GPT2MLP(config.n_inner if config.n_inner is not None else 4 * C, config)

    def forward(self, hidden_states: Tensor, cache: Optional[KVCache] = None, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        y, weights = self.attn(self.ln_1(hidden_states), cache, attention_mask, output_attentions)
        x = hidden_states + y  # (B, T, C)
        return x + self.mlp(self.ln_2(x)), weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    # The causal-mask buffers of old checkpoints (`h.{i}.attn.bias`, `attn.masked_bias`); masks are computed.
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)attn\.(masked_)?bias$", r"(^|\.)crossattention\.(masked_)?bias$"]

    def _init_tensor(self, module, name, qualified_name, tensor):
        # GPT-2 scales the residual projections by 1/sqrt(number of residual layers), 2 per block.
        if qualified_name.endswith("c_proj.weight"):
            tensor.normal_(0.0, self.config.initializer_range / math.sqrt(2 * self.config.n_layer))
        else:
            super()._init_tensor(module, name, qualified_name, tensor)


class GPT2Model(GPT2PreTrainedModel):
    """Token and position embeddings, the blocks and a final LayerNorm.

    Position ids, when not given, are `arange(past_len, past_len + T)` for every row whatever the
    attention_mask, as transformers' forward computes them. A left-padded row then starts its real tokens at a
    later position; pass `position_ids` to avoid that (transformers' generate passes
    `attention_mask.cumsum(-1) - 1`, with 1 where the mask is 0).

    Returns BaseModelOutputWithPast(last_hidden_state (B, T, C), past_key_values (KVCache when use_cache),
    hidden_states, attentions).
    """

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        check_heads(config.n_embd, config.n_head)
        if config.add_cross_attention:
            raise ConfigError("GPT2Config.add_cross_attention=True (GPT-2 as the decoder of an encoder-decoder) "
                              "is not supported")
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def forward(self, input_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        use_cache = cfg.use_cache if use_cache is None else use_cache
        x = input_embeddings(input_ids, inputs_embeds, self.wte, cfg.vocab_size)  # (B, T, C)
        B, T, _ = x.shape
        cache = decoder_cache(past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        if position_ids is None:
            check_length(S, cfg.n_positions, "sequence (cached + new tokens)" if past else "sequence")
            position_ids = torch.arange(past, S, device=x.device)[None]  # (1, T)
        else:
            check_position_ids(position_ids, cfg.n_positions)
        x = x + self.wpe(position_ids)
        if token_type_ids is not None:  # GPT-2 embeds token types with the token table, as transformers does
            token_type_ids = as_batch(token_type_ids, "token_type_ids")
            check_input_ids(token_type_ids, cfg.vocab_size, "token_type_ids")
            x = x + self.wte(token_type_ids)
        x = self.drop(x)

        attention_mask = check_attention_mask(attention_mask, B, S, "cached + new tokens" if past else "the input")
        mask, _ = causal_attention_mask(attention_mask, T, S, x.dtype, x.device)  # None: each attention is causal
        hidden_states, attentions = [x], []
        for block in self.h:
            x, weights = block(x, cache, mask, output_attentions)
            hidden_states.append(x)
            attentions.append(weights)
        x = self.ln_f(x)
        hidden_states[-1] = x  # the last hidden state is the normed one, as in transformers

        out = BaseModelOutputWithPast(
            last_hidden_state=x, past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel):
    """Next-token logits from a head tied to the token embeddings; `labels` (shifted inside) give the loss."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def forward(self, input_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, logits_to_keep: int = 0):
        """`logits_to_keep=n` computes the logits of the last n positions only (0: all), as generation needs."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                               inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state[:, -logits_to_keep:])  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels, shift=True)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                        hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict else result.to_tuple()


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """Scores of the last token that is not padding (the rightmost one, so left and right padding both work)."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.score = Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def forward(self, input_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if input_ids is not None:
            input_ids = as_batch(input_ids)
        out = self.transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                               inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
        logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        B, T = logits.shape[:2]
        if cfg.pad_token_id is None and B != 1:
            raise ValueError(f"GPT2ForSequenceClassification needs config.pad_token_id to find the last token of "
                             f"each row of a batch of {B}; set it (e.g. to the eos token id)")
        if cfg.pad_token_id is None:
            last = torch.full((B,), T - 1, device=logits.device)
        elif input_ids is not None:
            not_pad = (input_ids != cfg.pad_token_id).to(logits.device, torch.int32)
            last = (torch.arange(T, device=logits.device, dtype=torch.int32) * not_pad).argmax(-1)  # (B,)
        else:
            logger.warning("GPT2ForSequenceClassification cannot find padding in inputs_embeds; "
                           "scoring the last position of every row")
            last = torch.full((B,), T - 1, device=logits.device)
        pooled = logits[torch.arange(B, device=logits.device), last]  # (B, num_labels)
        loss = None if labels is None else classification_loss(pooled, labels, cfg.num_labels, cfg.problem_type)
        result = SequenceClassifierOutputWithPast(loss=loss, logits=pooled, past_key_values=out.past_key_values,
                                                  hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict else result.to_tuple()
