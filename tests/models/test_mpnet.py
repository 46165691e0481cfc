"""MPNet parity with transformers through real files, both directions, every head, padded batches (right and left,
with MPNet's pad id 1, so positions skip padding); relative position buckets, config JSON, forward hooks, losses
and bad inputs."""
from __future__ import annotations

import re

import pytest
import torch
import transformers

import pretrained
from pretrained.models import mpnet
from pretrained.models.mpnet import MPNetConfig, MPNetModel

TOL = 1e-5  # fp32 max abs difference allowed against transformers, everywhere in this file
ARCHS = ["MPNetModel", "MPNetForMaskedLM", "MPNetForSequenceClassification", "MPNetForTokenClassification",
         "MPNetForQuestionAnswering"]
FIELDS = {"MPNetModel": ("last_hidden_state", "pooler_output"),
          "MPNetForQuestionAnswering": ("start_logits", "end_logits")}
SIZES = {
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=40),
    # head size 12 (1/sqrt(12) is not a power of two), gelu_new, 3 labels
    "odd": dict(vocab_size=101, hidden_size=60, num_hidden_layers=2, num_attention_heads=5, intermediate_size=50,
                max_position_embeddings=40, hidden_act="gelu_new", num_labels=3),
}
PAD = 1


def inputs_for(batch, size: str, seed: int = 0, T: int = 12, left: bool = False) -> dict:
    """A padded batch as MPNet's tokenizer makes it: pad id 1 where the mask is 0, never inside the text."""
    inputs = batch(SIZES[size]["vocab_size"], T=T, seed=seed)
    inputs.pop("token_type_ids")
    ids, mask = inputs["input_ids"].masked_fill(inputs["input_ids"] == PAD, 2), inputs["attention_mask"]
    if left:  # move the padding to the front of each row
        order = torch.argsort(mask, dim=1, stable=True)
        ids, mask = ids.gather(1, order), mask.gather(1, order)
    inputs["input_ids"], inputs["attention_mask"] = ids.masked_fill(mask == 0, PAD), mask
    return inputs


def checkpoint(hf_family_checkpoint, arch: str, size: str = "tiny", seed: int = 0) -> str:
    sizes = dict(SIZES[size])
    if arch == "MPNetForQuestionAnswering":
        sizes.pop("num_labels", None)
    return hf_family_checkpoint(arch, "MPNetConfig", seed=seed, **sizes)


def hf(folder: str, arch: str):
    return getattr(transformers, arch).from_pretrained(folder).eval()  # transformers' MPNet is eager only


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


# -- config -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"hidden_size": 48, "num_attention_heads": 4, "num_labels": 3},
                                    {"relative_attention_num_buckets": 64, "pad_token_id": 0}])
def test_config_json_matches_transformers(kwargs):
    ours, theirs = MPNetConfig(**kwargs), transformers.MPNetConfig(**kwargs)
    assert ours.to_json_string() == re.sub(r'\n  "transformers_version": "[^"]*",', "", theirs.to_json_string())
    for name in MPNetConfig.field_defaults():
        assert getattr(ours, name) == getattr(theirs, name), name


# -- parity, both directions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", ARCHS)
def test_we_load_what_transformers_saves(hf_family_checkpoint, batch, outputs_close, arch, size):
    folder = checkpoint(hf_family_checkpoint, arch, size)
    ours, theirs = getattr(mpnet, arch).from_pretrained(folder), hf(folder, arch)
    fields = FIELDS.get(arch, ("logits",))
    for left in (False, True):
        inputs = inputs_for(batch, size, left=left)
        expected = run(theirs, inputs, output_hidden_states=True, output_attentions=True)
        # weights asked for: transformers' own maths, bit for bit
        outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True), expected, fields, 0.0)
        outputs_close(run(ours, inputs), expected, fields, TOL, states=False)  # default: SDPA


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_what_we_save(hf_family_checkpoint, batch, outputs_close, tmp_path, arch):
    ours = getattr(mpnet, arch).from_pretrained(checkpoint(hf_family_checkpoint, arch, "odd", seed=1))
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, arch).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    inputs = inputs_for(batch, "odd", seed=1)
    outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                  run(theirs.eval(), inputs, output_hidden_states=True, output_attentions=True),
                  FIELDS.get(arch, ("logits",)), TOL)


def test_fresh_model_saved_by_us_ties_in_transformers(batch, diff, tmp_path):
    torch.manual_seed(0)
    ours = mpnet.MPNetForMaskedLM(MPNetConfig(**SIZES["tiny"])).eval()
    assert ours.lm_head.decoder.weight is ours.mpnet.embeddings.word_embeddings.weight
    assert ours.lm_head.decoder.bias is ours.lm_head.bias and not ours.lm_head.bias.any()
    ours.save_pretrained(tmp_path)
    theirs = hf(str(tmp_path), "MPNetForMaskedLM")
    assert theirs.lm_head.decoder.weight is theirs.mpnet.embeddings.word_embeddings.weight
    inputs = inputs_for(batch, "tiny")
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= TOL


def test_sentence_transformers_layout_without_prefix(hf_family_checkpoint, batch, diff, tmp_path):
    """all-mpnet-base-v2 is saved from MPNetModel: keys without `mpnet.`, read by a model with a head too."""
    folder = checkpoint(hf_family_checkpoint, "MPNetModel")
    ours = mpnet.MPNetForMaskedLM.from_pretrained(folder)
    inputs = inputs_for(batch, "tiny")
    assert diff(run(ours.mpnet, inputs).last_hidden_state, run(hf(folder, "MPNetModel"), inputs).last_hidden_state) \
        <= TOL


