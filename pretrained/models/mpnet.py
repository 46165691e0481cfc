"""MPNet (Song et al., 2020): a post-LayerNorm BERT-style encoder whose attention adds a learned relative-position
bias (T5-style buckets, shared by all layers) to absolute positions counted RoBERTa's way, from padding_idx + 1.

Reads the checkpoints transformers reads: `microsoft/mpnet-base`, sentence-transformers' all-mpnet-base-v2
(saved from MPNetModel, without the `mpnet.` prefix) and anything `MPNetModel`/`MPNetFor*` saved. The module tree
is transformers': `mpnet.encoder.layer.0.attention.attn.q`, `.attention.LayerNorm`, `.encoder.relative_attention_bias`.

transformers runs MPNet with its explicit (eager) attention only. Ours does that under attn_implementation="eager" or
when attention weights are asked for (bit for bit transformers' numbers, and the `attention.attn.dropout` hook fires);
the default "sdpa" runs the same maths in torch's fused kernel (within 1e-5 of it; the probability dropout then
happens inside the kernel, so that one hook does not fire).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..layers import (Activation, attend, check_attention_mask, check_encoder_inputs, check_heads,
                      classification_loss, combine_masks, FusedLinears, Linear, linear_activation, merge_heads,
                      padded_position_ids, padding_mask, span_outputs, split_heads, token_loss, output_flags)
from ..modeling import PreTrainedModel
from ..outputs import (BaseModelOutput, BaseModelOutputWithPooling, MaskedLMOutput, QuestionAnsweringModelOutput,
                       SequenceClassifierOutput, TokenClassifierOutput)
from .bert import _head_outputs
from .mpnet_config import MPNetConfig  # re-exported: the config lives in a torch-free module
from .roberta import RobertaClassificationHead, RobertaLMHead

PADDING_IDX = 1  # fixed in MPNet (fairseq's <pad>), whatever config.pad_token_id says
NUM_BUCKETS, MAX_DISTANCE = 32, 128  # transformers buckets with these, whatever relative_attention_num_buckets says


class MPNetEmbeddings(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        C = config.hidden_size
        self.padding_idx = PADDING_IDX
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=PADDING_IDX)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C, padding_idx=PADDING_IDX)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                inputs_embeds: Optional[Tensor] = None) -> Tensor:
        if position_ids is None:
            position_ids = padded_position_ids(input_ids, self.padding_idx, inputs_embeds)  # (B, T)
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        return self.dropout(self.LayerNorm(x + self.position_embeddings(position_ids)))


class MPNetSelfAttention(FusedLinears, nn.Module):
    """q, k, v and the output projection `o`; scores get the relative-position bias before the padding mask."""

    def __init__(self, config: MPNetConfig):
        super().__init__()
        check_heads(config.hidden_size, config.num_attention_heads)
        C = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = C // config.num_attention_heads
        self.q, self.k, self.v, self.o = Linear(C, C), Linear(C, C), Linear(C, C), Linear(C, C)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.config = config

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"qkv": (self.q, self.k, self.v)}

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None, output_attentions: bool = False):
        """Returns (output (B, T, C),) or, with `output_attentions`, (output, weights (B, nh, T, T))."""
        qkv = self.linears(hidden_states, self.q, self.k, self.v)
        q, k, v = (split_heads(y, self.num_attention_heads) for y in qkv)
        if output_attentions or self.config.attn_implementation == "eager":
            # transformers' order of operations: divide by sqrt(hs), add the bias, then the mask
            w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)  # (B, nh, T, T)
            if position_bias is not None:
                w = w + position_bias
            if attention_mask is not None:
                w = w + attention_mask
            w = self.dropout(torch.softmax(w, dim=-1))
            y = torch.matmul(w, v)  # (B, nh, T, hs)
        else:
            y, w = attend(q, k, v, combine_masks(position_bias, attention_mask),
                          dropout=self.dropout.p if self.training else 0.0)
        o = self.o(merge_heads(y))  # (B, T, C)
        return (o, w) if output_attentions else (o,)


class MPNetAttention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attn = MPNetSelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None, output_attentions: bool = False):
        out = self.attn(hidden_states, attention_mask, position_bias, output_attentions)
        return (self.LayerNorm(self.dropout(out[0]) + hidden_states),) + out[1:]


class MPNetIntermediate(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = Activation(config.hidden_act)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return linear_activation(hidden_states, self.dense, self.intermediate_act_fn)


class MPNetOutput(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MPNetLayer(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attention = MPNetAttention(config)
        self.intermediate = MPNetIntermediate(config)
        self.output = MPNetOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None, output_attentions: bool = False):
        """Returns (hidden states (B, T, C),) plus the attention weights when asked, as transformers' layer."""
        out = self.attention(hidden_states, attention_mask, position_bias, output_attentions)
        return (self.output(self.intermediate(out[0]), out[0]),) + out[1:]


