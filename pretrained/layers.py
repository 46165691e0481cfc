"""Shared maths of every architecture: attention, masks, activations, input checks and losses.

Each architecture file keeps only what makes it that architecture; everything here exists once.
Shape vocabulary: B batch, T query length, S key length, C channels, nh heads, hs head size.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _nn_module

from . import fastpath
from .configuration import ConfigError


# -- activations -------------------------------------------------------------------------------------------
def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh GELU, written exactly as transformers' NewGELUActivation (not F.gelu(approximate='tanh'),
    which differs in the last bits)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_fast(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called `name` in a config; an unknown name raises ConfigError."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown activation {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}") from None


class Activation(nn.Module):
    """The activation called `name` in a config as a module, so that forward hooks see it where transformers'
    tree has one (`intermediate.intermediate_act_fn`, `mlp.act`, ...)."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.fn = name, activation(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    fusable_forward = forward  # linear_activation may compute it inside the linear layer's call (see _plain)

    def extra_repr(self) -> str:
        return self.name


# -- forward arguments ------------------------------------------------------------------------------------
def output_flags(config, output_attentions: Optional[bool], output_hidden_states: Optional[bool],
                 return_dict: Optional[bool]) -> tuple[bool, bool, bool]:
    """A forward's output switches: each one given, else the config's default (as transformers resolves them)."""
    return (config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict)


# -- linear layers -----------------------------------------------------------------------------------------
# Default mode: inference on the CPU goes through oneDNN on weights packed once (fastpath.py); outputs move by
# summation order only (<= 1e-4). Exact mode (`model.exact = True`, from_pretrained(exact=True) or
# PRETRAINED_EXACT=1), and any call autograd records, use F.linear: transformers' bits.
def _fast(x: Tensor, weight: Tensor, bias: Optional[Tensor], exact: Optional[bool]) -> bool:
    """Whether a linear layer on `x` takes the packed path (fastpath.fast_applies, and a bias of x's dtype)."""
    return fastpath.fast_applies(x, weight, exact) and (bias is None or bias.dtype == x.dtype)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, exact: Optional[bool] = None,
           transposed: bool = False) -> Tensor:
    """x @ weight.T + bias, with weight (out, in) as in nn.Linear, or x @ weight + bias when `transposed` (weight
    (in, out), GPT-2's Conv1D); `exact` None follows the default mode."""
    if _fast(x, weight, bias, exact):
        return packed_linear(x, weight, bias, transposed)
    if fastpath.has_pack(weight) and torch.is_grad_enabled():
        fastpath.drop_pack(weight)  # training: the pack would go stale at the first step, free it now
    if transposed:  # addmm on the flattened rows, as transformers' Conv1D computes it (its bits)
        flat = x.reshape(-1, x.size(-1))
        y = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
        return y.view(*x.shape[:-1], weight.size(1))
    return F.linear(x, weight, bias)


def packed_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, transposed: bool = False) -> Tensor:
    """The fast path itself: oneDNN's inner product on the packed weight (`transposed`: weight is (in, out))."""
    return torch.ops.mkldnn._linear_pointwise(x, fastpath.packed_weight(weight, transposed), bias, "none", [], "")


class Linear(nn.Linear):
    """nn.Linear (same parameters, same checkpoint keys) whose inference goes through `linear`.

    `exact`: None follows the default mode; PreTrainedModel.exact sets it on every layer of a model.
    """

    exact: Optional[bool] = None
    weight_transposed = False  # weight is (out, in); GPT-2's Conv1D, the other linear layer here, keeps (in, out)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, exact=self.exact)

    fusable_forward = forward  # see _plain

    def prepack(self) -> bool:
        """Pack the weight now if the fast path will take it (fastpath.prepare_for_inference); True if packed."""
        return prepack(self.weight, self.exact)


def prepack(weight: Tensor, exact: Optional[bool], transposed: bool = False) -> bool:
    """Pack a linear layer's weight ahead of its first forward, when the fast path would use it."""
    if weight.is_meta or not fastpath.fast_applies(weight.new_empty(0), weight.detach(), exact):
        return False
    fastpath.packed_weight(weight, transposed)
    return True


def _plain(module: nn.Module) -> bool:
    """No hook on `module`, and its forward is the one its class marks as `fusable_forward` (not a subclass's
    override, nor a forward set on the instance, as accelerate's hooks do): then a fused call computes exactly
    what calling the module would."""
    return not (module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__) and \
        type(module).forward is getattr(type(module), "fusable_forward", None)


