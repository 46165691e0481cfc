"""Tokenizer folders in the shapes today's chat checkpoints ship, trained small with `tokenizers`.

- `sentencepiece_bpe`: Llama-2 / TinyLlama / Mistral: a BPE over "▁"-marked pieces with byte fallback
  (<0x00>…<0xFF>), the legacy `Prepend("▁") + Replace(" ", "▁")` normalizer or the newer `first` metaspace,
  the `<s> $A` template and the Replace/ByteFallback/Fuse/Strip decoder that LlamaConverter writes.
- `byte_level_bpe`: Llama-3 (its split regex, `ignore_merges`, ByteLevel + `<|begin_of_text|> $A` template),
  Qwen2 (NFC, its split regex, a ByteLevel post-processor) and SmolLM2 (GPT-2's ByteLevel pipeline).

Each writes tokenizer.json, tokenizer_config.json (with the published chat template when asked) and a
config.json naming the model type, as transformers' AutoTokenizer reads them.
"""
from __future__ import annotations

import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TEMPLATES = os.path.join(os.path.dirname(__file__), "fixtures", "chat_templates")

TRAIN = [
    "Hello, world! This is a tiny corpus for a tiny tokenizer.",
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Héllo wörld — naïve café, ÅÉÎÕÜ àéîõü",
    "don't stop, it's fine. Isn't it? I'm sure they've gone; we're here.",
    "  multiple   spaces\tand\nnewlines\r\n",
    "numbers 12345.678, 3.14e-10 and URL https://example.com/a?b=c",
    "You are a helpful assistant. What is the capital of France? Paris is the capital of France.",
    "system user assistant tool call results",
] * 10
BYTES = [f"<0x{i:02X}>" for i in range(256)]

# The pre-tokenizer splits of Llama-3 (tiktoken's cl100k-style pattern) and Qwen2.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")


def template(name: str) -> str:
    with open(os.path.join(TEMPLATES, f"{name}.jinja"), encoding="utf-8") as f:
        return f.read()


def _write(folder, tokenizer: Tokenizer, config: dict, model_type: str | None) -> str:
    os.makedirs(folder, exist_ok=True)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    if model_type is not None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"model_type": model_type}, f)
    return str(folder)


def _trained_bpe(pre_tokenizer, special_tokens, vocab_size, **options):
    """Vocabulary and merges of a BPE trained on TRAIN with `pre_tokenizer`."""
    trainer_tokenizer = Tokenizer(models.BPE())
    trainer_tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  **options)
    trainer_tokenizer.train_from_iterator(TRAIN, trainer=trainer)
    model = json.loads(trainer_tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def sentencepiece_bpe(folder, *, legacy_normalizer: bool = True, model_type: str | None = "llama",
                      control_tokens=(), vocab_size: int = 420, **config) -> str:
    """A Llama-2-style tokenizer: ids 0-2 are <unk>, <s>, </s>, then the 256 byte tokens, then the pieces.

    The alphabet is kept small, so that accents, CJK and emoji go through byte fallback.
    """
    vocab, merges = _trained_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
                                 ["<unk>", "<s>", "</s>", *BYTES], vocab_size, limit_alphabet=45)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                     fuse_unk=True))
    if legacy_normalizer:  # Llama-2, TinyLlama, Mistral v0.1
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:  # Mistral v0.3
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>", *control_tokens])
    settings = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": False,
                "clean_up_tokenization_spaces": False, "model_max_length": 2048, "sp_model_kwargs": {}}
    settings.update(config)
    return _write(folder, tokenizer, settings, model_type)


def byte_level_bpe(folder, kind: str, *, model_type: str | None = None, vocab_size: int = 600, **config) -> str:
    """A byte-level BPE in the shape of `kind`'s tokenizer.json: "llama3", "qwen2" or "smollm2"."""
    if kind == "llama3":
        special = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        split = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    elif kind == "qwen2":
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        split = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    elif kind == "smollm2":
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        split = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        raise ValueError(kind)
    vocab, merges = _trained_bpe(split, special if kind == "smollm2" else [], vocab_size,
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=kind == "llama3",
                                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tokenizer.pre_tokenizer = split
    tokenizer.decoder = decoders.ByteLevel()
    if kind == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.add_special_tokens(special)
    if kind == "llama3":
        bos = tokenizer.token_to_id("<|begin_of_text|>")
        tokenizer.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                    "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
                    "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
                    "chat_template": template("meta-llama-Llama-3.1-8B-Instruct")}
    elif kind == "qwen2":
        tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        settings = {"tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False, "bos_token": None,
                    "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
                    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "split_special_tokens": False,
                    "clean_up_tokenization_spaces": False, "model_max_length": 131072,
                    "chat_template": template("Qwen-Qwen2.5-7B-Instruct")}
    else:
        tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
        settings = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "bos_token": "<|im_start|>",
                    "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                    "clean_up_tokenization_spaces": False, "model_max_length": 8192, "vocab_size": 49152,
                    "chat_template": template("HuggingFaceTB-SmolLM2-Instruct")}
    settings.update(config)
    return _write(folder, tokenizer, settings, model_type)
