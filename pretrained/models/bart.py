"""BART (Lewis et al., 2019): a post-LayerNorm Transformer encoder-decoder with learned positions.

Reads the checkpoints transformers reads: `facebook/bart-*` (fairseq conversions with `encoder.version` /
`decoder.version` keys, and files without `final_logits_bias`) and anything `BartModel`/`Bart*` saved.
Attribute paths are checkpoint keys: `model.encoder.layers.0.self_attn.q_proj.weight` is
`model.model.encoder.layers[0].self_attn.q_proj.weight`, and the module tree is transformers' (encoder, decoder,
layers, self_attn, encoder_attn, activation_fn, classification_head...), so forward hooks fire on the same module
names. The encoder's and decoder's token embeddings are the very same Parameter as `shared` (and as `lm_head`), so
only `model.shared.weight` is saved.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation import GenerationMixin
from ..layers import (Activation, as_batch, attend, causal_attention_mask, check_attention_mask, check_heads,
                      check_length, classification_loss, decoder_cache, FusedLinears, KVCache, Linear,
                      linear_activation, merge_heads, padding_mask, split_heads, token_loss, output_flags,
                      input_embeddings)
from ..modeling import PreTrainedModel
from .bart_config import BartConfig  # re-exported: the config lives in a torch-free module
from ..outputs import (BaseModelOutput, BaseModelOutputWithPast, Seq2SeqLMOutput, Seq2SeqModelOutput,
                       Seq2SeqSequenceClassifierOutput)


def shift_tokens_right(input_ids: Tensor, pad_token_id: Optional[int], decoder_start_token_id: int) -> Tensor:
    """Decoder inputs from targets: the start token first, every token moved one step right, -100 -> pad."""
    if pad_token_id is None:
        raise ValueError("config.pad_token_id must be set to shift tokens right")
    shifted = input_ids.new_empty(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)


class BartScaledWordEmbedding(nn.Embedding):
    """Token embedding times `embed_scale` (sqrt(d_model) when config.scale_embedding, else 1)."""

    def __init__(self, config: BartConfig):
        super().__init__(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0

    def forward(self, input_ids: Tensor) -> Tensor:
        x = super().forward(input_ids)
        return x if self.embed_scale == 1.0 else x * self.embed_scale


class BartAttention(FusedLinears, nn.Module):
    """Multi-head attention over the layer's own input (self) or over `key_value_states`, the encoder output (cross).

    `attention_mask` is additive: (B, 1, 1, S) padding, or, for the decoder's self-attention, the (B or 1, 1, T, S)
    causal + padding mask BartDecoder builds. With `is_causal` and no mask, the attention is causal over the cached
    and new keys. `cache` (a KVCache) gets the new self-attention keys, and keeps the cross-attention keys of the
    encoder output, computed on the first call.

    Returns (output (B, T, C), weights (B, nh, T, S) or None); the weights are computed when `output_attentions`
    or config.attn_implementation == "eager".
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, is_causal: bool = False,
                 config: Optional[BartConfig] = None, layer_idx: int = 0):
        super().__init__()
        check_heads(embed_dim, num_heads)
        self.num_heads, self.dropout, self.is_causal = num_heads, dropout, is_causal
        self.config, self.layer_idx = config, layer_idx
        C = embed_dim
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (Linear(C, C) for _ in range(4))
        self.cross = False  # set by BartLayer on its encoder_attn: q/k/v read different inputs there

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"kv": (self.k_proj, self.v_proj)} if self.cross else {"qkv": (self.q_proj, self.k_proj, self.v_proj)}

    def forward(self, hidden_states: Tensor, key_value_states: Optional[Tensor] = None,
                cache: Optional[KVCache] = None, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        nh, i = self.num_heads, self.layer_idx
        if key_value_states is None:  # self-attention: new keys are appended to the cache
            qkv = self.linears(hidden_states, self.q_proj, self.k_proj, self.v_proj)
            q, k, v = (split_heads(y, nh) for y in qkv)  # (B, nh, T, hs)
            if cache is not None:
                k, v = cache.update(i, k, v)  # (B, nh, S, hs)
        else:  # cross-attention: keys of the encoder output, computed once per cache
            q = split_heads(self.q_proj(hidden_states), nh)
            kv = cache.get_cross(i) if cache is not None else None
            if kv is None:
                kv = tuple(split_heads(y, nh) for y in self.linears(key_value_states, self.k_proj, self.v_proj))
                if cache is not None:
                    cache.set_cross(i, *kv)
            k, v = kv  # (B, nh, S_enc, hs)
        is_causal = False
        if self.is_causal and key_value_states is None and attention_mask is None:
            attention_mask, is_causal = causal_attention_mask(None, q.size(2), k.size(2), q.dtype, q.device)
        eager = self.config is not None and self.config.attn_implementation == "eager"
        y, weights = attend(q, k, v, attention_mask, dropout=self.dropout if self.training else 0.0,
                            is_causal=is_causal, need_weights=output_attentions or eager)
        return self.out_proj(merge_heads(y)), weights  # (B, T, C)


class BartLayer(nn.Module):
    """What the encoder and decoder layers share: self-attention + LayerNorm (causal in the decoder, which also
    has cross-attention + LayerNorm), and the feed-forward (fc1, activation_fn, fc2) + final LayerNorm, post-LN."""

    def __init__(self, config: BartConfig, num_heads: int, ffn_dim: int, is_decoder: bool, layer_idx: int):
        super().__init__()
        C, p = config.d_model, config.attention_dropout
        self.self_attn = BartAttention(C, num_heads, p, is_causal=is_decoder, config=config, layer_idx=layer_idx)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout
        self.activation_fn = Activation(config.activation_function)
        self.self_attn_layer_norm = nn.LayerNorm(C)
        if is_decoder:
            self.encoder_attn = BartAttention(C, num_heads, p, config=config, layer_idx=layer_idx)
            self.encoder_attn.cross = True
            self.encoder_attn_layer_norm = nn.LayerNorm(C)
        self.fc1 = Linear(C, ffn_dim)
        self.fc2 = Linear(ffn_dim, C)
        self.final_layer_norm = nn.LayerNorm(C)

    def residual(self, norm: nn.LayerNorm, x: Tensor, y: Tensor) -> Tensor:
        return norm(x + F.dropout(y, self.dropout, self.training))

    def feed_forward(self, x: Tensor) -> Tensor:
        h = F.dropout(linear_activation(x, self.fc1, self.activation_fn), self.activation_dropout,
                      self.training)  # (B, T, ffn)
        x = self.residual(self.final_layer_norm, x, self.fc2(h))  # (B, T, C)
        if x.dtype == torch.float16 and not torch.isfinite(x).all():  # keep fp16 activations finite
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x


class BartEncoderLayer(BartLayer):
    """Self-attention, then feed-forward. Returns (hidden_states (B, T, C), attention weights or None)."""

    def __init__(self, config: BartConfig, layer_idx: int = 0):
        super().__init__(config, config.encoder_attention_heads, config.encoder_ffn_dim, False, layer_idx)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        y, weights = self.self_attn(hidden_states, attention_mask=attention_mask, output_attentions=output_attentions)
        return self.feed_forward(self.residual(self.self_attn_layer_norm, hidden_states, y)), weights


class BartDecoderLayer(BartLayer):
    """Causal self-attention, cross-attention over the encoder output (when given), then feed-forward.

    Returns (hidden_states (B, T, C), self-attention weights or None, cross-attention weights or None).
    """

    def __init__(self, config: BartConfig, layer_idx: int = 0):
        super().__init__(config, config.decoder_attention_heads, config.decoder_ffn_dim, True, layer_idx)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                encoder_hidden_states: Optional[Tensor] = None, encoder_attention_mask: Optional[Tensor] = None,
                cache: Optional[KVCache] = None,
                output_attentions: bool = False) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        y, weights = self.self_attn(hidden_states, cache=cache, attention_mask=attention_mask,
                                    output_attentions=output_attentions)
        x = self.residual(self.self_attn_layer_norm, hidden_states, y)  # (B, T, C)
        cross_weights = None
        if encoder_hidden_states is not None:
            y, cross_weights = self.encoder_attn(x, encoder_hidden_states, cache, encoder_attention_mask,
                                                 output_attentions)
            x = self.residual(self.encoder_attn_layer_norm, x, y)
        return self.feed_forward(x), weights, cross_weights


