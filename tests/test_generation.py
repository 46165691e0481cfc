"""generate() against transformers' generate, token for token; GenerationConfig; the logits processors.

transformers builds tiny seeded GPT-2 and BART checkpoints (weights scaled up so that the next-token
distributions are peaked and varied, not near-uniform: ties would make token-for-token comparisons
meaningless), saves them; our models load the folders and must generate exactly what transformers generates
with the same arguments, for greedy search, beam search (batched, left-padded for GPT-2) and seeded sampling.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stdout

import pytest
import torch

import transformers
from transformers.generation import logits_process as hf_lp

from conftest import perturb
from pretrained import BartForConditionalGeneration, GPT2LMHeadModel
from pretrained import generation as gen
from pretrained.generation import GenerationConfig

EOS = 49  # GPT-2: bos = eos = the last id, pad unset, as in the real checkpoints


def _sharpen(model, factors: dict[str, float]) -> None:
    """Scale the named weights up so that the logits are far apart (no near-ties between candidates)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            for key, factor in factors.items():
                if key in name and p.dim() > 1:
                    p.mul_(factor)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> str:
    """A tiny GPT-2 whose continuations depend on the context. With tied embeddings a small random GPT-2
    mostly repeats one token, so greedy and beam search would agree and rarely stop early: the head is untied
    and scaled, the embeddings scaled, and the seed picked for varied outputs where some beams end early."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=40,
                                     bos_token_id=EOS, eos_token_id=EOS, tie_word_embeddings=False)
    model = transformers.GPT2LMHeadModel(config)
    perturb(model)
    _sharpen(model, {"lm_head": 25.0, "wte": 10.0, "wpe": 10.0})
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory) -> str:
    """A tiny BART with bart-large-cnn's decoding defaults in its generation_config.json. Untied and scaled
    like the GPT-2 above, with a strong cross-attention so that the output depends on the encoder input."""
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=40, tie_word_embeddings=False)
    model = transformers.BartForConditionalGeneration(config)
    perturb(model)
    _sharpen(model, {"lm_head": 25.0, "shared": 5.0, "encoder_attn.": 8.0, "encoder.layers": 2.0})
    model.generation_config.update(num_beams=4, max_length=14, min_length=5, no_repeat_ngram_size=3,
                                   early_stopping=True, length_penalty=2.0, forced_bos_token_id=0)
    folder = tmp_path_factory.mktemp("bart")
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return GPT2LMHeadModel.from_pretrained(gpt2_dir)


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_dir):
    return {attn: transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation=attn).eval()
            for attn in ("eager", "sdpa")}


@pytest.fixture(scope="module")
def bart(bart_dir):
    return BartForConditionalGeneration.from_pretrained(bart_dir)


@pytest.fixture(scope="module")
def hf_bart(bart_dir):
    return transformers.BartForConditionalGeneration.from_pretrained(bart_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def prompts():
    """Three left-padded GPT-2 prompts: full, 3 pads, 6 pads (one real token); pads hold the eos id."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, EOS - 1, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return ids.masked_fill(mask == 0, EOS), mask


@pytest.fixture(scope="module")
def bart_inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 60, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # BART pads on the right
    return ids.masked_fill(mask == 0, 1), mask


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape, (ours, theirs)
    assert torch.equal(ours, theirs), (ours, theirs)


# -- greedy and beam search against transformers ------------------------------------------------------------
GPT2_CASES = {
    "greedy": dict(max_new_tokens=12),
    "beams": dict(max_new_tokens=12, num_beams=3),
    "beams_return_2": dict(max_new_tokens=12, num_beams=4, num_return_sequences=2, length_penalty=0.5),
    "early_stopping": dict(max_new_tokens=15, num_beams=3, early_stopping=True, eos_token_id=[3, 5, EOS]),
    "never": dict(max_new_tokens=15, num_beams=3, early_stopping="never", length_penalty=2.0,
                  eos_token_id=[3, 5, 7, EOS]),
    "penalties": dict(max_new_tokens=10, repetition_penalty=1.5, no_repeat_ngram_size=2),
    "beam_penalties": dict(max_new_tokens=10, num_beams=2, repetition_penalty=1.3, no_repeat_ngram_size=3,
                           eos_token_id=[3, 5, EOS]),
    "min_new_tokens": dict(max_new_tokens=12, min_new_tokens=11, eos_token_id=[5, EOS]),
    "pad_0": dict(max_new_tokens=12, num_beams=3, eos_token_id=[3, 5, 7, EOS], pad_token_id=0),
    "max_length": dict(max_length=16, forced_eos_token_id=5),
}


