"""Checks shared by the parity tests of the Llama family (test_llama, test_mistral, test_qwen2, test_qwen3).

transformers builds each tiny checkpoint (seeded, every 1-d tensor perturbed: norms and biases), saves it, and is
the reference; every check compares our model loaded from that folder with transformers' loaded from it.
"""
from __future__ import annotations

import functools
import json

import torch
import transformers
from safetensors.torch import load_file

import pretrained
from test_module_tree import record  # name -> output of every module whose forward hook fires

TOL = 1e-5  # fp32 max abs difference against transformers: the one place to change for a "fast" mode
PAD, BOS, EOS = 0, 1, 2


def perturb(model, seed: int) -> None:
    """Random values added to every 1-d parameter (RMSNorm weights, biases), so a misnamed one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def save_hf(folder, arch: str, config_class: str, seed: int = 0, dtype=None, generation: dict | None = None,
            **config) -> str:
    """Build transformers' `arch` from `config_class(**config)`, seeded and perturbed; save it into `folder`."""
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(getattr(transformers, config_class)(**config))
    perturb(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    if generation:
        model.generation_config.update(**generation)
    model.save_pretrained(folder)
    return str(folder)


@functools.cache
def hf(folder: str, arch: str, attn: str = "eager", dtype=None):
    """transformers' `arch` loaded from `folder` (cached: tests must not modify it)."""
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn, **kwargs).eval()


@functools.cache
def ours(folder: str, arch: str, attn: str = "sdpa"):
    """Our `arch` loaded from `folder` (cached: tests must not modify it)."""
    return getattr(pretrained, arch).from_pretrained(folder, attn_implementation=attn)


def diff(a, b, keep=None) -> float:
    """Max abs difference; `keep` (B, T) limits it to the positions where it is 1."""
    d = (a.detach().float() - b.detach().float()).abs()
    if keep is not None:
        d = d * keep.reshape(*keep.shape, *([1] * (d.dim() - keep.dim()))).to(d.dtype)
    return d.max().item()


def padded(vocab_size: int, B: int = 4, T: int = 12, seed: int = 0, left: bool = False):
    """(ids, mask, position_ids): rows of T, T/2, 1 and T-3 tokens, padded with PAD on the right or the left;
    position_ids count real tokens only (as generate makes them)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate([T, T // 2, 1, T - 3][:B]):
        mask[row, n:] = 0
    if left:
        mask = mask.flip(1)
    ids = ids.masked_fill(mask == 0, PAD)
    return ids, mask, (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def main_output(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


# -- checks -------------------------------------------------------------------------------------------------
def check_forward(folder: str, arch: str, vocab_size: int, T: int = 12) -> None:
    """Right-padded and left-padded batches (with generate's position ids), eager and SDPA, hidden states,
    attentions; fp32 within TOL of transformers."""
    for attn in ("eager", "sdpa"):
        model, ref = ours(folder, arch, attn), hf(folder, arch, attn)
        for left in (False, True):
            ids, mask, pos = padded(vocab_size, T=T, left=left)
            kwargs = dict(attention_mask=mask, position_ids=pos if left else None)
            with torch.no_grad():
                a, b = main_output(model(ids, **kwargs)), main_output(ref(ids, **kwargs))
            assert a.shape == b.shape
            # A query row with no visible key (a padded place: before the first token with left padding, or past
            # the window of the last one with right padding) is arbitrary; transformers' SDPA and eager differ
            # there too. Compare real tokens.
            keep = mask if (attn == "sdpa" and a.dim() == 3) else None
            assert diff(a, b, keep) <= TOL, (arch, attn, left, diff(a, b, keep))
        ids = padded(vocab_size, T=T)[0]
        with torch.no_grad():  # no padding: no mask at all (SDPA's causal kernel, kv heads not repeated)
            assert diff(main_output(model(ids)), main_output(ref(ids))) <= TOL
    model, ref = ours(folder, arch, "eager"), hf(folder, arch, "eager")
    ids, mask, _ = padded(vocab_size, T=T)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        b = ref(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) and len(a.attentions) == len(b.attentions)
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert diff(x, y) <= TOL


def check_hooks(folder: str, arch: str, vocab_size: int) -> None:
    """The same module tree as transformers'; forward hooks fire on the same module names, under both attention
    implementations, and what each one sees is transformers' value."""
    for attn in ("sdpa", "eager"):
        model, ref = ours(folder, arch, attn), hf(folder, arch, attn)
        assert [n for n, _ in model.named_modules()] == [n for n, _ in ref.named_modules()]
        ids, mask, _ = padded(vocab_size, B=2, T=7)  # a full row and a right-padded one: no row without keys
        a, b = record(model, input_ids=ids, attention_mask=mask), record(ref, input_ids=ids, attention_mask=mask)
        assert set(a) == set(b), set(a) ^ set(b)
        for name, theirs in b.items():
            assert a[name].shape == theirs.shape, name
            if theirs.is_floating_point():
                assert diff(a[name], theirs) <= TOL, (attn, name, diff(a[name], theirs))


def check_blocks_callable(folder: str, arch: str, vocab_size: int) -> None:
    """The decoder layer, its attention and MLP, the norms and rotary_emb called on their own (no mask: causal)
    compute what transformers' do."""
    model, ref = ours(folder, arch), hf(folder, arch, "sdpa")
    base, their_base = model.base_model, ref.base_model
    ids = padded(vocab_size, B=2, T=7)[0]
    with torch.no_grad():
        h = base.embed_tokens(ids)  # (B, T, C)
        pos = torch.arange(7)[None]
        pe, their_pe = base.rotary_emb(h, pos), their_base.rotary_emb(h, pos)
        assert diff(pe[0], their_pe[0]) <= TOL and diff(pe[1], their_pe[1]) <= TOL
        layer, their_layer = base.layers[1], their_base.layers[1]
        x, weights = layer(h, position_embeddings=pe)
        assert weights is None and diff(x, their_layer(h, position_embeddings=their_pe)) <= TOL
        y, weights = layer.self_attn(layer.input_layernorm(h), pe, output_attentions=True)
        their_y = their_layer.self_attn(their_layer.input_layernorm(h), their_pe, None)[0]
        assert diff(y, their_y) <= TOL and torch.all(weights[0, :, 0, 1:] == 0)  # causal without a mask
        assert diff(layer.mlp(h), their_layer.mlp(h)) <= TOL and diff(base.norm(h), their_base.norm(h)) <= TOL


def check_cached_decoding(folder: str, arch: str, vocab_size: int, steps: int = 8, T: int = 8) -> None:
    """Prefill a left-padded prompt, decode `steps` tokens one at a time through the cache; every step's logits
    equal transformers' full pass over the whole sequence; the cache holds the kv heads, not repeated ones."""
    model, ref = ours(folder, arch), hf(folder, arch, "sdpa")
    ids, mask, pos = padded(vocab_size, T=T, left=True)
    logits = []
    with torch.no_grad():
        out = model(ids, attention_mask=mask, position_ids=pos, use_cache=True)
        logits.append(out.logits)
        for _ in range(steps):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
            out = model(nxt, attention_mask=mask, position_ids=pos[:, -1:] + 1, past_key_values=out.past_key_values,
                        use_cache=True)
            pos = torch.cat([pos, pos[:, -1:] + 1], 1)
            logits.append(out.logits)
        full = ref(ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1]).logits
        # batch of one, no padding: every step runs without a mask
        one = ids[:1, T:T + 4]
        out = model(one[:, :2], use_cache=True)
        last = [out.logits]
        for i in (2, 3):
            last.append(model(one[:, i:i + 1], past_key_values=out.past_key_values).logits)
        assert diff(torch.cat(last, 1), ref(one).logits) <= TOL
    cache = out.past_key_values
    assert cache.get_seq_length() == 4
    cache = model(ids, attention_mask=mask, use_cache=True).past_key_values
    assert cache.get_seq_length() == T + steps
    cfg = model.config
    assert cache._keys[0].shape[1] == cfg.num_key_value_heads  # kv heads only
    assert diff(torch.cat(logits, 1)[:, :-1], full, keep=mask[:, :-1]) <= TOL


