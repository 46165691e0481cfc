"""Llama (Touvron et al., 2023): a pre-RMSNorm decoder with rotary position embeddings, grouped-query attention
and a gated SiLU MLP, and the base of the Llama family (Mistral, Qwen2, Qwen3 subclass these blocks).

Reads what transformers' LlamaModel / LlamaForCausalLM / LlamaForSequenceClassification read and write: keys
`model.embed_tokens.weight`, `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`, `model.layers.{i}.mlp.
{gate,up,down}_proj.weight`, `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight`,
`lm_head.weight` (absent when tie_word_embeddings) and `score.weight`. Old checkpoints' `rotary_emb.inv_freq`
buffers are ignored: the frequencies are computed from the config.

A family declares what differs as class attributes: the config class, the attention class (Qwen2's q/k/v bias,
Qwen3's q/k norms) and `sliding_window(config, layer_idx)` (Mistral's window on every layer, Qwen2's on the layers
its layer_types mark).
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from ..configuration import ConfigError
from ..generation import GenerationMixin
from ..layers import (FusedLinears, GatedMLP, KVCache, Linear, RMSNorm, RotaryEmbedding, apply_rotary, as_batch,
                      attend, causal_attention_mask, check_attention_mask, classification_loss, decoder_cache,
                      last_token_logits, merge_heads, token_loss, output_flags, input_embeddings)
from ..modeling import PreTrainedModel
from ..outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutputWithPast
from .llama_config import LlamaConfig

__all__ = ["LlamaConfig", "LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification"]


def head_dim_of(config) -> int:
    """The attention head size: config.head_dim when set, else hidden_size // num_attention_heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(FusedLinears, nn.Module):
    """Grouped-query self-attention with rotary embeddings: num_attention_heads query heads share
    num_key_value_heads key/value heads; the cache keeps the kv heads, repeated only for the product."""

    def __init__(self, config, layer_idx: int, sliding_window: Optional[int] = None):
        super().__init__()
        C, nh, nkv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        if not nh or not nkv or nh % nkv:
            raise ConfigError(f"num_attention_heads ({nh}) must be a positive multiple of num_key_value_heads "
                              f"({nkv})")
        self.layer_idx, self.sliding_window = layer_idx, sliding_window
        self.head_dim = hs = head_dim_of(config)
        self.num_heads, self.num_key_value_heads, self.num_key_value_groups = nh, nkv, nh // nkv
        self.scaling = hs ** -0.5
        self.attention_dropout = config.attention_dropout
        qkv_bias, o_bias = self.biases(config)
        self.q_proj = Linear(C, nh * hs, bias=qkv_bias)
        self.k_proj = Linear(C, nkv * hs, bias=qkv_bias)
        self.v_proj = Linear(C, nkv * hs, bias=qkv_bias)
        self.o_proj = Linear(nh * hs, C, bias=o_bias)

    @staticmethod
    def biases(config) -> tuple[bool, bool]:
        """(bias on q/k/v, bias on o_proj): Llama's attention_bias for all four."""
        bias = bool(getattr(config, "attention_bias", False))
        return bias, bias

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"qkv": (self.q_proj, self.k_proj, self.v_proj)}

    def normalize_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Hook for Qwen3's per-head RMSNorm of queries and keys; Llama has none."""
        return q, k

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor],
                attention_mask: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """hidden_states (B, T, C), position_embeddings (cos, sin) from `rotary_emb`, attention_mask an additive
        (B or 1, 1, T, S) mask or None: causal over the T tokens (and every cached one). Returns (y (B, T, C),
        attention weights (B, nh, T, S) when output_attentions)."""
        B, T, _ = hidden_states.shape
        hs = self.head_dim
        q, k, v = self.linears(hidden_states, self.q_proj, self.k_proj, self.v_proj)
        q = q.view(B, T, -1, hs)  # (B, T, nh, hs)
        k = k.view(B, T, -1, hs)  # (B, T, nkv, hs)
        v = v.view(B, T, -1, hs).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = self.normalize_qk(q, k)
        q, k = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), *position_embeddings)  # (B, nh|nkv, T, hs)
        if past_key_values is not None:
            k, v = past_key_values.update(self.layer_idx, k, v)  # (B, nkv, S, hs)
        y, weights = attend(q, k, v, attention_mask, is_causal=attention_mask is None and T > 1,
                            dropout=self.attention_dropout if self.training else 0.0, scale=self.scaling,
                            need_weights=output_attentions)  # (B, nh, T, hs)
        return self.o_proj(merge_heads(y)), weights  # (B, T, C)


