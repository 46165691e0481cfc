"""RoBERTa, XLM-RoBERTa and CamemBERT parity with transformers through real files, both directions, every head,
padded batches (right and left, pad id 1: positions skip padding, also from inputs_embeds); config JSON, forward
hooks, losses and bad inputs."""
from __future__ import annotations

import re

import pytest
import torch
import transformers

import pretrained
from pretrained.models import roberta
from pretrained.models.roberta import RobertaConfig, RobertaModel, XLMRobertaConfig, XLMRobertaModel

TOL = 1e-5  # fp32 max abs difference allowed against transformers, everywhere in this file
FAMILIES = ["Roberta", "XLMRoberta", "Camembert"]
HEADS = ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"]
SIZES = {
    # one token type, as the real checkpoints have
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=40, type_vocab_size=1),
    # head size 12, gelu_new, two token types, 3 labels
    "odd": dict(vocab_size=101, hidden_size=60, num_hidden_layers=2, num_attention_heads=5, intermediate_size=50,
                max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu_new", num_labels=3),
}
PAD = 1


def fields(head: str) -> tuple[str, ...]:
    return {"Model": ("last_hidden_state", "pooler_output"),
            "ForQuestionAnswering": ("start_logits", "end_logits")}.get(head, ("logits",))


def inputs_for(batch, size: str, seed: int = 0, T: int = 12, left: bool = False) -> dict:
    """A padded batch as RoBERTa's tokenizer makes it: pad id 1 where the mask is 0, never inside the text."""
    inputs = batch(SIZES[size]["vocab_size"], T=T, seed=seed, type_vocab_size=SIZES[size]["type_vocab_size"])
    if SIZES[size]["type_vocab_size"] == 1:
        inputs.pop("token_type_ids")
    ids, mask = inputs["input_ids"].masked_fill(inputs["input_ids"] == PAD, 2), inputs["attention_mask"]
    if left:
        order = torch.argsort(mask, dim=1, stable=True)
        ids, mask = ids.gather(1, order), mask.gather(1, order)
    inputs["input_ids"], inputs["attention_mask"] = ids.masked_fill(mask == 0, PAD), mask
    return inputs


def checkpoint(hf_family_checkpoint, family: str, head: str, size: str = "tiny", seed: int = 0) -> str:
    sizes = dict(SIZES[size])
    if head == "ForQuestionAnswering":
        sizes.pop("num_labels", None)
    return hf_family_checkpoint(family + head, f"{family}Config", seed=seed, **sizes)


def hf(folder: str, arch: str, attn: str = "eager"):
    return getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn).eval()


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


# -- config -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kwargs", [{}, {"hidden_size": 48, "num_labels": 3, "type_vocab_size": 1,
                                         "max_position_embeddings": 514, "classifier_dropout": 0.2}])
def test_config_json_matches_transformers(family, kwargs):
    ours, theirs = getattr(roberta, f"{family}Config")(**kwargs), getattr(transformers, f"{family}Config")(**kwargs)
    assert ours.to_json_string() == re.sub(r'\n  "transformers_version": "[^"]*",', "", theirs.to_json_string())
    for name in type(ours).field_defaults():
        assert getattr(ours, name) == getattr(theirs, name), name


# -- parity, both directions ------------------------------------------------------------------------------------------
CASES = [("Roberta", head, size) for head in HEADS for size in ("tiny", "odd")] + \
    [(family, head, "tiny") for family in ("XLMRoberta", "Camembert") for head in HEADS]


@pytest.mark.parametrize("family, head, size", CASES)
def test_we_load_what_transformers_saves(hf_family_checkpoint, batch, outputs_close, family, head, size):
    folder = checkpoint(hf_family_checkpoint, family, head, size)
    ours = getattr(roberta, family + head).from_pretrained(folder)
    assert type(ours.config) is getattr(roberta, f"{family}Config")
    for left in (False, True):
        inputs = inputs_for(batch, size, left=left)
        expected = run(hf(folder, family + head), inputs, output_hidden_states=True, output_attentions=True)
        outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True), expected, fields(head),
                      TOL)
        outputs_close(run(ours, inputs), run(hf(folder, family + head, "sdpa"), inputs), fields(head), TOL,
                      states=False)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", HEADS)