class BartStack(nn.Module):
    """What the encoder and decoder share: token + position embeddings, layernorm_embedding, the layers."""

    def __init__(self, config: BartConfig, layer_class: type, n_layers: int, layerdrop: float):
        super().__init__()
        self.config, self.layerdrop = config, layerdrop
        self.embed_tokens = BartScaledWordEmbedding(config)
        # fairseq reserved the first two positions, so the table has 2 more rows and positions start at 2
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, config.d_model)
        self.layers = nn.ModuleList(layer_class(config, i) for i in range(n_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)

    def embed(self, input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor], past: int = 0) -> Tensor:
        cfg = self.config
        inputs_embeds = input_embeddings(input_ids, inputs_embeds, self.embed_tokens, cfg.vocab_size)
        T = inputs_embeds.size(1)
        check_length(past + T, cfg.max_position_embeddings, "sequence (cached + new tokens)" if past else "sequence")
        positions = torch.arange(past + 2, past + T + 2, device=inputs_embeds.device)[None]  # (1, T)
        x = self.layernorm_embedding(inputs_embeds + self.embed_positions(positions))
        return F.dropout(x, cfg.dropout, self.training)  # (B, T, C)

    def skip_layer(self) -> bool:
        """LayerDrop (Fan et al., 2019): in training, skip each layer with probability `layerdrop`."""
        return self.training and self.layerdrop > 0 and bool(torch.rand([]) < self.layerdrop)