@pytest.mark.parametrize("case", GPT2_CASES)
def test_gpt2_matches_transformers_left_padded(gpt2, hf_gpt2, prompts, case, mode):
    ids, mask = prompts
    kwargs = {"pad_token_id": EOS, **GPT2_CASES[case]}
    ours = gpt2.generate(ids, attention_mask=mask, **kwargs)
    assert_same(ours, hf_gpt2["eager"].generate(ids, attention_mask=mask, **kwargs))
    if case in ("greedy", "beams_return_2"):
        assert_same(ours, hf_gpt2["sdpa"].generate(ids, attention_mask=mask, **kwargs))


def test_gpt2_cases_exercise_their_settings(gpt2, prompts):
    """The fixture model makes each case above do what it is there to test (not pass trivially)."""
    ids, mask = prompts

    def run(**kwargs):
        return gpt2.generate(ids, attention_mask=mask, **{"pad_token_id": EOS, **kwargs})[:, ids.shape[1]:]

    greedy, beams = run(**GPT2_CASES["greedy"]), run(**GPT2_CASES["beams"])
    assert not torch.equal(greedy, beams)
    assert len(set(greedy.flatten().tolist())) >= 8  # varied continuations
    penalties = run(**GPT2_CASES["penalties"])
    assert not torch.equal(penalties, greedy[:, :10]) and bool((penalties[:, -1] == EOS).any())  # rows end early
    returned = run(**GPT2_CASES["beams_return_2"])
    assert bool((returned[:, -1] == EOS).any())  # finished beams shorter than others, padded
    assert run(**GPT2_CASES["pad_0"])[0, -1] == 3  # pad 0: transformers fills with eos[0]
    without_min = run(max_new_tokens=12, eos_token_id=[5, EOS])
    assert bool((without_min == 5).any()) and not bool((run(**GPT2_CASES["min_new_tokens"]) == 5).any())
    assert run(**GPT2_CASES["max_length"])[:, -1].tolist() == [5, 5, 5]  # forced eos at the last place


def test_gpt2_unpadded_and_defaults(gpt2, hf_gpt2, prompts, mode):
    ids = prompts[0][:1]  # no mask: one full row
    assert_same(gpt2.generate(ids), hf_gpt2["eager"].generate(ids))  # default: 20 new tokens
    assert_same(gpt2.generate(ids[0], max_new_tokens=5), hf_gpt2["eager"].generate(ids, max_new_tokens=5))
    # no prompt at all: a batch of one bos token
    assert_same(gpt2.generate(max_new_tokens=6), hf_gpt2["eager"].generate(max_new_tokens=6))


def test_beam_scores_match_transformers(gpt2, hf_gpt2, prompts, diff, tol):
    ids, mask = prompts
    kwargs = dict(attention_mask=mask, pad_token_id=EOS, num_beams=3, num_return_sequences=2, max_new_tokens=10,
                  length_penalty=1.5, return_dict_in_generate=True, output_scores=True)
    ours, theirs = gpt2.generate(ids, **kwargs), hf_gpt2["eager"].generate(ids, **kwargs)
    assert_same(ours.sequences, theirs.sequences)
    assert diff(ours.sequences_scores, theirs.sequences_scores) <= tol
    assert len(ours.scores) == len(theirs.scores)
    assert diff(ours.beam_indices, theirs.beam_indices) == 0


def test_bart_matches_transformers(bart, hf_bart, bart_inputs, mode):
    ids, mask = bart_inputs
    # generation_config.json's defaults: 4 beams, forced bos and eos, no-repeat 3, min/max length, early stop
    assert_same(bart.generate(ids, attention_mask=mask), hf_bart.generate(ids, attention_mask=mask))
    for kwargs in (dict(num_beams=1, max_new_tokens=8, forced_bos_token_id=0),
                   dict(num_beams=1, max_new_tokens=10, no_repeat_ngram_size=0, min_length=0),
                   dict(num_beams=4, num_return_sequences=3, max_length=12, early_stopping=False,
                        repetition_penalty=2.0, decoder_start_token_id=0)):
        assert_same(bart.generate(ids, attention_mask=mask, **kwargs),
                    hf_bart.generate(ids, attention_mask=mask, **kwargs))
    out = bart.generate(ids, attention_mask=mask, num_beams=1, max_new_tokens=8, forced_bos_token_id=0)
    assert out[:, 0].tolist() == [2, 2] and out[:, 1].tolist() == [0, 0]  # decoder start, then forced bos
    assert out[:, -1].tolist() == [2, 2] and not torch.equal(out[0], out[1])  # forced eos; rows differ
    # without a mask the encoder attends to the padding, as in transformers (which infers no mask for BART)
    unmasked = bart.generate(ids, num_beams=1, max_new_tokens=8)
    assert_same(unmasked, hf_bart.generate(ids, num_beams=1, max_new_tokens=8))
    assert not torch.equal(unmasked, out)