def test_transformers_loads_what_we_save(hf_family_checkpoint, batch, outputs_close, tmp_path, family, head):
    ours = getattr(roberta, family + head).from_pretrained(checkpoint(hf_family_checkpoint, family, head, "odd", 1))
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, family + head).from_pretrained(str(tmp_path), attn_implementation="eager",
                                                                       output_loading_info=True)
    assert not any(info.values()), info
    assert theirs.config.model_type == ours.config.model_type
    inputs = inputs_for(batch, "odd", seed=1)
    outputs_close(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                  run(theirs.eval(), inputs, output_hidden_states=True, output_attentions=True), fields(head), TOL)


def test_masked_lm_biases_and_ties(hf_family_checkpoint, batch, diff, tmp_path):
    """Real v4 checkpoints (roberta-base, xlm-roberta-base) hold both `lm_head.bias` and `lm_head.decoder.bias` and the
    `position_ids` buffer; ours are one tensor, saved once; a fresh model saved by us ties in transformers."""
    folder = checkpoint(hf_family_checkpoint, "XLMRoberta", "ForMaskedLM")
    theirs = hf(folder, "XLMRobertaForMaskedLM")
    state = {k: v.clone() for k, v in theirs.state_dict().items()}
    state["lm_head.decoder.bias"] = state["lm_head.bias"].clone()
    state["roberta.embeddings.position_ids"] = torch.arange(40)[None]
    (tmp_path / "v4").mkdir()
    torch.save(state, tmp_path / "v4" / "pytorch_model.bin")
    theirs.config.save_pretrained(tmp_path / "v4")
    ours = roberta.XLMRobertaForMaskedLM.from_pretrained(tmp_path / "v4")
    assert ours.lm_head.decoder.bias is ours.lm_head.bias
    assert ours.lm_head.decoder.weight is ours.roberta.embeddings.word_embeddings.weight
    inputs = inputs_for(batch, "tiny")
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= TOL
    torch.manual_seed(0)
    fresh = roberta.RobertaForMaskedLM(RobertaConfig(**SIZES["tiny"])).eval()
    assert fresh.roberta.embeddings.position_embeddings.weight[PAD].abs().sum() == 0  # padding_idx row
    fresh.save_pretrained(tmp_path)
    theirs = hf(str(tmp_path), "RobertaForMaskedLM")
    assert theirs.lm_head.decoder.weight is theirs.roberta.embeddings.word_embeddings.weight
    inputs = inputs_for(batch, "tiny")
    assert diff(run(fresh, inputs).logits, run(theirs, inputs).logits) <= TOL


def test_auto_classes_pick_each_family(hf_family_checkpoint):
    autos = {"Model": "AutoModel", "ForMaskedLM": "AutoModelForMaskedLM",
             "ForSequenceClassification": "AutoModelForSequenceClassification",
             "ForTokenClassification": "AutoModelForTokenClassification",
             "ForQuestionAnswering": "AutoModelForQuestionAnswering"}
    for family in FAMILIES:
        for head, auto in autos.items():
            model = getattr(pretrained, auto).from_pretrained(checkpoint(hf_family_checkpoint, family, head))
            assert type(model) is getattr(pretrained, family + head)
    assert type(pretrained.AutoConfig.for_model("xlm-roberta")) is pretrained.XLMRobertaConfig
    assert pretrained.AutoConfig.for_model("camembert").vocab_size == 30522


def test_each_family_keeps_its_config_class():
    with pytest.raises(TypeError, match="XLMRobertaModel needs a XLMRobertaConfig, got RobertaConfig"):
        XLMRobertaModel(RobertaConfig(**SIZES["tiny"]))
    assert isinstance(XLMRobertaConfig(), RobertaConfig)  # RoBERTa's classes run its descendants' configs


# -- module tree --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_hooks_fire_on_transformers_module_names(hf_family_checkpoint, batch, fired_modules, head):
    folder = checkpoint(hf_family_checkpoint, "XLMRoberta", head)
    ours, theirs = getattr(roberta, "XLMRoberta" + head).from_pretrained(folder), hf(folder, "XLMRoberta" + head)
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}
    inputs = inputs_for(batch, "tiny")
    assert fired_modules(ours, **inputs) == fired_modules(theirs, **inputs)


