"""Mistral against transformers: every class with a sliding window shorter than the input (and without one),
hooks, cached decoding past the window, generation on left-padded batches, save/load both ways, config."""
from __future__ import annotations

import pytest
import torch
from rotary_decoders import (BOS, EOS, PAD, TOL, check_cached_decoding, check_config, check_forward, check_generate,
                             check_blocks_callable, check_hooks, check_save_load, diff, ours, padded, save_hf)

from pretrained import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from pretrained.models.mistral import MistralConfig, MistralForCausalLM, MistralForSequenceClassification, MistralModel

CLASSES = ["MistralModel", "MistralForCausalLM", "MistralForSequenceClassification"]
WINDOW = 5  # shorter than the 12-token inputs and the 16-token decoded sequences
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=BOS,
            eos_token_id=EOS, num_labels=3, sliding_window=WINDOW)
V = TINY["vocab_size"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return {name: save_hf(tmp_path_factory.mktemp(name), name, "MistralConfig", seed=10 + i, **TINY)
            for i, name in enumerate(CLASSES)}


@pytest.mark.parametrize("name", CLASSES)
def test_forward_with_a_sliding_window_matches_transformers(dirs, name):
    check_forward(dirs[name], name, V)


def test_the_window_matters_and_no_window_matches_too(dirs, tmp_path):
    folder = dirs["MistralForCausalLM"]
    ids = padded(V)[0]
    with torch.no_grad():
        windowed = ours(folder, "MistralForCausalLM")(ids).logits
        full = MistralForCausalLM.from_pretrained(folder, sliding_window=None)(ids).logits
    assert diff(windowed[:, :WINDOW], full[:, :WINDOW]) <= TOL and diff(windowed, full) > 10 * TOL
    check_forward(save_hf(tmp_path, "MistralForCausalLM", "MistralConfig", seed=19,
                          **{**TINY, "sliding_window": None}), "MistralForCausalLM", V)


def test_module_tree_and_hooks_match_transformers(dirs):
    for name in CLASSES:
        check_hooks(dirs[name], name, V)
    check_blocks_callable(dirs["MistralForCausalLM"], "MistralForCausalLM", V)


def test_cached_decoding_past_the_window_matches_the_full_pass(dirs):
    check_cached_decoding(dirs["MistralForCausalLM"], "MistralForCausalLM", V)


def test_generate_matches_transformers_on_left_padded_batches(dirs):
    check_generate(dirs["MistralForCausalLM"], "MistralForCausalLM", V)


@pytest.mark.parametrize("name", CLASSES)
def test_save_load_both_directions(dirs, name, tmp_path):
    check_save_load(dirs[name], name, V, tmp_path, "mistral")


def test_auto_classes_and_config(dirs):
    assert type(AutoModel.from_pretrained(dirs["MistralForCausalLM"])) is MistralModel
    assert type(AutoModelForCausalLM.from_pretrained(dirs["MistralForCausalLM"])) is MistralForCausalLM
    name = "MistralForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(dirs[name])) is MistralForSequenceClassification
    check_config(MistralConfig, "MistralConfig", **{**TINY, "rope_theta": 1e6, "head_dim": 16})