class LlamaDecoderLayer(nn.Module):
    """x + self_attn(input_layernorm(x)), then x + mlp(post_attention_layernorm(x))."""

    def __init__(self, config, layer_idx: int, attention: LlamaAttention):
        super().__init__()
        self.self_attn = attention
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act,
                            bias=bool(getattr(config, "mlp_bias", False)))
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                position_embeddings: Optional[tuple[Tensor, Tensor]] = None,
                past_key_values: Optional[KVCache] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """As LlamaAttention: a None mask is causal; position_embeddings (cos, sin) come from `rotary_emb`.
        Returns (hidden_states (B, T, C), attention weights or None)."""
        if position_embeddings is None:
            raise ValueError("position_embeddings (cos, sin) are required: compute them with the model's "
                             "rotary_emb(hidden_states, position_ids)")
        y, weights = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask,
                                    past_key_values, output_attentions)
        x = hidden_states + y
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    # Llama-2-era checkpoints saved the rotary frequencies; they are computed from the config instead.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq$"]

    def _init_tensor(self, module, name, qualified_name, tensor):
        if isinstance(module, RMSNorm):
            tensor.fill_(1.0)
        else:
            super()._init_tensor(module, name, qualified_name, tensor)

    @classmethod
    def _mismatch_hint(cls, key: str, config) -> str:
        if any(part in key for part in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")):
            return (f" The attention shapes follow head_dim = {head_dim_of(config)} (config.head_dim, else "
                    f"hidden_size // num_attention_heads) × {config.num_attention_heads} query / "
                    f"{config.num_key_value_heads} key-value heads: the config's head_dim or head counts do not "
                    f"match this checkpoint.")
        return ""


class LlamaModel(LlamaPreTrainedModel):
    """Token embeddings, the decoder layers and a final RMSNorm; rotary angles are computed once per forward.

    Position ids, when not given, are `arange(past, past + T)` for every row, as in transformers' forward;
    generate() passes `attention_mask.cumsum(-1) - 1` for left-padded batches, as transformers' generate does.

    Returns BaseModelOutputWithPast(last_hidden_state (B, T, C), past_key_values (KVCache when use_cache),
    hidden_states, attentions).
    """

    attention_class: ClassVar[type[LlamaAttention]] = LlamaAttention

    @staticmethod
    def sliding_window(config, layer_idx: int) -> Optional[int]:
        """The attention window of layer `layer_idx` (None: full causal attention). Llama has none."""
        return None

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.padding_idx, self.vocab_size = config.pad_token_id, config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i, self.attention_class(config, i, self.sliding_window(config, i)))
            for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rope_parameters, head_dim_of(config), config.max_position_embeddings)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                inputs_embeds: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        use_cache = cfg.use_cache if use_cache is None else use_cache
        x = input_embeddings(input_ids, inputs_embeds, self.embed_tokens, cfg.vocab_size)  # (B, T, C)
        B, T, _ = x.shape
        cache = decoder_cache(past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        if position_ids is None:
            position_ids = torch.arange(past, S, device=x.device)[None]  # (1, T)
        elif position_ids.dim() == 1:
            position_ids = position_ids[None]
        attention_mask = check_attention_mask(attention_mask, B, S, "cached + new tokens" if past else "the input")
        masks = {}  # window -> additive mask, or None for plain causal attention; one per distinct window
        need_weights = output_attentions or cfg.attn_implementation == "eager"
        position_embeddings = self.rotary_emb(x, position_ids)  # 2 × (B or 1, T, hs)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            window = layer.self_attn.sliding_window
            if window not in masks:  # (mask, is_causal): is_causal is exactly "no mask and T > 1"
                masks[window] = causal_attention_mask(attention_mask, T, S, x.dtype, x.device, window)[0]
            x, weights = layer(x, masks[window], position_embeddings, cache, need_weights)
            hidden_states.append(x)
            attentions.append(weights)
        x = self.norm(x)
        hidden_states[-1] = x  # the last hidden state is the normed one, as in transformers
        out = BaseModelOutputWithPast(
            last_hidden_state=x, past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


class LlamaForCausalLM(GenerationMixin, LlamaPreTrainedModel):
    """Next-token logits from `lm_head` (tied to the token embeddings when config.tie_word_embeddings);
    `labels` (shifted inside) give the loss."""

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    positions_bounded = False  # rotary positions: generation may run past max_position_embeddings

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                inputs_embeds: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                logits_to_keep: int = 0):
        """`logits_to_keep=n` computes the logits of the last n positions only (0: all), as generation needs."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                         output_attentions, output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state[:, -logits_to_keep:])  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels, shift=True)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                        hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict else result.to_tuple()


class LlamaForSequenceClassification(LlamaPreTrainedModel):
    """Scores (`score`, no bias) of each row's last token that is not padding (left or right padding)."""

    base_model_class: ClassVar[type[LlamaModel]] = LlamaModel

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, past_key_values: Optional[KVCache] = None,
                inputs_embeds: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if input_ids is not None:
            input_ids = as_batch(input_ids)
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                         output_attentions, output_hidden_states, return_dict=True)
        logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        pooled = last_token_logits(logits, input_ids, cfg.pad_token_id, type(self).__name__)  # (B, num_labels)
        loss = None if labels is None else classification_loss(pooled, labels, cfg.num_labels, cfg.problem_type)
        result = SequenceClassifierOutputWithPast(loss=loss, logits=pooled, past_key_values=out.past_key_values,
                                                  hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict else result.to_tuple()