def _global_hooks() -> bool:
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks)


class FusedLinears:
    """For a module whose Linear layers read the same input (q/k/v, gate/up): in default mode one oneDNN call
    on their weights packed side by side (fastpath.packed_group) replaces one call per layer. Taken only when
    every layer of the group is a plain `Linear` without hooks (and no global hook is set), so a hook on `query`
    still sees its call; otherwise, and in exact mode, the layers are called one by one."""

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        raise NotImplementedError

    def _group_applies(self, x: Tensor, members: tuple[Linear, ...]) -> Optional[tuple[list, list]]:
        """(weights, biases) of the group when the fused path applies to `x`, else None."""
        if _global_hooks() or not all([_plain(m) for m in members]):
            return None
        exact = members[0].exact
        weights, biases = [m.weight for m in members], [m.bias for m in members]
        for m, w, b in zip(members, weights, biases):
            if m.exact != exact or (b is None) != (biases[0] is None) or not _fast(x, w, b, exact):
                return None
        return weights, biases

    def fused(self, name: str, x: Tensor, members: Optional[tuple[Linear, ...]] = None) -> Optional[tuple[Tensor, ...]]:
        """The outputs of group `name` (whose layers are `members`, when the caller has them) on `x` from one
        call (views of one tensor), or None: call the layers."""
        group = self._group_applies(x, self.fused_groups()[name] if members is None else members)
        if group is None:
            if torch.is_grad_enabled():
                fastpath.drop_group(self, name)  # training: the pack would go stale at the first step
            return None
        pack, bias = fastpath.packed_group(self, name, *group)
        y = torch.ops.mkldnn._linear_pointwise(x, pack, bias, "none", [], "")
        return y.split([w.size(0) for w in group[0]], dim=-1)

    def linears(self, x: Tensor, *layers: Linear) -> tuple[Tensor, ...]:
        """`layer(x)` for each of `layers`, in that order; one fused call instead when they are one of
        `fused_groups()` and the fused path applies."""
        for name, members in self.fused_groups().items():
            if members == layers:  # the same modules (nn.Module compares by identity)
                fused = self.fused(name, x, members)
                if fused is not None:
                    return fused
        return tuple(layer(x) for layer in layers)

    def prepack_groups(self) -> list[Tensor]:
        """Pack every group the fast path will take (fastpath.prepare_for_inference); their weights."""
        done = []
        with torch.no_grad():  # as in inference: the weights' requires_grad does not rule the fast path out
            for name, members in self.fused_groups().items():
                weight = members[0].weight
                group = None if weight.is_meta else self._group_applies(weight.new_empty(0), members)
                if group is not None:
                    fastpath.packed_group(self, name, *group)
                    done += group[0]
        return done


_POST_OPS = {"gelu": ("gelu", "none"), "gelu_pytorch_tanh": ("gelu", "tanh"), "gelu_new": ("gelu", "tanh"),
             "relu": ("relu", "")}


def linear_activation(x: Tensor, dense: nn.Module, act: nn.Module) -> Tensor:
    """act(dense(x)) for a linear layer `dense` (Linear, or GPT-2's Conv1D); in default mode with the activation
    computed inside oneDNN's call (a post-op, the same formula) when both are plain and without hooks."""
    post = _POST_OPS.get(getattr(act, "name", None))
    if post is not None and _plain(dense) and _plain(act) and not _global_hooks() \
            and _fast(x, dense.weight, dense.bias, dense.exact):
        weight = fastpath.packed_weight(dense.weight, dense.weight_transposed)
        return torch.ops.mkldnn._linear_pointwise(x, weight, dense.bias, post[0], [], post[1])
    return act(dense(x))


# -- heads -------------------------------------------------------------------------------------------------
def split_heads(x: Tensor, n_head: int) -> Tensor:
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)


def merge_heads(x: Tensor) -> Tensor:
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)


def check_heads(hidden_size: int, n_head: int) -> None:
    if n_head <= 0 or hidden_size % n_head != 0:
        raise ConfigError(f"hidden size {hidden_size} is not a multiple of the number of attention heads {n_head}")


