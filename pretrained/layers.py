"""Shared maths of every architecture: attention, masks, activations, input checks and losses.

Each architecture file keeps only what makes it that architecture; everything here exists once.
Shape vocabulary: B batch, T query length, S key length, C channels, nh heads, hs head size.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


# -- linear layers -----------------------------------------------------------------------------------------
# Opt-in fast path. For inference on the CPU, oneDNN's inner product is 1.2-2x faster than the default BLAS path
# on these models' shapes (bench/RESULTS.md), but it sums in another order: outputs move by ~1e-5 on real
# checkpoints (2.6e-5 on all-MiniLM-L6-v2), past the 1e-5 parity we promise. So the default is F.linear, bit for
# bit what transformers computes; PRETRAINED_FAST_LINEAR=1 (or setting USE_ONEDNN = True) turns oneDNN on.
# It has no backward: with gradients enabled, and on other devices or dtypes, F.linear is used regardless.
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
USE_ONEDNN = ONEDNN_AVAILABLE and os.environ.get("PRETRAINED_FAST_LINEAR", "0") == "1"


def fast_linear_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight)` takes the oneDNN path: switched on, no gradients, CPU, fp32/bf16."""
    return (USE_ONEDNN and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype == x.dtype)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x @ weight.T + bias, with weight (out, in) as in nn.Linear."""
    if fast_linear_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same checkpoint keys) whose inference goes through `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


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


def causal_mask(T: int, S: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive (1, 1, T, S) mask where query t (at absolute position S - T + t) sees keys up to itself."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    mask = torch.zeros(T, S, dtype=dtype, device=device).masked_fill_(k_pos > q_pos, torch.finfo(dtype).min)
    return mask[None, None]


def combine_masks(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    """Sum of two additive masks, clamped so that masked + masked stays finfo.min rather than -inf."""
    if a is None or b is None:
        return a if b is None else b
    return (a + b).clamp_(min=torch.finfo(a.dtype).min)


# -- attention ---------------------------------------------------------------------------------------------
def attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *, dropout: float = 0.0,
           is_causal: bool = False, scale: Optional[float] = None,
           need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """softmax(q k^T * scale + mask) v over (B, nh, T, hs) tensors.

    Uses scaled_dot_product_attention unless the attention weights are asked for.

    Returns:
        (output (B, nh, T, hs), weights (B, nh, T, S) when need_weights else None)
    """
    if not need_weights:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                           is_causal=is_causal and mask is None, scale=scale)
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


def check_length(length: int, max_positions: int, what: str = "sequence") -> None:
    if length > max_positions:
        raise ValueError(f"{what} length {length} is longer than the model's max_position_embeddings "
                         f"({max_positions}); truncate the input")


def as_batch(input_ids: Tensor, name: str = "input_ids") -> Tensor:
    """Accept (T,) ids as a batch of one; anything but 1 or 2 dimensions raises ValueError."""
    if input_ids.dim() == 1:
        return input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got {tuple(input_ids.shape)}")
    return input_ids


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


# == decoders: causal masks over a cache, position checks, the KV cache (GPT-2, BART) ====================
def causal_attention_mask(attention_mask: Optional[Tensor], T: int, S: int, dtype: torch.dtype,
                          device: torch.device) -> tuple[Optional[Tensor], bool]:
    """Self-attention mask of a decoder whose T new queries follow S - T cached keys.

    Args:
        attention_mask: (B, S) of 1 (attend) / 0 (padding) over cached and new tokens, or None.

    Returns:
        (mask, is_causal) for `attend`. Without padding: (None, True) when T == S, so that SDPA takes its
        causal kernel; (None, False) for a single new token, which sees every key; else the (1, 1, T, S)
        causal mask. With padding: causal and padding masks combined into (B, 1, T, S).
    """
    pad = padding_mask(attention_mask, dtype)  # (B, 1, 1, S) or None
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
