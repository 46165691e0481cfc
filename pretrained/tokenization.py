"""AutoTokenizer: text in, the model's input ids out, the same ids transformers gives.

The tokenization itself is done by the `tokenizers` library (the Rust engine behind transformers' fast
tokenizers); this module only decides how to build that engine from a checkpoint's files and wraps it in
transformers' calling conventions (`tokenizer(texts, padding=True, return_tensors="pt")`).

Files read, in order of preference:
- `tokenizer.json`: the serialized `tokenizers` pipeline, loaded as it is;
- legacy files when there is no `tokenizer.json`: BERT WordPiece from `vocab.txt`, or byte-level BPE
  (GPT-2, RoBERTa, BART) from `vocab.json` + `merges.txt`, built the way transformers builds them;
- `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` for special tokens, added
  tokens, `model_max_length`, `padding_side` and `truncation_side`; `config.json` only to learn `model_type`,
  which decides the conventions where transformers lets it (a Mistral checkpoint reads its tokenizer.json as
  it is, a Qwen2 checkpoint always follows Qwen2's);
- the chat template: `chat_template.jinja` (and named templates in `additional_chat_templates/`), else
  tokenizer_config.json's `chat_template` (a string, or a list of named templates).

Like transformers 5, the Llama and Qwen2 tokenizer classes rebuild the text pipeline around tokenizer.json's
vocabulary: Llama (Llama-2, TinyLlama, Mistral under a `llama` model type) gets a `▁` metaspace pre-tokenizer
whose prepend scheme follows `legacy` and `add_prefix_space`, Qwen2 its NFC + split-regex + byte-level pipeline.
With a tokenizer.json the special-token template is the file's own post-processor: tokenizer_config.json's
`add_bos_token` / `add_eos_token` only apply to legacy files, or when passed to `from_pretrained`.

torch and numpy are imported only when `return_tensors` asks for them.
"""
from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import tokenizers
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece

from .atomic import atomic_write
from .hub import Source, pop_hub_options

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # named templates, NAME.jinja

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# transformers' "no limit" for model_max_length, and the bound above which a length counts as "no limit".
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
TENSOR_TYPES = ("pt", "np")
# Only asked for to explain a failure: this library reads SentencePiece models through tokenizer.json only.
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")

# Keys of tokenizer_config.json that from_pretrained also accepts as keyword overrides.
CONFIG_OVERRIDES = SPECIAL_TOKEN_NAMES + (
    "additional_special_tokens", "extra_special_tokens", "model_max_length", "padding_side", "truncation_side",
    "model_input_names", "clean_up_tokenization_spaces", "do_lower_case", "strip_accents",
    "tokenize_chinese_chars", "add_prefix_space", "trim_offsets", "add_bos_token", "add_eos_token", "legacy",
    "chat_template",
)


@dataclass(frozen=True)
class Family:
    """How one kind of checkpoint's tokenizer is built from legacy files, and what it returns by default."""

    name: str                      # "bert", "gpt2", "roberta", or "generic" (tokenizer.json only)
    class_name: str                # transformers' class, written to tokenizer_config.json on save
    model_input_names: tuple
    special_tokens: dict           # default named special tokens, overridden by the config files
    padding_side: str = "right"    # transformers' class default, used when no file sets one