# -- masks -------------------------------------------------------------------------------------------------
def padding_mask(attention_mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """(B, S) mask of 1 (attend) / 0 (padding) -> additive float mask (B, 1, 1, S), or None if nothing is padded.

    Masked places get finfo(dtype).min, not -inf, so a fully padded row stays finite, as in transformers.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (batch, length), got {tuple(attention_mask.shape)}")
    if bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


def causal_mask(T: int, S: int, dtype: torch.dtype, device: torch.device,
                sliding_window: Optional[int] = None) -> Tensor:
    """Additive (1, 1, T, S) mask where query t (at absolute position S - T + t) sees keys up to itself; with a
    `sliding_window` w, only the last w of them (itself included), as Mistral's and Qwen2's masks do."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    hidden = k_pos > q_pos
    if sliding_window is not None:
        hidden = hidden | (k_pos <= q_pos - sliding_window)
    mask = torch.zeros(T, S, dtype=dtype, device=device).masked_fill_(hidden, torch.finfo(dtype).min)
    return mask[None, None]


def combine_masks(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    """Sum of two additive masks, clamped so that masked + masked stays finfo.min rather than -inf."""
    if a is None or b is None:
        return a if b is None else b
    return (a + b).clamp_(min=torch.finfo(a.dtype).min)


def sliding_window_mask(T: int, window: int, device: torch.device) -> Optional[Tensor]:
    """Boolean (1, 1, T, T) mask of a bidirectional local attention, True where query i sees key j: |i - j| <= window
    (ModernBERT's local layers). None when the window covers the whole sequence. Boolean, not additive: at 8192
    tokens a float mask would take 4x the memory."""
    if T <= window + 1:
        return None
    pos = torch.arange(T, device=device)
    return ((pos[None, :] - pos[:, None]).abs() <= window)[None, None]  # (1, 1, T, T)


def additive_mask(visible: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """A boolean mask (True: attend) as the additive float mask the explicit softmax path adds: 0 or finfo.min."""
    if visible is None:
        return None
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, torch.finfo(dtype).min)


# -- attention ---------------------------------------------------------------------------------------------
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA's enable_gqa argument
def attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *, dropout: float = 0.0,
           is_causal: bool = False, scale: Optional[float] = None,
           need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """softmax(q k^T * scale + mask) v over (B, nh, T, hs) queries and (B, nkv, S, hs) keys and values.

    Uses scaled_dot_product_attention unless the attention weights are asked for. With fewer key/value heads
    than query heads (grouped-query attention, nh = nkv * n_rep), each kv head serves n_rep query heads: SDPA
    does that itself when there is no mask (no copy, as transformers lets it), else the kv heads are repeated.

    Returns:
        (output (B, nh, T, hs), weights (B, nh, T, S) when need_weights else None)
    """
    n_rep = q.size(1) // k.size(1)
    if n_rep > 1 and (need_weights or mask is not None or not _SDPA_GQA):
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        n_rep = 1
    if not need_weights:
        gqa = {"enable_gqa": True} if n_rep > 1 else {}
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                           is_causal=is_causal and mask is None, scale=scale, **gqa)
        return y, None
    scale = q.size(-1) ** -0.5 if scale is None else scale
    w = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, nh, T, S)
    if is_causal and mask is None:
        mask = causal_mask(q.size(-2), k.size(-2), w.dtype, w.device)
    if mask is not None:
        w = w + mask
    w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    w = F.dropout(w, p=dropout, training=dropout > 0)
    return torch.matmul(w, v), w


# -- input checks ------------------------------------------------------------------------------------------
def check_input_ids(input_ids: Tensor, vocab_size: int, name: str = "input_ids") -> None:
    """Raise ValueError for ids outside [0, vocab_size) instead of an index error deep inside torch."""
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"{name} must be integer token ids, got dtype {input_ids.dtype}")
    if input_ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(input_ids.shape)})")
    lo, hi = torch.stack(torch.aminmax(input_ids)).tolist()  # one device sync for both
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains token id {bad}, outside the vocabulary [0, {vocab_size})")


def input_embeddings(input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor], embedding: nn.Module,
                     vocab_size: int) -> Tensor:
    """The (B, T, C) vectors a decoder starts from: `embedding` of input_ids (checked against the vocabulary;
    (T,) is a batch of one), or inputs_embeds as given. Exactly one of them; raises ValueError otherwise."""
    input_ids = check_encoder_inputs(input_ids, inputs_embeds, None, vocab_size, None)
    return embedding(input_ids) if input_ids is not None else inputs_embeds


def check_length(length: int, max_positions: int, what: str = "sequence") -> None:
    if length > max_positions:
        raise ValueError(f"{what} length {length} is longer than the model's max_position_embeddings "
                         f"({max_positions}); truncate the input")


