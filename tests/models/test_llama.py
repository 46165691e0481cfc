"""Llama against transformers: every class, GQA, each rope type (v5 `rope_parameters` and v4 `rope_theta` +
`rope_scaling` configs), tied and untied embeddings, hooks, cached decoding, generation on left-padded batches,
save/load both ways, bf16, and the errors for bad configs."""
from __future__ import annotations

import json

import pytest
import torch
from rotary_decoders import (BOS, EOS, PAD, TOL, check_bf16, check_blocks_callable, check_cached_decoding,
                             check_config, check_forward, check_generate, check_hooks, check_save_load, diff, hf,
                             ours, padded, save_hf)

from pretrained import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from pretrained.configuration import ConfigError
from pretrained.modeling import ShapeMismatchError
from pretrained.models.llama import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

CLASSES = ["LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification"]
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=BOS,
            eos_token_id=EOS, num_labels=3)
V = TINY["vocab_size"]
ROPES = {
    "linear": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    "dynamic": {"rope_type": "dynamic", "factor": 3.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16, "rope_theta": 10000.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0},
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """class name -> folder where transformers saved a tiny seeded, perturbed Llama of that class (GQA 4:2)."""
    return {name: save_hf(tmp_path_factory.mktemp(name), name, "LlamaConfig", seed=i, **TINY)
            for i, name in enumerate(CLASSES)}


@pytest.mark.parametrize("name", CLASSES)
def test_forward_matches_transformers(dirs, name):
    check_forward(dirs[name], name, V)


def test_module_tree_and_hooks_match_transformers(dirs):
    for name in CLASSES:
        check_hooks(dirs[name], name, V)
    check_blocks_callable(dirs["LlamaForCausalLM"], "LlamaForCausalLM", V)


def test_cached_decoding_matches_the_full_pass(dirs):
    check_cached_decoding(dirs["LlamaForCausalLM"], "LlamaForCausalLM", V)


def test_generate_matches_transformers_on_left_padded_batches(dirs):
    check_generate(dirs["LlamaForCausalLM"], "LlamaForCausalLM", V)


@pytest.mark.parametrize("name", CLASSES)
def test_save_load_both_directions(dirs, name, tmp_path):
    check_save_load(dirs[name], name, V, tmp_path, "llama")


def test_losses_match_transformers(dirs):
    ids, mask, _ = padded(V)
    lm, lm_ref = ours(dirs["LlamaForCausalLM"], "LlamaForCausalLM"), hf(dirs["LlamaForCausalLM"], "LlamaForCausalLM")
    labels = ids.masked_fill(mask == 0, -100)
    name = "LlamaForSequenceClassification"
    cls, cls_ref = ours(dirs[name], name), hf(dirs[name], name)
    with torch.no_grad():
        assert abs(lm(ids, attention_mask=mask, labels=labels).loss
                   - lm_ref(ids, attention_mask=mask, labels=labels).loss) <= TOL
        y = torch.tensor([0, 2, 1, 2])
        assert abs(cls(ids, attention_mask=mask, labels=y).loss - cls_ref(ids, attention_mask=mask, labels=y).loss) <= TOL


def test_auto_classes_pick_llama(dirs):
    assert type(AutoConfig.from_pretrained(dirs["LlamaModel"])) is LlamaConfig
    assert type(AutoModel.from_pretrained(dirs["LlamaForCausalLM"])) is LlamaModel
    assert type(AutoModelForCausalLM.from_pretrained(dirs["LlamaForCausalLM"])) is LlamaForCausalLM
    name = "LlamaForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(dirs[name])) is LlamaForSequenceClassification


# -- rope types, v4 configs, tied embeddings, multi-head attention ----------------------------------------------
@pytest.mark.parametrize("rope", list(ROPES))
def test_rope_types_match_transformers(rope, tmp_path):
    """Each rope type, on a model with max_position_embeddings 16 and inputs of 24 tokens (past it)."""
    folder = save_hf(tmp_path, "LlamaForCausalLM", "LlamaConfig", seed=5,
                     **{**TINY, "max_position_embeddings": 16, "rope_parameters": ROPES[rope]})
    check_forward(folder, "LlamaForCausalLM", V, T=24)
    ids = padded(V, T=24)[0]
    plain = LlamaForCausalLM.from_pretrained(folder, rope_parameters=None)  # the default rope instead
    with torch.no_grad():
        assert diff(ours(folder, "LlamaForCausalLM")(ids).logits, plain(ids).logits) > 10 * TOL


def test_generation_past_max_position_embeddings_with_dynamic_rope(tmp_path):
    """Rotary models may generate past max_position_embeddings (16 here), as in transformers; dynamic rope
    rescales there, and the tokens stay transformers'."""
    folder = save_hf(tmp_path, "LlamaForCausalLM", "LlamaConfig", seed=9,
                     **{**TINY, "max_position_embeddings": 16, "rope_parameters": ROPES["dynamic"]})
    check_generate(folder, "LlamaForCausalLM", V, T=12)


def test_v4_config_keys_load_and_match(tmp_path):
    """A transformers v4 config.json (rope_theta beside rope_scaling with "type") loads as transformers 5 loads
    it; its rope_parameters (and saved config) are the same."""
    folder = save_hf(tmp_path, "LlamaForCausalLM", "LlamaConfig", seed=6, **TINY)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(rope_theta=5000.0, rope_scaling={"type": "linear", "factor": 2.0}, torch_dtype="float32")
    (tmp_path / "config.json").write_text(json.dumps(config))
    import transformers

    ref_config = transformers.LlamaConfig.from_pretrained(folder)
    ours_config = LlamaConfig.from_pretrained(folder)
    assert ours_config.rope_parameters == ref_config.rope_parameters
    assert ours_config.rope_parameters["rope_type"] == "linear" and ours_config.rope_parameters["rope_theta"] == 5000.0
    assert not hasattr(ours_config, "rope_theta") and not hasattr(ours_config, "rope_scaling")
    check_forward(folder, "LlamaForCausalLM", V)


@pytest.mark.parametrize("variant", ["tied", "mha"])
def test_tied_embeddings_and_multi_head_attention(variant, tmp_path):
    override = {"tied": dict(tie_word_embeddings=True), "mha": dict(num_key_value_heads=None)}[variant]
    folder = save_hf(tmp_path, "LlamaForCausalLM", "LlamaConfig", seed=7, **{**TINY, **override})
    check_forward(folder, "LlamaForCausalLM", V)
    model = ours(folder, "LlamaForCausalLM")
    if variant == "tied":
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.config.num_key_value_heads == 4 and model.model.layers[0].self_attn.k_proj.weight.shape == (32, 32)


def test_bf16_checkpoint_stays_bf16_and_generation_stops_on_any_eos(tmp_path):
    folder = save_hf(tmp_path, "LlamaForCausalLM", "LlamaConfig", seed=8, dtype=torch.bfloat16, **TINY)
    check_bf16(folder, "LlamaForCausalLM", V)
    fp32 = tmp_path / "fp32"
    save_hf(fp32, "LlamaForCausalLM", "LlamaConfig", seed=8, **TINY)
    model = ours(str(fp32), "LlamaForCausalLM")
    ids, mask, _ = padded(V, T=5, left=True)
    free = model.generate(ids, attention_mask=mask, max_new_tokens=12)
    stops = sorted({int(t) for t in free[:, 5:8].flatten()})[:2]  # tokens that come early in some row
    gen = json.loads((fp32 / "generation_config.json").read_text())
    gen["eos_token_id"] = [EOS, *stops]
    (fp32 / "generation_config.json").write_text(json.dumps(gen))
    model = LlamaForCausalLM.from_pretrained(fp32)
    import transformers

    ref = transformers.LlamaForCausalLM.from_pretrained(fp32).eval()
    a = model.generate(ids, attention_mask=mask, max_new_tokens=12)
    assert a.tolist() == ref.generate(ids, attention_mask=mask, max_new_tokens=12).tolist()
    assert a.shape[1] < free.shape[1] or (a != free).any()  # it stopped earlier on one of the new eos ids


# -- config ----------------------------------------------------------------------------------------------------
def test_config_matches_transformers():
    check_config(LlamaConfig, "LlamaConfig", **{**TINY, "rope_parameters": ROPES["llama3"]})
    check_config(LlamaConfig, "LlamaConfig", rope_theta=1e6, rope_scaling={"type": "dynamic", "factor": 2.0})
    config = LlamaConfig(hidden_size=64, num_attention_heads=8)
    assert (config.head_dim, config.num_key_value_heads) == (8, 8)


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_configs_raise_clear_errors(dirs, tmp_path):
    with pytest.raises(ConfigError, match="rope_type 'longrope'.*supported: default, linear, dynamic, llama3, yarn"):
        LlamaModel(LlamaConfig(**TINY, rope_parameters={"rope_type": "longrope", "short_factor": [1.0]}))
    with pytest.raises(ConfigError, match="lack factor"):
        LlamaModel(LlamaConfig(**TINY, rope_parameters={"rope_type": "linear"}))
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        LlamaModel(LlamaConfig(**{**TINY, "num_key_value_heads": 3}))
    with pytest.raises(ShapeMismatchError, match=r"_proj.weight.*head_dim = 16.*do not match"):
        LlamaModel.from_pretrained(dirs["LlamaModel"], head_dim=16)
    with pytest.raises(ValueError, match="token id 99, outside the vocabulary"):
        ours(dirs["LlamaModel"], "LlamaModel")(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match="pad_token_id"):
        LlamaForSequenceClassification(LlamaConfig(**{**TINY, "pad_token_id": None}))(torch.ones(2, 3, dtype=torch.long))


def test_config_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom pretrained import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config\n"
            "LlamaConfig(rope_scaling={'type': 'linear', 'factor': 2.0})\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