def relative_position_bucket(relative_position: Tensor, num_buckets: int = NUM_BUCKETS,
                             max_distance: int = MAX_DISTANCE) -> Tensor:
    """T5's buckets: half for keys before the query, half after; exact up to num_buckets / 4, then logarithmic up to
    max_distance."""
    n = -relative_position
    half = num_buckets // 2
    ret = (n < 0).to(torch.long) * half
    n = torch.abs(n)
    max_exact = half // 2
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (half - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return ret + torch.where(n < max_exact, n, large)


class MPNetEncoder(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.layer = nn.ModuleList(MPNetLayer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, self.n_heads)

    def compute_position_bias(self, x: Tensor) -> Tensor:
        """(1, nh, T, T) bias from the bucket of each key's offset to the query (from token order, as
        transformers computes it, not from position_ids)."""
        T = x.size(1)
        pos = torch.arange(T, dtype=torch.long, device=x.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None])  # (T, T)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, nh, T, T)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool = True):
        """`attention_mask`: the additive (B, 1, 1, T) mask, or None."""
        position_bias = self.compute_position_bias(hidden_states)
        states, attentions = [hidden_states], []
        for layer in self.layer:
            out = layer(hidden_states, attention_mask, position_bias, output_attentions)
            hidden_states = out[0]
            states.append(hidden_states)
            attentions.extend(out[1:])
        result = BaseModelOutput(last_hidden_state=hidden_states,
                                 hidden_states=tuple(states) if output_hidden_states else None,
                                 attentions=tuple(attentions) if output_attentions else None)
        return result if return_dict else result.to_tuple()


class MPNetPooler(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))  # (B, C)


class MPNetPreTrainedModel(PreTrainedModel):
    config_class = MPNetConfig
    base_model_prefix = "mpnet"
    _keys_to_ignore_on_load_unexpected = [r"embeddings\.position_ids$"]  # a buffer in older checkpoints

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings


class MPNetModel(MPNetPreTrainedModel):
    """Embeddings, encoder and (optionally) the pooler. Returns BaseModelOutputWithPooling(last_hidden_state
    (B, T, C), pooler_output (B, C), hidden_states, attentions)."""

    def __init__(self, config: MPNetConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MPNetEmbeddings(config)
        self.encoder = MPNetEncoder(config)
        self.pooler = MPNetPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(
            cfg, output_attentions, output_hidden_states, return_dict)
        input_ids = check_encoder_inputs(input_ids, inputs_embeds, position_ids, cfg.vocab_size,
                                         cfg.max_position_embeddings, PADDING_IDX)
        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (B, T, C)
        attention_mask = check_attention_mask(attention_mask, x.size(0), x.size(1))
        enc = self.encoder(x, padding_mask(attention_mask, x.dtype), output_attentions, output_hidden_states)
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(last_hidden_state=enc.last_hidden_state, pooler_output=pooled,
                                         hidden_states=enc.hidden_states, attentions=enc.attentions)
        return out if return_dict else out.to_tuple()


# transformers' MPNet heads are copies of RoBERTa's: same modules, same maths
MPNetLMHead = RobertaLMHead
MPNetClassificationHead = RobertaClassificationHead


class MPNetForMaskedLM(MPNetPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight"}
    _aliased_weights_keys = {"lm_head.decoder.bias": "lm_head.bias"}
    _keys_to_ignore_on_load_unexpected = MPNetPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^mpnet\.pooler\."]

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.lm_head = MPNetLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.mpnet(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, vocab)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, MaskedLMOutput, loss, logits=logits)


class MPNetForSequenceClassification(MPNetPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = MPNetPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^mpnet\.pooler\."]

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.classifier = MPNetClassificationHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.mpnet(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return _head_outputs(out, return_dict, SequenceClassifierOutput, loss, logits=logits)


class MPNetForTokenClassification(MPNetPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = MPNetPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^mpnet\.pooler\."]

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.mpnet(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        return _head_outputs(out, return_dict, TokenClassifierOutput, loss, logits=logits)


class MPNetForQuestionAnswering(MPNetPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = MPNetPreTrainedModel._keys_to_ignore_on_load_unexpected + [
        r"^mpnet\.pooler\."]

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                start_positions=None, end_positions=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.mpnet(input_ids, attention_mask, position_ids, inputs_embeds, output_attentions,
                         output_hidden_states, return_dict=True)
        start, end, loss = span_outputs(self.qa_outputs(out.last_hidden_state), start_positions, end_positions)
        return _head_outputs(out, return_dict, QuestionAnsweringModelOutput, loss,
                             start_logits=start, end_logits=end)
