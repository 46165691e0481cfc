"""ModernBERT parity with transformers through real files, both directions, every head, padded batches; local
(sliding window) and global layers with their own rope theta, long inputs, v4 and v5 config.json, forward hooks,
losses and bad inputs.

Our default (sdpa) path equals transformers' sdpa path bit for bit, and our eager path its eager path. The two paths
differ from each other only at padding positions whose whole local window is padding: sdpa returns zeros there
where eager averages the padding; those positions carry no meaning."""
from __future__ import annotations

import json
import re

import pytest
import torch
import transformers

import pretrained
from pretrained.configuration import ConfigError
from pretrained.models import modernbert
from pretrained.models.modernbert import ModernBertConfig, ModernBertModel

ARCHS = ["ModernBertModel", "ModernBertForMaskedLM", "ModernBertForSequenceClassification",
         "ModernBertForTokenClassification", "ModernBertForQuestionAnswering"]
FIELDS = {"ModernBertModel": ("last_hidden_state",), "ModernBertForQuestionAnswering": ("start_logits", "end_logits")}
TOKENS = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)
SIZES = {
    # 3 layers: global, local, local; windows of 4 tokens (2 each side); no biases (the defaults)
    "tiny": dict(vocab_size=99, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
                 local_attention=4, max_position_embeddings=128, **TOKENS),
    # head size 12, every other layer global, v4 rope keys, every bias on, mean pooling, 3 labels
    "odd": dict(vocab_size=101, hidden_size=60, intermediate_size=50, num_hidden_layers=4, num_attention_heads=5,
                local_attention=6, max_position_embeddings=128, global_attn_every_n_layers=2,
                global_rope_theta=1000.0, local_rope_theta=500.0, norm_bias=True, mlp_bias=True,
                attention_bias=True, classifier_bias=True, decoder_bias=False, classifier_pooling="mean",
                hidden_activation="gelu_new", num_labels=3, **TOKENS),
}


def inputs_for(batch, size: str, seed: int = 0, T: int = 12) -> dict:
    inputs = batch(SIZES[size]["vocab_size"], T=T, seed=seed)
    inputs.pop("token_type_ids")
    return inputs


def checkpoint(hf_family_checkpoint, arch: str, size: str = "tiny", seed: int = 0, **extra) -> str:
    sizes = {**SIZES[size], **extra}
    if arch == "ModernBertForQuestionAnswering":
        sizes.pop("num_labels", None)
    return hf_family_checkpoint(arch, "ModernBertConfig", seed=seed, **sizes)


def hf(folder: str, arch: str, attn: str = "sdpa"):
    return getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn).eval()


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


def real_tokens(t, inputs):
    """Per-token outputs with padding positions zeroed (sequence-level outputs unchanged)."""
    mask = inputs["attention_mask"]
    return t if t.dim() < 2 or t.shape[:2] != mask.shape else t * mask.reshape(*mask.shape, *[1] * (t.dim() - 2))