def test_bart_legacy_config_json_settings(bart_dir, tmp_path, bart_inputs):
    """A checkpoint without generation_config.json: its config.json's decoding keys apply, as in transformers."""
    folder = tmp_path / "legacy"
    shutil.copytree(bart_dir, folder)
    settings = json.loads((folder / "generation_config.json").read_text())
    os.remove(folder / "generation_config.json")
    config = json.loads((folder / "config.json").read_text())
    config.update({k: v for k, v in settings.items() if k not in ("transformers_version", "_from_model_config")})
    config["max_length"] = 12
    (folder / "config.json").write_text(json.dumps(config))
    ours = BartForConditionalGeneration.from_pretrained(folder)
    theirs = transformers.BartForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    assert ours.generation_config.num_beams == 4 and ours.generation_config.max_length == 12
    assert ours.generation_config.to_json_string(ignore_metadata=True) == \
        theirs.generation_config.to_json_string(ignore_metadata=True)
    ids, mask = bart_inputs
    assert_same(ours.generate(ids, attention_mask=mask), theirs.generate(ids, attention_mask=mask))


# -- sampling -----------------------------------------------------------------------------------------------
SAMPLING_CASES = {
    "plain": dict(max_new_tokens=12),  # transformers' default top_k=50 applies
    "warped": dict(max_new_tokens=12, top_k=5, top_p=0.8, temperature=0.7),
    "return_3": dict(max_new_tokens=8, num_return_sequences=3, top_p=0.5, top_k=0),
    "beam_sample": dict(max_new_tokens=10, num_beams=3),
}


@pytest.mark.parametrize("case", SAMPLING_CASES)
def test_seeded_sampling_is_reproducible_and_matches_transformers(gpt2, hf_gpt2, prompts, case, mode):
    """Same seed, same tokens, and the ones transformers draws: the RNG is consumed identically (one
    multinomial over the batch per step, from the same probabilities)."""
    ids, mask = prompts
    kwargs = dict(attention_mask=mask, pad_token_id=EOS, do_sample=True, **SAMPLING_CASES[case])
    torch.manual_seed(5)
    ours = gpt2.generate(ids, **kwargs)
    torch.manual_seed(5)
    assert_same(gpt2.generate(ids, **kwargs), ours)
    torch.manual_seed(5)
    assert_same(ours, hf_gpt2["eager"].generate(ids, **kwargs))
    torch.manual_seed(6)
    assert not torch.equal(gpt2.generate(ids, **kwargs), ours)


