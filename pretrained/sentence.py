"""SentenceTransformer and CrossEncoder: sentence-transformers' inference API over pretrained's models.

A sentence-transformers folder (or Hub repo) is a chain of modules listed in `modules.json`:

    Transformer  the encoder (config.json + weights + tokenizer, `sentence_bert_config.json`)  -> token_embeddings
    Pooling      `1_Pooling/config.json`: cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken
    Dense        `2_Dense/config.json` + weights: a linear layer and an activation
    Normalize    L2 normalisation

and `config_sentence_transformers.json` holds the prompts, the default prompt and the similarity function. A
plain transformers folder gets mean pooling, as sentence-transformers gives it. A CrossEncoder is a
sequence-classification checkpoint that scores (query, document) pairs.

The numbers are sentence-transformers' own (<= 1e-5): the same pooling maths, in the same order. Speed comes from
how the work is fed to the model: every text is tokenised in one call (the `tokenizers` library runs it in
parallel), texts are sorted by their token count so each batch carries almost no padding, batches are padded
with two tensor operations, and the whole loop runs under `torch.inference_mode`.

sentence-transformers is never imported; modules.json entries that name other module types (custom code that
sentence-transformers would run with `trust_remote_code=True`) are refused with an error naming them.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import os
from collections import OrderedDict
from itertools import chain
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .auto import AutoConfig, AutoModel, AutoModelForSequenceClassification
from .configuration import ConfigError, read_config_dict
from .hub import HubError, NotCachedError, RepoNotFoundError, Source
from .layers import Linear
from .tokenization import AutoTokenizer, Tokenizer
from .weights import read_weights, write_weights

logger = logging.getLogger(__name__)

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' legacy 1_Pooling/config.json keys, in the order their outputs are concatenated.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
# Module types of modules.json that this file runs, by class name (any sentence_transformers.* path to them:
# `sentence_transformers.models.Pooling`, `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, …).
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
SIMILARITY_FNS = ("cosine", "dot", "euclidean", "manhattan")
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
# Files that hold a Transformer module's settings, newest name first (older releases named them per family).
SBERT_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json",
                      "sentence_distilbert_config.json", "sentence_camembert_config.json",
                      "sentence_albert_config.json", "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
# Texts tokenised and sorted together; bounds the memory that token lists take on very large inputs.
CHUNK = 50_000


# ---------------------------------------------------------------------------------------------- files
def _hub_options(revision=None, token=None, cache_folder=None, local_files_only=False) -> dict:
    options = {"revision": revision, "token": token, "local_files_only": local_files_only}
    if cache_folder is not None:
        options["cache_dir"] = cache_folder
    return options


def _source(name_or_path, default_org: str, options: dict) -> Source:
    """A folder, or a Hub id; a bare id such as `all-MiniLM-L6-v2` is first looked for under `default_org`,
    as sentence-transformers does, then as it is."""
    name = os.fspath(name_or_path)
    if os.path.isfile(name):
        raise NotADirectoryError(f"'{name}' is a file; give the folder of a model, or a Hub id")
    if os.path.isdir(name) or "/" in name or not default_org:
        return Source(name, **options)
    source = Source(f"{default_org}/{name}", **options)
    try:
        source.file("config.json")
        return source
    except (RepoNotFoundError, NotCachedError) as error:
        bare = Source(name, **options)
        try:
            bare.file("config.json")
        except HubError:
            raise error from None  # the id under default_org is the one most likely meant
        return bare


def _read_json(source: Source, filename: str) -> Optional[dict]:
    path = source.file(filename)
    return None if path is None else read_config_dict(path)


def _join(folder: str, filename: str) -> str:
    return f"{folder}/{filename}" if folder else filename


def _tokenizer(source: Source, **kwargs) -> Tokenizer:
    """The tokenizer of the folder or repo `source`, from the commit the model came from."""
    if source.is_local:
        return AutoTokenizer.from_pretrained(source.folder, **kwargs)
    return AutoTokenizer.from_pretrained(
        source.name_or_path, revision=source.commit or source.revision, subfolder=source.subfolder,
        cache_dir=source.cache_dir, token=source.token, local_files_only=source.local_files_only, **kwargs)


def _module_kind(type_ref: Any, where: str) -> str:
    """The class name of a modules.json entry we run, or an error naming the type."""
    name = type_ref.rsplit(".", 1)[-1] if isinstance(type_ref, str) else None
    if isinstance(type_ref, str) and type_ref.startswith("sentence_transformers.") and name in SUPPORTED_MODULES:
        return name
    raise ValueError(
        f"{where} names module type {type_ref!r}, which pretrained does not support; it runs sentence-transformers' "
        f"{', '.join(SUPPORTED_MODULES)} modules. Custom module code (what sentence-transformers runs with "
        f"trust_remote_code=True) is never run by pretrained.")


def default_device() -> str:
    """The device sentence-transformers picks: CUDA, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _numpy():
    try:
        import numpy
    except ImportError:
        raise ImportError('convert_to_numpy=True and precision other than "float32" need numpy: '
                          'pip install "pretrained[sentence]", or pass convert_to_tensor=True') from None
    return numpy


def _resolve_activation(path: Any, trust_remote_code: bool, where: str) -> Optional[Callable]:
    """An activation saved by its class path ("torch.nn.modules.activation.Tanh"), instantiated without
    arguments. As sentence-transformers, only torch classes are imported; another path logs a warning and
    gives None (the caller's default)."""
    if not isinstance(path, str):
        return None
    if not path.startswith("torch."):
        logger.warning("%s names activation %r, which is not a torch class; pretrained runs no custom code, so "
                       "the default activation is used instead", where, path)
        return None
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where} names activation {path!r}, which torch does not have") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where} names activation {path!r}, which is not a torch.nn.Module class")
    return cls()


def _class_path(fn: Any) -> str:
    cls = fn if isinstance(fn, type) else type(fn)
    return f"{cls.__module__}.{cls.__qualname__}"