def as_ids_tensor(ids, name: str = "input_ids") -> Tensor:
    """A tensor as it is; a Python list (or tuple) of token ids, flat or one list per row, as a long tensor, as
    users expect from transformers' tokenizers' output; anything else raises TypeError naming it."""
    if isinstance(ids, Tensor):
        return ids
    if isinstance(ids, (list, tuple)):
        try:
            return torch.tensor(ids, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise ValueError(f"{name} must be a tensor or a (rectangular) list of integer token ids; "
                             f"converting the list failed: {e}") from None
    raise TypeError(f"{name} must be a tensor (or a list) of token ids, got {type(ids).__name__}")


def as_batch(input_ids: Tensor, name: str = "input_ids") -> Tensor:
    """Accept (T,) ids as a batch of one, and Python lists as tensors; anything but 1 or 2 dimensions raises
    ValueError."""
    input_ids = as_ids_tensor(input_ids, name)
    if input_ids.dim() == 1:
        return input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got {tuple(input_ids.shape)}")
    return input_ids


def check_encoder_inputs(input_ids: Optional[Tensor], inputs_embeds: Optional[Tensor], position_ids: Optional[Tensor],
                         vocab_size: int, max_positions: Optional[int],
                         padding_idx: Optional[int] = None) -> Optional[Tensor]:
    """The checks every encoder's forward makes: exactly one of input_ids / inputs_embeds, ids inside the
    vocabulary, a length or position_ids inside the position table (`max_positions` None: no table, e.g.
    rotary; `padding_idx`: positions start after it, as in `padded_position_ids`). Returns input_ids as a batch
    ((T,) becomes (1, T)); raises ValueError naming the culprit."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        input_ids = as_batch(input_ids)
        check_input_ids(input_ids, vocab_size)
        T = input_ids.shape[1]
    else:
        if inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must have shape (batch, length, hidden), got {tuple(inputs_embeds.shape)}")
        T = inputs_embeds.shape[1]
    if max_positions is None:
        return input_ids
    if position_ids is not None:
        check_position_ids(position_ids, max_positions)
    elif padding_idx is None:
        check_length(T, max_positions)
    elif T > max_positions - padding_idx - 1:
        raise ValueError(f"sequence length {T} is longer than the {max_positions - padding_idx - 1} tokens the "
                         f"model's positions allow (max_position_embeddings {max_positions}, counted from "
                         f"padding_idx {padding_idx} + 1); truncate the input")
    return input_ids


def padded_position_ids(input_ids: Optional[Tensor], padding_idx: int,
                        inputs_embeds: Optional[Tensor] = None) -> Tensor:
    """fairseq's positions (RoBERTa, XLM-R, MPNet): real tokens count up from padding_idx + 1 and padding tokens
    keep padding_idx, so left and right padding give the same positions. From inputs_embeds, where padding cannot be
    seen, positions run padding_idx + 1, padding_idx + 2, ... as transformers makes them. Returns (B, T) int64."""
    if input_ids is None:
        B, T = inputs_embeds.shape[:2]
        return torch.arange(padding_idx + 1, padding_idx + 1 + T, device=inputs_embeds.device)[None].expand(B, T)
    real = input_ids.ne(padding_idx).int()  # (B, T)
    return (torch.cumsum(real, dim=1).type_as(real) * real).long() + padding_idx


# -- losses ------------------------------------------------------------------------------------------------
def classification_loss(logits: Tensor, labels: Tensor, num_labels: int, problem_type: Optional[str]) -> Tensor:
    """Loss of a sequence classifier, chosen as transformers does when `problem_type` is not set:
    one label -> regression (MSE), integer labels -> cross-entropy, float labels -> multi-label BCE."""
    labels = labels.to(logits.device)
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1).long())  # int32 labels too
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_loss(logits: Tensor, labels: Tensor, shift: bool = False) -> Tensor:
    """Cross-entropy over tokens, ignoring label -100; `shift` predicts token t+1 from position t."""
    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    labels = labels.to(logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100)


def span_outputs(logits: Tensor, start_positions: Optional[Tensor],
                 end_positions: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Extractive QA from (B, T, 2) logits: (start_logits (B, T), end_logits (B, T), loss or None). The loss, when
    both position tensors are given, is the mean of the start and end cross-entropies; as in transformers, positions
    outside the sequence are clamped to T and ignored."""
    start, end = logits.split(1, dim=-1)  # 2 × (B, T, 1)
    start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()  # (B, T)
    if start_positions is None or end_positions is None:
        return start, end, None
    T = start.size(1)
    s = start_positions.reshape(-1).to(start.device).clamp(0, T)
    e = end_positions.reshape(-1).to(end.device).clamp(0, T)
    return start, end, (F.cross_entropy(start, s, ignore_index=T) + F.cross_entropy(end, e, ignore_index=T)) / 2


# == decoders: causal masks over a cache, position checks, the KV cache (GPT-2, BART) ====================
def causal_attention_mask(attention_mask: Optional[Tensor], T: int, S: int, dtype: torch.dtype,
                          device: torch.device, sliding_window: Optional[int] = None) -> tuple[Optional[Tensor], bool]:
    """Self-attention mask of a decoder whose T new queries follow S - T cached keys.

    Args:
        attention_mask: (B, S) of 1 (attend) / 0 (padding) over cached and new tokens, or None.
        sliding_window: each query sees only the last `sliding_window` keys (itself included); None: all.

    Returns:
        (mask, is_causal) for `attend`. Without padding: (None, True) when T == S, so that SDPA takes its
        causal kernel; (None, False) for a single new token, which sees every key; else the (1, 1, T, S)
        causal mask. With padding: causal and padding masks combined into (B, 1, T, S).
    """
    pad = padding_mask(attention_mask, dtype)  # (B, 1, 1, S) or None
    if sliding_window is not None and S > sliding_window:  # the window hides keys: always an explicit mask
        return combine_masks(causal_mask(T, S, dtype, device, sliding_window), pad), False
    if pad is None:
        if T == S:
            return None, True
        return (None if T == 1 else causal_mask(T, S, dtype, device)), False
    return combine_masks(causal_mask(T, S, dtype, device) if T > 1 else None, pad), False


def check_attention_mask(attention_mask: Optional[Tensor], batch: int, length: int,
                         what: str = "the input") -> Optional[Tensor]:
    """Accept a (T,) mask as a batch of one; a shape other than (batch, length) raises ValueError."""
    if attention_mask is None:
        return None
    attention_mask = as_batch(attention_mask, "attention_mask")
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, but {what} needs "
                         f"({batch}, {length})")
    return attention_mask


