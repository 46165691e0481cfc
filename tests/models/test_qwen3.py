"""Qwen3 against transformers: every class with head_dim (12) != hidden_size / num_attention_heads (8) and
perturbed q/k norms, hooks, cached decoding, generation on left-padded batches, save/load both ways, config."""
from __future__ import annotations

import pytest
from rotary_decoders import (EOS, PAD, check_cached_decoding, check_config, check_forward, check_generate,
                             check_blocks_callable, check_hooks, check_save_load, ours, save_hf)

from pretrained import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from pretrained.models.qwen3 import Qwen3Config, Qwen3ForCausalLM, Qwen3ForSequenceClassification, Qwen3Model

CLASSES = ["Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification"]
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=12, max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS,
            num_labels=3)
V = TINY["vocab_size"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return {name: save_hf(tmp_path_factory.mktemp(name), name, "Qwen3Config", seed=30 + i, **TINY)
            for i, name in enumerate(CLASSES)}


@pytest.mark.parametrize("name", CLASSES)
def test_forward_matches_transformers(dirs, name):
    check_forward(dirs[name], name, V)


def test_head_dim_and_qk_norms(dirs):
    attn = ours(dirs["Qwen3Model"], "Qwen3Model").layers[0].self_attn
    assert attn.q_proj.weight.shape == (4 * 12, 32) and attn.k_proj.weight.shape == (2 * 12, 32)
    assert attn.q_norm.weight.shape == (12,) and attn.k_norm.weight.shape == (12,)
    assert attn.q_norm.weight.std() > 0.1  # perturbed, so a dropped norm would show


def test_module_tree_and_hooks_match_transformers(dirs):
    for name in CLASSES:
        check_hooks(dirs[name], name, V)
    check_blocks_callable(dirs["Qwen3ForCausalLM"], "Qwen3ForCausalLM", V)


def test_cached_decoding_matches_the_full_pass(dirs):
    check_cached_decoding(dirs["Qwen3ForCausalLM"], "Qwen3ForCausalLM", V)


def test_generate_matches_transformers_on_left_padded_batches(dirs):
    check_generate(dirs["Qwen3ForCausalLM"], "Qwen3ForCausalLM", V)


@pytest.mark.parametrize("name", CLASSES)
def test_save_load_both_directions(dirs, name, tmp_path):
    check_save_load(dirs[name], name, V, tmp_path, "qwen3")


def test_auto_classes_and_config(dirs):
    assert type(AutoModel.from_pretrained(dirs["Qwen3ForCausalLM"])) is Qwen3Model
    assert type(AutoModelForCausalLM.from_pretrained(dirs["Qwen3ForCausalLM"])) is Qwen3ForCausalLM
    name = "Qwen3ForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(dirs[name])) is Qwen3ForSequenceClassification
    check_config(Qwen3Config, "Qwen3Config", **{**TINY, "rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                                          "original_max_position_embeddings": 16}})