# -- config ---------------------------------------------------------------------------------------------------------
V4_CONFIG = {  # config.json of answerdotai/ModernBERT-base as transformers 4.47 wrote it
    "architectures": ["ModernBertForMaskedLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 50281, "classifier_activation": "gelu", "classifier_bias": False, "classifier_dropout": 0.0,
    "classifier_pooling": "mean", "cls_token_id": 50281, "decoder_bias": True, "deterministic_flash_attn": False,
    "embedding_dropout": 0.0, "eos_token_id": 50282, "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0,
    "gradient_checkpointing": False, "hidden_activation": "gelu", "hidden_size": 768, "initializer_cutoff_factor": 2.0,
    "initializer_range": 0.02, "intermediate_size": 1152, "layer_norm_eps": 1e-05, "local_attention": 128,
    "local_rope_theta": 10000.0, "max_position_embeddings": 8192, "mlp_bias": False, "mlp_dropout": 0.0,
    "model_type": "modernbert", "norm_bias": False, "norm_eps": 1e-05, "num_attention_heads": 12,
    "num_hidden_layers": 22, "pad_token_id": 50283, "position_embedding_type": "absolute", "reference_compile": True,
    "sep_token_id": 50282, "tie_word_embeddings": True, "torch_dtype": "float32", "vocab_size": 50368}


@pytest.mark.parametrize("kwargs", [
    {}, V4_CONFIG,
    {"num_hidden_layers": 4, "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0, "local_rope_theta": 50.0},
    {"num_hidden_layers": 2, "rope_parameters": {"full_attention": {"rope_theta": 5.0}}},
    {"num_hidden_layers": 3, "layer_types": ["full_attention"] * 3, "sliding_window": 10, "num_labels": 3},
])
def test_config_json_matches_transformers(kwargs):
    ours, theirs = ModernBertConfig(**json.loads(json.dumps(kwargs))), transformers.ModernBertConfig(**kwargs)
    assert ours.to_json_string() == re.sub(r'\n  "transformers_version": "[^"]*",', "", theirs.to_json_string())
    assert (ours.layer_types, ours.rope_parameters, ours.sliding_window) == \
        (theirs.layer_types, theirs.rope_parameters, theirs.sliding_window)


def test_bad_config_values_are_named():
    with pytest.raises(ConfigError, match="classifier_pooling='max' is not one of cls, mean"):
        ModernBertConfig(classifier_pooling="max")
    with pytest.raises(ConfigError, match="layer_types must list .* for each of the 2 layers"):
        ModernBertConfig(num_hidden_layers=2, layer_types=["full_attention"])
    with pytest.raises(ConfigError, match="layer_types must list"):
        ModernBertConfig(num_hidden_layers=1, layer_types=["global"])
    with pytest.raises(ConfigError, match="global_attn_every_n_layers must be a positive integer"):
        ModernBertConfig(global_attn_every_n_layers=0)
    config = ModernBertConfig(**SIZES["tiny"], rope_parameters={"full_attention": {"rope_type": "yarn"}})
    with pytest.raises(ConfigError, match="rope_type 'yarn' lack factor, original_max_position_embeddings"):
        ModernBertModel(config)
    with pytest.raises(ConfigError, match="rope_type 'nope'"):
        ModernBertModel(ModernBertConfig(**SIZES["tiny"], rope_parameters={"sliding_attention": {"rope_type": "nope"}}))


# -- parity, both directions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", ARCHS)
def test_we_load_what_transformers_saves(hf_family_checkpoint, batch, outputs_close, diff, arch, size, tol, tol0):
    folder = checkpoint(hf_family_checkpoint, arch, size)
    ours = getattr(modernbert, arch).from_pretrained(folder)
    fields = FIELDS.get(arch, ("logits",))
    inputs = inputs_for(batch, size)
    expected = run(hf(folder, arch, "eager"), inputs, output_hidden_states=True, output_attentions=True)
    outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True), expected, fields, tol0)
    sdpa = run(hf(folder, arch), inputs, output_hidden_states=True)
    ours_sdpa = run(ours, inputs, output_hidden_states=True)
    for x, y, z in zip([getattr(ours_sdpa, f) for f in fields] + list(ours_sdpa.hidden_states),
                       [getattr(sdpa, f) for f in fields] + list(sdpa.hidden_states),
                       [getattr(expected, f) for f in fields] + list(expected.hidden_states)):
        assert diff(x, y) <= tol0  # sdpa against sdpa: everywhere, bit for bit
        assert diff(real_tokens(x, inputs), real_tokens(z, inputs)) <= tol  # against eager: on real tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_what_we_save(hf_family_checkpoint, batch, outputs_close, tmp_path, arch, tol0):
    ours = getattr(modernbert, arch).from_pretrained(checkpoint(hf_family_checkpoint, arch, "odd", seed=1))
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, arch).from_pretrained(str(tmp_path), attn_implementation="eager",
                                                              output_loading_info=True)
    assert not any(info.values()), info
    inputs = inputs_for(batch, "odd", seed=1)
    outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                  run(theirs.eval(), inputs, output_hidden_states=True, output_attentions=True),
                  FIELDS.get(arch, ("logits",)), tol0)


