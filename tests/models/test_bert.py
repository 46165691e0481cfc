"""BERT parity with transformers through real files, both directions: BertModel and every head, padded batches,
token types, hidden states and attentions, losses, every checkpoint format, and the real all-MiniLM-L6-v2."""
from __future__ import annotations

import json
import os

import pytest
import torch
import transformers

from pretrained.models import bert
from pretrained.models.bert import BertConfig, BertForSequenceClassification, BertModel

ARCHS = ["BertModel", "BertForSequenceClassification", "BertForMaskedLM", "BertForTokenClassification",
         "BertForQuestionAnswering"]
FIELDS = {
    "BertModel": ("last_hidden_state", "pooler_output"),
    "BertForSequenceClassification": ("logits",),
    "BertForMaskedLM": ("logits",),
    "BertForTokenClassification": ("logits",),
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
}


def assert_same_outputs(ours, theirs, fields, diff, tol, states: bool = True) -> None:
    for field in fields:
        a, b = getattr(ours, field), getattr(theirs, field)
        assert a.shape == b.shape and a.dtype == b.dtype, field
        assert diff(a, b) <= tol, (field, diff(a, b))
    if states:
        for name in ("hidden_states", "attentions"):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert isinstance(a, tuple) and len(a) == len(b) > 0, name
            for i, (x, y) in enumerate(zip(a, b)):
                assert x.shape == y.shape and diff(x, y) <= tol, (name, i, diff(x, y))


