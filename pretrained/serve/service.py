"""What the server serves: the checkpoint loaded for its kind, with its tokenizer and its batch function.

A checkpoint is one of four kinds, read from its config.json:

- "generate": a causal language model (`*ForCausalLM`, `*LMHeadModel`): /v1/completions, /v1/chat/completions;
- "rerank": a sequence classifier with one label (a cross-encoder): /rerank and /predict;
- "classify": a sequence classifier with several labels: /predict;
- "embed": anything else this library loads as a base model: /v1/embeddings and /embed.

Embeddings are `SentenceTransformer`'s (a sentence-transformers folder runs its own modules and prompts; a plain
encoder gets mean pooling) and scores `CrossEncoder`'s, from pretrained.sentence: the server only batches them.

Tokenization runs on the event loop (it validates lengths before a request is accepted) with a private copy of
the tokenizer backend; the worker thread decodes with another copy, so the two never share one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import tokenizers
import torch
from torch import Tensor

from .. import auto
from ..tokenization import AutoTokenizer, Tokenizer

logger = logging.getLogger(__name__)


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
    """One tokenized input: ids, token types, and the length of the prompt in front of it (embeddings)."""

    ids: list[int]
    type_ids: Optional[list[int]] = None
    prompt_length: int = 0


@dataclass
class Service:
    """The loaded checkpoint, ready to serve. Build it with `load`."""

    name: str
    kind: str
    model: torch.nn.Module  # what runs: the causal LM, the classifier, or the SentenceTransformer
    tokenizer: Tokenizer
    config: object
    max_input_length: int
    sentence: object = None  # SentenceTransformer (embed) or CrossEncoder (rerank, classify)
    _encoder: tokenizers.Tokenizer = None  # the event loop's backend copy
    decoder: Tokenizer = None  # the worker's copy
    _prompt_lengths: dict = field(default_factory=dict)

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

    def prompt(self, prompt_name: Optional[str]) -> tuple[str, int]:
        """The sentence-transformers prompt `prompt_name` names (else the default one) and its token count."""
        st = self.sentence
        name = prompt_name if prompt_name is not None else getattr(st, "default_prompt_name", None)
        if name is None:
            return "", 0
        prompts = getattr(st, "prompts", {})
        if name not in prompts:
            known = ", ".join(sorted(prompts)) or "none"
            raise InputError(f"prompt_name: {name!r} is not a prompt of this model (it has: {known})", 422,
                             "prompt_name")
        text = prompts[name]
        if text and text not in self._prompt_lengths:
            self._prompt_lengths[text] = st._prompt_length(text)
        return text, self._prompt_lengths.get(text, 0)

    # -- the model (worker thread) ------------------------------------------------------------------------
    def forward_batch(self, items: list[Encoded]):
        """Yield (indices, outputs) as each group of `items` is computed: the embedding (D,) of each item
        (embed), or its logits (num_labels,) (rerank, classify), float32. Items of similar lengths run together,
        so that padding stays under a quarter of a forward; the shortest come first."""
        order = sorted(range(len(items)), key=lambda i: (items[i].prompt_length, len(items[i].ids)))
        group: list[int] = []
        real = 0  # tokens of the group
        for i in order + [None]:
            split = i is None
            if group and i is not None:
                n = len(items[i].ids)
                padding = (len(group) + 1) * n - (real + n)
                split = padding > max(0.25 * (real + n), 32) or \
                    items[i].prompt_length != items[group[0]].prompt_length
            if group and split:
                yield group, self._forward([items[j] for j in group])
                group, real = [], 0
            if i is not None:
                group.append(i)
                real += len(items[i].ids)

    @torch.inference_mode()
    def _forward(self, items: list[Encoded]) -> list[Tensor]:
        """One padded forward over `items`, through the SentenceTransformer's or CrossEncoder's Transformer
        module (its padding side, pad id and model inputs)."""
        st = self.sentence
        transformer = st[0] if self.kind == "embed" else st.transformer
        tokens = {"input_ids": [it.ids for it in items],
                  "token_type_ids": [it.type_ids or [0] * len(it.ids) for it in items]}
        features = transformer.collate(tokens, range(len(items)), st.device)
        if self.kind == "embed":
            if items[0].prompt_length:
                features["prompt_length"] = items[0].prompt_length
            vectors = st(features)["sentence_embedding"]  # (B, D)
            if st.truncate_dim is not None:
                vectors = vectors[:, :st.truncate_dim]
        else:
            inputs = {k: features[k] for k in transformer._model_inputs}
            vectors = st.model(**inputs, return_dict=True).logits  # (B, num_labels)
        return list(vectors.float().cpu().unbind(0))


def load(model_name: str, max_input_length: Optional[int] = None) -> Service:
    """Load `model_name` (a folder or Hub id) for serving: its kind, model, tokenizer and input limit.

    Raises:
        ValueError: a checkpoint this server cannot serve, or a --max-input-length above what the model takes.
    """
    from ..hub import download
    from ..sentence import CrossEncoder, SentenceTransformer

    folder = model_name if os.path.isdir(model_name) else download(model_name)
    config = auto.AutoConfig.from_pretrained(folder)
    kind = kind_of(config)
    sentence = None
    if kind == "generate":
        model = auto.AutoModelForCausalLM.from_pretrained(folder, config=config).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        limit = (getattr(config, "max_position_embeddings", None) or 2048) - 1  # room for one new token
        limit = min(limit, tokenizer.model_max_length)
    else:
        sentence = SentenceTransformer(folder) if kind == "embed" else CrossEncoder(folder)
        model = sentence if kind == "embed" else sentence.model
        tokenizer, limit = sentence.tokenizer, sentence.max_seq_length
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
                   max_input_length=int(limit), sentence=sentence, _encoder=encoder, decoder=decoder)