def test_long_input_many_windows(hf_family_checkpoint, batch, diff, tol0):
    folder = checkpoint(hf_family_checkpoint, "ModernBertModel")
    inputs = inputs_for(batch, "tiny", T=120)
    a = run(ModernBertModel.from_pretrained(folder), inputs).last_hidden_state
    b = run(hf(folder, "ModernBertModel"), inputs).last_hidden_state
    assert diff(a, b) <= tol0
    # local layers see 2 tokens each side: through 3 of them a token reaches 6 places, not 60; a global layer does
    ids = inputs["input_ids"][:1]
    changed = ids.clone()
    changed[0, 60] = 7 if ids[0, 60] != 7 else 8
    for layer_types, reached in ((["sliding_attention"] * 3, False), (["sliding_attention"] * 2 + ["full_attention"],
                                                                      True)):
        torch.manual_seed(0)
        model = ModernBertModel(ModernBertConfig(**{**SIZES["tiny"], "layer_types": layer_types})).eval()
        a, b = (run(model, {"input_ids": x}).last_hidden_state[0, :50] for x in (ids, changed))
        assert torch.equal(a, b) is not reached


def test_other_rope_types_per_layer_type(hf_family_checkpoint, batch, diff, tol0):
    """Linear scaling on global layers, dynamic NTK on local ones, past max_position_embeddings (16)."""
    rope = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
            "sliding_attention": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 100.0}}
    folder = checkpoint(hf_family_checkpoint, "ModernBertModel", max_position_embeddings=16, rope_parameters=rope)
    inputs = inputs_for(batch, "tiny", T=30)
    a = run(ModernBertModel.from_pretrained(folder), inputs, output_attentions=True).last_hidden_state
    assert diff(a, run(hf(folder, "ModernBertModel", "eager"), inputs).last_hidden_state) <= tol0


def test_fresh_model_ties_and_inits(batch, diff, tmp_path, tol):
    torch.manual_seed(0)
    ours = modernbert.ModernBertForMaskedLM(ModernBertConfig(**SIZES["tiny"])).eval()
    assert ours.decoder.weight is ours.model.embeddings.tok_embeddings.weight
    wo = ours.model.layers[0].mlp.Wo.weight
    std = 0.02 / (2 * 3) ** 0.5
    assert wo.abs().max() <= 2 * std + 1e-7 and 0.5 * std < wo.std() < 1.5 * std  # truncated at 2 std
    ours.save_pretrained(tmp_path)
    theirs = hf(str(tmp_path), "ModernBertForMaskedLM")
    assert theirs.decoder.weight is theirs.model.embeddings.tok_embeddings.weight
    inputs = inputs_for(batch, "tiny")
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= tol


def test_sparse_prediction(hf_family_checkpoint, batch, diff, tol):
    folder = checkpoint(hf_family_checkpoint, "ModernBertForMaskedLM", sparse_prediction=True)
    inputs = inputs_for(batch, "tiny")
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    a = run(modernbert.ModernBertForMaskedLM.from_pretrained(folder), inputs, labels=labels)
    b = run(hf(folder, "ModernBertForMaskedLM"), inputs, labels=labels)
    assert a.logits.shape == b.logits.shape == (int(inputs["attention_mask"].sum()), 99)
    assert diff(a.logits, b.logits) <= tol and diff(a.loss, b.loss) <= tol