BERT = Family("bert", "BertTokenizer", ("input_ids", "token_type_ids", "attention_mask"),
              {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]"})
DISTILBERT = Family("bert", "DistilBertTokenizer", ("input_ids", "attention_mask"), BERT.special_tokens)
GPT2 = Family("gpt2", "GPT2Tokenizer", ("input_ids", "attention_mask"),
              {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
ROBERTA = Family("roberta", "RobertaTokenizer", ("input_ids", "attention_mask"),
                 {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                  "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"})
# SentencePiece-style BPE with byte fallback (Llama-2, TinyLlama, Mistral v0.1-v0.3, CodeLlama's base).
LLAMA = Family("llama", "LlamaTokenizer", ("input_ids", "attention_mask"),
               {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}, padding_side="left")
QWEN2 = Family("qwen2", "Qwen2Tokenizer", ("input_ids", "attention_mask"),
               {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
GENERIC = Family("generic", "PreTrainedTokenizerFast", ("input_ids", "attention_mask"), {})

# tokenizer_config.json's `tokenizer_class` (without "Fast") -> family, as transformers resolves it.
FAMILY_BY_CLASS = {"BertTokenizer": BERT, "ElectraTokenizer": BERT, "DistilBertTokenizer": DISTILBERT,
                   "GPT2Tokenizer": GPT2, "RobertaTokenizer": ROBERTA, "BartTokenizer": ROBERTA,
                   "LlamaTokenizer": LLAMA, "Qwen2Tokenizer": QWEN2}
# config.json's `model_type` -> family, used when tokenizer_config.json names no class.
FAMILY_BY_MODEL_TYPE = {"bert": BERT, "distilbert": DISTILBERT, "electra": BERT, "gpt2": GPT2, "gpt_neo": GPT2,
                        "opt": GPT2, "roberta": ROBERTA, "bart": ROBERTA, "qwen2": QWEN2, "qwen3": QWEN2,
                        "mistral": GENERIC, "mixtral": GENERIC}
# Model types whose registered tokenizer transformers 5 uses whatever tokenizer_config.json says: Qwen2 (its
# Hub configs name wrong classes), and Mistral, whose files are read as they are.
FAMILY_FORCED_BY_MODEL_TYPE = {"qwen2": QWEN2, "mistral": GENERIC, "mixtral": GENERIC}
# Qwen2's pre-tokenizer split (transformers' PRETOKENIZE_REGEX for Qwen2Tokenizer).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


# ----------------------------------------------------------------------------------------------------------
# BatchEncoding


class BatchEncoding(dict):
    """The tokenizer's output: a dict of model inputs with attribute access (`enc.input_ids`).

    Pass it straight to a model (`model(**enc)`). `enc.encodings` keeps the `tokenizers.Encoding` of each row,
    and `enc[0]` (an int key) returns the first one.
    """

    def __init__(self, data=None, encodings=None, tensor_type=None):
        super().__init__(data or {})
        self.encodings = encodings
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getitem__(self, key):
        if isinstance(key, int):
            if self.encodings is None:
                raise KeyError(f"no encodings kept for index {key}: index by name, e.g. enc['input_ids']")
            return self.encodings[key]
        return super().__getitem__(key)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"'BatchEncoding' has no field '{name}' (fields: {', '.join(self)})") from None

    def convert_to_tensors(self, tensor_type: str) -> "BatchEncoding":
        """Turn every list value into a `torch.Tensor` ("pt") or `numpy.ndarray` ("np"), in place."""
        if tensor_type not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={tensor_type!r} is not supported; use one of {TENSOR_TYPES} or None")
        if tensor_type == "pt":
            import torch

            as_tensor = torch.tensor
        else:
            import numpy as np

            as_tensor = np.asarray
        for key, value in self.items():
            if isinstance(value, list) and value and isinstance(value[0], (list, tuple)):
                lengths = sorted({len(row) for row in value})
                if len(lengths) > 1:
                    raise ValueError(
                        f"cannot make a tensor of '{key}': its rows have different lengths ({lengths[0]} to "
                        f"{lengths[-1]} tokens); pass padding=True (and truncation=True for over-long texts)")
            self[key] = as_tensor(value)
        return self

    def to(self, device) -> "BatchEncoding":
        """Move every tensor to `device` (a string, an int or a `torch.device`), in place; returns self."""
        for key, value in self.items():
            if hasattr(value, "to") and callable(value.to):
                self[key] = value.to(device)
        return self

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of row `batch_index`."""
        return self[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of row `batch_index`, the index of the word it came from (None for special tokens)."""
        return self[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of row `batch_index`, 0 or 1 for the first or second text, None for special tokens."""
        return self[batch_index].sequence_ids


# ----------------------------------------------------------------------------------------------------------
# Special-token attributes


class _SpecialToken:
    """`tokenizer.cls_token`: the token's string (None when the tokenizer has none); settable."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, tokenizer, owner=None):
        if tokenizer is None:
            return self
        token = tokenizer._special[self.name]
        return None if token is None else str(token)

    def __set__(self, tokenizer, value):
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise TypeError(f"{self.name} must be a str, an AddedToken or None, not {type(value).__name__}")
        tokenizer._special[self.name] = value


class _SpecialTokenId:
    """`tokenizer.cls_token_id`: the id of the matching special token, None when the tokenizer has none."""

    def __init__(self, token_name):
        self.token_name = token_name

    def __get__(self, tokenizer, owner=None):
        if tokenizer is None:
            return self
        token = getattr(tokenizer, self.token_name)
        return None if token is None else tokenizer.convert_tokens_to_ids(token)


# ----------------------------------------------------------------------------------------------------------
# The tokenizer


class Tokenizer:
    """A `tokenizers.Tokenizer` with transformers' calling conventions and the checkpoint's special tokens.

    Build one with `AutoTokenizer.from_pretrained`, or directly from a `tokenizers.Tokenizer`.

    Args:
        backend: the `tokenizers.Tokenizer` that does the work; its padding and truncation settings are kept
            only for `save_pretrained`, each call sets its own.
        model_input_names: the fields a call returns by default, e.g. ("input_ids", "attention_mask").
        model_max_length: the longest input the model takes; `truncation=True` cuts to it.
        padding_side, truncation_side: "right" or "left".
        clean_up_tokenization_spaces: `decode` removes spaces before punctuation (WordPiece vocabularies only).
        name_or_path: where the tokenizer came from, for repr and errors.
        tokenizer_class: the transformers class name written on save.
        config: the tokenizer_config.json settings it came from; keys this class does not use (such as
            `do_lower_case`) are written back on save.
        bos_token … mask_token: the named special tokens (str or AddedToken), None when absent.
        additional_special_tokens: further special tokens, skipped by `decode(skip_special_tokens=True)`.
        chat_template: the Jinja chat template (a string), or named templates ({"default": ..., "tool_use": ...},
            or tokenizer_config.json's list of {"name", "template"}); None for a tokenizer without one.

    Special tokens the backend does not have as added tokens yet are added to it, as special tokens, so that
    they are matched whole in text and skipped by `skip_special_tokens`.
    """

    bos_token = _SpecialToken()
    eos_token = _SpecialToken()
    unk_token = _SpecialToken()
    sep_token = _SpecialToken()
    pad_token = _SpecialToken()
    cls_token = _SpecialToken()
    mask_token = _SpecialToken()
    bos_token_id = _SpecialTokenId("bos_token")
    eos_token_id = _SpecialTokenId("eos_token")
    unk_token_id = _SpecialTokenId("unk_token")
    sep_token_id = _SpecialTokenId("sep_token")
    pad_token_id = _SpecialTokenId("pad_token")
    cls_token_id = _SpecialTokenId("cls_token")
    mask_token_id = _SpecialTokenId("mask_token")

    def __init__(self, backend: tokenizers.Tokenizer, *, model_input_names=("input_ids", "attention_mask"),
                 model_max_length: int = VERY_LARGE_INTEGER, padding_side: str = "right",
                 truncation_side: str = "right", clean_up_tokenization_spaces: bool = False,
                 name_or_path: str = "", tokenizer_class: str = GENERIC.class_name, config: dict | None = None,
                 bos_token=None, eos_token=None, unk_token=None, sep_token=None, pad_token=None, cls_token=None,
                 mask_token=None, additional_special_tokens=(), chat_template=None):
        for name, value in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if value not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
        self._backend = backend
        # The file's own padding / truncation, restored on save; calls set their own and clear them after.
        self._saved_padding = backend.padding
        self._saved_truncation = backend.truncation
        backend.no_padding()
        backend.no_truncation()
        self.model_input_names = list(model_input_names)
        self.model_max_length = _checked_max_length(model_max_length, name_or_path)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.name_or_path = name_or_path
        self.tokenizer_class = tokenizer_class
        self.config = dict(config or {})
        self._special = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        for name, value in zip(SPECIAL_TOKEN_NAMES, (bos_token, eos_token, unk_token, sep_token, pad_token,
                                                      cls_token, mask_token)):
            setattr(self, name, value)
        self.additional_special_tokens = list(additional_special_tokens)
        self.chat_template = _check_chat_template(chat_template)
        present = {token.content for token in backend.get_added_tokens_decoder().values()}
        for token in [t for t in self._special.values() if t is not None] + self.additional_special_tokens:
            token = _special_added_token(token)
            if token.content not in present:
                backend.add_special_tokens([token])
                present.add(token.content)
        self._warned_too_long = False

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> "Tokenizer":
        """Load the tokenizer of a local folder or a Hub repo; see `AutoTokenizer.from_pretrained`."""
        source = Source(name_or_path, **pop_hub_options(kwargs))
        kwargs.pop("use_fast", None)  # transformers' switch; this tokenizer is always the fast one
        unknown = sorted(set(kwargs) - set(CONFIG_OVERRIDES))
        if unknown:
            raise TypeError(f"from_pretrained() got unknown option(s) {', '.join(unknown)}; tokenizer options "
                            f"are {', '.join(CONFIG_OVERRIDES)}, download options are revision, cache_dir, "
                            f"token, local_files_only, force_download, subfolder")
        config = read_tokenizer_config(source)
        settings = {**config, **kwargs}
        backend, family, from_json = build_backend(source, pick_family(source, settings), settings)
        special = resolve_special_tokens(family, settings, backend)
        register_added_tokens(backend, source, settings, special, from_json)
        padding, truncation = backend.padding or {}, backend.truncation or {}
        tokenizer = cls(
            backend,
            model_input_names=settings.get("model_input_names") or family.model_input_names,
            model_max_length=settings.get("model_max_length", settings.get("max_len")),
            padding_side=settings.get("padding_side") or padding.get("direction", family.padding_side),
            truncation_side=settings.get("truncation_side") or truncation.get("direction", "right"),
            clean_up_tokenization_spaces=settings.get("clean_up_tokenization_spaces", False),
            name_or_path=source.name_or_path,
            tokenizer_class=_class_name_to_save(config.get("tokenizer_class"), family),
            config=settings,
            additional_special_tokens=special.pop("additional_special_tokens"),
            chat_template=kwargs.get("chat_template") if "chat_template" in kwargs
            else read_chat_template(source, config),
            **special,
        )
        if not from_json:
            backend.post_processor = legacy_post_processor(family, settings, tokenizer)
        elif {"add_bos_token", "add_eos_token"} & set(kwargs) or backend.post_processor is None:
            # transformers ignores these two keys of tokenizer_config.json when there is a tokenizer.json, and
            # rebuilds the template from the ones passed here (or when the file has no post-processor).
            backend.post_processor = bos_eos_post_processor(tokenizer, bool(kwargs.get("add_bos_token")),
                                                            bool(kwargs.get("add_eos_token")))
        return tokenizer

    # ---- vocabulary -------------------------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> tokenizers.Tokenizer:
        """The `tokenizers.Tokenizer` doing the work."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id for the whole vocabulary, added tokens included."""
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """Id -> AddedToken for the tokens added on top of the model's vocabulary."""
        return self._backend.get_added_tokens_decoder()

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, e.g. {"cls_token": "[CLS]", …}."""
        return {name: str(value) for name, value in self._special.items() if value is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token as a string, named ones first, without repeats."""
        tokens = [str(t) for t in self._special.values() if t is not None]
        tokens += [str(t) for t in self.additional_special_tokens]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of `all_special_tokens`."""
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Id of a token (or ids of a list of tokens); unknown tokens give `unk_token_id` (None without one)."""
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            if index is None and self.unk_token is not None:
                index = self._backend.token_to_id(self.unk_token)
            return index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Token of an id (or tokens of a sequence of ids), optionally leaving out special tokens."""
        ids = _as_python(ids)
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def add_tokens(self, tokens, special_tokens: bool = False) -> int:
        """Add tokens (str or AddedToken) to the vocabulary; returns how many were new."""
        tokens = [tokens] if isinstance(tokens, (str, AddedToken)) else list(tokens)
        if special_tokens:
            return self._backend.add_special_tokens(tokens)
        return self._backend.add_tokens(tokens)

    def add_special_tokens(self, special_tokens: dict) -> int:
        """Set named special tokens (`{"pad_token": "<pad>"}`) or `additional_special_tokens`, adding them to
        the vocabulary; returns how many tokens were new."""
        added = 0
        for name, value in special_tokens.items():
            if name in ("additional_special_tokens", "extra_special_tokens"):
                values = list(value)
                self.additional_special_tokens += [t for t in values if str(t) not in self.all_special_tokens]
            elif name in SPECIAL_TOKEN_NAMES:
                setattr(self, name, value)
                values = [value]
            else:
                raise ValueError(f"unknown special token name {name!r}; use one of {SPECIAL_TOKEN_NAMES} "
                                 f"or 'additional_special_tokens'")
            added += self._backend.add_special_tokens([_special_added_token(t) for t in values])
        return added

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens `add_special_tokens=True` adds to one text (or a pair)."""
        return self._backend.num_special_tokens_to_add(pair)

    # ---- encoding ---------------------------------------------------------------------------------------

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, padding=False,
                 truncation=None, max_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False) -> BatchEncoding:
        """Tokenize a text, a batch of texts, or pairs, into the model's inputs.

        Args:
            text: a str, a list of str, or a list of (str, str) pairs; with `is_split_into_words`, a list of
                words or a list of such lists.
            text_pair: the second text(s) of each pair, in the same shape as `text`.
            padding: False / "do_not_pad", True / "longest" (to the longest row), or "max_length".
            truncation: True / "longest_first", "only_first", "only_second", or False / "do_not_truncate";
                cuts to `max_length`, else to `model_max_length`. `max_length` alone turns it on.
            stride: with `return_overflowing_tokens`, how many tokens consecutive windows share.
            return_tensors: "pt", "np", or None for Python lists.
            return_token_type_ids, return_attention_mask: default to whether `model_input_names` has them.

        Returns:
            A BatchEncoding with `input_ids` and the requested fields; one row per text (and per overflow
            window), or a flat list for a single text without `return_tensors`.

        Raises:
            TypeError: a text that is not a string.
            ValueError: an unknown strategy, padding without a pad token, or an impossible truncation.
        """
        batch, is_batched = _as_batch(text, text_pair, is_split_into_words)
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        if padding_side is not None and padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        backend = self._backend
        try:
            if truncation != "do_not_truncate":
                backend.enable_truncation(max_length, stride=stride, strategy=truncation,
                                          direction=self.truncation_side)
            if padding != "do_not_pad":
                backend.enable_padding(direction=padding_side or self.padding_side, pad_id=self.pad_token_id,
                                       pad_type_id=0, pad_token=self.pad_token, pad_to_multiple_of=pad_to_multiple_of,
                                       length=max_length if padding == "max_length" else None)
            try:
                encodings = backend.encode_batch(batch, add_special_tokens=add_special_tokens,
                                                 is_pretokenized=is_split_into_words)
            except Exception as error:  # tokenizers raises a bare Exception
                if str(error).startswith("Truncation error"):
                    raise ValueError(f"cannot truncate to max_length={max_length} with strategy "
                                     f"'{truncation}': {error}") from None
                raise
        finally:
            backend.no_padding()
            backend.no_truncation()

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        rows, sample = [], []
        for index, encoding in enumerate(encodings):
            windows = [encoding] + (encoding.overflowing if return_overflowing_tokens else [])
            rows += windows
            sample += [index] * len(windows)
        fields = {"input_ids": [e.ids for e in rows]}
        if return_token_type_ids:
            fields["token_type_ids"] = [e.type_ids for e in rows]
        if return_attention_mask:
            fields["attention_mask"] = [e.attention_mask for e in rows]
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = [e.special_tokens_mask for e in rows]
        if return_offsets_mapping:
            fields["offset_mapping"] = [e.offsets for e in rows]
        if return_length:
            fields["length"] = [len(e.ids) for e in rows]
        if return_overflowing_tokens:
            fields["overflow_to_sample_mapping"] = sample
        self._warn_if_too_long(fields["input_ids"], truncation)

        if not is_batched and return_tensors is None and not return_overflowing_tokens:
            # One text: drop the batch level of the per-token fields; `length` stays a list, as transformers has it.
            return BatchEncoding({key: value[0] if key != "length" else value for key, value in fields.items()},
                                 rows)
        return BatchEncoding(fields, rows, tensor_type=return_tensors)

    def encode(self, text, text_pair=None, *, add_special_tokens: bool = True, **kwargs) -> list[int]:
        """The input ids of one text (or pair); keyword arguments as in `__call__`."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The token strings of one text (or pair), without special tokens unless asked."""
        return self(text, pair, add_special_tokens=add_special_tokens)[0].tokens

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """Resolve transformers' padding / truncation arguments to tokenizers' strategy names and a length."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True  # transformers: max_length alone turns truncation on
        padding = {True: "longest", False: "do_not_pad", None: "do_not_pad"}.get(padding, padding)
        truncation = {True: "longest_first", False: "do_not_truncate", None: "do_not_truncate"}.get(
            truncation, truncation)
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding={padding!r} is not supported; use True, False or one of {PADDING_STRATEGIES}")
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation={truncation!r} is not supported; use True, False or one of "
                             f"{TRUNCATION_STRATEGIES}")
        if max_length is None:
            no_limit = self.model_max_length > LARGE_INTEGER
            if padding == "max_length":
                padding = "do_not_pad" if no_limit else padding
            if truncation != "do_not_truncate":
                truncation = "do_not_truncate" if no_limit else truncation
            max_length = None if no_limit else self.model_max_length
        if padding != "do_not_pad" and (self.pad_token is None or self.pad_token_id is None):
            raise ValueError(
                f"padding={padding!r} needs a pad token, and the tokenizer of {self.name_or_path or 'this model'} "
                f"has none; set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`, or add one with "
                f"`tokenizer.add_special_tokens({{'pad_token': '[PAD]'}})`")
        if (truncation != "do_not_truncate" and padding != "do_not_pad" and pad_to_multiple_of
                and max_length is not None and max_length % pad_to_multiple_of):
            raise ValueError(f"truncation length {max_length} is not a multiple of pad_to_multiple_of "
                             f"{pad_to_multiple_of}")
        return padding, truncation, max_length

    def _warn_if_too_long(self, rows, truncation):
        if truncation != "do_not_truncate" or self._warned_too_long or self.model_max_length > LARGE_INTEGER:
            return
        longest = max((len(row) for row in rows), default=0)
        if longest > self.model_max_length:
            self._warned_too_long = True
            logger.warning("Token indices sequence length is longer than the specified maximum sequence length "
                           "for this model (%d > %d). Running this sequence through the model will result in "
                           "indexing errors; pass truncation=True to cut it.", longest, self.model_max_length)

    # ---- decoding ---------------------------------------------------------------------------------------

    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str | list[str]:
        """Text of a sequence of ids (list, tensor or array); a batch of sequences gives a list of texts."""
        token_ids = _as_python(token_ids)
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self._decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in token_ids]
        return self._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """Texts of a batch of id sequences."""
        return [self._decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
                for ids in _as_python(sequences)]

    def _decode(self, token_ids, skip_special_tokens, clean_up_tokenization_spaces) -> str:
        token_ids = _as_python(token_ids)
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self._backend.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        # The clean-up removes spaces before punctuation, which WordPiece decoding adds but byte-level BPE
        # keeps from the text itself; transformers skips it for BPE too.
        if clean_up_tokenization_spaces and type(self._backend.model).__name__ != "BPE":
            text = clean_up_tokenization(text)
        return text

    # ---- chat templates ---------------------------------------------------------------------------------

    def get_chat_template(self, chat_template: str | None = None, tools: list | None = None) -> str:
        """The template `apply_chat_template` renders: `chat_template` itself, or the named one of several
        (without a name: "tool_use" when tools are given and it exists, else "default"), else the tokenizer's.

        Raises:
            ValueError: no template at all, or several named ones and none picked.
        """
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None:
                return templates.get(chat_template, chat_template)
            if tools is not None and "tool_use" in templates:
                return templates["tool_use"]
            if "default" in templates:
                return templates["default"]
            raise ValueError(f"the tokenizer of {self.name_or_path or 'this model'} has several chat templates "
                             f"and none is the default: pass chat_template= one of {sorted(templates)}")
        if chat_template is not None:
            return chat_template
        if templates is None:
            raise ValueError(f"the tokenizer of {self.name_or_path or 'this model'} has no chat template (no "
                             f"chat_template.jinja, no \"chat_template\" in tokenizer_config.json): set "
                             f"`tokenizer.chat_template`, or pass chat_template= a Jinja template")
        return templates

    def apply_chat_template(self, conversation, tools: list | None = None, documents: list | None = None,
                            chat_template: str | None = None, add_generation_prompt: bool = False,
                            continue_final_message: bool | str = False, tokenize: bool = True, padding=False,
                            truncation: bool = False, max_length: int | None = None,
                            return_tensors: str | None = None, return_dict: bool = True,
                            return_assistant_tokens_mask: bool = False, tokenizer_kwargs: dict | None = None,
                            **kwargs):
        """Render a conversation with the chat template, as transformers 5 does, and tokenize it.

        The template runs in jinja2's immutable sandbox with transformers' settings (trim_blocks, lstrip_blocks,
        loop controls, `{% generation %}`), globals (`raise_exception`, `strftime_now`, `namespace`, `dict`) and
        `tojson` filter; it sees `messages`, `tools`, `documents`, `add_generation_prompt`, the named special
        tokens (`bos_token`, `eos_token`, …) and every extra keyword argument (e.g. `date_string=`,
        `enable_thinking=`).

        Args:
            conversation: a list of messages (dicts with "role" and "content"), or a batch of such lists.
            tools: JSON schemas of the functions the model may call (dicts).
            documents: retrieval documents (dicts, usually with "title" and "text").
            chat_template: a template, or the name of one of the tokenizer's templates.
            add_generation_prompt: end with the header that opens the assistant's reply.
            continue_final_message: leave the last message open, so that the model continues it (True, or the
                name of the field to continue, e.g. "reasoning_content"). Excludes add_generation_prompt.
            tokenize: False returns the rendered text.
            padding, truncation, max_length, return_tensors, tokenizer_kwargs: passed to the tokenizer call
                (which adds no special tokens: the template writes them).
            return_dict: True returns the tokenizer's BatchEncoding, False only the input ids.
            return_assistant_tokens_mask: add `assistant_masks`, 1 on the tokens the template's
                `{% generation %}` blocks produced.

        Returns:
            The text (a list of texts for a batch), the ids, or a BatchEncoding.

        Raises:
            ImportError: jinja2 is not installed (`pip install "pretrained[chat]"`).
            ValueError: no template, an empty conversation, a message without a role or content, conflicting
                options.
            ChatTemplateError: the template does not compile, or fails while rendering (with its own message,
                e.g. the one it passes to `raise_exception`).
        """
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (return_dict and tokenize):
            raise ValueError("return_assistant_tokens_mask=True needs return_dict=True and tokenize=True")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt exclude each other: continue the "
                             "last message, or open a new assistant message")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message does not go with return_assistant_tokens_mask")
        template = self.get_chat_template(chat_template, tools)
        conversations, is_batched = _as_conversations(conversation)
        rendered, spans = render_chat_template(
            template, conversations, tools=tools, documents=documents,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            track_generation=return_assistant_tokens_mask, where=self.name_or_path or "this tokenizer",
            variables={**self.special_tokens_map, **kwargs})
        text = rendered if is_batched else rendered[0]
        if not tokenize:
            return text
        out = self(text, padding=padding, truncation=truncation, max_length=max_length, add_special_tokens=False,
                   return_tensors=return_tensors, **(tokenizer_kwargs or {}))
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            masks = [_span_mask(encoding.offsets, row_spans) for encoding, row_spans in zip(out.encodings, spans)]
            if return_tensors:
                masks = BatchEncoding({"assistant_masks": masks}, tensor_type=return_tensors)["assistant_masks"]
            out["assistant_masks"] = masks if (is_batched or return_tensors) else masks[0]
        return out

    # ---- saving -----------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, which transformers reads, and
        the chat template as transformers 5 writes it (chat_template.jinja, named ones in additional_chat_templates/).

        tokenizer.json keeps the padding and truncation settings it was loaded with, whatever the calls since
        asked for; each file is written atomically.

        Returns:
            The paths written.
        """
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_pretrained needs a directory, and '{save_directory}' is a file")
        os.makedirs(save_directory, exist_ok=True)

        backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
        if self._saved_truncation:
            backend.enable_truncation(**self._saved_truncation)
        if self._saved_padding:
            backend.enable_padding(**self._saved_padding)
        tokenizer_file = os.path.join(save_directory, TOKENIZER_FILE)
        atomic_write(tokenizer_file, backend.to_str(pretty=True).encode("utf-8"))

        config = {key: value for key, value in self.config.items() if key not in _NOT_SAVED}
        config.update(self.special_tokens_map)
        if self.additional_special_tokens:
            config["additional_special_tokens"] = [str(t) for t in self.additional_special_tokens]
        config.update(tokenizer_class=self.tokenizer_class, model_max_length=self.model_max_length,
                      padding_side=self.padding_side, truncation_side=self.truncation_side,
                      model_input_names=self.model_input_names,
                      clean_up_tokenization_spaces=self.clean_up_tokenization_spaces)
        config["added_tokens_decoder"] = {str(index): _added_token_dict(token)
                                          for index, token in sorted(self.added_tokens_decoder.items())}
        template_files = write_chat_templates(save_directory, self.chat_template)
        config_file = os.path.join(save_directory, TOKENIZER_CONFIG_FILE)
        special_file = os.path.join(save_directory, SPECIAL_TOKENS_MAP_FILE)
        special_map = dict(self.special_tokens_map)
        if self.additional_special_tokens:
            special_map["additional_special_tokens"] = config["additional_special_tokens"]
        for path, content in ((config_file, config), (special_file, special_map)):
            atomic_write(path, (json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
        return (config_file, special_file, tokenizer_file, *template_files)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, class={self.tokenizer_class}, "
                f"vocab_size={self.vocab_size}, added_tokens={len(self) - self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"truncation_side={self.truncation_side!r}, special_tokens={self.special_tokens_map})")


# Keys of a loaded tokenizer_config.json that save_pretrained rewrites or drops (file paths, private data).
_NOT_SAVED = {"name_or_path", "tokenizer_file", "vocab_file", "merges_file", "special_tokens_map_file",
              "added_tokens_decoder", "additional_special_tokens", "extra_special_tokens", "auto_map",
              "chat_template"}


class AutoTokenizer:
    """Loads the tokenizer of any checkpoint: `AutoTokenizer.from_pretrained("bert-base-uncased")`."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(name_or_folder)")

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> Tokenizer:
        """Load a tokenizer from a local folder or a Hub repo id, downloading only tokenizer files.

        Args:
            name_or_path: a folder, or a Hub id such as `bert-base-uncased`.
            revision, cache_dir, token, local_files_only, force_download, subfolder: download options.
            **kwargs: tokenizer_config.json values to override, e.g. `padding_side="left"`,
                `pad_token="<pad>"`, `model_max_length=128`.

        Raises:
            FileNotFoundError: the folder or repo has no tokenizer files.
            ValueError: a corrupt tokenizer file, or legacy BPE files whose conventions cannot be told.
            TypeError: an unknown option.
        """
        return Tokenizer.from_pretrained(name_or_path, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Loading steps


def _checked_max_length(value, where: str) -> int:
    """model_max_length as an int: a positive integer (a float only when whole, as 1e30 is written), else
    ValueError naming the value."""
    if value is None:
        return VERY_LARGE_INTEGER
    whole_float = isinstance(value, float) and math.isfinite(value) and value == int(value)
    if isinstance(value, bool) or not (isinstance(value, int) or whole_float) or value <= 0:
        raise ValueError(f"model_max_length={value!r} (tokenizer_config.json of {where or 'the tokenizer'}) must be a "
                         f"positive integer")
    return int(value)


def check_unknown_token(backend: tokenizers.Tokenizer, path: str) -> None:
    """A WordPiece vocabulary must hold its unknown token: without it, any word it cannot split fails later
    with a bare error that names no file."""
    model = backend.model
    unk = getattr(model, "unk_token", None) if isinstance(model, WordPiece) else None
    if unk is not None and backend.token_to_id(unk) is None:
        raise ValueError(f"'{path}' has no unknown token {unk!r} in its vocabulary; add it (WordPiece needs it "
                         f"for words it cannot split) or set unk_token in tokenizer_config.json")


def read_json(path: str, what: str) -> dict:
    """Read a JSON object from `path`; a parse error names the file and `what` it should hold."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} '{path}' is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{what} '{path}' is nested too deeply (a JSON array or object inside thousands of "
                         f"others)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} '{path}' should hold a JSON object, found {type(data).__name__}")
    return data


def read_tokenizer_config(source: Source) -> dict:
    """tokenizer_config.json merged with special_tokens_map.json, as transformers merges them.

    special_tokens_map.json wins over tokenizer_config.json, except when tokenizer_config.json carries an
    `added_tokens_decoder` (written since transformers 4.34), which makes the map a stale copy.
    """
    path = source.file(TOKENIZER_CONFIG_FILE)
    config = read_json(path, "tokenizer config") if path else {}
    path = source.file(SPECIAL_TOKENS_MAP_FILE)
    if path and "added_tokens_decoder" not in config:
        for key, value in read_json(path, "special tokens map").items():
            if key in SPECIAL_TOKEN_NAMES or key in ("additional_special_tokens", "extra_special_tokens"):
                config[key] = value
    return config


def pick_family(source: Source, settings: dict) -> Family:
    """The family from tokenizer_config's `tokenizer_class`, else from config.json's `model_type`.

    As transformers 5 resolves it: a model type with a forced tokenizer (Qwen2; Mistral, whose tokenizer.json is
    read as it is) wins over the named class. config.json is read only where it can change the answer: no class,
    a Llama class, or the generic PreTrainedTokenizerFast / TokenizersBackend.
    """
    class_name = (settings.get("tokenizer_class") or "").removesuffix("Fast")
    family = FAMILY_BY_CLASS.get(class_name, GENERIC)
    if class_name and family not in (LLAMA, GENERIC):
        return family
    path = source.file("config.json")
    model_type = read_json(path, "model config").get("model_type") if path else None
    if model_type in FAMILY_FORCED_BY_MODEL_TYPE:
        return FAMILY_FORCED_BY_MODEL_TYPE[model_type]
    if class_name:
        return family
    return FAMILY_BY_MODEL_TYPE.get(model_type, GENERIC)


def build_backend(source: Source, family: Family, settings: dict) -> tuple[tokenizers.Tokenizer, Family, bool]:
    """The `tokenizers.Tokenizer` from tokenizer.json, else from the legacy vocabulary files.

    Returns:
        The backend; the family, which is BERT for a bare vocab.txt (only BERT-style models ship one); and
        whether the backend came from tokenizer.json.
    """
    path = source.file(TOKENIZER_FILE)
    if path:
        try:
            backend = tokenizers.Tokenizer.from_file(path)
        except Exception as error:  # tokenizers raises a bare Exception for any bad file
            raise ValueError(f"{source}: '{path}' is not a valid tokenizer.json ({error}); delete it to fall "
                             f"back on the vocabulary files, or re-save the tokenizer") from None
        if family is LLAMA and _mentions_byte_level(path):
            family = GENERIC  # a byte-level tokenizer.json under a Llama class name: read as it is
        apply_config_to_json_backend(backend, family, settings)
        check_unknown_token(backend, path)
        return backend, family, True

    vocab_txt = source.file("vocab.txt") if family.name in ("bert", "generic") else None
    if vocab_txt:
        return wordpiece_backend(vocab_txt, settings), (BERT if family is GENERIC else family), False
    vocab_json = source.file("vocab.json") if family.name != "bert" else None
    merges = source.file("merges.txt") if vocab_json else None
    if vocab_json and merges:
        if family.name not in ("gpt2", "roberta", "qwen2"):
            raise ValueError(
                f"{source} has byte-level BPE files (vocab.json, merges.txt) but nothing says whose conventions "
                f"they follow; set \"tokenizer_class\" in tokenizer_config.json to GPT2Tokenizer, "
                f"RobertaTokenizer (BART uses RobertaTokenizer) or Qwen2Tokenizer, or \"model_type\" in "
                f"config.json")
        backend = byte_level_bpe_backend(vocab_json, merges, settings)
        if family is QWEN2:
            apply_config_to_json_backend(backend, family, settings)
        return backend, family, False
    wanted = {"bert": "vocab.txt", "gpt2": "vocab.json + merges.txt", "roberta": "vocab.json + merges.txt",
              "qwen2": "vocab.json + merges.txt", "llama": "tokenizer.json",
              "generic": "vocab.txt, or vocab.json + merges.txt"}[family.name]
    missing = " (it has vocab.json but no merges.txt)" if vocab_json else ""
    sentencepiece = next((name for name in SENTENCEPIECE_FILES if source.file(name)), None)
    if sentencepiece:
        missing = f" that this library reads (it has {sentencepiece}; SentencePiece models need a tokenizer.json)"
    raise FileNotFoundError(f"{source} has no tokenizer files{missing}: looked for tokenizer.json, then {wanted}")


def apply_config_to_json_backend(backend: tokenizers.Tokenizer, family: Family, settings: dict) -> None:
    """Let tokenizer_config.json's options win over tokenizer.json where transformers lets them.

    transformers rebuilds BERT's normalizer from `do_lower_case`, `strip_accents` and
    `tokenize_chinese_chars`, and GPT-2/RoBERTa's pre-tokenizer from `add_prefix_space`; only options the
    config actually states are applied there. Llama and Qwen2 get their class's whole text pipeline around the
    file's model (vocabulary, merges, byte fallback), as transformers' classes rebuild it.
    """
    normalizer = backend.normalizer
    if family.name == "bert" and isinstance(normalizer, normalizers.BertNormalizer):
        stated = {"lowercase": "do_lower_case", "strip_accents": "strip_accents",
                  "handle_chinese_chars": "tokenize_chinese_chars"}
        options = {"clean_text": normalizer.clean_text, "lowercase": normalizer.lowercase,
                   "strip_accents": normalizer.strip_accents, "handle_chinese_chars": normalizer.handle_chinese_chars}
        options.update({option: settings[key] for option, key in stated.items() if key in settings})
        backend.normalizer = normalizers.BertNormalizer(**options)
    old = backend.pre_tokenizer
    if (family.name in ("gpt2", "roberta") and "add_prefix_space" in settings
            and isinstance(old, pre_tokenizers.ByteLevel)):
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings["add_prefix_space"]),
                                                         trim_offsets=old.trim_offsets, use_regex=old.use_regex)
    if family is LLAMA:
        # transformers' LlamaTokenizer: no normalizer, a metaspace that prepends "▁" to the first piece of text
        # (every piece with legacy=True; none with add_prefix_space=False), and a decoder that strips it again.
        add_prefix_space = settings.get("add_prefix_space")
        add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
        scheme = ("always" if settings.get("legacy", False) else "first") if add_prefix_space else "never"
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        backend.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_prefix_space else []))
    elif family is QWEN2:
        # transformers' Qwen2Tokenizer: NFC, the Qwen2 split, then bytes to unicode characters.
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space") or False),
                                     use_regex=False)])
        backend.decoder = decoders.ByteLevel()