# -- inputs, outputs, losses ---------------------------------------------------------------------------------------
def test_positions_from_inputs_embeds_and_explicit_ids(hf_family_checkpoint, batch, diff):
    folder = checkpoint(hf_family_checkpoint, "Roberta", "Model", "odd")
    ours, theirs = RobertaModel.from_pretrained(folder), hf(folder, "RobertaModel", "sdpa")
    inputs = inputs_for(batch, "odd", T=8)
    embeds = theirs.embeddings.word_embeddings(inputs["input_ids"]).detach()
    rest = {"attention_mask": inputs["attention_mask"], "token_type_ids": inputs["token_type_ids"]}
    assert diff(run(ours, rest, inputs_embeds=embeds).last_hidden_state,
                run(theirs, rest, inputs_embeds=embeds).last_hidden_state) <= TOL
    position_ids = torch.arange(8).flip(0)[None].expand(4, 8) + 3
    assert diff(run(ours, inputs, position_ids=position_ids).last_hidden_state,
                run(theirs, inputs, position_ids=position_ids).last_hidden_state) <= TOL
    ids = {"input_ids": inputs["input_ids"]}  # no mask, no token types: transformers' defaults
    assert diff(run(ours, ids).last_hidden_state, run(theirs, ids).last_hidden_state) <= TOL


def test_left_and_right_padding_give_the_same_real_tokens(hf_family_checkpoint):
    model = RobertaModel.from_pretrained(checkpoint(hf_family_checkpoint, "Roberta", "Model"))
    right = run(model, {"input_ids": torch.tensor([[5, 6, 7, PAD, PAD]]),
                        "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])})
    left = run(model, {"input_ids": torch.tensor([[PAD, PAD, 5, 6, 7]]),
                       "attention_mask": torch.tensor([[0, 0, 1, 1, 1]])})
    assert (right.last_hidden_state[0, :3] - left.last_hidden_state[0, 2:]).abs().max() <= TOL


LABELS = {
    "ForSequenceClassification": lambda inputs: {"labels": torch.tensor([0, 1, 1, 0])},
    "ForMaskedLM": lambda inputs: {"labels": inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)},
    "ForTokenClassification": lambda inputs: {"labels": inputs["attention_mask"]},
    "ForQuestionAnswering": lambda inputs: {"start_positions": torch.tensor([1, 2, 0, 30]),
                                            "end_positions": torch.tensor([2, 4, 0, 3])},
}


@pytest.mark.parametrize("head", list(LABELS))
def test_losses_and_tuples(hf_family_checkpoint, batch, diff, head):
    folder = checkpoint(hf_family_checkpoint, "Camembert", head)
    ours, theirs = getattr(roberta, "Camembert" + head).from_pretrained(folder), hf(folder, "Camembert" + head, "sdpa")
    inputs = inputs_for(batch, "tiny", T=8)
    labels = LABELS[head](inputs)
    a, b = run(ours, inputs, **labels), run(theirs, inputs, **labels)
    assert a.loss.shape == b.loss.shape == () and diff(a.loss, b.loss) <= TOL
    for kwargs in (labels, {}):
        a, b = run(ours, inputs, return_dict=False, **kwargs), run(theirs, inputs, return_dict=False, **kwargs)
        assert isinstance(a, tuple) and len(a) == len(b) and all(diff(x, y) <= TOL for x, y in zip(a, b))


def test_bad_inputs_are_named(hf_family_checkpoint):
    model = RobertaModel.from_pretrained(checkpoint(hf_family_checkpoint, "Roberta", "Model"))  # 40 positions
    with pytest.raises(ValueError, match=r"token id 99, outside the vocabulary \[0, 99\)"):
        model(torch.tensor([[5, 99]]))
    assert model(torch.full((1, 38), 5)).last_hidden_state.shape == (1, 38, 32)
    with pytest.raises(ValueError, match=r"sequence length 39 is longer than the 38 tokens .*padding_idx 1"):
        model(torch.full((1, 39), 5))
    with pytest.raises(ValueError, match=r"token_type_ids contains token id 1, outside the vocabulary \[0, 1\)"):
        model(torch.tensor([[5, 6]]), token_type_ids=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"position_ids contain position 40"):
        model(torch.tensor([[5, 6]]), position_ids=torch.tensor([[0, 40]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        model(torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="needs config.pad_token_id"):
        RobertaModel(RobertaConfig(**SIZES["tiny"], pad_token_id=None))(torch.tensor([[5, 6]]))