def check_position_ids(position_ids: Tensor, max_positions: int) -> None:
    """Raise ValueError for a position outside the model's position table [0, max_positions)."""
    lo, hi = torch.stack(torch.aminmax(position_ids)).tolist()  # one device sync for both
    if lo < 0 or hi >= max_positions:
        raise ValueError(f"position_ids contain position {lo if lo < 0 else hi}, outside the model's "
                         f"max_position_embeddings [0, {max_positions}); truncate the input")


class KVCache:
    """Keys and values of past tokens, per layer, so that decoding one token costs one token of compute.

    Contract with the models and with `generation.py`:

    * `model(input_ids, attention_mask=..., position_ids=..., past_key_values=cache, use_cache=True)` returns
      `.logits` (B, T, V) and `.past_key_values`, this object. `past_key_values=None, use_cache=True` creates a
      new cache; later calls pass the returned one and only the new tokens, with an attention_mask over the
      past and new tokens, (B, past + T).
    * BART: `model.get_encoder()(input_ids, attention_mask)` once, then `model(encoder_outputs=...,
      attention_mask=..., decoder_input_ids=..., past_key_values=cache, use_cache=True)` per step. The
      cross-attention keys/values are computed from the encoder output on the first call and reused.
    * `get_seq_length()` is the number of cached tokens; `reorder(index)` keeps batch rows `index` (beam
      search reordering, selecting rows, or repeating them); `repeat_interleave(n)` makes n copies of each row.

    Self-attention keys/values live in per-layer buffers (B, nh, capacity, hs) that grow by doubling, so a
    decoding step writes into place and returns a view: no reallocation per step, O(1) amortised. The
    in-place writes make a cache unfit for backpropagating through several steps; training uses one pass.
    """

    _ROUND = 64  # capacities are multiples of this, so short generations never reallocate

    def __init__(self, capacity: int = 0):
        """`capacity`: the total length expected (prompt + new tokens), allocated at once when known."""
        self.capacity = capacity
        self._keys: list[Optional[Tensor]] = []
        self._values: list[Optional[Tensor]] = []
        self._lengths: list[int] = []
        self._cross: list[Optional[tuple[Tensor, Tensor]]] = []

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx] if layer_idx < len(self._lengths) else 0

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new (B, nh, T, hs) keys and values of layer `layer_idx`; return all of them (B, nh, S, hs)."""
        while len(self._keys) <= layer_idx:
            self._keys.append(None)
            self._values.append(None)
            self._lengths.append(0)
        n, T = self._lengths[layer_idx], k.size(2)
        buf_k, buf_v = self._keys[layer_idx], self._values[layer_idx]
        if buf_k is not None and (buf_k.shape[:2] != k.shape[:2] or buf_k.size(3) != k.size(3)):
            raise ValueError(f"the cache of layer {layer_idx} holds (batch, heads, ·, head size) = "
                             f"{tuple(buf_k.shape[:2]) + (buf_k.size(3),)}, the new keys have "
                             f"{tuple(k.shape[:2]) + (k.size(3),)}; use reorder() to change the batch")
        if buf_k is None or n + T > buf_k.size(2):
            old = 0 if buf_k is None else buf_k.size(2)
            capacity = max(self.capacity, n + T, 2 * old)
            capacity = -(-capacity // self._ROUND) * self._ROUND
            B, nh, _, hs = k.shape
            new_k, new_v = k.new_empty(B, nh, capacity, hs), v.new_empty(B, nh, capacity, v.size(3))
            if n:
                new_k[:, :, :n] = buf_k[:, :, :n]
                new_v[:, :, :n] = buf_v[:, :, :n]
            self._keys[layer_idx], self._values[layer_idx] = buf_k, buf_v = new_k, new_v
        buf_k[:, :, n:n + T] = k
        buf_v[:, :, n:n + T] = v
        self._lengths[layer_idx] = n + T
        return buf_k[:, :, :n + T], buf_v[:, :, :n + T]

    def get_cross(self, layer_idx: int) -> Optional[tuple[Tensor, Tensor]]:
        """The cross-attention (keys, values) stored for layer `layer_idx`, or None before the first step."""
        return self._cross[layer_idx] if layer_idx < len(self._cross) else None

    def set_cross(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the cross-attention keys and values of layer `layer_idx`, computed once from the encoder output."""
        while len(self._cross) <= layer_idx:
            self._cross.append(None)
        self._cross[layer_idx] = (k, v)
        return k, v

    def reorder(self, index: Tensor) -> "KVCache":
        """Keep batch rows `index` (any length: reorder beams, drop finished rows, repeat rows), in place."""
        for store in (self._keys, self._values):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t.index_select(0, index.to(t.device))
        self._cross = [None if kv is None else tuple(t.index_select(0, index.to(t.device)) for t in kv)
                       for kv in self._cross]
        return self

    def pad_left(self, n: int) -> "KVCache":
        """Put `n` empty places before the cached tokens of every row, in place.

        Rows of different lengths share one cache this way (the serving scheduler's running batch): each row
        is left-padded to the batch's length, and the attention mask hides the empty places (zeros here)."""
        if n <= 0:
            return self
        for i, (k, v) in enumerate(zip(self._keys, self._values)):
            if k is None:
                continue
            L = self._lengths[i]
            B, nh, _, hs = k.shape
            capacity = -(-max(self.capacity, n + L + 1) // self._ROUND) * self._ROUND
            new_k, new_v = k.new_zeros(B, nh, capacity, hs), v.new_zeros(B, nh, capacity, v.size(3))
            new_k[:, :, n:n + L] = k[:, :, :L]
            new_v[:, :, n:n + L] = v[:, :, :L]
            self._keys[i], self._values[i], self._lengths[i] = new_k, new_v, n + L
        return self

    def drop_left(self, n: int) -> "KVCache":
        """Remove the first `n` cached places of every row (places the attention mask hides in all rows)."""
        if n <= 0:
            return self
        for i, (k, v) in enumerate(zip(self._keys, self._values)):
            if k is not None:
                L = self._lengths[i]
                self._keys[i] = k[:, :, n:].clone()
                self._values[i] = v[:, :, n:].clone()
                self._lengths[i] = L - n
        return self

    @classmethod
    def cat(cls, caches: list["KVCache"]) -> "KVCache":
        """One cache holding the rows of `caches` one after the other; they must hold the same number of tokens
        (pad the shorter ones with `pad_left` first). Self-attention caches only."""
        lengths = {c.get_seq_length() for c in caches}
        if len(lengths) != 1:
            raise ValueError(f"KVCache.cat needs caches of one length, got lengths {sorted(lengths)}")
        if any(kv is not None for c in caches for kv in c._cross):
            raise ValueError("KVCache.cat does not join cross-attention caches")
        out = cls(capacity=max(c.capacity for c in caches))
        L = lengths.pop()
        for i in range(len(caches[0]._keys)):
            out._keys.append(torch.cat([c._keys[i][:, :, :L] for c in caches]))
            out._values.append(torch.cat([c._values[i][:, :, :L] for c in caches]))
            out._lengths.append(L)
        return out

    def repeat_interleave(self, repeats: int) -> "KVCache":
        """Each batch row `repeats` times in a row (B -> B * repeats), as beam search expands a prompt."""
        tensors = [t for t in self._keys if t is not None] + [kv[0] for kv in self._cross if kv is not None]
        if not tensors:
            return self
        B = tensors[0].size(0)
        return self.reorder(torch.arange(B, device=tensors[0].device).repeat_interleave(repeats))


def decoder_cache(past_key_values: Optional[KVCache], use_cache: bool) -> Optional[KVCache]:
    """The cache a decoder's forward uses: the one given, a new one when `use_cache`, else None."""
    if past_key_values is None:
        return KVCache() if use_cache else None
    if not isinstance(past_key_values, KVCache):
        raise TypeError(f"past_key_values must be the KVCache that an earlier call returned, got "
                        f"{type(past_key_values).__name__} (transformers' tuple format is not accepted)")
    return past_key_values


# == rotary decoders: RMSNorm, rotary position embeddings, grouped-query attention, the gated MLP ===========
class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, computed in float32 and cast back before the weight, as transformers'
    LlamaRMSNorm (and Mistral's, Qwen2's, Qwen3's) does. `weight` starts at ones."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: Tensor) -> Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


# Rope types and the keys of `rope_parameters` each one needs (besides rope_type and rope_theta).
ROPE_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}


def rope_type(rope_parameters: Optional[dict]) -> str:
    """The rope type a `rope_parameters` dict names (v4 configs wrote "type"); unknown types raise ConfigError."""
    params = rope_parameters or {}
    name = params.get("rope_type", params.get("type", "default"))
    if name not in ROPE_TYPES:
        raise ConfigError(f"rope_parameters has rope_type {name!r}, which pretrained does not support; "
                          f"supported: {', '.join(ROPE_TYPES)}")
    missing = [key for key in ROPE_TYPES[name] if params.get(key) is None]
    if missing:
        raise ConfigError(f"rope_parameters of rope_type {name!r} lack {', '.join(missing)} (got {params})")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"rope_parameters has partial_rotary_factor {params['partial_rotary_factor']}; "
                          f"these architectures rotate the whole head (1.0)")
    return name