def wordpiece_backend(vocab_file: str, settings: dict) -> tokenizers.Tokenizer:
    """BERT's pipeline from vocab.txt: BertNormalizer, BertPreTokenizer, WordPiece with the "##" prefix."""
    unk = str(_token_content(settings.get("unk_token")) or BERT.special_tokens["unk_token"])
    try:
        vocab = WordPiece.read_file(vocab_file)
    except Exception as error:
        raise ValueError(f"cannot read the WordPiece vocabulary '{vocab_file}': {error}") from None
    backend = tokenizers.Tokenizer(WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    check_unknown_token(backend, vocab_file)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def byte_level_bpe_backend(vocab_file: str, merges_file: str, settings: dict) -> tokenizers.Tokenizer:
    """GPT-2's pipeline from vocab.json + merges.txt: ByteLevel pre-tokenizer and decoder around a BPE."""
    try:
        vocab, merges = BPE.read_file(vocab_file, merges_file)
    except Exception as error:
        raise ValueError(f"cannot read the BPE files '{vocab_file}' and '{merges_file}': {error}") from None
    backend = tokenizers.Tokenizer(BPE(vocab, merges, dropout=None, continuing_subword_prefix="",
                                       end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space", False)))
    backend.decoder = decoders.ByteLevel()
    return backend


def legacy_post_processor(family: Family, settings: dict, tokenizer: Tokenizer):
    """The special-token template transformers builds for legacy files.

    BERT: `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` with type ids 0 then 1. RoBERTa/BART:
    `<s> A </s>` / `<s> A </s></s> B </s>`. GPT-2: nothing, or bos/eos when `add_bos_token`/`add_eos_token`.
    """
    def token_and_id(name):
        token = getattr(tokenizer, name)
        if token is None:
            raise ValueError(f"the {family.class_name} template needs a {name}, and the tokenizer has none")
        return token, tokenizer.backend_tokenizer.token_to_id(token)

    if family.name == "bert":
        (cls, cls_id), (sep, sep_id) = token_and_id("cls_token"), token_and_id("sep_token")
        return processors.TemplateProcessing(single=f"{cls}:0 $A:0 {sep}:0",
                                             pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                                             special_tokens=[(cls, cls_id), (sep, sep_id)])
    if family.name == "roberta":
        return processors.RobertaProcessing(token_and_id("sep_token"), token_and_id("cls_token"),
                                            trim_offsets=bool(settings.get("trim_offsets", True)),
                                            add_prefix_space=bool(settings.get("add_prefix_space", False)))
    for name in ("bos", "eos"):
        if settings.get(f"add_{name}_token"):
            token_and_id(f"{name}_token")  # asking for a token the tokenizer lacks is an error here
    return bos_eos_post_processor(tokenizer, bool(settings.get("add_bos_token")), bool(settings.get("add_eos_token")))


def bos_eos_post_processor(tokenizer: Tokenizer, add_bos: bool, add_eos: bool):
    """transformers' `update_post_processor`: `bos A eos` / `bos A eos bos B eos`, each part only when asked
    for and when the tokenizer has that token."""
    def token_and_id(name):
        token = getattr(tokenizer, name)
        return None if token is None else (token, tokenizer.backend_tokenizer.token_to_id(token))

    bos = token_and_id("bos_token") if add_bos else None
    eos = token_and_id("eos_token") if add_eos else None
    single = " ".join(([f"{bos[0]}:0"] if bos else []) + ["$A:0"] + ([f"{eos[0]}:0"] if eos else []))
    pair = single + " " + " ".join(([f"{bos[0]}:1"] if bos else []) + ["$B:1"] + ([f"{eos[0]}:1"] if eos else []))
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=[t for t in (bos, eos) if t])


def resolve_special_tokens(family: Family, settings: dict, backend) -> dict:
    """Named special tokens (as AddedToken) and the additional ones, from defaults, files and overrides.

    Precedence, as in transformers: keyword overrides, then the config files, then the family's defaults,
    then the pad token of tokenizer.json's own padding settings.
    """
    special = {}
    padding = backend.padding or {}
    for name in SPECIAL_TOKEN_NAMES:
        value = settings.get(name, family.special_tokens.get(name))
        if name == "pad_token" and value is None and name not in settings:
            value = padding.get("pad_token")
        special[name] = None if value is None else _parse_added_token(value, name)
    extra = settings.get("additional_special_tokens") or settings.get("extra_special_tokens") or []
    if isinstance(extra, dict):  # transformers v5 writes model-specific named tokens as a dict
        extra = list(extra.values())
    if not isinstance(extra, (list, tuple)):
        raise ValueError(f"additional_special_tokens should be a list of tokens, found {type(extra).__name__}")
    special["additional_special_tokens"] = [_parse_added_token(t, "additional_special_tokens") for t in extra]
    return special


def register_added_tokens(backend, source: Source, settings: dict, special: dict, from_json: bool) -> None:
    """Add the tokens of tokenizer_config's `added_tokens_decoder`, or of a legacy added_tokens.json, to the
    backend, in id order, before the special tokens (which `Tokenizer` adds), as transformers orders them.

    Tokens the backend already has as added tokens (tokenizer.json's `added_tokens`) keep their settings.
    """
    def present():
        return {token.content for token in backend.get_added_tokens_decoder().values()}

    decoder = settings.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for _, value in sorted(decoder.items(), key=lambda item: int(item[0])):
            token = _parse_added_token(value, "added_tokens_decoder", special=None)
            if token.content not in present():
                (backend.add_special_tokens if token.special else backend.add_tokens)([token])
    elif not from_json:
        path = source.file(ADDED_TOKENS_FILE)
        if path:
            names = {_token_content(t) for t in special.values() if not isinstance(t, list)}
            names |= {t.content for t in special["additional_special_tokens"]}
            for content, _ in sorted(read_json(path, "added tokens file").items(), key=lambda item: item[1]):
                is_special = content in names
                token = AddedToken(content, normalized=not is_special, special=is_special)
                if content not in present():
                    (backend.add_special_tokens if is_special else backend.add_tokens)([token])


# ----------------------------------------------------------------------------------------------------------
# Chat templates


class ChatTemplateError(ValueError):
    """A chat template that does not compile, or that fails while rendering; the message is the template's."""


# The fields a message's reasoning travels under; templates read the first (gpt-oss ones read "thinking").
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# Appended to the message that `continue_final_message` leaves open, to find where it ends in the rendering.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
# (rendered blocks so far, spans found) while `return_assistant_tokens_mask` renders; None otherwise.
_GENERATION_SPANS = contextvars.ContextVar("generation_spans", default=None)


def read_chat_template(source: Source, config: dict):
    """The checkpoint's chat template(s): chat_template.jinja and additional_chat_templates/*.jinja when the
    folder or repo has them (they win over the config, as in transformers), else tokenizer_config.json's
    `chat_template`. Returns a string, a dict of named templates, or None."""
    templates = {}
    path = source.file(CHAT_TEMPLATE_FILE)
    if path:
        templates["default"] = _read_text(path)
    for name in source.listdir(CHAT_TEMPLATE_DIR):
        if name.endswith(".jinja"):
            templates[name.removesuffix(".jinja")] = _read_text(source.file(f"{CHAT_TEMPLATE_DIR}/{name}"))
    if list(templates) == ["default"]:
        return templates["default"]
    return templates or config.get("chat_template")


def write_chat_templates(save_directory: str, chat_template) -> list[str]:
    """chat_template.jinja for the default template, additional_chat_templates/NAME.jinja for named ones."""
    if chat_template is None:
        return []
    named = chat_template if isinstance(chat_template, dict) else {"default": chat_template}
    written = []
    for name, template in named.items():
        if name == "default":
            path = os.path.join(save_directory, CHAT_TEMPLATE_FILE)
        else:
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"chat template name {name!r} cannot be a file name")
            os.makedirs(os.path.join(save_directory, CHAT_TEMPLATE_DIR), exist_ok=True)
            path = os.path.join(save_directory, CHAT_TEMPLATE_DIR, f"{name}.jinja")
        atomic_write(path, template.encode("utf-8"))
        written.append(path)
    return written


def render_chat_template(template: str, conversations: list, *, tools=None, documents=None,
                         add_generation_prompt: bool = False, continue_final_message: bool | str = False,
                         track_generation: bool = False, where: str = "the tokenizer",
                         variables: dict | None = None) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Render each conversation with `template` exactly as transformers' `render_jinja_template` does.

    Everything the template sees is rebuilt from plain JSON-like values first (see `_plain`), so that it
    cannot reach the methods of the caller's objects from inside the sandbox.

    Returns:
        The rendered texts, and for each the (start, end) character spans of its `{% generation %}` blocks
        (empty lists unless `track_generation`).
    """
    compiled = compile_chat_template(template, where)
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, dict):
                raise TypeError(f"each tool must be a JSON schema (a dict such as {{'type': 'function', "
                                f"'function': {{...}}}}), got {_describe(tool)}")
    if documents is not None:
        for document in documents:
            if not isinstance(document, dict):
                raise TypeError(f"each document must be a dict (usually with 'title' and 'text'), got "
                                f"{_describe(document)}")
    context = {"tools": _plain(tools), "documents": _plain(documents), **_plain(variables or {})}
    texts, all_spans = [], []
    for messages in conversations:
        messages = _alias_reasoning(_plain(messages))
        final = None
        if continue_final_message:
            messages, final = _open_final_message(messages, continue_final_message, template)
        spans = []
        try:
            if track_generation:
                blocks = []
                reset = _GENERATION_SPANS.set((blocks, spans))
                try:
                    for block in compiled.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                                   **context):
                        blocks.append(block)
                finally:
                    _GENERATION_SPANS.reset(reset)
                text = "".join(blocks)
            else:
                text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)
        except Exception as error:  # anything the template raises: raise_exception, undefined values, bad maths
            raise ChatTemplateError(f"the chat template of {where} failed: {_template_message(error)}") from error
        if final is not None:
            text = _cut_at_continue_tag(text, final)
        texts.append(text)
        all_spans.append(spans)
    return texts, all_spans


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str, where: str = "the tokenizer"):
    """The compiled template (cached), in the sandboxed environment transformers renders chat templates in."""
    if not isinstance(template, str):
        raise TypeError(f"a chat template is a Jinja string, got {_describe(template)}")
    environment = _chat_environment()
    import jinja2

    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(f"the chat template of {where} does not compile: {error.message} (line "
                                f"{error.lineno})") from error


@functools.lru_cache(maxsize=1)
def _chat_environment():
    """jinja2's ImmutableSandboxedEnvironment with transformers' options, globals and filters."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError('chat templates need jinja2: pip install "pretrained[chat]"') from None
    if tuple(int(part) for part in jinja2.__version__.split(".")[:3] if part.isdigit()) < (3, 1, 6):
        # Older versions have known sandbox escapes, and chat templates come from untrusted repos.
        raise ImportError(f'chat templates need jinja2>=3.1.6 (found {jinja2.__version__}): '
                          f'pip install -U "pretrained[chat]"')

    class GenerationBlocks(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: renders its body, noting where it lands when asked to."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_track", []), [], [], body).set_lineno(lineno)

        def _track(self, caller):
            text = caller()
            tracking = _GENERATION_SPANS.get()
            if tracking is not None:
                blocks, spans = tracking
                start = sum(len(block) for block in blocks)
                spans.append((start, start + len(text)))
            return text

    class Namespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore attributes, which lead to Python internals."""

        def __init__(*args, **kwargs):  # jinja2's signature trick, so that namespace(self=...) still works
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}")

    class DictMaker:
        """`dict(...)` and `dict.fromkeys(...)`, without handing the template the dict type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja2's own tojson escapes <, >, & and ' for HTML and sorts keys; templates expect plain JSON.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationBlocks, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=DictMaker(),
                               namespace=Namespace)
    return environment