def test_sampling_with_a_generator(gpt2, prompts):
    ids, mask = prompts
    run = lambda seed: gpt2.generate(ids, attention_mask=mask, pad_token_id=EOS, do_sample=True, max_new_tokens=10,
                                     generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_bart_sampling_matches_transformers(bart, hf_bart, bart_inputs, mode):
    ids, mask = bart_inputs
    kwargs = dict(attention_mask=mask, do_sample=True, num_beams=1, max_new_tokens=10, top_k=10)
    torch.manual_seed(7)
    ours = bart.generate(ids, **kwargs)
    torch.manual_seed(7)
    assert_same(ours, hf_bart.generate(ids, **kwargs))


# -- streaming ----------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, ids):
        self.puts.append(ids.clone())

    def end(self):
        self.ended += 1


def test_streamer_gets_prompt_then_each_token(gpt2, bart, prompts, bart_inputs):
    ids = prompts[0][:1]
    streamer = Recorder()
    out = gpt2.generate(ids, max_new_tokens=6, streamer=streamer)
    assert torch.equal(streamer.puts[0], ids) and streamer.ended == 1
    assert torch.equal(torch.cat([p.reshape(1, -1) for p in streamer.puts], dim=1), out)
    streamer = Recorder()
    out = bart.generate(bart_inputs[0][:1], num_beams=1, max_new_tokens=6, streamer=streamer)
    assert torch.equal(torch.cat([p.reshape(1, -1) for p in streamer.puts], dim=1), out)
    with pytest.raises(ValueError, match="streamer"):
        gpt2.generate(ids, num_beams=2, streamer=Recorder())


def test_text_streamer_prints_the_continuation():
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(97 + i) for i in ids)

    buf = io.StringIO()
    s = gen.TextStreamer(Tok(), file=buf)
    s.put(torch.tensor([[0, 1]]))  # the prompt: skipped
    for i in (2, 3, 4):
        s.put(torch.tensor([i]))
    s.end()
    assert buf.getvalue() == "cde\n"


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "empty"),
    (dict(input_ids=torch.zeros(1, 41, dtype=torch.long)), "41 tokens.*40 positions"),
    (dict(max_new_tokens=35), "new tokens.*40"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_beams=51), "vocabulary size"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5, do_sample=True), r"top_p must be in \(0, 1\]"),
    (dict(temperature=0.0, do_sample=True), "temperature"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(early_stopping="sometimes", num_beams=2), "early_stopping"),
    (dict(max_length=7), "max_length is 7"),
    (dict(input_ids=torch.tensor([[1, 50]])), "outside the vocabulary"),
    (dict(attention_mask=torch.ones(1, 3, dtype=torch.long)), "attention_mask"),
    (dict(eos_token_id=[]), "eos_token_id"),
])
def test_bad_input_raises_value_error(gpt2, kwargs, match):
    kwargs = {"input_ids": torch.arange(7)[None], **kwargs}
    with pytest.raises(ValueError, match=match):
        gpt2.generate(**kwargs)


def test_unsupported_settings_are_refused(gpt2):
    with pytest.raises(NotImplementedError, match="bad_words_ids"):
        gpt2.generate(torch.arange(3)[None], generation_config=GenerationConfig(bad_words_ids=[[1]]))
    with pytest.raises(NotImplementedError, match="typical_p"):
        gpt2.generate(torch.arange(3)[None], generation_config=GenerationConfig(typical_p=0.5, do_sample=True))


def test_bart_bad_input(bart):
    with pytest.raises(ValueError, match="encoder input"):
        bart.generate(None)
    with pytest.raises(ValueError, match="decoder tokens"):
        bart.generate(torch.tensor([[0, 5, 2]]), max_new_tokens=45)
    with pytest.raises(ValueError, match="num_beams"):
        bart.generate(torch.tensor([[0, 5, 2]]), num_beams=61)


# -- GenerationConfig ---------------------------------------------------------------------------------------
def test_generation_config_files_round_trip_with_transformers(gpt2_dir, bart_dir, tmp_path):
    for folder in (gpt2_dir, bart_dir):
        text = open(os.path.join(folder, "generation_config.json")).read()
        ours = GenerationConfig.from_pretrained(folder)
        ours.save_pretrained(tmp_path / "out")
        assert (tmp_path / "out" / "generation_config.json").read_text() == text  # byte for byte
        theirs = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
        assert theirs.to_dict() == {**theirs.to_dict(), **ours.to_diff_dict()}
    config = GenerationConfig(num_beams=3, top_k=7, eos_token_id=[1, 2], early_stopping="never", custom=1)
    config.save_pretrained(tmp_path / "mine")
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path / "mine")
    assert (theirs.num_beams, theirs.top_k, theirs.eos_token_id, theirs.early_stopping, theirs.custom) == \
        (3, 7, [1, 2], "never", 1)
    assert GenerationConfig.from_pretrained(tmp_path / "mine") == config
    assert not [f for f in os.listdir(tmp_path / "mine") if f.endswith(".tmp")]  # written atomically


def test_from_model_config_matches_transformers(gpt2, bart, hf_gpt2, hf_bart):
    for ours, theirs in ((gpt2, hf_gpt2["eager"]), (bart, hf_bart)):
        made = GenerationConfig.from_model_config(ours.config).to_diff_dict()
        expected = transformers.GenerationConfig.from_model_config(theirs.config).to_diff_dict()
        expected.pop("transformers_version")
        assert made == expected
    legacy = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2,
              "num_beams": 4, "max_length": 142, "early_stopping": True, "no_repeat_ngram_size": 3,
              "force_bos_token_to_be_generated": True, "vocab_size": 7, "d_model": 4}
    made = GenerationConfig.from_model_config(legacy).to_diff_dict()
    expected = transformers.GenerationConfig.from_model_config(dict(legacy)).to_diff_dict()
    expected.pop("transformers_version", None)
    assert made == expected and made["forced_bos_token_id"] == 0 and "vocab_size" not in made