def rope_frequencies(rope_parameters: Optional[dict], head_dim: int, max_position_embeddings: int,
                     seq_len: Optional[Tensor] = None) -> tuple[Tensor, float]:
    """The inverse frequencies (head_dim / 2,) of rotary position embeddings, in float32 on the CPU, and the
    factor cos and sin are scaled by.

    Computed as transformers' modeling_rope_utils does, operation for operation, so that the angles are the same
    to the bit. Rope types:

    * default: theta ** (-2i / head_dim), theta = rope_parameters["rope_theta"] (10000 when absent);
    * linear: the default divided by `factor` (positions interpolated);
    * dynamic (NTK): the default up to max_position_embeddings; beyond it, `seq_len` (the longest position + 1,
      a tensor) raises theta to theta * (factor * seq_len / max_positions - (factor - 1)) ** (d / (d - 2));
    * llama3: low frequencies divided by `factor`, high ones kept, a smooth ramp between them (Llama 3.1+);
    * yarn: interpolation and extrapolation blended by a ramp over the dimensions, and cos/sin scaled by
      0.1 * ln(factor) + 1 (or `attention_factor`, or the mscale ratio).

    Raises:
        ConfigError: an unknown rope type, or a key its type needs is missing.
    """
    name = rope_type(rope_parameters)
    params = rope_parameters or {}
    base = params.get("rope_theta", 10000.0)
    dim = head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float) / dim
    scaling = 1.0
    if name == "dynamic" and seq_len is not None and int(seq_len) > max_position_embeddings:
        factor = params["factor"]
        seq_len = torch.maximum(seq_len.cpu(), torch.tensor(max_position_embeddings, dtype=seq_len.dtype))
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** exponents)
    if name == "linear":
        inv_freq = inv_freq / params["factor"]
    elif name == "llama3":
        factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
        old_context = params["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_context / low, old_context / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    elif name == "yarn":
        inv_freq, scaling = _yarn(params, base, dim)
    return inv_freq, scaling


def _yarn(params: dict, base: float, dim: int) -> tuple[Tensor, float]:
    """YaRN (Peng et al., 2023): per-dimension blend of interpolated and original frequencies."""
    factor, original = params["factor"], params["original_max_position_embeddings"]

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    scaling = params.get("attention_factor")
    if scaling is None:
        m, m_all = params.get("mscale"), params.get("mscale_all_dim")
        scaling = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:  # the dimension that turns `rotations` times over `original`
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").to(dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: the original frequency (high frequencies), 0: interpolated
    return interpolation * (1 - keep) + extrapolation * keep, scaling


class RotaryEmbedding(nn.Module):
    """cos and sin of the rotary position angles for given position ids (transformers' `rotary_emb` module).

    Self-contained: built from a `rope_parameters` dict (transformers 5's form: rope_type, rope_theta and the
    type's keys; see `rope_frequencies`), the head size and max_position_embeddings. Used with `apply_rotary`.
    The frequencies are not a buffer (nothing to save or load): they are computed once, on the CPU in float32
    as transformers does, and copied to each device the model runs on.

    forward(x, position_ids (B or 1, T)) -> (cos, sin), each (B or 1, T, head_dim) in x's dtype.
    """

    def __init__(self, rope_parameters: Optional[dict], head_dim: int, max_position_embeddings: int):
        super().__init__()
        self.rope_parameters = dict(rope_parameters or {})
        self.rope_type = rope_type(self.rope_parameters)
        self.head_dim, self.max_position_embeddings = head_dim, max_position_embeddings
        self.inv_freq, self.attention_scaling = rope_frequencies(self.rope_parameters, head_dim,
                                                                 max_position_embeddings)
        self._on_device: dict[torch.device, Tensor] = {}

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        inv_freq = self._on_device.get(x.device)
        if inv_freq is None:
            inv_freq = self._on_device[x.device] = self.inv_freq.to(x.device)
        if self.rope_type == "dynamic":
            # Beyond max_position_embeddings the frequencies depend on the longest position. transformers keeps
            # the largest seen so far in module state; computed per call, the two agree whenever positions only
            # grow (a forward pass, a generation), and this one does not depend on earlier calls.
            seq_len = position_ids.max() + 1
            if int(seq_len) > self.max_position_embeddings:
                inv_freq = rope_frequencies(self.rope_parameters, self.head_dim, self.max_position_embeddings,
                                            seq_len)[0].to(x.device)
        freqs = position_ids[..., None].float() * inv_freq  # (B, T, hs / 2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate queries (B, nh, T, hs) and keys (B, nkv, T, hs) by the angles of `RotaryEmbedding` (B, T, hs)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hs)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Grouped-query attention: (B, nkv, S, hs) -> (B, nkv * n_rep, S, hs), each kv head serving n_rep query
    heads. The cache stores the nkv heads; they are repeated only for the attention product."""
    if n_rep == 1:
        return x
    B, nkv, S, hs = x.shape
    return x[:, :, None].expand(B, nkv, n_rep, S, hs).reshape(B, nkv * n_rep, S, hs)


class GatedMLP(FusedLinears, nn.Module):
    """down_proj(act(gate_proj(x)) * up_proj(x)): the feed-forward block of Llama, Mistral, Qwen2 and Qwen3.
    In default mode gate_proj and up_proj run as one call (FusedLinears)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = Activation(hidden_act)

    def fused_groups(self) -> dict[str, tuple[Linear, ...]]:
        return {"gate_up": (self.gate_proj, self.up_proj)}

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fused("gate_up", x)
        if fused is not None:
            return self.down_proj(self.act_fn(fused[0]) * fused[1])
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))  # transformers' order of calls


def last_token_logits(logits: Tensor, input_ids: Optional[Tensor], pad_token_id: Optional[int],
                      owner: str) -> Tensor:
    """(B, T, n) -> (B, n): each row's scores at its last token that is not padding (the rightmost one, so left
    and right padding both work), as transformers' decoder-only sequence classifiers pool."""
    B, T = logits.shape[:2]
    if pad_token_id is None and B != 1:
        raise ValueError(f"{owner} needs config.pad_token_id to find the last token of each row of a batch of "
                         f"{B}; set it (e.g. to the eos token id)")
    if pad_token_id is None or input_ids is None:
        last = torch.full((B,), T - 1, device=logits.device)
    else:
        not_pad = (input_ids != pad_token_id).to(logits.device, torch.int32)
        last = (torch.arange(T, device=logits.device, dtype=torch.int32) * not_pad).argmax(-1)  # (B,)
    return logits[torch.arange(B, device=logits.device), last]
