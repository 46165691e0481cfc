"""Shared maths of every architecture: attention, masks, activations, input checks and losses.

Each architecture file keeps only what makes it that architecture; everything here exists once.
Shape vocabulary: B batch, T query length, S key length, C channels, nh heads, hs head size.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

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
    lo, hi = int(input_ids.min()), int(input_ids.max())
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
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_loss(logits: Tensor, labels: Tensor, shift: bool = False) -> Tensor:
    """Cross-entropy over tokens, ignoring label -100; `shift` predicts token t+1 from position t."""
    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    labels = labels.to(logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100)