class BartEncoder(BartStack):
    """Returns BaseModelOutput(last_hidden_state (B, T, C), hidden_states, attentions)."""

    def __init__(self, config: BartConfig):
        super().__init__(config, BartEncoderLayer, config.encoder_layers, config.encoder_layerdrop)

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        x = self.embed(input_ids, inputs_embeds)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        mask = padding_mask(attention_mask, x.dtype)  # (B, 1, 1, T) or None
        hidden_states, attentions = [x], []
        for layer in self.layers:
            if self.skip_layer():
                continue
            x, weights = layer(x, mask, output_attentions)
            hidden_states.append(x)
            attentions.append(weights)
        out = BaseModelOutput(last_hidden_state=x,
                              hidden_states=tuple(hidden_states) if output_hidden_states else None,
                              attentions=tuple(attentions) if output_attentions else None)
        return out if return_dict else out.to_tuple()


class BartDecoder(BartStack):
    """Causal self-attention over the target (cached when use_cache), cross-attention over the encoder output.

    Returns BaseModelOutputWithPast(last_hidden_state, past_key_values, hidden_states, attentions,
    cross_attentions).
    """

    def __init__(self, config: BartConfig):
        super().__init__(config, BartDecoderLayer, config.decoder_layers, config.decoder_layerdrop)

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                encoder_hidden_states: Optional[Tensor] = None, encoder_attention_mask: Optional[Tensor] = None,
                past_key_values: Optional[KVCache] = None, inputs_embeds: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        use_cache = cfg.use_cache if use_cache is None else use_cache
        cache = decoder_cache(past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        x = self.embed(input_ids, inputs_embeds, past)  # (B, T, C)
        B, T, _ = x.shape
        attention_mask = check_attention_mask(attention_mask, B, past + T,
                                              "cached + new decoder tokens" if past else "decoder_input_ids")
        mask, _ = causal_attention_mask(attention_mask, T, past + T, x.dtype, x.device)  # None: causal in attention
        source_mask = None
        if encoder_hidden_states is not None:
            encoder_attention_mask = check_attention_mask(encoder_attention_mask, B, encoder_hidden_states.size(1),
                                                          "the encoder output")
            source_mask = padding_mask(encoder_attention_mask, x.dtype)  # (B, 1, 1, S_enc) or None
        hidden_states, attentions, cross_attentions = [x], [], []
        for layer in self.layers:
            if self.skip_layer():
                continue
            x, weights, cross = layer(x, mask, encoder_hidden_states, source_mask, cache, output_attentions)
            hidden_states.append(x)
            attentions.append(weights)
            cross_attentions.append(cross)
        out = BaseModelOutputWithPast(
            last_hidden_state=x, past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions) if output_attentions and encoder_hidden_states is not None
            else None)
        return out if return_dict else out.to_tuple()


_EMBED_TIES = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}


class BartPreTrainedModel(PreTrainedModel):
    config_class = BartConfig
    base_model_prefix = "model"
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)encoder\.version$", r"(^|\.)decoder\.version$"]
    _tied_weights_keys = {f"model.{k}": f"model.{v}" for k, v in _EMBED_TIES.items()}

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def get_encoder(self) -> BartEncoder:
        return self.model.encoder

    def get_decoder(self) -> BartDecoder:
        return self.model.decoder


