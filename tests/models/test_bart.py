"""BART against transformers: forward parity with padded batches, cached decoding (self- and cross-attention),
save/load both ways, fairseq-era files, untied embeddings, config and input errors."""
from __future__ import annotations

import functools
import json
import logging
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pretrained import AutoModel, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification
from pretrained.layers import KVCache
from pretrained.models.bart import (BartConfig, BartForConditionalGeneration, BartForSequenceClassification,
                                    BartModel, shift_tokens_right)
from pretrained.outputs import BaseModelOutput

CLASSES = {"BartModel": BartModel, "BartForConditionalGeneration": BartForConditionalGeneration,
           "BartForSequenceClassification": BartForSequenceClassification}
BOS, PAD, EOS = 0, 1, 2
# head size 8; scale_embedding on, so that a missing sqrt(d_model) shows
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=41, max_position_embeddings=24,
            scale_embedding=True)


def diff(a, b, keep=None) -> float:
    """Max abs difference; `keep` (B, T) limits it to the positions where it is 1."""
    d = (a.detach().float() - b.detach().float()).abs()
    if keep is not None:
        d = d * keep.reshape(*keep.shape, *([1] * (d.dim() - keep.dim()))).to(d.dtype)
    return d.max().item()


def build_hf(name: str, seed: int, **config):
    """A tiny transformers model: seeded, every bias / LayerNorm parameter and final_logits_bias perturbed."""
    torch.manual_seed(seed)
    model = getattr(transformers, name)(transformers.BartConfig(**{**TINY, **config}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """class name -> folder where transformers saved a tiny seeded, perturbed model of that class."""
    dirs = {}
    for seed, name in enumerate(CLASSES):
        dirs[name] = str(tmp_path_factory.mktemp(name))
        build_hf(name, seed).save_pretrained(dirs[name])
    return dirs


@functools.cache
def hf(folder: str, name: str, attn: str = "eager"):
    """The transformers model saved in `folder` (loaded once; tests must not modify it)."""
    return getattr(transformers, name).from_pretrained(folder, attn_implementation=attn).eval()


@functools.cache
def load(folder: str, name: str):
    """Our model loaded from `folder` (loaded once; tests must not modify it)."""
    return CLASSES[name].from_pretrained(folder)


def padded(B=4, T=12, seed=0, lengths=None):
    """Right-padded ids ending in eos on every row (so the classifier can pool), and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate(lengths or [T, T // 2, 2, T - 3][:B]):
        mask[row, n:] = 0
        ids[row, n - 1] = EOS
    return ids.masked_fill(mask == 0, PAD), mask


def main_output(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


# -- forward parity --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_forward_matches_transformers_with_padding(hf_dirs, name, attn, tol):
    """Decoder inputs made by shifting input_ids right, as BartModel does when none are given."""
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name, attn)
    ids, mask = padded()
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask), ref(ids, attention_mask=mask)
    assert main_output(a).shape == main_output(b).shape
    assert diff(main_output(a), main_output(b)) <= tol
    assert diff(a.encoder_last_hidden_state, b.encoder_last_hidden_state) <= tol


def test_every_output_matches_with_padded_decoder_inputs(hf_dirs, tol):
    name = "BartForConditionalGeneration"
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name)
    ids, mask = padded()
    dec, dec_mask = padded(T=7, seed=1, lengths=[7, 3, 5, 1])
    kwargs = dict(attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask,
                  output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        a, b = model(ids, **kwargs), ref(ids, **kwargs)
    assert diff(a.logits, b.logits) <= tol
    with torch.no_grad():  # encoder outputs given as a dataclass, a tuple or a tensor
        for given in (BaseModelOutput(a.encoder_last_hidden_state), (a.encoder_last_hidden_state,),
                      a.encoder_last_hidden_state):
            c = model(encoder_outputs=given, attention_mask=mask, decoder_input_ids=dec,
                      decoder_attention_mask=dec_mask)
            assert diff(c.logits, a.logits) <= tol
    for field in ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
                  "encoder_attentions"):
        ours, theirs = getattr(a, field), getattr(b, field)
        assert len(ours) == len(theirs) >= 2, field
        assert max(diff(x, y) for x, y in zip(ours, theirs)) <= tol, field


def test_losses_and_tuple_outputs_match_transformers(hf_dirs, tol):
    ids, mask = padded()
    name = "BartForConditionalGeneration"
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name)
    labels, _ = padded(T=6, seed=2, lengths=[6, 4, 2, 5])
    labels = labels.masked_fill(labels == PAD, -100)  # the decoder reads them shifted, -100 -> pad
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask, labels=labels), ref(ids, attention_mask=mask, labels=labels)
        as_tuple = model(ids, attention_mask=mask, labels=labels, return_dict=False)
    assert abs(a.loss - b.loss) <= tol and diff(a.logits, b.logits) <= tol
    assert a.past_key_values is None  # labels turn the cache off, as in transformers
    assert torch.equal(as_tuple[0], a.loss) and torch.equal(as_tuple[1], a.logits)
    name = "BartForSequenceClassification"
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask, labels=labels), ref(ids, attention_mask=mask, labels=labels)
    assert a.logits.shape == (4, 3) and abs(a.loss - b.loss) <= tol


def test_shift_tokens_right_matches_transformers():
    from transformers.models.bart.modeling_bart import shift_tokens_right as theirs

    labels = torch.tensor([[5, 6, -100, -100], [7, 8, 9, 2]])
    assert torch.equal(shift_tokens_right(labels, PAD, EOS), theirs(labels, PAD, EOS))


def test_layerdrop_applies_in_training_only():
    model = BartModel(BartConfig(**TINY, encoder_layerdrop=1.0, decoder_layerdrop=1.0))
    ids, mask = padded()
    out = model.train()(ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.encoder_hidden_states) == len(out.decoder_hidden_states) == 1  # every layer dropped
    with torch.no_grad():
        out = model.eval()(ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.encoder_hidden_states) == len(out.decoder_hidden_states) == 3


# -- cached decoding -------------------------------------------------------------------------------------------
def test_greedy_decoding_with_cache_matches_the_full_pass(hf_dirs, tol):
    """The encoder once, then one decoder token per step with the cache (self- and cross-attention); every
    step's logits equal transformers' logits of one full pass over the decoded sequence."""
    name = "BartForConditionalGeneration"
    model, ref = load(hf_dirs[name], name), hf(hf_dirs[name], name, "sdpa")
    ids, mask = padded()
    dec = torch.full((4, 1), EOS)
    steps, cache = [], None
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(ids, mask)
        for _ in range(9):
            out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=dec[:, -1:],
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
            dec = torch.cat([dec, out.logits[:, -1].argmax(-1, keepdim=True)], 1)
        full = ref(ids, attention_mask=mask, decoder_input_ids=dec[:, :-1]).logits
    assert isinstance(cache, KVCache) and cache.get_seq_length() == 9 and cache.get_cross(0) is not None
    assert diff(torch.cat(steps, 1), full) <= tol


def test_cache_reorder_for_beam_search(hf_dirs, tol):
    name = "BartForConditionalGeneration"
    model = load(hf_dirs[name], name)
    ids, mask = padded(B=3)
    dec, _ = padded(B=3, T=6, seed=3, lengths=[6, 6, 6])
    beam_idx = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = model(ids, attention_mask=mask, decoder_input_ids=dec[:, :4]).past_key_values
        step = model(ids[beam_idx], attention_mask=mask[beam_idx], decoder_input_ids=dec[beam_idx, 4:],
                     past_key_values=cache.reorder(beam_idx)).logits
        full = model(ids[beam_idx], attention_mask=mask[beam_idx], decoder_input_ids=dec[beam_idx]).logits
    assert diff(step, full[:, 4:]) <= tol


# -- save / load -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CLASSES))
def test_save_load_both_directions(hf_dirs, name, tmp_path, tol):
    model = load(hf_dirs[name], name)
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert keys == set(load_file(f"{hf_dirs[name]}/model.safetensors"))
    assert not any("embed_tokens" in k or k.startswith("lm_head") for k in keys)  # only model.shared.weight
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [name] and config["model_type"] == "bart"
    ref_from_ours, ref = hf(str(tmp_path), name), hf(hf_dirs[name], name)
    ids, mask = padded()
    with torch.no_grad():
        a, b, c = (model(ids, attention_mask=mask), ref_from_ours(ids, attention_mask=mask),
                   ref(ids, attention_mask=mask))
    assert diff(main_output(a), main_output(b)) <= tol and diff(main_output(b), main_output(c)) <= tol
    base = model if name == "BartModel" else model.model
    assert base.encoder.embed_tokens.weight is base.shared.weight is base.decoder.embed_tokens.weight
    if name == "BartForConditionalGeneration":
        assert model.lm_head.weight is base.shared.weight


def test_fairseq_era_file_loads_without_warnings(hf_dirs, tmp_path, caplog, tol):
    """`encoder.version`/`decoder.version` keys, no final_logits_bias, every tied copy saved, as a .bin file."""
    src = hf_dirs["BartForConditionalGeneration"]
    state = load_file(f"{src}/model.safetensors")
    del state["final_logits_bias"]
    for key in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
        state[key] = state["model.shared.weight"].clone()
    state["model.encoder.version"] = state["model.decoder.version"] = torch.tensor([3.0])
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(open(f"{src}/config.json").read())
    with caplog.at_level(logging.INFO, logger="pretrained"):
        model = BartForConditionalGeneration.from_pretrained(tmp_path)
        base = BartModel.from_pretrained(tmp_path)  # model. prefix stripped, lm_head unused
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert torch.equal(model.final_logits_bias, torch.zeros(1, TINY["vocab_size"]))
    ref = hf(str(tmp_path), "BartForConditionalGeneration")
    ids, mask = padded()
    with torch.no_grad():
        assert diff(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits) <= tol
        assert diff(base(ids, attention_mask=mask).last_hidden_state,
                    ref.model(ids, attention_mask=mask).last_hidden_state) <= tol


def test_untied_embeddings_are_saved_separately(tmp_path, tol):
    ref = build_hf("BartForConditionalGeneration", 7, tie_word_embeddings=False)
    ref.save_pretrained(tmp_path / "hf")
    model = BartForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert model.lm_head.weight is not model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is not model.model.shared.weight
    model.save_pretrained(tmp_path / "ours")
    saved = {folder: set(load_file(tmp_path / folder / "model.safetensors")) for folder in ("ours", "hf")}
    assert saved["ours"] == saved["hf"] and "model.encoder.embed_tokens.weight" in saved["ours"]
    ids, mask = padded()
    with torch.no_grad():
        assert diff(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits) <= tol


def test_auto_classes_pick_bart(hf_dirs):
    name = "BartForConditionalGeneration"
    assert type(AutoModel.from_pretrained(hf_dirs[name])) is BartModel
    assert type(AutoModelForSeq2SeqLM.from_pretrained(hf_dirs[name])) is BartForConditionalGeneration
    name = "BartForSequenceClassification"
    assert type(AutoModelForSequenceClassification.from_pretrained(hf_dirs[name])) is BartForSequenceClassification


# -- config ----------------------------------------------------------------------------------------------------
def strip_version(text: str) -> str:
    return re.sub(r'  "transformers_version": "[^"]*",\n', "", text)


def test_config_matches_transformers():
    assert repr(BartConfig()) == strip_version(repr(transformers.BartConfig()))
    assert BartConfig().num_labels == 3
    kwargs = dict(hidden_size=64, num_attention_heads=8, num_hidden_layers=3, num_labels=5, scale_embedding=True)
    ours = BartConfig(**kwargs)
    assert repr(ours) == strip_version(repr(transformers.BartConfig(**kwargs)))
    assert (ours.d_model, ours.encoder_attention_heads, ours.encoder_layers) == (64, 8, 3)
    labels = {0: "no", 1: "yes"}
    assert BartConfig(id2label=labels).label2id == {"no": 0, "yes": 1}


def test_two_label_config_round_trips_unlike_transformers(tmp_path):
    """transformers 5.24 leaves a 2-label id2label out of BART's config.json and reads it back as 3 labels;
    we write it (the only difference from transformers' JSON), and transformers reads our file right."""
    ours = BartConfig(num_labels=2)
    assert json.loads(ours.to_json_string())["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    ours.save_pretrained(tmp_path)
    assert transformers.BartConfig.from_pretrained(tmp_path).num_labels == 2
    assert BartConfig.from_pretrained(tmp_path).num_labels == 2
    theirs = json.loads(transformers.BartConfig(num_labels=2).to_json_string())
    mine = json.loads(ours.to_json_string())
    assert {k for k in mine.keys() ^ theirs.keys()} == {"id2label", "label2id", "transformers_version"}


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(hf_dirs):
    name = "BartForConditionalGeneration"
    model = load(hf_dirs[name], name)
    n = TINY["max_position_embeddings"]
    with pytest.raises(ValueError, match=f"length {n + 1} is longer .*max_position_embeddings \\({n}\\)"):
        model(torch.full((1, n + 1), 5))
    ids = torch.tensor([[5, 6, EOS]])
    cache = model(ids, decoder_input_ids=torch.full((1, n - 1), 5)).past_key_values
    with pytest.raises(ValueError, match=r"cached \+ new tokens\) length 25"):
        model(ids, decoder_input_ids=torch.full((1, 2), 5), past_key_values=cache)
    with pytest.raises(ValueError, match="token id 99, outside the vocabulary"):
        model(ids, decoder_input_ids=torch.tensor([[2, 99]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\), but the input needs \(1, 3\)"):
        model(ids, attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="decoder_input_ids.*or input_ids"):
        model(attention_mask=torch.ones(1, 4))
    classifier = load(hf_dirs["BartForSequenceClassification"], "BartForSequenceClassification")
    with pytest.raises(ValueError, match=r"same number .* eos tokens \(id 2\); found \[1, 2\]"):
        classifier(torch.tensor([[5, 6, EOS], [EOS, 6, EOS]]))
    with pytest.raises(ValueError, match="needs input_ids"):
        classifier(inputs_embeds=torch.zeros(1, 3, TINY["d_model"]))