def test_model_save_and_load_keep_generation_config(bart, bart_dir, tmp_path):
    assert bart.generation_config == GenerationConfig.from_pretrained(bart_dir)
    bart.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text()) == \
        json.loads(open(os.path.join(bart_dir, "generation_config.json")).read())
    theirs = transformers.BartForConditionalGeneration.from_pretrained(tmp_path)
    assert theirs.generation_config.num_beams == 4 and theirs.generation_config.forced_bos_token_id == 0


def test_generate_priority_of_settings(gpt2, prompts):
    """Call arguments > generation_config argument > the model's generation config > global defaults."""
    ids = prompts[0][:1]
    base = gpt2.generate(ids, max_new_tokens=4)
    assert base.shape == (1, 11)
    assert gpt2.generate(ids, GenerationConfig(max_new_tokens=3)).shape == (1, 10)
    assert gpt2.generate(ids, GenerationConfig(max_new_tokens=3), max_new_tokens=5).shape == (1, 12)
    saved = gpt2.generation_config
    try:
        gpt2.generation_config = GenerationConfig(max_new_tokens=2, eos_token_id=EOS)
        assert gpt2.generate(ids).shape == (1, 9)
    finally:
        gpt2.generation_config = saved


def test_generation_config_validation():
    with pytest.raises(ValueError, match="early_stopping"):
        GenerationConfig(early_stopping="yes")
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        GenerationConfig(num_beams=2, num_return_sequences=3)
    assert GenerationConfig(num_return_sequences=3, do_sample=True).num_return_sequences == 3


def test_generation_config_file_errors_name_the_file(tmp_path):
    from pretrained.configuration import ConfigError

    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text("[1]")
    with pytest.raises(ConfigError, match="generation_config.json must hold a JSON object"):
        GenerationConfig.from_pretrained(tmp_path)


# -- logits processors against transformers' ----------------------------------------------------------------
@pytest.fixture(scope="module")
def logits():
    """Random scores with ties (every value appears twice in a row) and random histories with repeats."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 30, generator=g) * 3
    scores[:, 15:] = scores[:, :15]
    ids = torch.randint(0, 30, (4, 12), generator=g)
    ids[:, 6:9] = ids[:, 0:3]  # a repeated trigram
    return ids, scores


def test_processors_match_transformers(logits):
    ids, scores = logits
    pad = torch.tensor([0, 3, 0, 11])
    cases = [
        (lambda: gen.repetition_penalty(ids, scores, 1.7), hf_lp.RepetitionPenaltyLogitsProcessor(1.7)),
        (lambda: gen.repetition_penalty(ids, scores, 0.6, pad),
         hf_lp.RepetitionPenaltyLogitsProcessor(0.6, prompt_ignore_length=pad)),
        (lambda: gen.no_repeat_ngram(ids, scores, 2), hf_lp.NoRepeatNGramLogitsProcessor(2)),
        (lambda: gen.no_repeat_ngram(ids, scores, 3), hf_lp.NoRepeatNGramLogitsProcessor(3)),
        (lambda: gen.no_repeat_ngram(ids, scores, 13), hf_lp.NoRepeatNGramLogitsProcessor(13)),
        (lambda: gen.suppress_until(ids, scores, torch.tensor([2, 9]), 13),
         hf_lp.MinLengthLogitsProcessor(13, [2, 9])),
        (lambda: gen.suppress_until(ids, scores, torch.tensor([2]), 12), hf_lp.MinLengthLogitsProcessor(12, 2)),
        (lambda: gen.force_at(ids[:, :1], scores, 4, 1), hf_lp.ForcedBOSTokenLogitsProcessor(4)),
        (lambda: gen.force_at(ids, scores, torch.tensor([2, 5]), 12),
         hf_lp.ForcedEOSTokenLogitsProcessor(13, [2, 5])),
        (lambda: gen.force_at(ids, scores, torch.tensor([2]), 11), hf_lp.ForcedEOSTokenLogitsProcessor(12, 2)),
    ]
    for k in (1, 3, 7, 29, 100):
        for keep in (1, 4):
            cases.append((lambda k=k, keep=keep: gen.top_k_filter(scores, k, keep),
                          hf_lp.TopKLogitsWarper(k, min_tokens_to_keep=keep)))
    for p in (0.05, 0.3, 0.9, 0.999, 1.0):
        for keep in (1, 3):
            cases.append((lambda p=p, keep=keep: gen.top_p_filter(scores, p, keep),
                          hf_lp.TopPLogitsWarper(p, min_tokens_to_keep=keep)))
    for ours, theirs in cases:
        head = ids[:, :1] if isinstance(theirs, hf_lp.ForcedBOSTokenLogitsProcessor) else ids
        expected = theirs(head, scores.clone())
        assert torch.equal(ours(), expected), theirs
    # every value appears twice: the top 3 are a, a, b, and b's twin is kept too
    assert int(gen.top_k_filter(scores, 3)[0].isfinite().sum()) == 4


def test_processor_pipeline_order_matches_transformers(gpt2, hf_gpt2, logits):
    """All processors at once, built from one config, give transformers' scores: same order, same maths."""
    ids, scores = logits
    settings = dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_length=13, forced_eos_token_id=[3, 4],
                    do_sample=True, temperature=0.7, top_k=9, top_p=0.8, max_length=13, eos_token_id=[2, 9])
    ours_cfg = GenerationConfig(**settings)
    ours_cfg.num_beams = 1
    procs = gen.build_processors(ours_cfg, torch.tensor([2, 9]), 13, None, torch.device("cpu"))
    theirs_cfg = transformers.GenerationConfig(**settings, num_beams=1)
    hf = hf_gpt2["eager"]
    hf._prepare_special_tokens(theirs_cfg, device="cpu")
    theirs = hf._get_logits_processor(theirs_cfg, input_ids_seq_length=ids.shape[1], device="cpu")
    assert len(procs) == len(theirs) == 7
    assert torch.equal(gen.apply_processors(procs, ids, scores), theirs(ids, scores.clone()))