class BartModel(BartPreTrainedModel):
    """Encoder and decoder; without `decoder_input_ids` the decoder reads `input_ids` shifted right
    (BART's denoising pre-training)."""

    _tied_weights_keys = dict(_EMBED_TIES)

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.shared = BartScaledWordEmbedding(config)
        self.encoder = BartEncoder(config)
        self.decoder = BartDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def get_encoder(self) -> BartEncoder:
        return self.encoder

    def get_decoder(self) -> BartDecoder:
        return self.decoder

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                decoder_input_ids: Optional[Tensor] = None, decoder_attention_mask: Optional[Tensor] = None,
                encoder_outputs: Optional[Union[BaseModelOutput, tuple]] = None,
                past_key_values: Optional[KVCache] = None, inputs_embeds: Optional[Tensor] = None,
                decoder_inputs_embeds: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass decoder_input_ids (or decoder_inputs_embeds), or input_ids to shift right")
            decoder_input_ids = shift_tokens_right(as_batch(input_ids), cfg.pad_token_id, cfg.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds, output_attentions,
                                           output_hidden_states, return_dict=True)
        elif isinstance(encoder_outputs, Tensor):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs)
        elif not hasattr(encoder_outputs, "last_hidden_state"):  # a tuple, as return_dict=False gives
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        dec = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_outputs.last_hidden_state,
                           attention_mask, past_key_values, decoder_inputs_embeds, use_cache, output_attentions,
                           output_hidden_states, return_dict=True)
        out = Seq2SeqModelOutput(
            last_hidden_state=dec.last_hidden_state, past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions)
        return out if return_dict else out.to_tuple()


def _seq2seq_fields(out: Seq2SeqModelOutput) -> dict:
    """The fields a head passes through from BartModel's output."""
    return {k: getattr(out, k) for k in ("past_key_values", "decoder_hidden_states", "decoder_attentions",
                                         "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states",
                                         "encoder_attentions")}


class BartForConditionalGeneration(GenerationMixin, BartPreTrainedModel):
    """Next-token logits of the decoder: lm_head tied to `shared`, plus `final_logits_bias`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight", **BartPreTrainedModel._tied_weights_keys}
    _keys_to_ignore_on_load_missing = [r"^final_logits_bias$"]

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config)
        # A saved buffer (1, vocab), zeros unless a checkpoint sets it; old checkpoints lack it.
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                decoder_input_ids: Optional[Tensor] = None, decoder_attention_mask: Optional[Tensor] = None,
                encoder_outputs: Optional[Union[BaseModelOutput, tuple]] = None,
                past_key_values: Optional[KVCache] = None, inputs_embeds: Optional[Tensor] = None,
                decoder_inputs_embeds: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        """`labels` (B, T): targets; without decoder inputs the decoder reads them shifted right."""
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(as_batch(labels, "labels"), cfg.pad_token_id,
                                                       cfg.decoder_start_token_id)
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                         past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state) + self.final_logits_bias  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels)
        result = Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
        return result if return_dict else result.to_tuple()


class BartClassificationHead(nn.Module):
    """out_proj(dropout(tanh(dense(dropout(x))))), over the pooled (B, C) decoder state."""

    def __init__(self, input_dim: int, inner_dim: int, num_classes: int, pooler_dropout: float):
        super().__init__()
        self.dense = Linear(input_dim, inner_dim)
        self.dropout = nn.Dropout(pooler_dropout)
        self.out_proj = Linear(inner_dim, num_classes)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(hidden_states)))))  # (B, num_classes)


class BartForSequenceClassification(BartPreTrainedModel):
    """Classifies the decoder state at the last eos token of each row (every row needs the same number)."""

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config)
        self.classification_head = BartClassificationHead(config.d_model, config.d_model, config.num_labels,
                                                          config.classifier_dropout)
        self.post_init()

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                decoder_input_ids: Optional[Tensor] = None, decoder_attention_mask: Optional[Tensor] = None,
                encoder_outputs: Optional[Union[BaseModelOutput, tuple]] = None,
                inputs_embeds: Optional[Tensor] = None, decoder_inputs_embeds: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if input_ids is None:
            raise ValueError("BartForSequenceClassification needs input_ids to find the eos tokens "
                             "(inputs_embeds alone are not supported)")
        input_ids = as_batch(input_ids)
        if labels is not None:
            use_cache = False
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                         None, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                         output_hidden_states, return_dict=True)
        x = out.last_hidden_state  # (B, T, C)
        eos = input_ids.eq(cfg.eos_token_id).to(x.device)  # (B, T)
        counts = eos.sum(1)
        if bool((counts == 0).any()) or bool((counts != counts[0]).any()):
            raise ValueError(f"every row of input_ids needs the same number (at least one) of eos tokens "
                             f"(id {cfg.eos_token_id}); found {counts.tolist()}")
        pooled = x[eos, :].view(x.size(0), -1, x.size(-1))[:, -1, :]  # (B, C): the last eos of each row
        logits = self.classification_head(pooled)  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, cfg.num_labels, cfg.problem_type)
        result = Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
        return result if return_dict else result.to_tuple()