def test_auto_classes_pick_modernbert(hf_family_checkpoint):
    for auto, arch in [("AutoModel", "ModernBertModel"), ("AutoModelForMaskedLM", "ModernBertForMaskedLM"),
                       ("AutoModelForSequenceClassification", "ModernBertForSequenceClassification"),
                       ("AutoModelForTokenClassification", "ModernBertForTokenClassification"),
                       ("AutoModelForQuestionAnswering", "ModernBertForQuestionAnswering")]:
        model = getattr(pretrained, auto).from_pretrained(checkpoint(hf_family_checkpoint, arch))
        assert type(model) is getattr(pretrained, arch)
    assert pretrained.AutoConfig.for_model("modernbert").sliding_window == 64


# -- module tree --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_fire_on_transformers_module_names(hf_family_checkpoint, batch, fired_modules, arch):
    folder = checkpoint(hf_family_checkpoint, arch)
    ours, theirs = getattr(modernbert, arch).from_pretrained(folder), hf(folder, arch)
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}
    inputs = inputs_for(batch, "tiny")
    assert fired_modules(ours, **inputs) == fired_modules(theirs, **inputs)


# -- inputs, outputs, losses ---------------------------------------------------------------------------------------
def test_position_ids_and_inputs_embeds(hf_family_checkpoint, batch, diff, tol):
    folder = checkpoint(hf_family_checkpoint, "ModernBertModel")
    ours, theirs = ModernBertModel.from_pretrained(folder), hf(folder, "ModernBertModel")
    inputs = inputs_for(batch, "tiny", T=8)
    position_ids = torch.arange(8).flip(0)[None].expand(4, 8) + 3
    assert diff(run(ours, inputs, position_ids=position_ids).last_hidden_state,
                run(theirs, inputs, position_ids=position_ids).last_hidden_state) <= tol
    embeds = theirs.embeddings.tok_embeddings(inputs["input_ids"]).detach()
    mask = {"attention_mask": inputs["attention_mask"]}
    assert diff(run(ours, mask, inputs_embeds=embeds).last_hidden_state,
                run(theirs, mask, inputs_embeds=embeds).last_hidden_state) <= tol
    ids = {"input_ids": inputs["input_ids"]}
    assert diff(run(ours, ids).last_hidden_state, run(theirs, ids).last_hidden_state) <= tol


LABELS = {
    "ModernBertForSequenceClassification": lambda inputs: {"labels": torch.tensor([0, 1, 1, 0])},
    "ModernBertForMaskedLM": lambda inputs: {
        "labels": inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)},
    "ModernBertForTokenClassification": lambda inputs: {"labels": inputs["attention_mask"]},
    "ModernBertForQuestionAnswering": lambda inputs: {"start_positions": torch.tensor([1, 2, 0, 30]),
                                                      "end_positions": torch.tensor([2, 4, 0, 3])},
}


@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", list(LABELS))
def test_losses_and_tuples(hf_family_checkpoint, batch, diff, arch, size, tol):
    folder = checkpoint(hf_family_checkpoint, arch, size)
    ours, theirs = getattr(modernbert, arch).from_pretrained(folder), hf(folder, arch)
    inputs = inputs_for(batch, size, T=8)
    labels = LABELS[arch](inputs)
    a, b = run(ours, inputs, **labels), run(theirs, inputs, **labels)
    assert a.loss.shape == b.loss.shape == () and diff(a.loss, b.loss) <= tol
    a, b = run(ours, inputs, return_dict=False, **labels), run(theirs, inputs, return_dict=False, **labels)
    assert isinstance(a, tuple) and len(a) == len(b) and all(diff(x, y) <= tol for x, y in zip(a, b))


def test_bad_inputs_are_named(hf_family_checkpoint):
    model = ModernBertModel.from_pretrained(checkpoint(hf_family_checkpoint, "ModernBertModel"))
    with pytest.raises(ValueError, match=r"token id 99, outside the vocabulary \[0, 99\)"):
        model(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        model(torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="not a multiple of the number of attention heads 5"):
        ModernBertModel(ModernBertConfig(**{**SIZES["tiny"], "num_attention_heads": 5}))
    assert model(torch.tensor([5, 6, 7])).last_hidden_state.shape == (1, 3, 32)