def test_relative_position_buckets_match_transformers():
    rel = torch.arange(-300, 300)[None]
    expected = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(rel)
    assert torch.equal(mpnet.relative_position_bucket(rel), expected)


def test_auto_classes_pick_mpnet(hf_family_checkpoint):
    for auto, arch in [("AutoModel", "MPNetModel"), ("AutoModelForMaskedLM", "MPNetForMaskedLM"),
                       ("AutoModelForSequenceClassification", "MPNetForSequenceClassification"),
                       ("AutoModelForTokenClassification", "MPNetForTokenClassification"),
                       ("AutoModelForQuestionAnswering", "MPNetForQuestionAnswering")]:
        model = getattr(pretrained, auto).from_pretrained(checkpoint(hf_family_checkpoint, arch))
        assert type(model) is getattr(pretrained, arch)
    assert type(pretrained.AutoConfig.for_model("mpnet")) is pretrained.MPNetConfig


# -- module tree --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_fire_on_transformers_module_names(hf_family_checkpoint, batch, fired_modules, arch):
    folder = checkpoint(hf_family_checkpoint, arch)
    theirs = hf(folder, arch)
    ours = getattr(mpnet, arch).from_pretrained(folder, attn_implementation="eager")
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}
    inputs = inputs_for(batch, "tiny")
    expected = fired_modules(theirs, **inputs)
    assert fired_modules(ours, **inputs) == expected
    # under SDPA the attention-probability dropout runs inside the kernel: only that module's hook is silent
    sdpa = getattr(mpnet, arch).from_pretrained(folder)
    assert fired_modules(sdpa, **inputs) == {n for n in expected if not n.endswith("attention.attn.dropout")}


# -- inputs, outputs, losses ---------------------------------------------------------------------------------------
def test_position_ids_and_inputs_embeds(hf_family_checkpoint, batch, diff):
    folder = checkpoint(hf_family_checkpoint, "MPNetModel")
    ours, theirs = MPNetModel.from_pretrained(folder), hf(folder, "MPNetModel")
    inputs = inputs_for(batch, "tiny", T=8)
    position_ids = torch.arange(8).flip(0)[None].expand(4, 8) + 3
    assert diff(run(ours, inputs, position_ids=position_ids).last_hidden_state,
                run(theirs, inputs, position_ids=position_ids).last_hidden_state) <= TOL
    embeds = theirs.embeddings.word_embeddings(inputs["input_ids"]).detach()
    mask = {"attention_mask": inputs["attention_mask"]}
    assert diff(run(ours, mask, inputs_embeds=embeds).last_hidden_state,
                run(theirs, mask, inputs_embeds=embeds).last_hidden_state) <= TOL
    ids = {"input_ids": inputs["input_ids"]}
    assert diff(run(ours, ids).last_hidden_state, run(theirs, ids).last_hidden_state) <= TOL


LABELS = {
    "MPNetForSequenceClassification": lambda inputs: {"labels": torch.tensor([0, 1, 1, 0])},
    "MPNetForMaskedLM": lambda inputs: {"labels": inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)},
    "MPNetForTokenClassification": lambda inputs: {"labels": inputs["attention_mask"]},
    "MPNetForQuestionAnswering": lambda inputs: {"start_positions": torch.tensor([1, 2, 0, 30]),
                                                 "end_positions": torch.tensor([2, 4, 0, 3])},
}


@pytest.mark.parametrize("arch", list(LABELS))
def test_losses_and_tuples(hf_family_checkpoint, batch, diff, arch):
    folder = checkpoint(hf_family_checkpoint, arch)
    ours, theirs = getattr(mpnet, arch).from_pretrained(folder), hf(folder, arch)
    inputs = inputs_for(batch, "tiny", T=8)
    labels = LABELS[arch](inputs)
    a, b = run(ours, inputs, **labels), run(theirs, inputs, **labels)
    assert a.loss.shape == b.loss.shape == () and diff(a.loss, b.loss) <= TOL
    for kwargs in (labels, {}):
        a, b = run(ours, inputs, return_dict=False, **kwargs), run(theirs, inputs, return_dict=False, **kwargs)
        assert isinstance(a, tuple) and len(a) == len(b) and all(diff(x, y) <= TOL for x, y in zip(a, b))


def test_bad_inputs_are_named(hf_family_checkpoint):
    model = MPNetModel.from_pretrained(checkpoint(hf_family_checkpoint, "MPNetModel"))  # vocab 99, 40 positions
    with pytest.raises(ValueError, match=r"token id 99, outside the vocabulary \[0, 99\)"):
        model(torch.tensor([[1, 99]]))
    # positions start after the pad id 1: 38 tokens fit in 40 positions, 39 do not
    assert model(torch.full((1, 38), 5)).last_hidden_state.shape == (1, 38, 32)
    with pytest.raises(ValueError, match=r"sequence length 39 is longer than the 38 tokens .*padding_idx 1"):
        model(torch.full((1, 39), 5))
    with pytest.raises(ValueError, match=r"position_ids contain position 40"):
        model(torch.tensor([[5, 6]]), position_ids=torch.tensor([[0, 40]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        model(torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(torch.tensor([[5, 6]]), inputs_embeds=torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match="not a multiple of the number of attention heads 5"):
        MPNetModel(MPNetConfig(**{**SIZES["tiny"], "num_attention_heads": 5}))