def _check_chat_template(value):
    """A tokenizer's chat template: None, a string, or named templates (a dict, or the config's list)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        try:
            value = {item["name"]: item["template"] for item in value}
        except (TypeError, KeyError):
            raise ValueError("chat_template as a list must hold {\"name\": ..., \"template\": ...} objects") from None
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise ValueError(f"chat_template must be a Jinja string or named templates, got {_describe(value)}")


def _as_conversations(conversation) -> tuple[list[list[dict]], bool]:
    """Validate the messages and shape them as a batch: message objects become dicts, None values are dropped
    (templates handle a missing key, not a None), and every message needs a role and a content.

    Returns:
        The conversations, and whether the input was a batch of them.
    """
    if hasattr(conversation, "messages"):
        conversation = conversation.messages
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError(f"a conversation is a non-empty list of messages ({{'role': ..., 'content': ...}}), got "
                         f"{_describe(conversation)}")
    first = conversation[0]
    is_batched = isinstance(first, (list, tuple)) or hasattr(first, "messages")
    conversations = []
    for c, chat in enumerate(conversation if is_batched else [conversation]):
        chat = getattr(chat, "messages", chat)
        where = f"conversation[{c}]" if is_batched else "conversation"
        if not isinstance(chat, (list, tuple)) or not chat:
            raise ValueError(f"{where} must be a non-empty list of messages, got {_describe(chat)}")
        messages = []
        for m, message in enumerate(_as_dicts(chat)):
            if not isinstance(message, dict):
                raise TypeError(f"{where}[{m}] must be a dict with 'role' and 'content', got {_describe(message)}")
            message = {key: value for key, value in message.items() if value is not None}
            if not isinstance(message.get("role"), str):
                raise ValueError(f"{where}[{m}] has no 'role' (a string such as 'user'): {_describe(message)}")
            if "content" not in message and "tool_calls" not in message:
                raise ValueError(f"{where}[{m}] (role {message['role']!r}) has no 'content': {_describe(message)}")
            messages.append(message)
        conversations.append(messages)
    return conversations, is_batched


def _as_dicts(value):
    """Mappings, dataclasses and pydantic models (the OpenAI SDK's messages) as dicts, recursively."""
    if isinstance(value, Mapping):
        return {key: _as_dicts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_dicts(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_as_dicts(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _as_dicts(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _as_dicts(value.model_dump())
    return value


def _plain(value):
    """What a template may see: JSON-like values rebuilt from plain types; anything else (an image, an array, a
    tensor) becomes a placeholder naming its type, such as "<Tensor>". As transformers' sandbox input."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # str subclasses (enums, …) could carry methods: keep the characters only
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning(messages: list[dict]) -> list[dict]:
    """A message's reasoning under every name templates read it by ("reasoning_content", "thinking")."""
    aliased = []
    for message in messages:
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def _open_final_message(messages: list[dict], field: bool | str, template: str) -> tuple[list[dict], str]:
    """Tag the end of the last message's `field`, to cut the rendering there (`continue_final_message`).

    Returns:
        The messages, with the tag, and the text that is continued.
    """
    field = field if isinstance(field, str) else "content"
    last = dict(messages[-1])
    final = last.get(field)
    if final is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field}" to continue')
    fields = [field]
    if field in _REASONING_FIELDS:  # reasoning is copied under several names: tag each copy
        fields = [name for name in _REASONING_FIELDS if last.get(name) == final]
    if not any(name in template for name in fields):
        raise ValueError(f'continue_final_message is set to "{field}", which the chat template never reads')
    if isinstance(final, (list, tuple)):  # content blocks: continue the last text block
        blocks = [dict(block) for block in final]
        for block in reversed(blocks):
            if "text" in block:
                final = block["text"]
                block["text"] = block["text"] + _CONTINUE_TAG
                break
        else:
            raise ValueError("continue_final_message is set but the final message has no text block to continue")
        last[field] = blocks
    else:
        for name in fields:
            last[name] = last[name] + _CONTINUE_TAG
    return messages[:-1] + [last], final


def _cut_at_continue_tag(text: str, final: str) -> str:
    if final.strip() not in text or _CONTINUE_TAG.strip() not in text:
        raise ValueError("continue_final_message is set but the final message does not appear in the rendered "
                         "chat: the template drops or rewrites part of it, so it cannot be continued")
    at = text.rindex(_CONTINUE_TAG.strip())
    if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return text[:at]
    return text[:at].rstrip()  # the template trimmed the message's trailing space, and the tag's with it


def _span_mask(offsets, spans) -> list[int]:
    """1 for each token whose characters overlap one of `spans` (both in order), 0 elsewhere."""
    mask = [0] * len(offsets)
    s = 0
    for i, (start, end) in enumerate(offsets):
        while s < len(spans) and start >= spans[s][1]:
            s += 1
        if s == len(spans):
            break
        if end > spans[s][0]:
            mask[i] = 1
    return mask


def _template_message(error: Exception) -> str:
    """The template's own words: raise_exception's message as it is, other errors with their kind."""
    import jinja2

    if type(error) is jinja2.exceptions.TemplateError:
        return str(error)
    return f"{type(error).__name__}: {error}"


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ----------------------------------------------------------------------------------------------------------
# Small helpers


def _parse_added_token(value, where: str, special=True) -> AddedToken:
    """A special token from a config value: a string, or a dict such as {"content": "<mask>", "lstrip": true}."""
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, str):
        return AddedToken(value, special=True, normalized=False)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        options = {key: value[key] for key in ("single_word", "lstrip", "rstrip", "normalized") if key in value}
        is_special = value.get("special", True) if special is None else special
        return AddedToken(value["content"], special=bool(is_special), **options)
    raise ValueError(f"{where}: expected a token string or an AddedToken object, found {value!r}")


def _mentions_byte_level(path: str) -> bool:
    """Whether a tokenizer.json declares a ByteLevel step, the test transformers applies to Llama classes."""
    with open(path, encoding="utf-8") as f:
        return '"ByteLevel"' in f.read()


def _class_name_to_save(class_name: str | None, family: Family) -> str:
    """transformers' class name for tokenizer_config.json: the loaded one, without the "Fast" of v4 names."""
    name = class_name or family.class_name
    return name if name == "PreTrainedTokenizerFast" else name.removesuffix("Fast")


def _special_added_token(value) -> AddedToken:
    return value if isinstance(value, AddedToken) else AddedToken(str(value), special=True, normalized=False)


def _token_content(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return value.content if isinstance(value, AddedToken) else str(value)


def _added_token_dict(token: AddedToken) -> dict:
    return {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
            "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}


def _as_python(value):
    """Lists and ints from a tensor or array, unchanged otherwise."""
    return value.tolist() if hasattr(value, "tolist") else value


def _as_batch(text, text_pair, is_split_into_words: bool) -> tuple[list, bool]:
    """Validate the texts of a call and shape them as tokenizers' `encode_batch` takes them.

    Returns:
        The batch (texts, word lists, or (first, second) tuples), and whether the input was a batch.
    """
    def check(value, where):
        if is_split_into_words:
            if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
                raise TypeError(f"{where} must be a list of words (str) with is_split_into_words=True, "
                                f"got {_describe(value)}")
        elif not isinstance(value, str):
            raise TypeError(f"{where} must be a str, got {_describe(value)}")
        return value

    if text is None:
        raise TypeError("text must be a str, a list of str, or a list of (str, str) pairs, got None")
    single = isinstance(text, str) or (is_split_into_words and isinstance(text, (list, tuple))
                                       and all(isinstance(w, str) for w in text))
    if single:
        if text_pair is None:
            return [check(text, "text")], False
        return [(check(text, "text"), check(text_pair, "text_pair"))], False
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str, a list of str, or a list of (str, str) pairs, got {_describe(text)}")
    if text_pair is not None:
        if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
            raise ValueError(f"text_pair must be a list as long as text ({len(text)} items), got "
                             f"{_describe(text_pair)}")
        return [(check(a, f"text[{i}]"), check(b, f"text_pair[{i}]"))
                for i, (a, b) in enumerate(zip(text, text_pair))], True
    batch = []
    for i, item in enumerate(text):
        is_pair = isinstance(item, tuple) or (not is_split_into_words and isinstance(item, list))
        if is_pair and is_split_into_words:
            is_pair = len(item) == 2 and all(isinstance(part, (list, tuple)) for part in item)
        if is_pair:
            if len(item) != 2:
                raise ValueError(f"text[{i}] must be a (text, text_pair) pair, got {len(item)} items")
            batch.append((check(item[0], f"text[{i}][0]"), check(item[1], f"text[{i}][1]")))
        else:
            batch.append(check(item, f"text[{i}]"))
    return batch, True


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def clean_up_tokenization(text: str) -> str:
    """Remove the spaces WordPiece decoding leaves before punctuation and English contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text