# ------------------------------------------------------------------------------------------ batching
def _padding(lengths: Tensor, left: bool) -> Tensor:
    """(B,) token counts -> (B, T) bool mask of the real tokens, T the longest; padding on the right or left."""
    T = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(T)[None]  # (1, T)
    return positions >= (T - lengths)[:, None] if left else positions < lengths[:, None]


def _fill(keep: Tensor, rows: list[list[int]], value: int) -> Tensor:
    """Token rows -> (B, T) long tensor holding them where `keep` is true and `value` elsewhere: one flat
    tensor and one masked assignment, no per-row tensor work."""
    out = torch.full(keep.shape, value, dtype=torch.long)
    out[keep] = torch.tensor(list(chain.from_iterable(rows)), dtype=torch.long)
    return out


def _progress_bar(total_batches: int, show: bool):
    """A tqdm bar over the batches (tqdm is installed with huggingface_hub), or None."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total_batches, desc="Batches")


def _show_progress(show_progress_bar: Optional[bool]) -> bool:
    # sentence-transformers' default: a bar when its logger would show INFO messages.
    if show_progress_bar is None:
        return logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
    return bool(show_progress_bar)


# ------------------------------------------------------------------------------------------- modules
class Transformer(nn.Module):
    """The encoder and its tokenizer: texts -> `token_embeddings` (B, T, C).

    `max_seq_length` is the tokenizer's `model_max_length`, as in sentence-transformers: inputs are cut there.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, max_seq_length: Optional[int] = None,
                 do_lower_case: bool = False):
        super().__init__()
        self.auto_model = model
        self.tokenizer = tokenizer
        self.do_lower_case = bool(do_lower_case)
        if max_seq_length is not None:
            tokenizer.model_max_length = int(max_seq_length)
        else:
            limit = getattr(model.config, "max_position_embeddings", None)
            if isinstance(limit, int) and limit > 0:
                tokenizer.model_max_length = min(tokenizer.model_max_length, limit)
        if do_lower_case:
            _add_lowercase(tokenizer)
        # What the tokenizer gives and the model's forward takes (DistilBERT takes no token_type_ids).
        accepted = inspect.signature(model.forward).parameters
        names = ("input_ids", "attention_mask", "token_type_ids")
        self._model_inputs = tuple(n for n in names if n in accepted and
                                   (n in tokenizer.model_input_names or n == "input_ids"))

    @property
    def model(self) -> nn.Module:
        return self.auto_model

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.model_max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.tokenizer.model_max_length = int(value)

    def get_word_embedding_dimension(self) -> int:
        return self.auto_model.config.hidden_size

    def tokenize(self, texts: list) -> dict[str, list[list[int]]]:
        """Token ids (and type ids) of texts or (text, text) pairs, cut at max_seq_length, unpadded."""
        enc = self.tokenizer(texts, truncation=True, return_attention_mask=False,
                             return_token_type_ids="token_type_ids" in self._model_inputs)
        return {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}

    def collate(self, tokens: dict[str, list[list[int]]], rows: Sequence[int], device) -> dict[str, Tensor]:
        """The padded model inputs (B, T) of the texts at `rows`."""
        ids = [tokens["input_ids"][i] for i in rows]
        keep = _padding(torch.tensor([len(r) for r in ids]), self.tokenizer.padding_side == "left")
        pad_id = self.tokenizer.pad_token_id
        features = {"input_ids": _fill(keep, ids, 0 if pad_id is None else pad_id), "attention_mask": keep.long()}
        if "token_type_ids" in self._model_inputs:
            features["token_type_ids"] = _fill(keep, [tokens["token_type_ids"][i] for i in rows], 0)
        return {k: v.to(device, non_blocking=True) for k, v in features.items()}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.auto_model(**{k: features[k] for k in self._model_inputs if k in features}, return_dict=True)
        features["token_embeddings"] = out.last_hidden_state  # (B, T, C)
        return features

    def save(self, folder: str) -> None:
        self.auto_model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        with open(os.path.join(folder, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
            json.dump({"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case}, f, indent=2)


def _add_lowercase(tokenizer: Tokenizer) -> None:
    """sentence-transformers' do_lower_case: a Lowercase normaliser in front, unless one is already there."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    parts = list(current) if isinstance(current, normalizers.Sequence) else ([current] if current else [])
    if any(isinstance(p, normalizers.Lowercase) for p in parts):
        return
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *parts])


class Pooling(nn.Module):
    """Token embeddings (B, T, C) -> `sentence_embedding` (B, len(modes) * C), masked by the attention mask.

    With `include_prompt=False` the prompt's tokens (and the [CLS] before them) are left out, as in
    sentence-transformers' INSTRUCTOR-style models.
    """

    def __init__(self, embedding_dimension: int, pooling_mode: str | Sequence[str] = "mean",
                 include_prompt: bool = True):
        super().__init__()
        modes = (pooling_mode,) if isinstance(pooling_mode, str) else tuple(pooling_mode)
        for mode in modes:
            if mode not in POOLING_MODES:
                raise ConfigError(f"unknown pooling mode {mode!r}; supported: {', '.join(POOLING_MODES)}")
        self.embedding_dimension = int(embedding_dimension)
        self.modes = modes
        self.include_prompt = bool(include_prompt)

    @property
    def pooling_mode(self) -> str | tuple[str, ...]:
        return self.modes[0] if len(self.modes) == 1 else self.modes

    def get_sentence_embedding_dimension(self) -> int:
        return len(self.modes) * self.embedding_dimension

    @classmethod
    def from_config(cls, config: dict, where: str) -> "Pooling":
        """From 1_Pooling/config.json: the current `pooling_mode` key, or the legacy `pooling_mode_*_tokens` flags."""
        unknown = [k for k in config if k.startswith("pooling_mode_") and k not in LEGACY_POOLING_KEYS]
        if unknown:
            raise ConfigError(f"{where} has unknown pooling mode key(s) {unknown}; supported modes: "
                              f"{', '.join(POOLING_MODES)}")
        if "pooling_mode" in config:
            modes = config["pooling_mode"]
        else:
            modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)) or ("mean",)
        if not isinstance(modes, (str, list, tuple)) or not modes:
            raise ConfigError(f"{where}: pooling_mode must be a mode name or a list of them, got {modes!r}")
        for mode in (modes,) if isinstance(modes, str) else modes:
            if mode not in POOLING_MODES:
                raise ConfigError(f"{where} has unknown pooling mode {mode!r}; supported: {', '.join(POOLING_MODES)}")
        dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
        if not isinstance(dim, int):
            raise ConfigError(f"{where} has no integer 'embedding_dimension' (or 'word_embedding_dimension')")
        return cls(dim, modes, config.get("include_prompt", True))

    def config(self) -> dict:
        legacy_order = [m for m in LEGACY_POOLING_KEYS.values() if m in self.modes]
        if tuple(legacy_order) == self.modes:  # every sentence-transformers release reads this form
            out = {"word_embedding_dimension": self.embedding_dimension}
            out.update({key: mode in self.modes for key, mode in LEGACY_POOLING_KEYS.items()})
        else:
            out = {"embedding_dimension": self.embedding_dimension, "pooling_mode": list(self.modes)}
        out["include_prompt"] = self.include_prompt
        return out

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        x = features["token_embeddings"]  # (B, T, C)
        original = features["attention_mask"]  # (B, T)
        mask = original
        prompt_length = features.get("prompt_length")
        if not self.include_prompt and prompt_length:
            mask = _mask_prompt(mask, prompt_length)
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        outputs, mean_sum, count = [], None, None
        for mode in self.modes:
            if mode == "cls":
                first = mask.to(torch.int).argmax(dim=1)  # (B,)
                outputs.append(x.gather(1, first[:, None, None].expand(-1, 1, x.size(-1))).squeeze(1))
            elif mode == "max":
                keep = mask.unsqueeze(-1).expand_as(x).to(x.dtype)
                outputs.append(x.masked_fill(keep == 0, float("-inf")).max(dim=1).values)
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                if mean_sum is None:
                    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
                    mean_sum = (x * m).sum(dim=1, dtype=acc)  # (B, C)
                    count = torch.clamp(m.sum(dim=1, dtype=acc), min=1e-9)  # (B, 1)
                y = mean_sum / (count if mode == "mean" else torch.sqrt(count))
                outputs.append(y.to(x.dtype))
            elif mode == "weightedmean":
                m = mask.unsqueeze(-1).to(acc)
                weights = torch.arange(1, x.size(1) + 1, device=x.device, dtype=acc).view(1, -1, 1)
                if original.numel():  # weights count from the first real token (left padding)
                    weights = weights - original.to(torch.int32).argmax(dim=1).view(-1, 1, 1)
                weighted = m * weights
                y = (x * weighted).sum(dim=1) / torch.clamp(weighted.sum(dim=1), min=1e-9)
                outputs.append(y.to(x.dtype))
            else:  # lasttoken
                B, T, C = x.shape
                values, idx = mask.flip(1).max(1)
                idx = torch.where(values == 0, T - 1, idx)
                gather = (T - idx - 1)[:, None, None].expand(-1, 1, C)
                keep = mask.unsqueeze(-1).expand_as(x).to(x.dtype)
                outputs.append(torch.gather(x * keep, 1, gather).squeeze(1))
        features["sentence_embedding"] = torch.cat(outputs, dim=-1)
        return features


def _mask_prompt(mask: Tensor, prompt_length: int) -> Tensor:
    """The attention mask without the first `prompt_length` real tokens of each row (after any left padding)."""
    mask = mask.clone()
    pad = mask.to(torch.int32).argmax(dim=1)  # (B,) left padding
    if int(pad.sum()) == 0:
        mask[:, :prompt_length] = 0
    else:
        positions = torch.arange(mask.size(1), device=mask.device)[None]
        mask[positions < (pad + prompt_length)[:, None]] = 0
    return mask


class Dense(nn.Module):
    """A linear layer and an activation (Tanh by default) on `sentence_embedding` (or the configured key)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation_function: Optional[Callable] = None, module_input_name: str = "sentence_embedding",
                 module_output_name: Optional[str] = None, use_residual: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.bias = int(in_features), int(out_features), bool(bias)
        self.linear = Linear(self.in_features, self.out_features, bias=self.bias)
        self.activation_function = nn.Tanh() if activation_function is None else activation_function
        self.module_input_name = module_input_name
        self.module_output_name = module_output_name or module_input_name
        self.use_residual = bool(use_residual)
        if self.use_residual and self.in_features != self.out_features:
            self.residual = Linear(self.in_features, self.out_features, bias=False)

    def get_sentence_embedding_dimension(self) -> int:
        return self.out_features

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = features[self.module_input_name]
        y = self.activation_function(self.linear(x))
        if self.use_residual:
            y = y + (x if self.in_features == self.out_features else self.residual(x))
        features[self.module_output_name] = y
        return features

    def config(self) -> dict:
        out = {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias,
               "activation_function": _class_path(self.activation_function)}
        if self.module_input_name != "sentence_embedding" or self.module_output_name != self.module_input_name:
            out.update(module_input_name=self.module_input_name, module_output_name=self.module_output_name)
        if self.use_residual:
            out["use_residual"] = True
        return out

    @classmethod
    def load(cls, source: Source, folder: str, trust_remote_code: bool) -> "Dense":
        where = f"{_join(folder, 'config.json')} of {source}"
        config = _read_json(source, _join(folder, "config.json"))
        if config is None:
            raise ConfigError(f"{source} has no {_join(folder, 'config.json')} for its Dense module")
        known = ("in_features", "out_features", "bias", "activation_function", "module_input_name",
                 "module_output_name", "use_residual")
        kwargs = {k: v for k, v in config.items() if k in known}
        if "activation_function" in kwargs:
            kwargs["activation_function"] = _resolve_activation(kwargs["activation_function"], trust_remote_code,
                                                                where)
        try:
            with torch.device("meta"):
                module = cls(**kwargs)
        except TypeError as error:
            raise ConfigError(f"{where} is not a Dense config: {error}") from None
        path = source.file(_join(folder, "model.safetensors")) or source.file(_join(folder, "pytorch_model.bin"))
        if path is None:
            raise ConfigError(f"{source} has no weights for its Dense module in '{folder}' "
                              f"(model.safetensors or pytorch_model.bin)")
        state, _ = read_weights([path])
        expected = dict(module.state_dict())
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ConfigError(f"{path} lacks {missing} (has {sorted(state)})")
        for key, tensor in expected.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ConfigError(f"{path}: '{key}' has shape {tuple(state[key].shape)}, the Dense config asks for "
                                  f"{tuple(tensor.shape)}")
        module.load_state_dict({k: state[k].float() for k in expected}, assign=True)
        return module

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump(self.config(), f, indent=2)
        write_weights({k: v.contiguous() for k, v in self.state_dict().items()}, folder)


class Normalize(nn.Module):
    """L2 normalisation of `sentence_embedding` (or the configured key)."""

    def __init__(self, module_input_name: str = "sentence_embedding", module_output_name: Optional[str] = None):
        super().__init__()
        self.module_input_name = module_input_name
        self.module_output_name = module_output_name or module_input_name

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = features.get(self.module_input_name)
        if x is not None:
            features[self.module_output_name] = F.normalize(x, p=2, dim=-1)
        return features


# -------------------------------------------------------------------------------- SentenceTransformer
class SentenceTransformer(nn.Sequential):
    """sentence-transformers' `SentenceTransformer` for inference: `encode`, `similarity`, `save`.

    Args:
        model_name_or_path: a folder, or a Hub id (a bare name such as `all-MiniLM-L6-v2` is looked up under
            `sentence-transformers/` first). A folder without modules.json gets mean pooling.
        device: "cpu", "cuda", …; default: CUDA, else MPS, else the CPU.
        prompts, default_prompt_name: prompts added to (or replacing) the saved ones.
        cache_folder, revision, token, local_files_only: where and how Hub files are fetched.
        trust_remote_code: accepted for compatibility; pretrained never runs a model's own code.
        truncate_dim: cut embeddings to their first `truncate_dim` values.
        similarity_fn_name: "cosine", "dot", "euclidean" or "manhattan" (default: the saved one, else cosine).
        model_kwargs: passed to the encoder's `from_pretrained` (e.g. `dtype`, `attn_implementation`).

    Raises:
        ValueError: a modules.json module type pretrained does not run, an unknown pooling mode (ConfigError),
            an unknown default prompt or similarity function.
    """

    def __init__(self, model_name_or_path: Optional[str] = None, *, modules: Optional[Iterable[nn.Module]] = None,
                 device: Optional[str] = None, prompts: Optional[dict[str, str]] = None,
                 default_prompt_name: Optional[str] = None, cache_folder: Optional[str] = None,
                 trust_remote_code: bool = False, revision: Optional[str] = None, local_files_only: bool = False,
                 token: Optional[str | bool] = None, truncate_dim: Optional[int] = None,
                 similarity_fn_name: Optional[str] = None, model_kwargs: Optional[dict] = None):
        settings: dict = {}
        if model_name_or_path is not None:
            source = _source(model_name_or_path, "sentence-transformers",
                             _hub_options(revision, token, cache_folder, local_files_only))
            modules, settings = _load_modules(source, trust_remote_code, dict(model_kwargs or {}))
        elif modules is None:
            raise ValueError("give model_name_or_path (a folder or Hub id) or modules")
        super().__init__(OrderedDict(modules) if isinstance(modules, dict) else OrderedDict(
            (str(i), m) for i, m in enumerate(modules)))
        self.prompts = {"query": "", "document": ""}
        self.prompts.update(settings.get("prompts") or {})
        self.prompts.update(prompts or {})
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None \
            else settings.get("default_prompt_name")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default prompt name {self.default_prompt_name!r} is not one of the prompts "
                             f"{sorted(self.prompts)}")
        self.truncate_dim = truncate_dim if truncate_dim is not None else settings.get("truncate_dim")
        self._similarity_fn_name = None
        self.similarity_fn_name = similarity_fn_name or settings.get("similarity_fn_name") or "cosine"
        self.trust_remote_code = trust_remote_code
        self.eval()
        self.to(device or default_device())

    # -- properties of the model -------------------------------------------------------------------------
    @property
    def _transformer(self) -> Transformer:
        first = self[0]
        if not isinstance(first, Transformer):
            raise TypeError(f"the first module is a {type(first).__name__}, not a Transformer")
        return first

    @property
    def tokenizer(self) -> Tokenizer:
        return self._transformer.tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self._transformer.tokenizer = value

    @property
    def max_seq_length(self) -> int:
        """Inputs longer than this many tokens are cut; settable."""
        return self._transformer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._transformer.max_seq_length = value

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def similarity_fn_name(self) -> str:
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        value = getattr(value, "value", value)  # sentence-transformers' SimilarityFunction enum
        if value not in SIMILARITY_FNS:
            raise ValueError(f"unknown similarity function {value!r}; supported: {', '.join(SIMILARITY_FNS)}")
        self._similarity_fn_name = value

    def get_sentence_embedding_dimension(self) -> Optional[int]:
        """The length of the vectors `encode` returns (after `truncate_dim`)."""
        dim = None
        for module in reversed(list(self)):
            for name in ("get_sentence_embedding_dimension", "get_word_embedding_dimension"):
                if hasattr(module, name):
                    dim = getattr(module, name)()
                    break
            if dim is not None:
                break
        if self.truncate_dim is not None:
            return self.truncate_dim if dim is None else min(dim, self.truncate_dim)
        return dim

    get_embedding_dimension = get_sentence_embedding_dimension

    # -- encoding ----------------------------------------------------------------------------------------
    def _prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt as it starts a text: with the leading special token, without the trailing one."""
        ids = self.tokenizer(prompt, truncation=True)["input_ids"]
        if ids and ids[-1] in set(self.tokenizer.all_special_ids):
            return len(ids) - 1
        return len(ids)

    def encode(self, sentences: str | Sequence[str], prompt_name: Optional[str] = None,
               prompt: Optional[str] = None, batch_size: int = 32, show_progress_bar: Optional[bool] = None,
               output_value: Optional[str] = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, device: Optional[str] = None,
               normalize_embeddings: bool = False, truncate_dim: Optional[int] = None):
        """Embed one text (-> a vector) or a list of texts (-> a matrix, one row per text, in input order).

        Args:
            prompt_name / prompt: a saved prompt by name, or a prompt string, put in front of every text.
            output_value: "sentence_embedding", "token_embeddings" (a list of (tokens, C) tensors, without
                padding) or None (a list of dicts with every feature).
            precision: "float32", or "int8", "uint8", "binary", "ubinary" (quantised as sentence-transformers
                does; numpy arrays).
            convert_to_numpy / convert_to_tensor: a numpy array (default; needs numpy) or one tensor;
                with both False, a list of tensors.
            device: run on this device (the model moves there).
            normalize_embeddings: L2-normalise the vectors (after truncate_dim).

        Raises:
            TypeError: a text that is not a str (its position is named).
            ValueError: an unknown prompt name, output_value or precision; a batch_size below 1.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if output_value not in ("sentence_embedding", "token_embeddings", None):
            raise ValueError(f"output_value must be 'sentence_embedding', 'token_embeddings' or None, "
                             f"got {output_value!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
        single, texts = _as_texts(sentences)
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != "sentence_embedding":
            convert_to_numpy = convert_to_tensor = False
        if convert_to_numpy or precision != "float32":
            _numpy()  # fail before the work, not after
        prompt = _resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name)
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        if device is not None:
            self.to(device)
        device = self.device

        prompt_length = None
        if prompt:
            texts = [prompt + t for t in texts]
            prompt_length = self._prompt_length(prompt)
        results = _run_sorted(self, texts, batch_size, _show_progress(show_progress_bar), device,
                              prompt_length, output_value, truncate_dim, normalize_embeddings,
                              keep_on_device=not convert_to_numpy)
        if output_value != "sentence_embedding":
            return results[0] if single else results

        embeddings = results  # (N, D) tensor
        if precision != "float32" and len(texts):
            embeddings = _quantize(embeddings, precision)
            if convert_to_tensor:
                embeddings = torch.from_numpy(embeddings)
            elif not convert_to_numpy:
                embeddings = list(torch.from_numpy(embeddings))
        elif convert_to_numpy:
            np = _numpy()
            embeddings = embeddings.float().numpy() if len(texts) else np.array([])
        elif not convert_to_tensor:
            embeddings = list(embeddings)
        return embeddings[0] if single else embeddings

    def encode_query(self, sentences, prompt_name: Optional[str] = None, prompt: Optional[str] = None, **kwargs):
        """`encode` with the "query" prompt (when the model has one and none is given)."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, sentences, prompt_name: Optional[str] = None, prompt: Optional[str] = None,
                        **kwargs):
        """`encode` with the "document" (else "passage", "corpus") prompt, when the model has one."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    # -- similarity --------------------------------------------------------------------------------------
    def similarity(self, embeddings1, embeddings2) -> Tensor:
        """(N, M) scores of every pair with `similarity_fn_name`: cosine, dot, or the negative euclidean or
        manhattan distance."""
        a, b = _as_matrix(embeddings1), _as_matrix(embeddings2)
        name = self.similarity_fn_name
        if name == "cosine":
            return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T
        if name == "dot":
            return a @ b.T
        return -torch.cdist(a, b, p=2.0 if name == "euclidean" else 1.0)

    def similarity_pairwise(self, embeddings1, embeddings2) -> Tensor:
        """(N,) scores of row i of the first with row i of the second."""
        a, b = _as_float(embeddings1), _as_float(embeddings2)
        name = self.similarity_fn_name
        if name == "cosine":
            return (F.normalize(a, p=2, dim=-1) * F.normalize(b, p=2, dim=-1)).sum(dim=-1)
        if name == "dot":
            return (a * b).sum(dim=-1)
        if name == "euclidean":
            return -torch.linalg.vector_norm(a - b, dim=-1)
        return -torch.sum(torch.abs(a - b), dim=-1)

    # -- saving ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a folder that sentence-transformers (and this class) loads: modules.json, the encoder at the
        root, 1_Pooling/, 2_Dense/ …, config_sentence_transformers.json."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        entries = []
        for index, (name, module) in enumerate(self.named_children()):
            kind = type(module).__name__
            if kind not in SUPPORTED_MODULES:
                raise TypeError(f"cannot save module {name} of type {kind}; pretrained saves {SUPPORTED_MODULES}")
            folder = "" if index == 0 and kind == "Transformer" else f"{index}_{kind}"
            target = os.path.join(path, folder)
            os.makedirs(target, exist_ok=True)
            if kind in ("Transformer", "Dense"):
                module.save(target)
            elif kind == "Pooling":
                with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as f:
                    json.dump(module.config(), f, indent=2)
            elif module.module_input_name != "sentence_embedding" or \
                    module.module_output_name != module.module_input_name:
                with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as f:
                    json.dump({"module_input_name": module.module_input_name,
                               "module_output_name": module.module_output_name}, f, indent=2)
            entries.append({"idx": index, "name": name, "path": folder, "type": f"sentence_transformers.models.{kind}"})
        with open(os.path.join(path, "modules.json"), "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=2)
        config = {"__version__": {"pretrained": _version(), "pytorch": torch.__version__},
                  "model_type": "SentenceTransformer", "prompts": self.prompts,
                  "default_prompt_name": self.default_prompt_name, "similarity_fn_name": self.similarity_fn_name}
        if self.truncate_dim is not None:
            config["truncate_dim"] = self.truncate_dim
        with open(os.path.join(path, "config_sentence_transformers.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)

    save_pretrained = save


def _resolve_prompt(prompts: dict, default_name: Optional[str], prompt: Optional[str],
                    prompt_name: Optional[str]) -> Optional[str]:
    """The prompt string to use: `prompt`, else the prompt called `prompt_name`, else the default prompt."""
    if prompt is not None:
        if prompt_name is not None:
            logger.warning("both prompt and prompt_name were given; using prompt")
        return prompt
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ValueError(f"unknown prompt name {prompt_name!r}; this model's prompts are {sorted(prompts)}")
        return prompts[prompt_name]
    return prompts.get(default_name) if default_name is not None else None


def _version() -> str:
    from . import __version__

    return __version__


def _as_texts(sentences) -> tuple[bool, list[str]]:
    """(whether one text was given, the texts); a non-str item raises TypeError naming its position."""
    if isinstance(sentences, str):
        return True, [sentences]
    if sentences is None or isinstance(sentences, (bytes, dict)) or not hasattr(sentences, "__iter__"):
        raise TypeError(f"sentences must be a str or a list of str, got {type(sentences).__name__}")
    texts = list(sentences.tolist() if hasattr(sentences, "tolist") else sentences)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(text).__name__}: {text!r:.60}")
    return False, texts


def _as_float(x) -> Tensor:
    if isinstance(x, list) and x and isinstance(x[0], Tensor):
        x = torch.stack(x)
    t = x if isinstance(x, Tensor) else torch.as_tensor(_numpy().asarray(x))
    return t.float() if torch.is_floating_point(t) and torch.finfo(t.dtype).bits < 32 else t


def _as_matrix(x) -> Tensor:
    t = _as_float(x)
    return t[None] if t.dim() == 1 else t


def _quantize(embeddings: Tensor, precision: str):
    """sentence-transformers' quantize_embeddings, with the ranges taken from these embeddings."""
    np = _numpy()
    x = embeddings.float().cpu().numpy()
    if precision.endswith("int8"):
        if x.shape[0] == 1:
            raise ValueError(f"cannot compute {precision} quantization ranges from a single embedding; quantize "
                             f"a batch of embeddings")
        starts = x.min(axis=0)
        steps = (x.max(axis=0) - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((x - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(x > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)


@torch.inference_mode()
def _run_sorted(model: SentenceTransformer, texts: list[str], batch_size: int, progress: bool, device,
                prompt_length: Optional[int], output_value: Optional[str], truncate_dim: Optional[int],
                normalize: bool, keep_on_device: bool):
    """Tokenise, sort by token count (longest first), run the modules batch by batch, restore the order.

    Returns an (N, D) tensor for sentence embeddings, else a list with one entry per text."""
    transformer = model._transformer
    n = len(texts)
    out: Optional[Tensor] = None
    rows_out: list = [None] * n
    bar = _progress_bar(sum(math.ceil(min(CHUNK, n - lo) / batch_size) for lo in range(0, n, CHUNK)), progress)
    for lo in range(0, n, CHUNK):
        chunk = texts[lo:lo + CHUNK]
        tokens = transformer.tokenize(chunk)
        order = sorted(range(len(chunk)), key=lambda i: -len(tokens["input_ids"][i]))
        for start in range(0, len(chunk), batch_size):
            rows = order[start:start + batch_size]
            features = transformer.collate(tokens, rows, device)
            if prompt_length is not None:
                features["prompt_length"] = prompt_length
            features = model(features)
            targets = [lo + r for r in rows]
            if output_value == "sentence_embedding":
                emb = features["sentence_embedding"]
                if truncate_dim is not None:
                    emb = emb[..., :truncate_dim]
                if normalize:
                    emb = F.normalize(emb, p=2, dim=1)
                if out is None:
                    out = torch.empty((n, emb.size(-1)), dtype=emb.dtype,
                                      device=emb.device if keep_on_device else "cpu")
                out[torch.tensor(targets, device=out.device)] = emb.to(out.device)
            elif output_value == "token_embeddings":
                mask = features["attention_mask"]  # kept up to the last real token, as sentence-transformers does
                ends = (mask.size(1) - mask.flip(1).argmax(dim=1)).tolist()
                for j, t in enumerate(targets):
                    rows_out[t] = features["token_embeddings"][j, :ends[j]]
            else:
                B = len(rows)
                for j, t in enumerate(targets):
                    rows_out[t] = {k: v[j] if isinstance(v, Tensor) and v.dim() > 0 and v.size(0) == B else v
                                   for k, v in features.items()}
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if output_value == "sentence_embedding":
        if out is None:
            return torch.empty((0, model.get_sentence_embedding_dimension() or 0))
        return out
    return rows_out


def _load_modules(source: Source, trust_remote_code: bool, model_kwargs: dict) -> tuple[list[nn.Module], dict]:
    """The modules of a sentence-transformers folder (modules.json), or Transformer + mean pooling for a plain
    transformers folder; and the settings of config_sentence_transformers.json."""
    settings = _read_json(source, "config_sentence_transformers.json") or {}
    modules_path = source.file("modules.json")
    if modules_path is None:
        transformer = _load_transformer(source, "", model_kwargs)
        config = transformer.auto_model.config
        causal = bool(config.architectures) and config.architectures[0].endswith("ForCausalLM") \
            and getattr(config, "is_causal", True)
        pooling = Pooling(transformer.get_word_embedding_dimension(), "lasttoken" if causal else "mean")
        return [transformer, pooling], {}
    where = f"modules.json of {source}"
    try:
        with open(modules_path, encoding="utf-8") as f:
            entries = json.load(f)
    except ValueError as error:
        raise ConfigError(f"{modules_path} is not valid JSON: {error}") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{modules_path} must hold a non-empty list of module entries")
    model_type = settings.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        logger.warning("%s is a %s; loading it as a SentenceTransformer (encoder + mean pooling)", source, model_type)
        transformer = _load_transformer(source, "", model_kwargs)
        return [transformer, Pooling(transformer.get_word_embedding_dimension(), "mean")], {}
    modules: list[nn.Module] = []
    for entry in sorted(entries, key=lambda e: e.get("idx", 0)):
        kind = _module_kind(entry.get("type"), where)
        folder = entry.get("path", "") or ""
        if not isinstance(folder, str) or folder.startswith(("/", "\\")) or ".." in folder.split("/"):
            raise ConfigError(f"{where}: module path {folder!r} must be a folder inside the model")
        if kind == "Transformer":
            module = _load_transformer(source, folder, model_kwargs)
        elif kind == "Pooling":
            file = _join(folder, "config.json")
            config = _read_json(source, file)
            if config is None:
                raise ConfigError(f"{source} has no {file} for its Pooling module")
            module = Pooling.from_config(config, f"{file} of {source}")
        elif kind == "Dense":
            module = Dense.load(source, folder, trust_remote_code)
        else:
            config = (_read_json(source, _join(folder, "config.json")) if folder else None) or {}
            module = Normalize(config.get("module_input_name", "sentence_embedding"),
                               config.get("module_output_name"))
        modules.append(module)
    if not isinstance(modules[0], Transformer):
        raise ConfigError(f"{where}: the first module must be a Transformer, found {type(modules[0]).__name__}")
    names = [str(e.get("name", i)) for i, e in enumerate(sorted(entries, key=lambda e: e.get("idx", 0)))]
    return dict(zip(names, modules)), settings


def _sbert_config(source: Source, folder: str) -> dict:
    for name in SBERT_CONFIG_FILES:
        config = _read_json(source, _join(folder, name))
        if config is not None:
            return config
    return {}


def _load_transformer(source: Source, folder: str, model_kwargs: dict, task: str = "feature-extraction",
                      num_labels: Optional[int] = None) -> Transformer:
    """The encoder module: the model (the base model, or for task "sequence-classification" the classifier)
    and its tokenizer. A classifier loaded from a checkpoint without one gets one label, as in
    sentence-transformers."""
    config = _sbert_config(source, folder)
    saved_task = config.get("transformer_task", task)
    if saved_task != task:
        raise ConfigError(f"{_join(folder, 'sentence_bert_config.json')} of {source} declares transformer_task "
                          f"{saved_task!r}; this class runs {task!r}")
    modality = config.get("modality_config", {}).get("text") if isinstance(config.get("modality_config"), dict) \
        else None
    expected = "last_hidden_state" if task == "feature-extraction" else "logits"
    if modality is not None and (modality.get("method") != "forward" or modality.get("method_output_name") != expected):
        raise ConfigError(f"{_join(folder, 'sentence_bert_config.json')} of {source} reads "
                          f"{modality.get('method_output_name')!r} from the model's {modality.get('method')!r}; "
                          f"pretrained supports forward -> {expected!r}")
    sub = source if not folder else Source(source.name_or_path, revision=source.commit or source.revision,
                                           cache_dir=source.cache_dir, token=source.token,
                                           local_files_only=source.local_files_only,
                                           subfolder=_join(source.subfolder, folder))
    auto = AutoModel if task == "feature-extraction" else AutoModelForSequenceClassification
    model_config = AutoConfig.from_pretrained(sub)
    if num_labels is not None:
        model_config.num_labels = num_labels
    elif task != "feature-extraction" and not any(
            a.endswith("ForSequenceClassification") for a in model_config.architectures or []):
        model_config.num_labels = 1
    model = auto.from_pretrained(sub, config=model_config, **model_kwargs).eval()
    tokenizer = _tokenizer(sub)
    return Transformer(model, tokenizer, config.get("max_seq_length"), config.get("do_lower_case", False))


# ---------------------------------------------------------------------------------------- CrossEncoder
class CrossEncoder(nn.Module):
    """sentence-transformers' `CrossEncoder` for inference: scores (text, text) pairs with a
    sequence-classification model; `predict` and `rank`.

    Args:
        model_name_or_path: a folder or Hub id (a bare name is looked up under `cross-encoder/` first).
        num_labels: the number of outputs (a base model without a classifier gets a new one, like
            sentence-transformers, which then needs training).
        max_length: inputs are cut at this many tokens (default: the tokenizer's limit, at most the model's
            positions).
        activation_fn: applied to the logits by `predict`; default as sentence-transformers chooses it: the
            saved one (config_sentence_transformers.json, else config.json's `sentence_transformers`), else
            Sigmoid for one label, Identity otherwise.
        device, cache_folder, revision, token, local_files_only, trust_remote_code, model_kwargs: as in
            SentenceTransformer.
    """

    def __init__(self, model_name_or_path: str, num_labels: Optional[int] = None, max_length: Optional[int] = None,
                 activation_fn: Optional[Callable] = None, device: Optional[str] = None, *,
                 cache_folder: Optional[str] = None, revision: Optional[str] = None, token=None,
                 local_files_only: bool = False, trust_remote_code: bool = False,
                 prompts: Optional[dict[str, str]] = None, default_prompt_name: Optional[str] = None,
                 model_kwargs: Optional[dict] = None):
        super().__init__()
        source = _source(model_name_or_path, "cross-encoder",
                         _hub_options(revision, token, cache_folder, local_files_only))
        settings = _read_json(source, "config_sentence_transformers.json") or {}
        if source.file("modules.json") is not None and settings.get("model_type") == "CrossEncoder":
            with open(source.file("modules.json"), encoding="utf-8") as f:
                entries = json.load(f)
            kinds = [_module_kind(e.get("type"), f"modules.json of {source}") for e in entries]
            if kinds != ["Transformer"]:
                raise ValueError(f"modules.json of {source} lists {kinds}; pretrained's CrossEncoder runs a single "
                                 f"Transformer module")
            folder = entries[0].get("path", "") or ""
        else:
            settings, folder = {}, ""
        self.transformer = _load_transformer(source, folder, dict(model_kwargs or {}), "sequence-classification",
                                             num_labels)
        if max_length is not None:
            self.transformer.max_seq_length = max_length
        self.config = self.transformer.auto_model.config
        self.trust_remote_code = trust_remote_code
        self.prompts = dict(settings.get("prompts") or {})
        self.prompts.update(prompts or {})
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None \
            else settings.get("default_prompt_name")
        if activation_fn is None and settings.get("activation_fn") is not None:
            activation_fn = _resolve_activation(settings["activation_fn"], trust_remote_code,
                                                f"config_sentence_transformers.json of {source}")
        self.activation_fn = activation_fn if activation_fn is not None else self._default_activation(source)
        self.eval()
        self.to(device or default_device())

    def _default_activation(self, source: Source) -> Callable:
        saved = getattr(self.config, "sentence_transformers", None)
        path = saved.get("activation_fn") if isinstance(saved, dict) else None
        if path is None:
            path = getattr(self.config, "sbert_ce_default_activation_function", None)
        resolved = _resolve_activation(path, self.trust_remote_code, f"config.json of {source}") if path else None
        if resolved is not None:
            return resolved
        return nn.Sigmoid() if self.num_labels == 1 else nn.Identity()

    @property
    def model(self) -> nn.Module:
        return self.transformer.auto_model

    @property
    def tokenizer(self) -> Tokenizer:
        return self.transformer.tokenizer

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def max_length(self) -> int:
        return self.transformer.max_seq_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.transformer.max_seq_length = value

    max_seq_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def predict(self, sentences: Sequence[Sequence[str]] | Sequence[str], batch_size: int = 32,
                show_progress_bar: Optional[bool] = None, activation_fn: Optional[Callable] = None,
                apply_softmax: bool = False, convert_to_numpy: bool = True, convert_to_tensor: bool = False,
                prompt_name: Optional[str] = None, prompt: Optional[str] = None):
        """Scores of (text, text) pairs: one pair gives one score (or a row of `num_labels` scores), a list of
        pairs gives an array, in input order.

        Raises:
            TypeError / ValueError: an item that is not a pair of two str (its position is named).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        single = isinstance(sentences, (list, tuple)) and len(sentences) > 0 and isinstance(sentences[0], str)
        pairs = _as_pairs([sentences] if single else sentences)
        if convert_to_numpy and not convert_to_tensor:
            _numpy()
        prompt = _resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name)
        if prompt:
            pairs = [(prompt + a, b) for a, b in pairs]
        activation_fn = self.activation_fn if activation_fn is None else activation_fn
        tokens = self.transformer.tokenize(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -len(tokens["input_ids"][i]))
        scores = None
        bar = _progress_bar(math.ceil(len(pairs) / batch_size), _show_progress(show_progress_bar))
        for start in range(0, len(pairs), batch_size):
            rows = order[start:start + batch_size]
            features = self.transformer.collate(tokens, rows, self.device)
            inputs = {k: features[k] for k in self.transformer._model_inputs}
            logits = self.model(**inputs, return_dict=True).logits  # (B, num_labels)
            if torch.is_floating_point(logits) and torch.finfo(logits.dtype).bits < 32:
                logits = logits.float()
            y = activation_fn(logits) if activation_fn is not None else logits
            if self.num_labels == 1 and y.dim() > 1:
                y = y.squeeze(-1)
            if apply_softmax and y.dim() > 1:
                y = F.softmax(y, dim=1)
            if scores is None:
                scores = torch.empty((len(pairs), *y.shape[1:]), dtype=y.dtype, device=y.device)
            scores[torch.tensor(rows, device=y.device)] = y
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if scores is None:
            scores = torch.empty(0)
        if convert_to_tensor:
            out = scores
        elif convert_to_numpy:
            out = scores.float().cpu().numpy()
        else:
            out = list(scores)
        return out[0] if single else out

    def rank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None,
             return_documents: bool = False, batch_size: int = 32, show_progress_bar: Optional[bool] = None,
             activation_fn: Optional[Callable] = None, prompt_name: Optional[str] = None,
             prompt: Optional[str] = None) -> list[dict]:
        """The documents by their score against `query`, best first: [{"corpus_id", "score", ("text")}, …]."""
        if self.num_labels != 1:
            raise ValueError(f"rank() needs a model with one output (num_labels=1), this one has {self.num_labels}; "
                             f"use predict() on the pairs instead")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        _, documents = _as_texts(documents)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size,
                              show_progress_bar=show_progress_bar, activation_fn=activation_fn,
                              convert_to_tensor=True, prompt_name=prompt_name, prompt=prompt).tolist()
        results = [{"corpus_id": i, "score": s, **({"text": documents[i]} if return_documents else {})}
                   for i, s in enumerate(scores)]
        return sorted(results, key=lambda r: r["score"], reverse=True)[:top_k]

    def save(self, path: str | os.PathLike) -> None:
        """Write a folder that sentence-transformers' CrossEncoder (and this class) loads."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        with open(os.path.join(path, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
            json.dump({"max_seq_length": self.max_length, "do_lower_case": self.transformer.do_lower_case,
                       "transformer_task": "sequence-classification",
                       "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                       "module_output_name": "scores"}, f, indent=2)
        with open(os.path.join(path, "modules.json"), "w", encoding="utf-8") as f:
            json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}], f,
                      indent=2)
        with open(os.path.join(path, "config_sentence_transformers.json"), "w", encoding="utf-8") as f:
            json.dump({"__version__": {"pretrained": _version(), "pytorch": torch.__version__},
                       "model_type": "CrossEncoder", "activation_fn": _class_path(self.activation_fn),
                       "prompts": self.prompts, "default_prompt_name": self.default_prompt_name}, f, indent=2,
                      sort_keys=True)

    save_pretrained = save


def _as_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, str) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"sentences must be a (text, text) pair or a list of pairs, got {type(pairs).__name__}")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"sentences[{i}] must be a pair of two texts, got {pair!r:.80}")
        for j, text in enumerate(pair):
            if not isinstance(text, str):
                raise TypeError(f"sentences[{i}][{j}] must be a str, got {type(text).__name__}: {text!r:.60}")
        out.append((pair[0], pair[1]))
    return out


def is_reranker(folder: str) -> bool:
    """Whether `pretrained run` ranks documents with this folder: a sequence-classification checkpoint that
    sentence-transformers marks as a CrossEncoder (config_sentence_transformers.json's model_type, or
    config.json's `sentence_transformers` / `sbert_ce_default_activation_function`), or that has one label."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        return False
    config = read_config_dict(config_path)
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return False
    st_path = os.path.join(folder, "config_sentence_transformers.json")
    if os.path.isfile(st_path) and read_config_dict(st_path).get("model_type") == "CrossEncoder":
        return True
    if "sentence_transformers" in config or "sbert_ce_default_activation_function" in config:
        return True
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    return labels == 1
