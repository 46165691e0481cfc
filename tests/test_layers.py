"""Shared maths: `linear` in its two modes (the packed oneDNN path by default, F.linear's bits in exact mode)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrained import BertModel, fastpath, layers

needs_onednn = pytest.mark.skipif(not fastpath.ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")


def operands(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(2, 5, 64, generator=g), torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
    return x.to(dtype), w.to(dtype), b.to(dtype)


def test_linear_exact_is_bitwise_f_linear(monkeypatch):
    x, w, b = operands()
    with torch.inference_mode():
        assert torch.equal(layers.linear(x, w, b, exact=True), F.linear(x, w, b))
        monkeypatch.setattr(fastpath, "EXACT", True)
        assert torch.equal(layers.linear(x, w, b), F.linear(x, w, b))
    assert not fastpath.has_pack(w)


@needs_onednn
@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-4), (torch.bfloat16, 0.25)])
def test_linear_default_is_packed_close_and_exact_under_autograd(monkeypatch, dtype, bound):
    monkeypatch.setattr(fastpath, "EXACT", False)
    x, w, b = operands(dtype=dtype)
    with torch.inference_mode():
        fast = layers.linear(x, w, b)
    assert fastpath.has_pack(w) and fast.dtype == dtype
    assert (fast.float() - F.linear(x.float(), w.float(), b.float())).abs().max() <= bound
    # with autograd recording, the exact F.linear runs (and frees the pack), and backward works
    x.requires_grad_(True)
    y = layers.linear(x, w, b)
    assert torch.equal(y, F.linear(x, w, b)) and not fastpath.has_pack(w)
    y.float().sum().backward()
    assert torch.allclose(x.grad.float(), w.float().sum(0).expand_as(x), atol=bound)


@needs_onednn
def test_default_mode_on_minilm_stays_within_1e4(minilm_dir):
    """The default path moves real outputs by summation order only: more than 0, never more than 1e-4."""
    fast = BertModel.from_pretrained(minilm_dir)
    exact = BertModel.from_pretrained(minilm_dir, exact=True)
    assert (fast.exact, exact.exact) == (False, True) and exact.encoder.layer[0].intermediate.dense.exact
    ids = torch.randint(1000, 30000, (3, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.inference_mode():
        a = fast(ids, attention_mask=mask).last_hidden_state
        b = exact(ids, attention_mask=mask).last_hidden_state
    assert 0 < (a - b).abs().max() <= 1e-4


def test_kv_cache_rows_of_different_lengths_share_one_cache():
    """pad_left / cat / drop_left, as the serving scheduler joins and trims rows: contents stay in place."""
    from pretrained.layers import KVCache

    g = torch.Generator().manual_seed(0)
    a, b = KVCache(), KVCache()
    ka, va = torch.randn(1, 2, 5, 4, generator=g), torch.randn(1, 2, 5, 4, generator=g)
    kb, vb = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    for layer in range(2):
        a.update(layer, ka, va)
        b.update(layer, kb, vb)
    joined = KVCache.cat([a, b.pad_left(2)])
    assert joined.get_seq_length() == 5
    step_k, step_v = torch.randn(2, 2, 1, 4, generator=g), torch.randn(2, 2, 1, 4, generator=g)
    k, v = joined.update(0, step_k, step_v)  # (2, 2, 6, 4): the next step appends after the padding
    assert torch.equal(k[0, :, :5], ka[0]) and torch.equal(k[1, :, 2:5], kb[0]) and torch.equal(v[1, :, 2:5], vb[0])
    assert torch.equal(k[1, :, :2], torch.zeros(2, 2, 4)) and torch.equal(k[:, :, 5:], step_k)
    joined.reorder(torch.tensor([1])).drop_left(2)  # the long row left; its padding is not needed any more
    assert joined.get_seq_length(0) == 4 and joined.get_seq_length(1) == 3
    k, _ = joined.update(1, step_k[1:], step_v[1:])
    assert torch.equal(k[0, :, :3], kb[0]) and torch.equal(k[0, :, 3:], step_k[1])
    with pytest.raises(ValueError, match="one length"):
        KVCache.cat([a, b.drop_left(1)])
