"""GPT-2 against transformers: forward parity with padded batches, cached decoding, save/load both ways, the
canonical checkpoint layout, config, init and input errors; and the KV cache of layers.py."""
from __future__ import annotations

import functools
import json
import logging
import math
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pretrained import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from pretrained.configuration import ConfigError
from pretrained.layers import KVCache, gelu_new
from pretrained.models.gpt2 import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model

CLASSES = {"GPT2Model": GPT2Model, "GPT2LMHeadModel": GPT2LMHeadModel,
           "GPT2ForSequenceClassification": GPT2ForSequenceClassification}
PAD = 0
TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=24, pad_token_id=PAD, bos_token_id=98,
            eos_token_id=98, num_labels=3)
TOL = 1e-5


def diff(a, b, keep=None) -> float:
    """Max abs difference; `keep` (B, T) limits it to the positions where it is 1."""
    d = (a.detach().float() - b.detach().float()).abs()
    if keep is not None:
        d = d * keep.reshape(*keep.shape, *([1] * (d.dim() - keep.dim()))).to(d.dtype)
    return d.max().item()


def perturb(model, seed: int) -> None:
    """Random values in every bias and LayerNorm parameter (every 1-d tensor), so a misnamed one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """class name -> folder where transformers saved a tiny seeded, perturbed model of that class."""
    dirs = {}
    for seed, name in enumerate(CLASSES):
        torch.manual_seed(seed)
        model = getattr(transformers, name)(transformers.GPT2Config(**TINY))
        perturb(model, seed)
        dirs[name] = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(dirs[name])
    return dirs


@functools.cache
def hf(folder: str, name: str, attn: str = "eager"):
    """The transformers model saved in `folder` (loaded once; tests must not modify it)."""
    return getattr(transformers, name).from_pretrained(folder, attn_implementation=attn).eval()


@functools.cache
def load(folder: str, name: str):
    """Our model loaded from `folder` (loaded once; tests must not modify it)."""
    return CLASSES[name].from_pretrained(folder)


def right_padded(B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate([T, T // 2, 1, T - 3][:B]):
        mask[row, n:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def left_padded(B=4, T=12, seed=1):
    ids, mask = right_padded(B, T, seed)
    ids, mask = ids.flip(1), mask.flip(1)
    return ids, mask, (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # positions as generate makes them


def main_output(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


# -- forward parity --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_forward_matches_transformers_with_right_padding(hf_dirs, name, attn):
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name, attn)
    ids, mask = right_padded()
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask), ref(ids, attention_mask=mask)
    assert main_output(a).shape == main_output(b).shape
    assert diff(main_output(a), main_output(b)) <= TOL


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padding_with_position_ids_matches_transformers(hf_dirs, attn):
    name = "GPT2LMHeadModel"
    ours, ref = load(hf_dirs[name], "GPT2LMHeadModel"), hf(hf_dirs[name], name, attn)
    ids, mask, pos = left_padded()
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos).logits
        b = ref(ids, attention_mask=mask, position_ids=pos).logits
    assert diff(a, b, keep=mask) <= TOL
    if attn == "eager":  # a fully padded query row attends uniformly, as eager does; SDPA treats it otherwise
        assert diff(a, b) <= TOL


def test_default_position_ids_ignore_the_mask_like_transformers(hf_dirs):
    """Without position_ids the forward counts positions from 0 in every row, padded or not (documented)."""
    name = "GPT2Model"
    ours, ref = load(hf_dirs[name], "GPT2Model"), hf(hf_dirs[name], name)
    ids, mask, pos = left_padded()
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).last_hidden_state
        assert diff(a, ref(ids, attention_mask=mask).last_hidden_state) <= TOL
        shifted = ours(ids, attention_mask=mask, position_ids=pos).last_hidden_state
    assert diff(a, shifted, keep=mask) > 1e-3


def test_hidden_states_attentions_and_inputs_embeds_match(hf_dirs):
    name = "GPT2Model"
    ours, ref = load(hf_dirs[name], "GPT2Model"), hf(hf_dirs[name], name)
    ids, mask = right_padded()
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        b = ref(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        embeds = ours.get_input_embeddings()(ids)
        c = ours(inputs_embeds=embeds, attention_mask=mask, token_type_ids=ids.flip(1))
        d = ref(inputs_embeds=embeds, attention_mask=mask, token_type_ids=ids.flip(1))
    assert len(a.hidden_states) == len(b.hidden_states) == TINY["n_layer"] + 1
    assert len(a.attentions) == len(b.attentions) == TINY["n_layer"]
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert diff(x, y) <= TOL
    assert diff(c.last_hidden_state, d.last_hidden_state) <= TOL


@pytest.fixture(scope="module")
def hf_large_weights(tmp_path_factory):
    """A GPT2Model with weights large enough (std 0.5) that the attention scale and activation matter."""
    torch.manual_seed(9)
    model = transformers.GPT2Model(transformers.GPT2Config(**TINY, initializer_range=0.5))
    folder = str(tmp_path_factory.mktemp("gpt2-large-weights"))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("override", [dict(scale_attn_by_inverse_layer_idx=True), dict(scale_attn_weights=False),
                                      dict(activation_function="relu")])
def test_config_variants_match_transformers(hf_large_weights, override):
    ids, mask = right_padded()
    with torch.no_grad():
        default = GPT2Model.from_pretrained(hf_large_weights)(ids, attention_mask=mask).last_hidden_state
        a = GPT2Model.from_pretrained(hf_large_weights, **override)(ids, attention_mask=mask).last_hidden_state
        b = transformers.GPT2Model.from_pretrained(hf_large_weights, attn_implementation="eager", **override).eval()(
            ids, attention_mask=mask).last_hidden_state
    assert diff(a, b) <= TOL and diff(a, default) > 1e-3


def test_losses_match_transformers(hf_dirs):
    ids, mask = right_padded()
    lm, lm_ref = load(hf_dirs["GPT2LMHeadModel"], "GPT2LMHeadModel"), hf(hf_dirs["GPT2LMHeadModel"],
                                                                                   "GPT2LMHeadModel")
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        assert abs(lm(ids, attention_mask=mask, labels=labels).loss
                   - lm_ref(ids, attention_mask=mask, labels=labels).loss) <= TOL
    name = "GPT2ForSequenceClassification"
    cls, cls_ref = load(hf_dirs[name], "GPT2ForSequenceClassification"), hf(hf_dirs[name], name)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        a, b = cls(ids, attention_mask=mask, labels=labels), cls_ref(ids, attention_mask=mask, labels=labels)
    assert a.logits.shape == (4, 3)
    assert abs(a.loss - b.loss) <= TOL


def test_return_dict_false_and_logits_to_keep(hf_dirs):
    model = load(hf_dirs["GPT2LMHeadModel"], "GPT2LMHeadModel")
    ids, mask = right_padded()
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        last = model(ids, attention_mask=mask, logits_to_keep=1).logits
        as_tuple = model(ids, attention_mask=mask, return_dict=False, use_cache=False)
    assert last.shape == (4, 1, TINY["vocab_size"]) and torch.equal(last, full.logits[:, -1:])
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.equal(as_tuple[0], full.logits)
    assert isinstance(full.past_key_values, KVCache)  # config.use_cache defaults to True, as in transformers


# -- cached decoding -------------------------------------------------------------------------------------------
def test_greedy_decoding_with_cache_matches_the_full_pass(hf_dirs):
    """Prefill a left-padded prompt, decode 8 tokens one at a time; each step's logits equal transformers'
    logits of one full forward pass over the whole sequence."""
    name = "GPT2LMHeadModel"
    ours, ref = load(hf_dirs[name], "GPT2LMHeadModel"), hf(hf_dirs[name], name, "sdpa")
    ids, mask, pos = left_padded(T=8)
    steps = []
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, position_ids=pos, past_key_values=None, use_cache=True)
        steps.append(out.logits)
        for _ in range(8):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
            out = ours(nxt, attention_mask=mask, position_ids=pos[:, -1:] + 1, past_key_values=out.past_key_values,
                       use_cache=True)
            pos = torch.cat([pos, pos[:, -1:] + 1], 1)
            steps.append(out.logits)
        assert out.past_key_values.get_seq_length() == 16
        full = ref(ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1]).logits
    assert diff(torch.cat(steps, 1)[:, :-1], full, keep=mask[:, :-1]) <= TOL


def test_cache_reorder_for_beam_search(hf_dirs):
    name = "GPT2LMHeadModel"
    model = load(hf_dirs[name], "GPT2LMHeadModel")
    ids, _ = right_padded(B=3, T=10, seed=5)
    beam_idx = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = model(ids[:, :6]).past_key_values
        cache.reorder(beam_idx)
        step = model(ids[beam_idx, 6:], past_key_values=cache).logits
        full = model(ids[beam_idx]).logits
        expanded = model(ids[:, :6]).past_key_values.repeat_interleave(2)
        step2 = model(ids[:, 6:].repeat_interleave(2, 0), past_key_values=expanded).logits
        full2 = model(ids.repeat_interleave(2, 0)).logits
    assert diff(step, full[:, 6:]) <= TOL
    assert diff(step2, full2[:, 6:]) <= TOL


def test_kv_cache_grows_by_doubling_and_writes_in_place():
    cache = KVCache()
    B, nh, hs = 2, 3, 4
    k, v = torch.randn(B, nh, 5, hs), torch.randn(B, nh, 5, hs)
    k_all, v_all = cache.update(0, k, v)
    assert torch.equal(k_all, k) and torch.equal(v_all, v) and cache.get_seq_length() == 5
    first = cache._keys[0]
    seen, ks = [first.data_ptr()], [k]
    for _ in range(100):
        k1 = torch.randn(B, nh, 1, hs)
        ks.append(k1)
        k_all, _ = cache.update(0, k1, torch.randn(B, nh, 1, hs))
        seen.append(cache._keys[0].data_ptr())
    assert torch.equal(k_all, torch.cat(ks, 2)) and cache.get_seq_length() == 105
    assert len(set(seen)) == 2  # one reallocation (64 -> 128) in 100 steps
    assert cache._keys[0].size(2) == 128
    assert cache.get_seq_length(layer_idx=3) == 0  # a layer never updated
    with pytest.raises(ValueError, match="reorder"):
        cache.update(0, torch.randn(B + 1, nh, 1, hs), torch.randn(B + 1, nh, 1, hs))


def test_kv_cache_preallocates_capacity_reorders_and_keeps_cross_attention():
    cache = KVCache(capacity=200)
    k = torch.arange(3.0)[:, None, None, None].expand(3, 2, 4, 5)  # row i holds i
    cache.update(0, k, k)
    assert cache._keys[0].size(2) == 256
    cross = torch.arange(3.0)[:, None, None, None].expand(3, 2, 7, 5)
    assert cache.get_cross(0) is None
    cache.set_cross(0, cross, cross + 10)
    cache.reorder(torch.tensor([2, 2, 0, 1]))
    k_all, _ = cache.update(0, torch.zeros(4, 2, 1, 5), torch.zeros(4, 2, 1, 5))
    assert k_all[:, 0, :4, 0].tolist() == [[2.0] * 4, [2.0] * 4, [0.0] * 4, [1.0] * 4]
    ck, cv = cache.get_cross(0)
    assert ck[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0, 1.0] and cv[:, 0, 0, 0].tolist() == [12.0, 12.0, 10.0, 11.0]
    cache.repeat_interleave(2)
    assert cache.get_cross(0)[0][:, 0, 0, 0].tolist() == [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0]
    assert cache._keys[0].shape[0] == 8 and cache.get_seq_length() == 5


# -- save / load -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CLASSES))
def test_save_load_both_directions(hf_dirs, name, tmp_path):
    ours = CLASSES[name].from_pretrained(hf_dirs[name])
    ours.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / "model.safetensors")) == set(load_file(f"{hf_dirs[name]}/model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [name] and config["model_type"] == "gpt2"
    ref_from_ours, ref = hf(str(tmp_path), name), hf(hf_dirs[name], name)
    ids, mask = right_padded()
    with torch.no_grad():
        a, b, c = (ours(ids, attention_mask=mask), ref_from_ours(ids, attention_mask=mask),
                   ref(ids, attention_mask=mask))
    assert diff(main_output(a), main_output(b)) <= TOL and diff(main_output(b), main_output(c)) <= TOL
    if name == "GPT2LMHeadModel":
        assert ours.lm_head.weight is ours.transformer.wte.weight


def test_canonical_gpt2_layout_loads_without_warnings(hf_dirs, tmp_path, caplog):
    """openai-community/gpt2's layout: no `transformer.` prefix, no lm_head, old attn.bias/masked_bias buffers."""
    src = hf_dirs["GPT2LMHeadModel"]
    state = {re.sub(r"^transformer\.", "", k): v for k, v in load_file(f"{src}/model.safetensors").items()}
    n = TINY["n_positions"]
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    assert not any(k.startswith(("transformer.", "lm_head")) for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((open(f"{src}/config.json").read()))
    ids, mask = right_padded()
    with caplog.at_level(logging.INFO, logger="pretrained"):
        lm = GPT2LMHeadModel.from_pretrained(tmp_path)
        base = GPT2Model.from_pretrained(tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    ref = hf(src, "GPT2LMHeadModel")
    with torch.no_grad():
        assert diff(lm(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits) <= TOL
        assert diff(base(ids, attention_mask=mask).last_hidden_state,
                    ref.transformer(ids, attention_mask=mask).last_hidden_state) <= TOL
    assert lm.transformer.h[0].attn.c_attn.weight.shape == (32, 96)  # Conv1D (in, out), not transposed


def test_auto_classes_pick_gpt2(hf_dirs):
    assert type(AutoModel.from_pretrained(hf_dirs["GPT2LMHeadModel"])) is GPT2Model
    assert type(AutoModelForCausalLM.from_pretrained(hf_dirs["GPT2LMHeadModel"])) is GPT2LMHeadModel
    name = "GPT2ForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(hf_dirs[name])) is GPT2ForSequenceClassification


# -- config, init, activation ----------------------------------------------------------------------------------
def test_config_matches_transformers():
    strip = lambda s: re.sub(r'  "transformers_version": "[^"]*",\n', "", s)  # noqa: E731
    assert repr(GPT2Config()) == strip(repr(transformers.GPT2Config()))
    kwargs = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, max_position_embeddings=128,
                  num_labels=5, n_inner=100, pad_token_id=7)
    ours = GPT2Config(**kwargs)
    assert repr(ours) == strip(repr(transformers.GPT2Config(**kwargs)))
    assert (ours.n_embd, ours.n_layer, ours.n_head, ours.n_positions) == (64, 3, 8, 128)
    assert ours.hidden_size == 64 and ours.num_attention_heads == 8


def test_random_init_follows_gpt2(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_embd=128, n_layer=8, n_head=4, n_positions=64)
    model = GPT2LMHeadModel(config)
    block = model.transformer.h[3]
    assert block.mlp.c_fc.weight.shape == (128, 512)  # n_inner None -> 4 * n_embd
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 0.002
    for w in (block.attn.c_proj.weight, block.mlp.c_proj.weight):  # 0.02 / sqrt(2 * n_layer)
        assert abs(w.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert torch.all(block.attn.c_attn.bias == 0) and torch.all(block.ln_1.weight == 1)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gelu_new_is_bit_identical_to_transformers():
    from transformers.activations import NewGELUActivation

    x = torch.randn(10000) * 4
    assert torch.equal(gelu_new(x), NewGELUActivation()(x))


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(hf_dirs):
    model = load(hf_dirs["GPT2LMHeadModel"], "GPT2LMHeadModel")
    n = TINY["n_positions"]
    with pytest.raises(ValueError, match=f"length {n + 1} is longer .*max_position_embeddings \\({n}\\)"):
        model(torch.ones(1, n + 1, dtype=torch.long))
    cache = model(torch.ones(1, n - 2, dtype=torch.long)).past_key_values
    with pytest.raises(ValueError, match=r"cached \+ new tokens\) length 25"):
        model(torch.ones(1, 3, dtype=torch.long), past_key_values=cache)
    with pytest.raises(ValueError, match="token id 99, outside the vocabulary"):
        model(torch.tensor([[1, 99]]))
    with pytest.raises(TypeError, match="must be the KVCache .* tuple format is not accepted"):
        model(torch.tensor([[1]]), past_key_values=((torch.zeros(1, 4, 1, 8),) * 2,) * 2)
    with pytest.raises(ValueError, match=r"position_ids contain position 24"):
        model(torch.tensor([[1, 2]]), position_ids=torch.tensor([[23, 24]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\), but .* needs \(1, 2\)"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ConfigError, match="add_cross_attention"):
        GPT2Model(GPT2Config(**{**TINY, "add_cross_attention": True}))
    classifier = GPT2ForSequenceClassification(GPT2Config(**{**TINY, "pad_token_id": None}))
    with pytest.raises(ValueError, match="pad_token_id"):
        classifier(torch.ones(2, 3, dtype=torch.long))