def check_generate(folder: str, arch: str, vocab_size: int, T: int = 7, **kwargs) -> None:
    """Greedy and beam search on a left-padded batch: the same tokens as transformers' generate."""
    model, ref = ours(folder, arch), hf(folder, arch, "sdpa")
    ids, mask, _ = padded(vocab_size, T=T, left=True, seed=3)
    for options in (dict(max_new_tokens=10), dict(max_new_tokens=6, num_beams=3, num_return_sequences=2)):
        a = model.generate(ids, attention_mask=mask, **options, **kwargs)
        b = ref.generate(ids, attention_mask=mask, **options, **kwargs)
        assert a.tolist() == b.tolist(), options


def check_save_load(folder: str, arch: str, vocab_size: int, tmp_path, model_type: str) -> None:
    """Ours saves what transformers saved (same keys, config transformers reads); transformers loads it and
    computes the same outputs."""
    model = getattr(pretrained, arch).from_pretrained(folder)
    model.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / "model.safetensors")) == set(load_file(f"{folder}/model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [arch] and config["model_type"] == model_type
    ids, mask, _ = padded(vocab_size)
    with torch.no_grad():
        a = main_output(model(ids, attention_mask=mask))
        b = main_output(hf(str(tmp_path), arch)(ids, attention_mask=mask))
        c = main_output(hf(folder, arch)(ids, attention_mask=mask))
    assert diff(a, b) <= TOL and diff(b, c) <= TOL


def check_config(config_class, hf_config_class: str, **kwargs) -> None:
    """Same fields, defaults and config.json text as transformers' config (repr is the JSON)."""
    strip = lambda s: "\n".join(l for l in s.splitlines() if '"transformers_version"' not in l)  # noqa: E731
    ref = getattr(transformers, hf_config_class)
    assert strip(repr(config_class())) == strip(repr(ref()))
    assert strip(repr(config_class(**kwargs))) == strip(repr(ref(**kwargs)))


def check_bf16(folder: str, arch: str, vocab_size: int) -> None:
    """A bf16 checkpoint loads in bf16 (dtype "auto"), computes in bf16 close to transformers' bf16, generates."""
    model = getattr(pretrained, arch).from_pretrained(folder)
    assert model.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in model.parameters())
    ref = hf(folder, arch, "sdpa", torch.bfloat16)
    ids, mask, _ = padded(vocab_size)
    with torch.no_grad():
        a, b = main_output(model(ids, attention_mask=mask)), main_output(ref(ids, attention_mask=mask))
    assert a.dtype == torch.bfloat16 and diff(a, b) <= 0.05 * b.float().abs().max().item()
