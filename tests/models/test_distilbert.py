"""DistilBERT parity with transformers through real files, both directions, every head, padded batches; config
JSON, forward hooks, losses and bad inputs."""
from __future__ import annotations

import re

import pytest
import torch
import transformers

import pretrained
from pretrained.models import distilbert
from pretrained.models.distilbert import DistilBertConfig, DistilBertModel

ARCHS = ["DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
         "DistilBertForTokenClassification", "DistilBertForQuestionAnswering"]
FIELDS = {"DistilBertModel": ("last_hidden_state",), "DistilBertForQuestionAnswering": ("start_logits", "end_logits")}
SIZES = {
    "tiny": dict(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=24),
    # head size 12, ReLU, fixed sinusoidal positions, 3 labels
    "odd": dict(vocab_size=101, dim=60, n_layers=2, n_heads=5, hidden_dim=50, max_position_embeddings=24,
                activation="relu", sinusoidal_pos_embds=True, num_labels=3),
}


def inputs_for(batch, size: str, seed: int = 0, T: int = 12) -> dict:
    inputs = batch(SIZES[size]["vocab_size"], T=T, seed=seed)
    inputs.pop("token_type_ids")  # DistilBERT has no segments
    return inputs


def checkpoint(hf_family_checkpoint, arch: str, size: str = "tiny", seed: int = 0) -> str:
    sizes = dict(SIZES[size])
    if arch == "DistilBertForQuestionAnswering":
        sizes.pop("num_labels", None)
    return hf_family_checkpoint(arch, "DistilBertConfig", seed=seed, **sizes)


def hf(folder: str, arch: str, attn: str = "eager"):
    return getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn).eval()


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


def assert_close(ours, theirs, arch, outputs_close, tol, states: bool = True) -> None:
    outputs_close(ours, theirs, FIELDS.get(arch, ("logits",)), tol, states)


# -- config ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"hidden_size": 48, "num_attention_heads": 4, "num_labels": 3},
                                    {"sinusoidal_pos_embds": True, "activation": "relu", "seq_classif_dropout": 0.3}])
def test_config_json_matches_transformers(kwargs):
    ours, theirs = DistilBertConfig(**kwargs), transformers.DistilBertConfig(**kwargs)
    expected = re.sub(r'\n  "transformers_version": "[^"]*",', "", theirs.to_json_string())
    assert ours.to_json_string() == expected
    for name in DistilBertConfig.field_defaults():
        assert getattr(ours, name) == getattr(theirs, name), name
    assert (ours.hidden_size, ours.num_hidden_layers) == (theirs.hidden_size, theirs.num_hidden_layers)


# -- parity, both directions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", ARCHS)
def test_we_load_what_transformers_saves(hf_family_checkpoint, batch, outputs_close, arch, size, tol):
    folder = checkpoint(hf_family_checkpoint, arch, size)
    ours = getattr(distilbert, arch).from_pretrained(folder)
    inputs = inputs_for(batch, size)
    assert_close(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                 run(hf(folder, arch), inputs, output_hidden_states=True, output_attentions=True), arch, outputs_close, tol)
    assert_close(run(ours, inputs), run(hf(folder, arch, "sdpa"), inputs), arch, outputs_close, tol, states=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_what_we_save(hf_family_checkpoint, batch, outputs_close, tmp_path, arch, tol):
    ours = getattr(distilbert, arch).from_pretrained(checkpoint(hf_family_checkpoint, arch, "odd", seed=1))
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, arch).from_pretrained(str(tmp_path), attn_implementation="eager",
                                                              output_loading_info=True)
    assert not any(info.values()), info
    inputs = inputs_for(batch, "odd", seed=1)
    assert_close(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                 run(theirs.eval(), inputs, output_hidden_states=True, output_attentions=True), arch, outputs_close, tol)


