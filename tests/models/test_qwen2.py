"""Qwen2 against transformers: every class (q/k/v biases perturbed, tied embeddings as in Qwen2.5-0.5B), the
sliding window on the layers from max_window_layers on, hooks, cached decoding, generation on left-padded
batches, save/load both ways, config (use_sliding_window, layer_types) as transformers writes it."""
from __future__ import annotations

import pytest
import torch
from rotary_decoders import (EOS, PAD, TOL, check_cached_decoding, check_config, check_forward, check_generate,
                             check_blocks_callable, check_hooks, check_save_load, diff, ours, padded, save_hf)

from pretrained import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from pretrained.models.qwen2 import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Model

CLASSES = ["Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"]
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS, num_labels=3,
            tie_word_embeddings=True)
SLIDING = dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)  # layer 1 slides, layer 0 does not
V = TINY["vocab_size"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return {name: save_hf(tmp_path_factory.mktemp(name), name, "Qwen2Config", seed=20 + i, **TINY)
            for i, name in enumerate(CLASSES)}


@pytest.mark.parametrize("name", CLASSES)
def test_forward_matches_transformers(dirs, name):
    check_forward(dirs[name], name, V)


def test_biases_are_loaded(dirs):
    attn = ours(dirs["Qwen2Model"], "Qwen2Model").layers[0].self_attn
    assert all(getattr(attn, p).bias is not None and attn.q_proj.bias.abs().sum() > 0
               for p in ("q_proj", "k_proj", "v_proj"))
    assert attn.o_proj.bias is None


def test_sliding_window_layers_match_transformers(tmp_path):
    folder = save_hf(tmp_path, "Qwen2ForCausalLM", "Qwen2Config", seed=28, **{**TINY, **SLIDING})
    model = ours(folder, "Qwen2ForCausalLM")
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.sliding_window for layer in model.model.layers] == [None, 4]
    check_forward(folder, "Qwen2ForCausalLM", V)
    check_cached_decoding(folder, "Qwen2ForCausalLM", V)
    ids = padded(V)[0]
    with torch.no_grad():
        full = Qwen2ForCausalLM.from_pretrained(folder, use_sliding_window=False, layer_types=None)(ids).logits
    assert diff(model(ids).logits, full) > 10 * TOL


def test_module_tree_and_hooks_match_transformers(dirs):
    for name in CLASSES:
        check_hooks(dirs[name], name, V)
    check_blocks_callable(dirs["Qwen2ForCausalLM"], "Qwen2ForCausalLM", V)


def test_cached_decoding_matches_the_full_pass(dirs):
    check_cached_decoding(dirs["Qwen2ForCausalLM"], "Qwen2ForCausalLM", V)


def test_generate_matches_transformers_on_left_padded_batches(dirs):
    check_generate(dirs["Qwen2ForCausalLM"], "Qwen2ForCausalLM", V)


@pytest.mark.parametrize("name", CLASSES)
def test_save_load_both_directions(dirs, name, tmp_path):
    check_save_load(dirs[name], name, V, tmp_path, "qwen2")
    if name == "Qwen2ForCausalLM":
        model = ours(dirs[name], name)
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_auto_classes_and_config(dirs):
    assert type(AutoModel.from_pretrained(dirs["Qwen2ForCausalLM"])) is Qwen2Model
    assert type(AutoModelForCausalLM.from_pretrained(dirs["Qwen2ForCausalLM"])) is Qwen2ForCausalLM
    name = "Qwen2ForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(dirs[name])) is Qwen2ForSequenceClassification
    check_config(Qwen2Config, "Qwen2Config", **{**TINY, **SLIDING, "rope_theta": 1e6})
    check_config(Qwen2Config, "Qwen2Config", sliding_window=32768, max_window_layers=21)  # Qwen2.5: not used
    assert Qwen2Config(sliding_window=32768).sliding_window is None
