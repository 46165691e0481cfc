"""Shared maths: the linear fast path is opt-in and changes nothing unless asked."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pretrained import BertModel, layers

needs_onednn = pytest.mark.skipif(not layers.ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")


def test_linear_default_is_bitwise_f_linear(monkeypatch):
    monkeypatch.setattr(layers, "USE_ONEDNN", False)
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 5, 64, generator=g), torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
    with torch.inference_mode():
        assert torch.equal(layers.linear(x, w, b), F.linear(x, w, b))


@needs_onednn
def test_fast_linear_is_close_and_only_without_grad(monkeypatch):
    monkeypatch.setattr(layers, "USE_ONEDNN", True)
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 5, 64, generator=g), torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
    with torch.inference_mode():
        fast = layers.linear(x, w, b)
    assert (fast - F.linear(x, w, b)).abs().max() <= 1e-4
    # with gradients on, the exact F.linear runs, and backward works
    x.requires_grad_(True)
    y = layers.linear(x, w, b)
    assert torch.equal(y, F.linear(x, w, b))
    y.sum().backward()
    assert torch.allclose(x.grad, w.sum(0).expand_as(x), atol=1e-5)


@needs_onednn
def test_fast_linear_on_minilm_stays_close(minilm_dir, monkeypatch):
    """The opt-in path moves real outputs by about 1e-5 (why it is not the default), never more than 1e-4."""
    model = BertModel.from_pretrained(minilm_dir)
    ids = torch.randint(1000, 30000, (3, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.inference_mode():
        monkeypatch.setattr(layers, "USE_ONEDNN", False)
        exact = model(ids, attention_mask=mask).last_hidden_state
        monkeypatch.setattr(layers, "USE_ONEDNN", True)
        fast = model(ids, attention_mask=mask).last_hidden_state
    assert 0 < (fast - exact).abs().max() <= 1e-4


@pytest.mark.parametrize("value, expected", [("1", layers.ONEDNN_AVAILABLE), ("0", False), (None, False)])
def test_fast_linear_switch_from_environment(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "PRETRAINED_FAST_LINEAR"}
    if value is not None:
        env["PRETRAINED_FAST_LINEAR"] = value
    out = subprocess.run([sys.executable, "-c", "import pretrained.layers as l; print(l.USE_ONEDNN)"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(expected)


@needs_onednn
def test_gpt2_fast_path_follows_weight_changes(monkeypatch):
    """GPT-2's Conv1D keeps an (out, in) copy for the fast path; it must be remade when the weight changes."""
    from pretrained import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(layers, "USE_ONEDNN", True)
    with torch.inference_mode():
        fast = model(ids).logits
    monkeypatch.setattr(layers, "USE_ONEDNN", False)
    with torch.inference_mode():
        exact = model(ids).logits
    assert (fast - exact).abs().max() <= 1e-5
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.mul_(2.0)
        exact = model(ids).logits
    monkeypatch.setattr(layers, "USE_ONEDNN", True)
    with torch.inference_mode():
        fast = model(ids).logits
    assert (fast - exact).abs().max() <= 1e-5


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