def test_fresh_model_ties_and_sinusoidal_init(batch, diff, tmp_path, tol):
    torch.manual_seed(0)
    ours = distilbert.DistilBertForMaskedLM(DistilBertConfig(**SIZES["odd"])).eval()
    theirs_fresh = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(**SIZES["odd"]))
    table = theirs_fresh.distilbert.embeddings.position_embeddings.weight
    assert diff(ours.distilbert.embeddings.position_embeddings.weight, table) <= 1e-7
    assert ours.vocab_projector.weight is ours.distilbert.embeddings.word_embeddings.weight
    ours.save_pretrained(tmp_path)
    theirs = hf(str(tmp_path), "DistilBertForMaskedLM")
    assert theirs.vocab_projector.weight is theirs.distilbert.embeddings.word_embeddings.weight
    inputs = inputs_for(batch, "odd")
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= tol


def test_auto_classes_pick_distilbert(hf_family_checkpoint):
    for auto, arch in [("AutoModel", "DistilBertModel"), ("AutoModelForMaskedLM", "DistilBertForMaskedLM"),
                       ("AutoModelForSequenceClassification", "DistilBertForSequenceClassification"),
                       ("AutoModelForTokenClassification", "DistilBertForTokenClassification"),
                       ("AutoModelForQuestionAnswering", "DistilBertForQuestionAnswering")]:
        model = getattr(pretrained, auto).from_pretrained(checkpoint(hf_family_checkpoint, arch))
        assert type(model) is getattr(pretrained, arch)
    config = pretrained.AutoConfig.from_pretrained(checkpoint(hf_family_checkpoint, "DistilBertModel"))
    assert type(config) is pretrained.DistilBertConfig and config.dim == 32


# -- module tree --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_fire_on_transformers_module_names(hf_family_checkpoint, batch, fired_modules, arch):
    folder = checkpoint(hf_family_checkpoint, arch)
    ours, theirs = getattr(distilbert, arch).from_pretrained(folder), hf(folder, arch, "sdpa")
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}
    inputs = inputs_for(batch, "tiny")
    if arch == "DistilBertForMaskedLM":
        inputs["labels"] = inputs["input_ids"]
    assert fired_modules(ours, **inputs) == fired_modules(theirs, **inputs)


# -- inputs, outputs, losses ---------------------------------------------------------------------------------------
def test_position_ids_and_inputs_embeds(hf_family_checkpoint, batch, diff, tol):
    folder = checkpoint(hf_family_checkpoint, "DistilBertModel")
    ours, theirs = DistilBertModel.from_pretrained(folder), hf(folder, "DistilBertModel", "sdpa")
    inputs = inputs_for(batch, "tiny", T=8)
    position_ids = torch.arange(8).flip(0)[None].expand(4, 8) + 3
    assert diff(run(ours, inputs, position_ids=position_ids).last_hidden_state,
                run(theirs, inputs, position_ids=position_ids).last_hidden_state) <= tol
    embeds = theirs.embeddings.word_embeddings(inputs["input_ids"]).detach()
    mask = {"attention_mask": inputs["attention_mask"]}
    assert diff(run(ours, mask, inputs_embeds=embeds).last_hidden_state,
                run(theirs, mask, inputs_embeds=embeds).last_hidden_state) <= tol
    ids = {"input_ids": inputs["input_ids"]}
    assert diff(run(ours, ids).last_hidden_state, run(theirs, ids).last_hidden_state) <= tol


LABELS = {
    "DistilBertForSequenceClassification": lambda inputs: {"labels": torch.tensor([0, 1, 1, 0])},
    "DistilBertForMaskedLM": lambda inputs: {
        "labels": inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)},
    "DistilBertForTokenClassification": lambda inputs: {"labels": inputs["attention_mask"]},
    "DistilBertForQuestionAnswering": lambda inputs: {"start_positions": torch.tensor([1, 2, 0, 30]),
                                                      "end_positions": torch.tensor([2, 4, 0, 3])},
}


