"""What the server serves: the checkpoint loaded for its kind, with its tokenizer and its batch function.

A checkpoint is one of four kinds, read from its config.json (and its sentence-transformers files):

- "generate": a causal language model (`*ForCausalLM`, `*LMHeadModel`): /v1/completions, /v1/chat/completions;
- "rerank": a sequence classifier with one label (a cross-encoder): /rerank and /predict;
- "classify": a sequence classifier with several labels: /predict;
- "embed": anything else this library loads as a base model (sentence-transformers folders, plain encoders):
  /v1/embeddings and /embed, mean-pooled as sentence-transformers pools a plain folder.

Tokenization runs on the event loop (it validates lengths before a request is accepted) with a private copy of
the tokenizer backend; the worker thread decodes with another copy, so the two never share one.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import tokenizers
from torch import Tensor

from .. import auto
from ..tokenization import AutoTokenizer, Tokenizer

logger = logging.getLogger(__name__)

KINDS = ("embed", "rerank", "classify", "generate")


class InputError(ValueError):
    """A request input the server refuses; `status` is the HTTP status (413 too long / too many, 422 bad)."""

    def __init__(self, message: str, status: int = 422, param: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.param = param


def kind_of(config) -> str:
    """Which kind of checkpoint `config` describes (see the module docstring)."""
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{config.model_type} is an encoder-decoder model; `pretrained serve` serves embedding "
                         f"models, cross-encoders, sequence classifiers and causal language models")
    archs = config.architectures or []
    causal = auto.TASKS["AutoModelForCausalLM"].get(config.model_type)
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or (not archs and causal is not None):
        if causal is None:
            raise ValueError(f"{archs[0]}: pretrained has no causal language model for {config.model_type!r}")
        return "generate"
    if auto.TASKS["AutoModelForSequenceClassification"].get(config.model_type) in archs:
        return "rerank" if config.num_labels == 1 else "classify"
    return "embed"


@dataclass
class Encoded:
    """One tokenized input: ids (and token types), and how many tokens truncation removed."""

    ids: list[int]
    type_ids: Optional[list[int]] = None


@dataclass
class Service:
    """The loaded checkpoint, ready to serve. Build it with `load`."""

    name: str
    kind: str
    model: torch.nn.Module
    tokenizer: Tokenizer
    config: object
    max_input_length: int
    pooling: str = "mean"
    normalize_default: bool = True
    prompts: dict = field(default_factory=dict)
    default_prompt_name: Optional[str] = None
    _encoder: tokenizers.Tokenizer = None  # the event loop's backend copy
    decoder: Tokenizer = None  # the worker's copy

    # -- tokenization (event loop) ------------------------------------------------------------------------
    def encode(self, text, pair: Optional[str] = None, truncate: bool = False, direction: str = "right",
               special_tokens: bool = True, param: str = "input") -> Encoded:
        """Tokenize a text (or a pair), cut to `max_input_length` when `truncate`, else refuse (413) one that
        is longer."""
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise InputError(f"{param}: expected a string", 422, param)
        enc = self._encoder.encode(text, add_special_tokens=False)
        enc_pair = self._encoder.encode(pair, add_special_tokens=False) if pair is not None else None
        n_special = self._encoder.num_special_tokens_to_add(pair is not None) if special_tokens else 0
        limit = self.max_input_length - n_special
        a, b = len(enc.ids), len(enc_pair.ids) if enc_pair is not None else 0
        if a + b > limit:
            if not truncate:
                raise InputError(f"{param}: the input has {a + b + n_special} tokens, more than the maximum of "
                                 f"{self.max_input_length}; shorten it or set truncate to true", 413, param)
            while a + b > limit:  # the longer text loses a token first ('longest_first')
                if a > b:
                    a -= 1
                else:
                    b -= 1
            enc.truncate(a, direction=direction)
            if enc_pair is not None:
                enc_pair.truncate(b, direction=direction)
        if special_tokens:
            enc = self._encoder.post_process(enc, enc_pair, add_special_tokens=True)
        elif enc_pair is not None:
            enc = tokenizers.Encoding.merge([enc, enc_pair], growing_offsets=True)
        return Encoded(enc.ids, enc.type_ids)

    def encode_ids(self, ids: list[int], truncate: bool = False, direction: str = "right",
                   param: str = "input") -> Encoded:
        """Token ids given by the client, used as they are (no special tokens added)."""
        vocab = self.config.vocab_size
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids):
            raise InputError(f"{param}: token ids must be a non-empty list of integers in [0, {vocab})", 422, param)
        if len(ids) > self.max_input_length:
            if not truncate:
                raise InputError(f"{param}: the input has {len(ids)} tokens, more than the maximum of "
                                 f"{self.max_input_length}", 413, param)
            ids = ids[:self.max_input_length] if direction == "right" else ids[-self.max_input_length:]
        return Encoded(list(ids), [0] * len(ids))

    def prompt_text(self, prompt_name: Optional[str]) -> str:
        """The sentence-transformers prompt `prompt_name` names (config_sentence_transformers.json)."""
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise InputError(f"prompt_name: {name!r} is not a prompt of this model (it has: {known})", 422,
                             "prompt_name")
        return self.prompts[name]

    # -- the model (worker thread) ------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_batch(self, items: list[Encoded]) -> list[Tensor]:
        """One padded forward over `items`: the pooled embedding (C,) of each (embed), or its logits
        (num_labels,) (rerank, classify), float32."""
        B, T = len(items), max(len(it.ids) for it in items)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((B, T), pad, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        token_type_ids = torch.zeros((B, T), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it.ids)
            input_ids[row, :n] = torch.tensor(it.ids)
            attention_mask[row, :n] = 1
            if it.type_ids is not None:
                token_type_ids[row, :n] = torch.tensor(it.type_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            inputs["token_type_ids"] = token_type_ids
        device = next(self.model.parameters()).device
        out = self.model(**{k: v.to(device) for k, v in inputs.items()})
        if self.kind == "embed":
            h = out.last_hidden_state  # (B, T, C)
            if self.pooling == "cls":
                vectors = h[:, 0]
            else:
                m = inputs["attention_mask"].to(device)[..., None].to(h.dtype)
                vectors = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, C)
        else:
            vectors = out.logits  # (B, num_labels)
        vectors = vectors.float().cpu()
        return list(vectors.unbind(0))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _sentence_settings(folder: str) -> dict:
    """Pooling, normalisation, max length and prompts of a sentence-transformers folder (defaults for a plain
    encoder: mean pooling, normalised, the model's positions)."""
    settings = {"pooling": "mean", "normalize": True, "max_seq_length": None, "prompts": {}, "default_prompt": None}
    modules = _read_json(os.path.join(folder, "modules.json"))
    for module in modules or []:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            pooling = _read_json(os.path.join(folder, module.get("path", ""), "config.json")) or {}
            if pooling.get("pooling_mode_cls_token"):
                settings["pooling"] = "cls"
            elif not pooling.get("pooling_mode_mean_tokens", True):
                raise ValueError(f"{folder}: only mean and CLS pooling are served, the pooling config is {pooling}")
    if modules is not None:
        settings["normalize"] = any(m.get("type", "").endswith("Normalize") for m in modules)
    bert_config = _read_json(os.path.join(folder, "sentence_bert_config.json")) or {}
    settings["max_seq_length"] = bert_config.get("max_seq_length")
    st_config = _read_json(os.path.join(folder, "config_sentence_transformers.json")) or {}
    settings["prompts"] = st_config.get("prompts") or {}
    settings["default_prompt"] = st_config.get("default_prompt_name")
    return settings


def load(model_name: str, max_input_length: Optional[int] = None) -> Service:
    """Load `model_name` (a folder or Hub id) for serving: its kind, model, tokenizer and input limit."""
    from ..hub import download

    folder = model_name if os.path.isdir(model_name) else download(model_name)
    config = auto.AutoConfig.from_pretrained(folder)
    kind = kind_of(config)
    task = {"generate": auto.AutoModelForCausalLM, "rerank": auto.AutoModelForSequenceClassification,
            "classify": auto.AutoModelForSequenceClassification, "embed": auto.AutoModel}[kind]
    model = task.from_pretrained(folder, config=config).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = _sentence_settings(folder) if kind == "embed" else {}
    limit = getattr(config, "max_position_embeddings", None) or 512
    if kind == "generate":
        limit -= 1  # room for at least one new token
    if settings.get("max_seq_length"):
        limit = min(limit, settings["max_seq_length"])
    if tokenizer.model_max_length < limit:
        limit = tokenizer.model_max_length
    if max_input_length is not None:
        if max_input_length > limit:
            raise ValueError(f"--max-input-length {max_input_length} is more than the {limit} tokens this model "
                             f"takes")
        limit = max_input_length
    encoder = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    encoder.no_padding()
    encoder.no_truncation()
    decoder = Tokenizer(tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()),
                        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
                        name_or_path=tokenizer.name_or_path)
    return Service(name=model_name, kind=kind, model=model, tokenizer=tokenizer, config=config,
                   max_input_length=int(limit), pooling=settings.get("pooling", "mean"),
                   normalize_default=settings.get("normalize", True), prompts=settings.get("prompts", {}),
                   default_prompt_name=settings.get("default_prompt"), _encoder=encoder, decoder=decoder)