# -- the command line ---------------------------------------------------------------------------------------
def _word_tokenizer(folder, size: int, special: dict[int, str], template: str | None = None) -> None:
    """A word-level tokenizer.json over the model's vocabulary: 'w0' … 'w{size-1}', special tokens named."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    vocab = {special.get(i, f"w{i}"): i for i in range(size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special.get(3, "w3")))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in special.values()])
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(special[0], 0), (special[2], 2)])
    tok.save(os.path.join(folder, "tokenizer.json"))


def test_cli_generates_from_gpt2_and_bart(gpt2_dir, bart_dir, gpt2, bart, tmp_path):
    from pretrained import cli

    folder = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, folder)
    _word_tokenizer(folder, 50, {EOS: "<|endoftext|>"})
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["run", str(folder), "w1 w2 w3", "--max-new-tokens", "6"]) == 0
    expected = gpt2.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6)[0, 3:]
    words = " ".join(f"w{i}" for i in expected.tolist() if i != EOS)
    assert buf.getvalue().splitlines()[-1] == "w1 w2 w3" + words  # streamed right after the prompt

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["run", str(folder), "w1 w2 w3", "--max-new-tokens", "5", "--do-sample", "--seed", "1",
                         "--top-k", "5", "--temperature", "0.8"]) == 0
    torch.manual_seed(1)
    expected = gpt2.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=True, top_k=5, temperature=0.8)
    assert buf.getvalue().splitlines()[-1] == "w1 w2 w3" + " ".join(
        f"w{i}" for i in expected[0, 3:].tolist() if i != EOS)

    folder = tmp_path / "bart"
    shutil.copytree(bart_dir, folder)
    _word_tokenizer(folder, 60, {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"}, "<s> $A </s>")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["run", str(folder), "w5 w6 w7 w8", "--num-beams", "2", "--no-repeat-ngram-size", "2"]) == 0
    expected = bart.generate(torch.tensor([[0, 5, 6, 7, 8, 2]]), num_beams=2, no_repeat_ngram_size=2)[0]
    assert buf.getvalue().splitlines()[-1] == " ".join(f"w{i}" for i in expected.tolist() if i > 3)


def test_cli_rejects_bad_decoding_flags(gpt2_dir, tmp_path, capsys):
    from pretrained import cli

    folder = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, folder)
    _word_tokenizer(folder, 50, {EOS: "<|endoftext|>"})
    assert cli.main(["run", str(folder), "w1", "--top-p", "1.5"]) == 1
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