@pytest.mark.parametrize("arch", list(LABELS))
def test_losses_and_tuples(hf_family_checkpoint, batch, diff, arch, tol):
    folder = checkpoint(hf_family_checkpoint, arch)
    ours, theirs = getattr(distilbert, arch).from_pretrained(folder), hf(folder, arch, "sdpa")
    inputs = inputs_for(batch, "tiny", T=8)
    labels = LABELS[arch](inputs)
    a, b = run(ours, inputs, **labels), run(theirs, inputs, **labels)
    assert a.loss.shape == b.loss.shape == () and diff(a.loss, b.loss) <= tol
    a, b = run(ours, inputs, return_dict=False, **labels), run(theirs, inputs, return_dict=False, **labels)
    assert isinstance(a, tuple) and len(a) == len(b) and all(diff(x, y) <= tol for x, y in zip(a, b))


def test_regression_and_multi_label_losses(hf_family_checkpoint, batch, diff, tol):
    folder = checkpoint(hf_family_checkpoint, "DistilBertForSequenceClassification", "odd")  # 3 labels
    ours = distilbert.DistilBertForSequenceClassification.from_pretrained(folder)
    inputs = inputs_for(batch, "odd", T=8)
    for labels in (torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]), torch.tensor([2, 0, 1, 1])):
        theirs = hf(folder, "DistilBertForSequenceClassification", "sdpa")  # it stores the loss type it inferred
        assert diff(run(ours, inputs, labels=labels).loss, run(theirs, inputs, labels=labels).loss) <= tol


def test_bad_inputs_are_named(hf_family_checkpoint):
    model = DistilBertModel.from_pretrained(checkpoint(hf_family_checkpoint, "DistilBertModel"))  # vocab 99, 24 pos
    with pytest.raises(ValueError, match=r"token id 99, outside the vocabulary \[0, 99\)"):
        model(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match=r"length 25 .*max_position_embeddings \(24\)"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids contain position 24"):
        model(torch.tensor([[1, 2]]), position_ids=torch.tensor([[0, 24]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, length, hidden\)"):
        model(inputs_embeds=torch.zeros(3, 32))
    with pytest.raises(ValueError, match="needs num_labels=2"):
        distilbert.DistilBertForQuestionAnswering(DistilBertConfig(**SIZES["tiny"], num_labels=3))
    with pytest.raises(ValueError, match="not a multiple of the number of attention heads 5"):
        DistilBertModel(DistilBertConfig(**{**SIZES["tiny"], "n_heads": 5}))
    assert model(torch.tensor([1, 2, 3])).last_hidden_state.shape == (1, 3, 32)


def test_training_mode_applies_dropout_and_gradients_flow(hf_family_checkpoint, batch):
    model = distilbert.DistilBertForSequenceClassification.from_pretrained(
        checkpoint(hf_family_checkpoint, "DistilBertForSequenceClassification")).train()
    inputs = inputs_for(batch, "tiny", T=8)
    torch.manual_seed(0)
    out = model(**inputs, labels=torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    assert model.distilbert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert (model(**inputs).logits - out.logits).abs().max() > 0


def test_tokenizer_of_a_distilbert_folder_feeds_the_model(hf_family_checkpoint, tmp_path):
    """A folder with only vocab.txt and config.json: the tokenizer returns no token_type_ids (DistilBERT has no
    segments), as transformers' DistilBertTokenizer, so `model(**enc)` works."""
    import shutil

    folder = tmp_path / "distilbert"
    shutil.copytree(checkpoint(hf_family_checkpoint, "DistilBertModel"), folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]
    (folder / "vocab.txt").write_text("\n".join(words + [f"w{i}" for i in range(99 - len(words))]) + "\n")
    enc = pretrained.AutoTokenizer.from_pretrained(folder)(["hello worlds", "hello"], padding=True,
                                                           return_tensors="pt")
    assert sorted(enc) == ["attention_mask", "input_ids"]
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))(["hello worlds", "hello"], padding=True)
    assert enc["input_ids"].tolist() == theirs["input_ids"]
    out = pretrained.AutoModel.from_pretrained(folder)(**enc)
    assert out.last_hidden_state.shape == (2, 5, 32)