def run(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


# -- parity: transformers saves, we load --------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", ARCHS)
def test_we_load_what_transformers_saves(hf_checkpoint, hf_model, bert_sizes, batch, diff, arch, size, tol):
    sizes = bert_sizes[size]
    folder = hf_checkpoint(arch, **sizes)
    ours = getattr(bert, arch).from_pretrained(folder)
    inputs = batch(sizes["vocab_size"], T=12, type_vocab_size=sizes["type_vocab_size"])
    ours_out = run(ours, inputs, output_hidden_states=True, output_attentions=True)
    eager = run(hf_model(folder, arch, "eager"), inputs, output_hidden_states=True, output_attentions=True)
    assert_same_outputs(ours_out, eager, FIELDS[arch], diff, tol)
    # transformers' default (SDPA) path is within the same tolerance; so is ours without attention weights
    sdpa = run(hf_model(folder, arch, "sdpa"), inputs)
    assert_same_outputs(run(ours, inputs), sdpa, FIELDS[arch], diff, tol, states=False)


# -- parity: we save, transformers loads --------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_what_we_save(hf_checkpoint, hf_model, bert_sizes, batch, diff, tmp_path, arch, size, tol):
    sizes = bert_sizes[size]
    ours = getattr(bert, arch).from_pretrained(hf_checkpoint(arch, **sizes, seed=1))
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, arch).from_pretrained(str(tmp_path), attn_implementation="eager",
                                                              output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    inputs = batch(sizes["vocab_size"], type_vocab_size=sizes["type_vocab_size"], seed=1)
    assert_same_outputs(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                        run(theirs.eval(), inputs, output_hidden_states=True, output_attentions=True),
                        FIELDS[arch], diff, tol)


def test_fresh_model_saved_by_us_matches_in_transformers(hf_model, batch, diff, tmp_path, bert_sizes, tol):
    torch.manual_seed(0)
    ours = bert.BertForMaskedLM(BertConfig(**bert_sizes["odd"])).eval()
    ours.save_pretrained(tmp_path)
    theirs = hf_model(str(tmp_path), "BertForMaskedLM")
    assert theirs.cls.predictions.decoder.weight is theirs.bert.embeddings.word_embeddings.weight
    inputs = batch(101, type_vocab_size=3)
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= tol


# -- checkpoint formats -----------------------------------------------------------------------------------------------
def v4_bin_state(model) -> dict:
    """A state dict laid out as transformers 4.x saved pytorch_model.bin: tied weights and the position_ids buffer."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prefix = "bert." if model.base_model_prefix in dict(model.named_children()) else ""
    state[f"{prefix}embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
    return state


@pytest.mark.parametrize("layout", ["bin", "bin_shards", "safetensors_shards"])
@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_checkpoint_formats(hf_checkpoint, hf_model, batch, diff, tmp_path, arch, layout, caplog, tol):
    folder = hf_checkpoint(arch)
    theirs = hf_model(folder, arch)
    if layout == "safetensors_shards":
        theirs.save_pretrained(tmp_path, max_shard_size="20KB")
        assert len([n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]) > 2
    else:
        state = v4_bin_state(theirs)
        if layout == "bin":
            torch.save(state, tmp_path / "pytorch_model.bin")
        else:
            keys = list(state)
            names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
            weight_map = {}
            for i, name in enumerate(names):
                part = {k: state[k] for k in keys[i::2]}
                torch.save(part, tmp_path / name)
                weight_map.update(dict.fromkeys(part, name))
            (tmp_path / "pytorch_model.bin.index.json").write_text(
                json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
        (tmp_path / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    with caplog.at_level("INFO", logger="pretrained"):
        ours = getattr(bert, arch).from_pretrained(tmp_path)
    assert caplog.text == ""
    inputs = batch(99)
    assert_same_outputs(run(ours, inputs), run(theirs, inputs), FIELDS[arch], diff, tol, states=False)
    # and transformers reads what we save from it, sharded too
    ours.save_pretrained(tmp_path / "out", max_shard_size="30KB")
    again = hf_model(str(tmp_path / "out"), arch)
    assert_same_outputs(run(again, inputs), run(theirs, inputs), FIELDS[arch], diff, tol, states=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parity(hf_checkpoint, hf_model, batch, diff, dtype):
    folder = hf_checkpoint("BertForMaskedLM", dtype=dtype)
    ours = bert.BertForMaskedLM.from_pretrained(folder)
    inputs = batch(99)
    a = run(ours, inputs).logits
    b = run(hf_model(folder, "BertForMaskedLM", "sdpa"), inputs).logits
    assert a.dtype == b.dtype == dtype and torch.isfinite(a).all()
    assert diff(a, b) <= 1e-2  # a few ulps of a half-precision value near 0.5


def test_bin_we_save_is_read_by_transformers(hf_checkpoint, hf_model, batch, diff, tmp_path, tol):
    folder = hf_checkpoint("BertForTokenClassification")
    ours = bert.BertForTokenClassification.from_pretrained(folder)
    ours.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "pytorch_model.bin"]
    theirs = hf_model(str(tmp_path), "BertForTokenClassification")
    inputs = batch(99)
    assert diff(run(ours, inputs).logits, run(theirs, inputs).logits) <= tol


# -- the real all-MiniLM-L6-v2 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_pair(minilm_dir, hf_model):
    """Ours and transformers' (SDPA, its default) all-MiniLM-L6-v2."""
    return BertModel.from_pretrained(minilm_dir), hf_model(minilm_dir, "BertModel", "sdpa")


@pytest.mark.parametrize("seed, T", [(0, 16), (4, 10), (6, 16)])  # 4 and 6: transformers' eager and sdpa differ
def test_minilm_parity(minilm_pair, minilm_dir, hf_model, batch, diff, seed, T, tol):  # by > 1e-5 on these
    ours, theirs = minilm_pair
    inputs = batch(30522, T=T, seed=seed)
    eager = hf_model(minilm_dir, "BertModel", "eager")
    assert_same_outputs(run(ours, inputs, output_hidden_states=True, output_attentions=True),
                        run(eager, inputs, output_hidden_states=True, output_attentions=True),
                        FIELDS["BertModel"], diff, tol)
    ours_out, theirs_out = run(ours, inputs, output_hidden_states=True), run(theirs, inputs, output_hidden_states=True)
    assert_same_outputs(ours_out, theirs_out, FIELDS["BertModel"], diff, tol, states=False)
    assert all(diff(a, b) <= tol for a, b in zip(ours_out.hidden_states, theirs_out.hidden_states))


def test_minilm_real_sentence_embeddings(minilm_pair, minilm_dir, diff, tol):
    """Tokenised sentences as sentence-transformers feeds them: mean pooling over the mask."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(minilm_dir, "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(["A man is eating food.", "Hi", "The quick brown fox jumps over the dog."])
    inputs = {"input_ids": torch.tensor([e.ids for e in encodings]),
              "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
              "token_type_ids": torch.tensor([e.type_ids for e in encodings])}
    ours, theirs = minilm_pair
    a, b = run(ours, inputs).last_hidden_state, run(theirs, inputs).last_hidden_state
    mask = inputs["attention_mask"][..., None].float()
    assert diff((a * mask).sum(1) / mask.sum(1), (b * mask).sum(1) / mask.sum(1)) <= tol
    assert diff(a, b) <= tol


def test_minilm_round_trip_both_directions(minilm_pair, hf_model, batch, diff, tmp_path, tol):
    ours, theirs = minilm_pair
    inputs = batch(30522, T=10, seed=3)
    ours.save_pretrained(tmp_path / "ours")
    assert diff(run(hf_model(str(tmp_path / "ours")), inputs).last_hidden_state,
                run(theirs, inputs).last_hidden_state) <= tol
    theirs.save_pretrained(tmp_path / "theirs")
    again = BertModel.from_pretrained(tmp_path / "theirs")
    assert diff(run(again, inputs).pooler_output, run(theirs, inputs).pooler_output) <= tol


@pytest.mark.parametrize("layout", ["bin", "bin_shards", "safetensors_shards"])
def test_minilm_in_every_format(minilm_pair, minilm_dir, batch, diff, tmp_path, layout, tol):
    ours, theirs = minilm_pair
    if layout == "safetensors_shards":
        ours.save_pretrained(tmp_path, max_shard_size="20MB")
        assert len([n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]) == 4
    else:
        state = v4_bin_state(theirs)
        if layout == "bin":
            torch.save(state, tmp_path / "pytorch_model.bin")
        else:
            names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
            keys = list(state)
            parts = [dict((k, state[k]) for k in keys[:50]), dict((k, state[k]) for k in keys[50:])]
            for name, part in zip(names, parts):
                torch.save(part, tmp_path / name)
            weight_map = {k: name for name, part in zip(names, parts) for k in part}
            (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
        (tmp_path / "config.json").write_text(open(os.path.join(minilm_dir, "config.json")).read())
    loaded = BertModel.from_pretrained(tmp_path)
    inputs = batch(30522, T=10, seed=4)
    assert_same_outputs(run(loaded, inputs), run(theirs, inputs), FIELDS["BertModel"], diff, tol, states=False)


# -- inputs -------------------------------------------------------------------------------------------------------
def test_position_ids_and_inputs_embeds(hf_checkpoint, hf_model, batch, diff, tol):
    folder = hf_checkpoint("BertModel")
    ours, theirs = BertModel.from_pretrained(folder), hf_model(folder)
    inputs = batch(99, T=8)
    position_ids = torch.arange(8).flip(0)[None].expand(4, 8) + 3
    assert diff(run(ours, inputs, position_ids=position_ids).last_hidden_state,
                run(theirs, inputs, position_ids=position_ids).last_hidden_state) <= tol
    embeds = theirs.embeddings.word_embeddings(inputs["input_ids"]).detach()
    mask = {"attention_mask": inputs["attention_mask"]}
    assert diff(run(ours, mask, inputs_embeds=embeds).last_hidden_state,
                run(theirs, mask, inputs_embeds=embeds).last_hidden_state) <= tol
    # no attention_mask and no token_type_ids: transformers' defaults (all attended, segment 0)
    ids = {"input_ids": inputs["input_ids"]}
    assert diff(run(ours, ids).last_hidden_state, run(theirs, ids).last_hidden_state) <= tol


def test_padding_does_not_change_real_tokens(hf_checkpoint, tol):
    ours = BertModel.from_pretrained(hf_checkpoint("BertModel"))
    ids = torch.tensor([[5, 6, 7, 8]])
    alone = run(ours, {"input_ids": ids}).last_hidden_state
    padded = run(ours, {"input_ids": torch.tensor([[5, 6, 7, 8, 0, 0, 0]]),
                        "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0, 0]])}).last_hidden_state
    assert (alone - padded[:, :4]).abs().max() <= tol


def test_fully_padded_row_stays_finite(hf_checkpoint, hf_model, diff, tol):
    folder = hf_checkpoint("BertModel")
    inputs = {"input_ids": torch.tensor([[5, 6, 7], [0, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 0]])}
    ours = run(BertModel.from_pretrained(folder), inputs, output_attentions=True)
    assert torch.isfinite(ours.last_hidden_state).all() and torch.isfinite(ours.pooler_output).all()
    theirs = run(hf_model(folder, attn="eager"), inputs, output_attentions=True)
    assert diff(ours.last_hidden_state, theirs.last_hidden_state) <= tol
    assert diff(ours.attentions[0], theirs.attentions[0]) <= tol


def test_bad_inputs_are_named(hf_checkpoint):
    model = BertModel.from_pretrained(hf_checkpoint("BertModel"))  # vocab 99, 24 positions
    with pytest.raises(ValueError, match=r"input_ids contains token id 99, outside the vocabulary \[0, 99\)"):
        model(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match=r"token id -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"length 25 .*max_position_embeddings \(24\)"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token_type_ids contains token id 2"):
        model(torch.tensor([[1, 2]]), token_type_ids=torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match=r"position_ids contain position 24"):
        model(torch.tensor([[1, 2]]), position_ids=torch.tensor([[0, 24]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    assert model(torch.tensor([1, 2, 3])).last_hidden_state.shape == (1, 3, 32)  # (T,) is a batch of one


# -- outputs ------------------------------------------------------------------------------------------------------
def test_output_access(hf_checkpoint):
    model = BertModel.from_pretrained(hf_checkpoint("BertModel"))
    out = run(model, {"input_ids": torch.tensor([[1, 2, 3]])})
    assert out[0] is out.last_hidden_state is out["last_hidden_state"]
    assert out[1] is out.pooler_output and out[-1] is out.pooler_output
    assert list(out.keys()) == ["last_hidden_state", "pooler_output"] and len(out) == 2
    assert "pooler_output" in out and "hidden_states" not in out
    first, second = out.to_tuple()
    assert first is out.last_hidden_state
    with pytest.raises(KeyError, match="hidden_states"):
        out["hidden_states"]
    with pytest.raises(IndexError):
        out[2]
    full = run(model, {"input_ids": torch.tensor([[1, 2, 3]])}, output_hidden_states=True)
    assert full[2] is full.hidden_states and len(full.hidden_states) == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_return_dict_false_gives_transformers_tuples(hf_checkpoint, hf_model, batch, diff, arch, tol):
    folder = hf_checkpoint(arch)
    ours, theirs = getattr(bert, arch).from_pretrained(folder), hf_model(folder, arch)
    inputs = batch(99, T=6)
    labels = {"BertForSequenceClassification": {"labels": torch.tensor([0, 1, 1, 0])},
              "BertForMaskedLM": {"labels": inputs["input_ids"]},
              "BertForTokenClassification": {"labels": inputs["attention_mask"]},
              "BertForQuestionAnswering": {"start_positions": torch.tensor([1, 2, 0, 3]),
                                           "end_positions": torch.tensor([2, 4, 0, 3])}}.get(arch, {})
    for kwargs in ({}, labels, {**labels, "output_hidden_states": True}):
        a = run(ours, inputs, return_dict=False, **kwargs)
        b = run(theirs, inputs, return_dict=False, **kwargs)
        assert isinstance(a, tuple) and len(a) == len(b), (kwargs, len(a), len(b))
        for x, y in zip(a, b):
            if isinstance(y, tuple):
                assert len(x) == len(y) and all(diff(p, q) <= tol for p, q in zip(x, y))
            else:
                assert x.shape == y.shape and diff(x, y) <= tol
    config_off = getattr(bert, arch).from_pretrained(folder, return_dict=False)
    assert isinstance(run(config_off, inputs), tuple)


# -- losses -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem_type, num_labels, labels", [
    ("regression", 1, torch.tensor([0.5, -1.0, 2.0, 0.0])),
    ("regression", 3, torch.randn(4, 3, generator=torch.Generator().manual_seed(0))),
    ("single_label_classification", 3, torch.tensor([0, 2, 1, 2])),
    ("single_label_classification", 2, torch.tensor([0, 1, 1, 0], dtype=torch.int32)),
    ("multi_label_classification", 3, torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])),
])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "inferred"])
def test_sequence_classification_loss(hf_checkpoint, batch, diff, problem_type, num_labels, labels, declared, tol):
    folder = hf_checkpoint("BertModel")
    options = {"num_labels": num_labels, "problem_type": problem_type if declared else None}
    ours = BertForSequenceClassification.from_pretrained(folder, **options)
    theirs = transformers.BertForSequenceClassification.from_pretrained(folder, **options).eval()
    theirs.load_state_dict(ours.state_dict())  # the same random classifier
    inputs = batch(99, T=8)
    a = run(ours, inputs, labels=labels)
    # transformers' cross-entropy refuses int32 labels; we accept them
    b = run(theirs, inputs, labels=labels.long() if labels.dtype == torch.int32 else labels)
    assert diff(a.logits, b.logits) <= tol
    assert a.loss.shape == b.loss.shape == () and diff(a.loss, b.loss) <= tol, (a.loss, b.loss)
    assert ours.config.problem_type == options["problem_type"]  # inferring the loss does not change the config
    if not declared:  # transformers writes the type it inferred into its config: one label -> regression,
        # integer labels -> single-label, float labels -> multi-label (so regression over 3 outputs must be declared)
        inferred = ("regression" if num_labels == 1 else "single_label_classification"
                    if not labels.dtype.is_floating_point else "multi_label_classification")
        assert theirs.config.problem_type == inferred


def test_token_classification_and_mlm_losses(hf_checkpoint, hf_model, batch, diff, tol):
    inputs = batch(99, T=8)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    for arch, lab in (("BertForMaskedLM", labels), ("BertForTokenClassification", labels.clamp(max=1))):
        folder = hf_checkpoint(arch)
        a = run(getattr(bert, arch).from_pretrained(folder), inputs, labels=lab)
        b = run(hf_model(folder, arch), inputs, labels=lab)
        assert diff(a.loss, b.loss) <= tol and diff(a.logits, b.logits) <= tol


@pytest.mark.parametrize("start, end", [([1, 2, 0, 3], [2, 4, 0, 3]), ([[1], [50], [0], [3]], [[2], [4], [-7], [99]])])
def test_question_answering_loss(hf_checkpoint, hf_model, batch, diff, start, end, tol):
    folder = hf_checkpoint("BertForQuestionAnswering")
    inputs = batch(99, T=8)
    positions = {"start_positions": torch.tensor(start), "end_positions": torch.tensor(end)}
    a = run(bert.BertForQuestionAnswering.from_pretrained(folder), inputs, **positions)
    b = run(hf_model(folder, "BertForQuestionAnswering"), inputs, **positions)
    assert diff(a.loss, b.loss) <= tol
    assert diff(a.start_logits, b.start_logits) <= tol and diff(a.end_logits, b.end_logits) <= tol


def test_no_labels_no_loss(hf_checkpoint):
    model = bert.BertForQuestionAnswering.from_pretrained(hf_checkpoint("BertForQuestionAnswering"))
    out = run(model, {"input_ids": torch.tensor([[1, 2]])})
    assert out.loss is None and list(out.keys()) == ["start_logits", "end_logits"]


# -- training -----------------------------------------------------------------------------------------------------
def test_gradients_flow_and_dropout_applies_in_training(hf_checkpoint, batch):
    model = BertForSequenceClassification.from_pretrained(hf_checkpoint("BertForSequenceClassification"))
    inputs = batch(99, T=8)
    model.train()
    torch.manual_seed(0)
    out = model(**inputs, labels=torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    with torch.no_grad():
        again = model(**inputs).logits
    assert (again - out.logits.detach()).abs().max() > 0  # dropout is on
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("seed, T", [(4, 10), (6, 16)])
def test_attn_implementation_eager_matches_transformers_eager(minilm_dir, hf_model, batch, diff, seed, T):
    """from_pretrained(attn_implementation="eager") computes softmax(q kᵀ) v explicitly, bit for bit as transformers'
    eager path — on the seeds where transformers' own eager and SDPA paths differ by more than 1e-5."""
    ours = BertModel.from_pretrained(minilm_dir, attn_implementation="eager", exact=True)
    assert ours.config.attn_implementation == "eager"
    assert "attn_implementation" not in ours.config.to_json_string()
    inputs = batch(30522, T=T, seed=seed)
    eager = hf_model(minilm_dir, "BertModel", "eager")
    assert diff(run(ours, inputs).last_hidden_state, run(eager, inputs).last_hidden_state) == 0.0


def test_attn_implementation_unknown_is_refused(minilm_dir):
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_9'.*sdpa, eager"):
        BertModel.from_pretrained(minilm_dir, attn_implementation="flash_attention_9")
