"""Text generation for models with a language-model head: greedy, sampling and beam search.

Decoding is architecture-agnostic. It only needs the model's step contract:

- causal models (GPT-2): `model(input_ids, attention_mask=, position_ids=, past_key_values=, use_cache=True)`
  returns `.logits` (B, T, V) and `.past_key_values`, a cache with `reorder(beam_idx)`;
- encoder-decoder models (BART): `model.get_encoder()(input_ids=, attention_mask=)` once, then
  `model(encoder_outputs=, attention_mask=, decoder_input_ids=, past_key_values=, use_cache=True)` per step.

A model class gets `generate()` and a `generation_config` by listing `GenerationMixin` before its
PreTrainedModel base, so that the mixin's load/save hooks (generation_config.json) take precedence.

The results are token for token those of transformers 5.24's `generate` with the same arguments: the same
parameter resolution (call arguments > `generation_config` argument > the model's generation_config.json >
transformers' global defaults), the same logits processors in the same order with the same maths, the same
beam search (transformers 5's vectorised version, with its length penalty and early-stopping heuristics), and
the same random number consumption, so that `torch.manual_seed` gives the same samples.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .atomic import atomic_write
from .configuration import ConfigError, read_config_dict
from .hub import Source, pop_hub_options
from .layers import KVCache, as_ids_tensor, check_input_ids
from .outputs import BaseModelOutput, ModelOutput

logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"
# A documented sanity limit: num_beams and num_return_sequences above it are refused (each is a row of the batch
# and of its KV cache; 10^9 asked for 40 GB before anything ran).
MAX_SEQUENCES_PER_PROMPT = 1024

# Every field of transformers' GenerationConfig. All are None until set, as in transformers 5, so that a
# file or a call can say "not set" and the next level of defaults applies.
FIELDS = (
    # length
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    # strategy
    "do_sample", "num_beams", "use_mtp",
    # cache
    "use_cache", "cache_implementation", "cache_config", "max_cache_len",
    # logits manipulation
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "renormalize_logits", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
    "token_healing", "guidance_scale", "watermarking_config",
    # outputs
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
    "return_dict_in_generate",
    # special tokens
    "pad_token_id", "bos_token_id", "eos_token_id", "encoder_no_repeat_ngram_size", "decoder_start_token_id",
    # assisted generation
    "is_assistant", "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
    "target_lookbehind", "assistant_ensemble_weight", "speculation_type",
    # performance
    "compile_config", "disable_compile", "continuous_batching_config", "prefill_chunk_size",
    # deprecated strategies (moved to the Hub by transformers)
    "low_memory", "penalty_alpha", "dola_layers", "diversity_penalty", "num_beam_groups", "constraints",
    "force_words_ids",
)
# Written to generation_config.json but not settings: ignored by __eq__ and repr.
METADATA_FIELDS = ("_from_model_config", "transformers_version")

# transformers' `GenerationConfig._get_default_generation_params`: what applies when neither the call, nor
# the generation_config argument, nor the model's generation config sets a value.
DEFAULTS: dict[str, Any] = {
    "max_length": 20, "min_length": 0, "do_sample": False, "use_cache": True, "early_stopping": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4,
    "assistant_lookbehind": 10, "target_lookbehind": 10, "num_beam_groups": 1, "diversity_penalty": 0.0,
}

# Settings this generate() does not implement, with the values at which they do nothing. A config that sets
# one of them to anything else raises instead of silently decoding differently from transformers.
_UNSUPPORTED: dict[str, tuple] = {
    "max_time": (None,), "stop_strings": (None,), "use_mtp": (None, False), "bad_words_ids": (None,),
    "encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0),
    "renormalize_logits": (None, False), "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
    "sequence_bias": (None,), "token_healing": (None, False), "guidance_scale": (None, 1, 1.0),
    "watermarking_config": (None,), "prompt_lookup_num_tokens": (None,), "assistant_early_exit": (None,),
    "penalty_alpha": (None, 0, 0.0), "dola_layers": (None,), "num_beam_groups": (None, 1),
    "constraints": (None,), "force_words_ids": (None,), "prefill_chunk_size": (None,),
}
# Sampling warpers transformers applies only when do_sample is set.
_UNSUPPORTED_WHEN_SAMPLING: dict[str, tuple] = {
    "min_p": (None,), "top_h": (None,), "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
}


class GenerationConfig:
    """Decoding settings, with transformers' field names; generation_config.json in and out.

    Every field is None until set; unknown keys are kept as attributes and written back.

    Args:
        **kwargs: field values, e.g. `GenerationConfig(max_new_tokens=20, num_beams=4)`.

    Raises:
        ValueError: for the combinations transformers refuses too (`early_stopping` not a bool or "never",
            `max_new_tokens` <= 0, `num_return_sequences` above `num_beams`, or above 1 with greedy search).
    """

    def __init__(self, **kwargs):
        from_model_config = kwargs.pop("_from_model_config", None)
        kwargs.pop("_commit_hash", None)
        for name in FIELDS:
            setattr(self, name, kwargs.pop(name, None))
        self._from_model_config = from_model_config
        self.transformers_version = kwargs.pop("transformers_version", None)
        if from_model_config:
            # The rest of a model config (vocab_size, …) is not generation settings. Old configs said
            # force_bos_token_to_be_generated for what is now forced_bos_token_id.
            if kwargs.get("force_bos_token_to_be_generated", False):
                self.forced_bos_token_id = self.bos_token_id
        else:
            for name, value in kwargs.items():
                setattr(self, name, value)
        self.validate()

    # -- checks -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError for values transformers refuses at construction time (see the class docstring)."""
        if self.early_stopping not in (None, True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        for name in ("num_beams", "num_return_sequences"):  # each costs a row of the batch (and its cache)
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_SEQUENCES_PER_PROMPT):
                raise ValueError(f"{name} must be a positive integer of at most {MAX_SEQUENCES_PER_PROMPT}, "
                                 f"got {value!r}")
        if self.max_new_tokens is not None and (not _is_int(self.max_new_tokens) or self.max_new_tokens <= 0):
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.num_return_sequences is not None and self.num_return_sequences > 1:
            if self.num_beams is None or self.num_beams == 1:
                if not self.do_sample:
                    raise ValueError(
                        f"num_return_sequences={self.num_return_sequences} needs beam search (num_beams > 1) or "
                        f"sampling (do_sample=True): greedy search returns one sequence per prompt")
            elif self.num_return_sequences > self.num_beams:
                raise ValueError(f"num_return_sequences ({self.num_return_sequences}) must be at most num_beams "
                                 f"({self.num_beams})")

    # -- dict / JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every attribute, unset ones as None."""
        return copy.deepcopy(vars(self))

    def to_diff_dict(self) -> dict[str, Any]:
        """What generation_config.json holds: the attributes that are set (transformers' diff against
        GenerationConfig(), whose fields are all None)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        if ignore_metadata:
            for name in METADATA_FIELDS:
                data.pop(name, None)
        return json.dumps(_json_keys(data), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(ignore_metadata=True)}"

    def __eq__(self, other) -> bool:
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        return (self.to_json_string(use_diff=False, ignore_metadata=True)
                == other.to_json_string(use_diff=False, ignore_metadata=True))

    __hash__ = None

    def update(self, **kwargs) -> dict[str, Any]:
        """Set the given attributes that exist; return the others, unused."""
        unused = {}
        for name, value in kwargs.items():
            if hasattr(self, name):
                setattr(self, name, value)
            else:
                unused[name] = value
        self.validate()
        return unused

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "GenerationConfig":
        """A config from a dict (as read from generation_config.json); `kwargs` override its values."""
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "GenerationConfig":
        """A config from a generation_config.json; a value it refuses raises ConfigError naming the file."""
        data = _read_json(path)
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The generation settings found in a model config (a PretrainedConfig or a config.json dict).

        This is where checkpoints without generation_config.json get theirs, as in transformers: the special
        tokens (bos, eos, pad, decoder_start, forced_bos, forced_eos) and, for old checkpoints such as BART's,
        the decoding defaults their config.json holds (num_beams, max_length, no_repeat_ngram_size, …).
        """
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        # The model config's own metadata (which transformers wrote it) is not the generation config's.
        config_dict = {k: v for k, v in config_dict.items() if v is not None and k not in METADATA_FIELDS}
        config = cls.from_dict(config_dict, _from_model_config=True)
        if not config.return_dict_in_generate and any(
                getattr(config, flag) for flag in ("output_attentions", "output_hidden_states", "output_scores",
                                                   "output_logits")):
            config.return_dict_in_generate = True
        return config

    # -- folders and Hub ids ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Source, config_file_name: Optional[str] = None,
                        **kwargs) -> "GenerationConfig":
        """Read generation_config.json from a folder or Hub id; keyword arguments override its values.

        Download options (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`,
        `subfolder`) are taken from `kwargs`.

        Raises:
            MissingFileError (a FileNotFoundError): the folder or repo has no such file.
            ConfigError: the file is not a JSON object.
        """
        options = pop_hub_options(kwargs)
        source = name_or_path if isinstance(name_or_path, Source) else Source(name_or_path, **options)
        path = source.require(config_file_name or GENERATION_CONFIG_NAME)
        data = _read_json(path)
        try:
            return cls.from_dict(data, **kwargs)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: Optional[str] = None) -> None:
        """Write generation_config.json into `save_directory` (created if needed), atomically."""
        self.validate()
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_pretrained needs a folder, but '{save_directory}' is a file")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME)
        atomic_write(path, self.to_json_string().encode())


def _read_json(path) -> dict[str, Any]:
    try:
        return read_config_dict(path)
    except ConfigError as e:
        raise ConfigError(f"generation config: {e}") from None


def _json_keys(obj):
    if isinstance(obj, dict):
        return {str(k): _json_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_keys(v) for v in obj]
    return obj


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- logits processors: (input_ids (B, L), scores (B, V)) -> scores, each exactly as transformers' -------------
def repetition_penalty(input_ids: Tensor, scores: Tensor, penalty: float,
                       prompt_ignore_length: Optional[Tensor] = None) -> Tensor:
    """Divide the positive scores of tokens already in `input_ids` by `penalty` and multiply the negative ones
    (CTRL's penalty). Positions before `prompt_ignore_length` (B,) — the left padding — do not count."""
    V = scores.shape[-1]
    if prompt_ignore_length is not None:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        input_ids = input_ids.masked_fill(positions[None, :] < prompt_ignore_length[:, None], V)
    # Ids past the head's vocabulary (and ignored positions) land in one spare column, dropped at the end.
    input_ids = input_ids.clamp(max=V)
    scores = F.pad(scores, (0, 1))
    score = torch.gather(scores, 1, input_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter(1, input_ids, score)[..., :V]


def no_repeat_ngram(input_ids: Tensor, scores: Tensor, ngram_size: int) -> Tensor:
    """Ban (score -inf) every token that would repeat an n-gram of `input_ids` (prompt included)."""
    L = input_ids.shape[-1]
    if L < ngram_size:
        return scores
    # A window whose first n-1 tokens equal the current suffix bans its last token.
    prefix = input_ids[:, L + 1 - ngram_size:]  # (B, n-1)
    windows = input_ids.unfold(dimension=1, size=ngram_size, step=1)  # (B, L-n+1, n)
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
    V = scores.shape[-1]
    banned = scores.new_zeros((scores.shape[0], V + 1), dtype=torch.bool)  # non-matches go to a spare column
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=V), V), True)
    return scores.masked_fill(banned[:, :V], -float("inf"))


def suppress_until(input_ids: Tensor, scores: Tensor, token_ids: Tensor, min_length: int) -> Tensor:
    """Ban `token_ids` (the eos tokens) while the sequence is shorter than `min_length`."""
    if input_ids.shape[-1] < min_length:
        return scores.index_fill(1, token_ids, -math.inf)
    return scores


def force_at(input_ids: Tensor, scores: Tensor, token_ids: Tensor, length: int) -> Tensor:
    """When the sequence has `length` tokens, make `token_ids` the only possible next tokens (score 0)."""
    if input_ids.shape[-1] == length:
        scores = torch.full_like(scores, -math.inf)
        scores[:, token_ids] = 0
    return scores


def top_k_filter(scores: Tensor, top_k: int, min_tokens_to_keep: int = 1,
                 filter_value: float = -float("inf")) -> Tensor:
    """Keep the `top_k` highest scores (and every score tied with the k-th), set the rest to `filter_value`."""
    k = min(max(top_k, min_tokens_to_keep), scores.size(-1))
    return scores.masked_fill(scores < torch.topk(scores, k)[0][..., -1, None], filter_value)


def top_p_filter(scores: Tensor, top_p: float, min_tokens_to_keep: int = 1,
                 filter_value: float = -float("inf")) -> Tensor:
    """Nucleus filtering: keep the smallest set of most probable tokens whose probability reaches `top_p`."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative_probs <= (1 - top_p)  # ascending order: the improbable tail comes first
    remove[..., -min_tokens_to_keep:] = 0
    remove = remove.scatter(1, sorted_indices, remove)
    return scores.masked_fill(remove, filter_value)


Processor = Callable[[Tensor, Tensor], Tensor]


def build_processors(cfg: GenerationConfig, eos: Optional[Tensor], max_length: int,
                     padding_lengths: Optional[Tensor], device: torch.device) -> list[Processor]:
    """The processors `cfg` asks for, in transformers' order (penalties, length constraints, forced tokens,
    then the sampling warpers temperature, top-k, top-p)."""
    procs: list[Processor] = []
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        penalty = float(cfg.repetition_penalty)
        procs.append(lambda ids, s: repetition_penalty(ids, s, penalty, padding_lengths))
    if cfg.no_repeat_ngram_size is not None and cfg.no_repeat_ngram_size > 0:
        n = cfg.no_repeat_ngram_size
        procs.append(lambda ids, s: no_repeat_ngram(ids, s, n))
    # min_new_tokens was folded into min_length (prompt + min_new_tokens), as transformers does.
    if eos is not None and cfg.min_length is not None and cfg.min_length > 0:
        min_length = cfg.min_length
        procs.append(lambda ids, s: suppress_until(ids, s, eos, min_length))
    if cfg.forced_bos_token_id is not None:
        bos = cfg.forced_bos_token_id
        procs.append(lambda ids, s: force_at(ids, s, bos, 1))
    if cfg.forced_eos_token_id is not None:
        forced_eos = torch.tensor(_as_list(cfg.forced_eos_token_id), device=device)
        procs.append(lambda ids, s: force_at(ids, s, forced_eos, max_length - 1))
    if cfg.do_sample:
        # Beam sampling keeps one token more than there are eos tokens, so that a beam can always go on.
        keep = (len(eos) + 1 if eos is not None else 2) if cfg.num_beams > 1 else 1
        if cfg.temperature is not None and cfg.temperature != 1.0:
            temperature = float(cfg.temperature)
            procs.append(lambda ids, s: s / temperature)
        if cfg.top_k is not None and cfg.top_k != 0:
            top_k = cfg.top_k
            procs.append(lambda ids, s: top_k_filter(s, top_k, keep))
        if cfg.top_p is not None and cfg.top_p < 1.0:
            top_p = float(cfg.top_p)
            procs.append(lambda ids, s: top_p_filter(s, top_p, keep))
    return procs


def _as_list(token_ids) -> list[int]:
    return [token_ids] if _is_int(token_ids) else [int(t) for t in token_ids]


# -- outputs -------------------------------------------------------------------------------------------------
@dataclass
class GenerateOutput(ModelOutput):
    """What `generate(..., return_dict_in_generate=True)` returns.

    Attributes:
        sequences: (B * num_return_sequences, L) token ids.
        sequences_scores: (B * num_return_sequences,) length-penalised log-probabilities (beam search).
        scores: per step, the processed scores (B', V) (with `output_scores=True`).
        logits: per step, the raw logits (B', V) (with `output_logits=True`).
        beam_indices: (B * num_return_sequences, L - prompt) the beam each token came from (beam search).
    """

    sequences: Tensor = None
    sequences_scores: Optional[Tensor] = None
    scores: Optional[tuple] = None
    logits: Optional[tuple] = None
    beam_indices: Optional[Tensor] = None


# -- the model side of a decoding step -----------------------------------------------------------------------
class CausalSteps:
    """Feeds a decoder-only model: the whole prompt first, then one token per row and step, reusing the cache.

    With padding, positions count only real tokens (attention_mask.cumsum - 1), as transformers computes them,
    and the mask is preallocated to the final length so that a step only slices it.
    """

    def __init__(self, model, attention_mask: Optional[Tensor], max_length: int):
        self.model = model
        self.cache = KVCache(capacity=max_length)  # allocated once at its final length
        self.keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.mask = self.positions = None
        if attention_mask is not None:
            B, T = attention_mask.shape
            self.mask = attention_mask.new_ones((B, max_length))
            self.mask[:, :T] = attention_mask
            self.positions = (attention_mask.long().cumsum(-1) - 1).masked_fill_(attention_mask == 0, 0)  # (B, T)

    def prefill(self, input_ids: Tensor) -> Tensor:
        T = input_ids.shape[1]
        extra = {"logits_to_keep": 1} if self.keep_last else {}
        out = self.model(input_ids, attention_mask=None if self.mask is None else self.mask[:, :T],
                         position_ids=self.positions, past_key_values=self.cache, use_cache=True, **extra)
        if self.positions is not None:
            self.positions = self.positions[:, -1:]  # (B, 1): the last position; each step adds one
        return self._last_logits(out)

    def step(self, tokens: Tensor, length: int) -> Tensor:
        """Feed `tokens` (B,), the token at index `length - 1` of every row."""
        position_ids = None
        if self.positions is not None:
            self.positions = self.positions + 1
            position_ids = self.positions
        out = self.model(tokens[:, None], attention_mask=None if self.mask is None else self.mask[:, :length],
                         position_ids=position_ids, past_key_values=self.cache, use_cache=True)
        return self._last_logits(out)

    def reorder(self, beam_idx: Tensor) -> None:
        self.cache.reorder(beam_idx)

    def _last_logits(self, out) -> Tensor:
        self.cache = out.past_key_values
        # A float32 copy, so that the (B, T, V) logits of the prompt are not kept alive.
        return out.logits[:, -1, :].to(copy=True, dtype=torch.float32)


class Seq2SeqSteps:
    """Feeds an encoder-decoder model: the encoder ran once; each step feeds the decoder one token per row."""

    def __init__(self, model, encoder_outputs, attention_mask: Optional[Tensor], max_length: int):
        self.model = model
        self.encoder_outputs = encoder_outputs
        self.attention_mask = attention_mask
        self.cache = KVCache(capacity=max_length)

    def prefill(self, decoder_input_ids: Tensor) -> Tensor:
        return self._run(decoder_input_ids)

    def step(self, tokens: Tensor, length: int) -> Tensor:
        return self._run(tokens[:, None])

    def reorder(self, beam_idx: Tensor) -> None:
        self.cache.reorder(beam_idx)

    def _run(self, decoder_input_ids: Tensor) -> Tensor:
        out = self.model(encoder_outputs=self.encoder_outputs, attention_mask=self.attention_mask,
                         decoder_input_ids=decoder_input_ids, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].to(copy=True, dtype=torch.float32)


# -- decoding loops ------------------------------------------------------------------------------------------
def apply_processors(procs: list[Processor], input_ids: Tensor, scores: Tensor) -> Tensor:
    for proc in procs:
        scores = proc(input_ids, scores)
    return scores


def _greedy_or_sample(steps, input_ids: Tensor, procs: list[Processor], cfg: GenerationConfig,
                      eos: Optional[Tensor], pad: Optional[int], max_length: int, streamer, generator,
                      record_scores: bool, record_logits: bool) -> GenerateOutput:
    """One token per row and step: the argmax, or a draw from the softmax with `do_sample`."""
    N, T = input_ids.shape
    sequences = input_ids.new_zeros((N, max_length))
    sequences[:, :T] = input_ids
    unfinished = torch.ones(N, dtype=torch.bool, device=input_ids.device)
    scores_out, logits_out = [], []
    length = T
    logits = steps.prefill(input_ids)
    while True:
        scores = apply_processors(procs, sequences[:, :length], logits)
        if record_scores:
            scores_out.append(scores)
        if record_logits:
            logits_out.append(logits)
        if cfg.do_sample:
            tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1, generator=generator).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        if eos is not None:  # rows that have finished get padding
            tokens = torch.where(unfinished, tokens, pad)
        sequences[:, length] = tokens
        length += 1
        if streamer is not None:
            streamer.put(tokens.cpu())
        if length >= max_length:
            break
        if eos is not None:
            unfinished &= ~torch.isin(tokens, eos)
            if not bool(unfinished.any()):
                break
        logits = steps.step(tokens, length)
    return GenerateOutput(sequences=sequences[:, :length].contiguous(),
                          scores=tuple(scores_out) if record_scores else None,
                          logits=tuple(logits_out) if record_logits else None)


def _gather_beams(tensor: Tensor, beam_indices: Tensor) -> Tensor:
    """tensor (B, K, ...) indexed along K by beam_indices (B, K')."""
    while beam_indices.dim() < tensor.dim():
        beam_indices = beam_indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, beam_indices, dim=1)


def _beam_search(steps, input_ids: Tensor, procs: list[Processor], cfg: GenerationConfig, eos: Optional[Tensor],
                 pad: Optional[int], max_length: int, generator, record_scores: bool,
                 record_logits: bool) -> GenerateOutput:
    """transformers 5's beam search, step for step.

    Each step keeps the K = max(2, 1 + #eos) * num_beams best continuations of all beams; of those, the best
    num_beams that did not just finish run on, and those that did finish (among the first num_beams) compete,
    scored sum(log p) / generated_length ** length_penalty, for the num_beams finished slots. The search ends
    when no running beam can beat the worst finished one any more (`early_stopping`: False uses the current
    length for that estimate, "never" the longest possible, True stops as soon as num_beams have finished).
    """
    nb, early_stopping, length_penalty = cfg.num_beams, cfg.early_stopping, cfg.length_penalty
    N, T = input_ids.shape
    B = N // nb
    device = input_ids.device
    n_eos = eos.shape[0] if eos is not None else 0
    K = max(2, 1 + n_eos) * nb
    top_nb_mask = torch.cat((torch.ones(nb, dtype=torch.bool), torch.zeros(K - nb, dtype=torch.bool))).to(device)

    # Unfilled places hold pad — or eos[0] when pad is 0, and -1 without eos: transformers' `pad or eos[0]`.
    fill = (pad or int(eos[0])) if eos is not None else -1
    running = torch.full((B, nb, max_length), fill, dtype=torch.int64, device=device)
    running[:, :, :T] = input_ids.view(B, nb, T)
    sequences = running.clone()
    # Only the first beam starts live, so that the first step does not pick the same token nb times.
    running_scores = torch.zeros((B, nb), dtype=torch.float, device=device)
    running_scores[:, 1:] = -1e9
    beam_scores = torch.full((B, nb), -1e9, dtype=torch.float, device=device)
    finished = torch.zeros((B, nb), dtype=torch.bool, device=device)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    running_idx = torch.full((B, nb, max_length - T), -1, dtype=torch.int32, device=device)
    beam_indices = running_idx.clone()
    batch_offset = torch.arange(B, device=device).view(-1, 1) * nb
    scores_out, logits_out = [], []

    length = T
    flat = input_ids
    logits = steps.prefill(input_ids)
    while True:
        log_probs = apply_processors(procs, flat, F.log_softmax(logits, dim=-1))
        if record_scores:
            scores_out.append(log_probs.clone())
        if record_logits:
            logits_out.append(logits.clone())
        V = log_probs.shape[-1]
        log_probs = (log_probs.view(B, nb, V) + running_scores[:, :, None]).reshape(B, nb * V)

        # a. the K best continuations over all beams (or K drawn without replacement, with do_sample)
        if cfg.do_sample:
            topk_indices = torch.multinomial(F.softmax(log_probs, dim=-1), num_samples=K, generator=generator)
            topk_log_probs = torch.gather(log_probs, 1, topk_indices)
            topk_log_probs, order = topk_log_probs.sort(dim=-1, descending=True)
            topk_indices = topk_indices.gather(-1, order)
        else:
            topk_log_probs, topk_indices = torch.topk(log_probs, k=K)
        topk_beams = topk_indices // V
        topk_running_idx = _gather_beams(running_idx, topk_beams)
        topk_running = _gather_beams(running, topk_beams)
        topk_running[:, :, length] = topk_indices % V
        topk_running_idx[:, :, length - T] = topk_beams + batch_offset

        # b. which of them finish here (eos, or max_length reached)
        hits = torch.zeros((B, K), dtype=torch.bool, device=device) if length + 1 < max_length \
            else torch.ones((B, K), dtype=torch.bool, device=device)
        if eos is not None:
            hits = hits | torch.isin(topk_running[:, :, length], eos)

        # c. the best num_beams unfinished ones run on
        topk_running_log_probs = topk_log_probs + hits.to(torch.float32) * -1.0e9
        next_indices = torch.topk(topk_running_log_probs, k=nb)[1]
        running = _gather_beams(topk_running, next_indices)
        running_scores = _gather_beams(topk_running_log_probs, next_indices)
        running_idx = _gather_beams(topk_running_idx, next_indices)

        # d. finished ones among the first num_beams compete for the finished slots
        just_finished = hits & top_nb_mask[None, :]
        candidate = topk_log_probs / ((length + 1 - T) ** length_penalty)
        batch_full = torch.all(finished, dim=-1, keepdim=True) & (early_stopping is True)
        candidate += batch_full.to(torch.float32) * -1.0e9
        candidate += (~improvable).to(torch.float32) * -1.0e9
        candidate += (~just_finished) * -1.0e9
        merged_scores = torch.cat((beam_scores, candidate), dim=1)
        best = torch.topk(merged_scores, k=nb)[1]
        sequences = _gather_beams(torch.cat((sequences, topk_running), dim=1), best)
        beam_scores = _gather_beams(merged_scores, best)
        beam_indices = _gather_beams(torch.cat((beam_indices, topk_running_idx), dim=1), best)
        finished = _gather_beams(torch.cat((finished, just_finished), dim=1), best)

        # e. the cache follows the beams that run on
        beam_idx = running_idx[..., length - T].reshape(-1).long()
        length += 1

        # f. stop when no running beam can still beat the worst finished one
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - T
        else:
            best_length = length - T
        best_running = running_scores[:, :1] / (best_length ** length_penalty)
        worst_finished = torch.where(finished, torch.min(beam_scores, dim=1, keepdim=True)[0], -1.0e9)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        go_on = (bool(improvable.any()) and not (bool(finished.all()) and early_stopping is True)
                 and not bool(hits.all()))
        if not go_on:
            break
        steps.reorder(beam_idx)
        if procs:  # the processors read the whole history of every beam
            flat = running[:, :, :length].reshape(B * nb, length)
        logits = steps.step(running[:, :, length - 1].reshape(B * nb), length)

    nrs = cfg.num_return_sequences
    sequences = sequences[:, :nrs].reshape(B * nrs, max_length)
    sequences_scores = beam_scores[:, :nrs].reshape(B * nrs)
    beam_indices = beam_indices[:, :nrs].reshape(B * nrs, max_length - T)
    generated = int((beam_indices + 1).bool().sum(dim=1).max())
    return GenerateOutput(sequences=sequences[:, :T + generated].contiguous(), sequences_scores=sequences_scores,
                          scores=tuple(scores_out) if record_scores else None,
                          logits=tuple(logits_out) if record_logits else None,
                          beam_indices=beam_indices[:, :generated])


# -- generate() ----------------------------------------------------------------------------------------------
class GenerationMixin:
    """`generate()` and `generation_config` for models with a language-model head.

    List it before the PreTrainedModel base (`class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel)`):
    its `_load_extra` / `_save_extra` hooks then read and write generation_config.json.
    """

    # A learned position table (GPT-2, BART) has no row past max_position_embeddings: longer prompts and lengths
    # are refused. Rotary models set this False: as in transformers, they may run past it (only the default
    # length of 20 new tokens is capped there).
    positions_bounded: bool = True

    @property
    def generation_config(self) -> GenerationConfig:
        """The model's default decoding settings: its generation_config.json, or those of its config."""
        config = self.__dict__.get("_generation_config")
        if config is None:
            config = GenerationConfig.from_model_config(self.config)
            self.__dict__["_generation_config"] = config
        return config

    @generation_config.setter
    def generation_config(self, value: GenerationConfig) -> None:
        if not isinstance(value, GenerationConfig):
            raise TypeError(f"generation_config must be a GenerationConfig, got {type(value).__name__}")
        self.__dict__["_generation_config"] = value

    def can_generate(self) -> bool:
        return True

    def _load_extra(self, source: Source) -> None:
        """from_pretrained step: generation_config.json, or (as transformers) the settings in config.json."""
        path = source.file(GENERATION_CONFIG_NAME)
        if path is not None:
            self.generation_config = GenerationConfig.from_json_file(path)
        # else the `generation_config` property derives the settings from the loaded config, when first asked

    def _save_extra(self, save_directory: str) -> None:
        self.generation_config.save_pretrained(save_directory)

    @torch.no_grad()
    def generate(self, input_ids: Optional[Tensor] = None, generation_config: Optional[GenerationConfig] = None, *,
                 attention_mask: Optional[Tensor] = None, max_new_tokens: Optional[int] = None,
                 max_length: Optional[int] = None, min_new_tokens: Optional[int] = None,
                 min_length: Optional[int] = None, do_sample: Optional[bool] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 num_beams: Optional[int] = None, length_penalty: Optional[float] = None,
                 early_stopping: Optional[bool | str] = None, num_return_sequences: Optional[int] = None,
                 eos_token_id: Optional[int | list[int]] = None, pad_token_id: Optional[int] = None,
                 bos_token_id: Optional[int] = None, decoder_start_token_id: Optional[int] = None,
                 forced_bos_token_id: Optional[int] = None, forced_eos_token_id: Optional[int | list[int]] = None,
                 repetition_penalty: Optional[float] = None, no_repeat_ngram_size: Optional[int] = None,
                 return_dict_in_generate: Optional[bool] = None, output_scores: Optional[bool] = None,
                 output_logits: Optional[bool] = None, streamer=None,
                 generator: Optional[torch.Generator] = None) -> Tensor | GenerateOutput:
        """Generate token ids, as transformers' `generate` does with the same arguments.

        Args:
            input_ids: (B, T) prompt ids (left-padded for a batch of a causal model), or (T,). For an
                encoder-decoder model, the encoder input. None: a batch of one bos token (causal models).
            generation_config: base settings instead of the model's `generation_config`.
            attention_mask: (B, T) 1 for tokens, 0 for padding. Causal models infer it from `pad_token_id`
                when it is not given (unless pad and eos are the same token).
            max_new_tokens / max_length: how many tokens to add / the total length (prompt or decoder start
                included); max_new_tokens wins. By default 20 new tokens, at most the model's positions.
            min_new_tokens / min_length: eos is banned before that many new tokens / that total length.
            do_sample, temperature, top_k, top_p: sampling from the processed softmax; `torch.manual_seed`
                (or `generator`) makes it reproducible, and gives the tokens transformers gives.
            num_beams, length_penalty, early_stopping (True, False or "never"), num_return_sequences: beam search.
            eos_token_id (one or several), pad_token_id, bos_token_id, decoder_start_token_id,
                forced_bos_token_id, forced_eos_token_id: special tokens.
            repetition_penalty, no_repeat_ngram_size: repetition control.
            return_dict_in_generate, output_scores, output_logits: return a `GenerateOutput` with
                `sequences`, `sequences_scores` (beam search) and the per-step scores/logits.
            streamer: an object with `put(token_ids)` / `end()` (as transformers' TextStreamer): gets the prompt
                (the decoder start for encoder-decoder models), then each step's new tokens (B,). Not with beams.
            generator: the torch.Generator sampling draws from (default: torch's global one).

        Returns:
            (B * num_return_sequences, L) token ids: the prompt and the new tokens for causal models, the decoder
            sequence (starting with decoder_start_token_id) for encoder-decoder models. Rows that finished
            early are padded with pad_token_id.

        Raises:
            ValueError: an empty prompt, a prompt or length beyond the model's positions, max_new_tokens <= 0,
                num_beams above the vocabulary size, top_p outside (0, 1], temperature <= 0 with sampling,
                num_return_sequences above num_beams, and the other invalid settings, each named.
            NotImplementedError: a setting transformers has and this generate() does not (e.g. bad_words_ids).
        """
        call_args = {
            "max_new_tokens": max_new_tokens, "max_length": max_length, "min_new_tokens": min_new_tokens,
            "min_length": min_length, "do_sample": do_sample, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "num_beams": num_beams, "length_penalty": length_penalty,
            "early_stopping": early_stopping, "num_return_sequences": num_return_sequences,
            "eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "bos_token_id": bos_token_id,
            "decoder_start_token_id": decoder_start_token_id, "forced_bos_token_id": forced_bos_token_id,
            "forced_eos_token_id": forced_eos_token_id, "repetition_penalty": repetition_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size, "return_dict_in_generate": return_dict_in_generate,
            "output_scores": output_scores, "output_logits": output_logits,
        }
        call_args = {k: v for k, v in call_args.items() if v is not None}
        cfg, default_max_length = resolve_generation_config(self.generation_config, generation_config, call_args)
        is_seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        vocab_size = self.config.vocab_size
        max_positions = getattr(self.config, "max_position_embeddings", None)
        limit = max_positions if self.positions_bounded else None  # for the errors below
        check_settings(cfg, vocab_size)
        if streamer is not None and cfg.num_beams > 1:
            raise ValueError("a streamer cannot be used with beam search: set num_beams=1")

        # special tokens, as transformers prepares them
        eos = torch.tensor(_as_list(cfg.eos_token_id), device=self.device) if cfg.eos_token_id is not None else None
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else (int(eos[0]) if eos is not None else None)

        input_ids, attention_mask = self._prompt(input_ids, attention_mask, cfg, pad, eos, vocab_size, is_seq2seq)
        B, T = input_ids.shape
        if limit is not None and T > limit:
            raise ValueError(f"the prompt has {T} tokens, more than the model's {max_positions} positions "
                             f"(max_position_embeddings); shorten or truncate it")

        # lengths first, so that bad settings fail before any compute
        max_length = resolve_lengths(cfg, 1 if is_seq2seq else T, default_max_length, max_positions)
        if is_seq2seq:
            if limit is not None and max_length > limit:
                raise ValueError(f"max_length={max_length} decoder tokens is more than the model's {max_positions} "
                                 f"positions (max_position_embeddings); lower max_new_tokens")
            start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.bos_token_id
            if start is None:
                raise ValueError("decoder_start_token_id (or bos_token_id) must be set to generate with an "
                                 "encoder-decoder model")
        else:
            longest = T if attention_mask is None else int(attention_mask.sum(dim=1).max())
            if limit is not None and longest + max_length - T > limit:
                raise ValueError(
                    f"a prompt of {longest} tokens plus {max_length - T} new tokens needs {longest + max_length - T} "
                    f"positions, but the model has {max_positions} (max_position_embeddings); lower max_new_tokens")

        # one row per beam or returned sequence
        expand = max(cfg.num_beams, cfg.num_return_sequences)
        if is_seq2seq:
            hidden = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if expand > 1:
                hidden = hidden.repeat_interleave(expand, dim=0)
                attention_mask = attention_mask.repeat_interleave(expand, dim=0) if attention_mask is not None else None
            prompt_ids = torch.full((B * expand, 1), start, dtype=torch.long, device=input_ids.device)
            steps = Seq2SeqSteps(self, BaseModelOutput(last_hidden_state=hidden), attention_mask, max_length)
            mask_for_penalty = None  # the decoder input is not padded
        else:
            prompt_ids = input_ids.repeat_interleave(expand, dim=0) if expand > 1 else input_ids
            if attention_mask is not None and expand > 1:
                attention_mask = attention_mask.repeat_interleave(expand, dim=0)
            steps = CausalSteps(self, attention_mask, max_length)
            mask_for_penalty = attention_mask

        # The repetition penalty skips left padding (transformers: the index of the first attended token).
        padding_lengths = (mask_for_penalty != 0).int().argmax(dim=1) if mask_for_penalty is not None else None
        procs = build_processors(cfg, eos, max_length, padding_lengths, prompt_ids.device)

        if streamer is not None:
            streamer.put(prompt_ids.cpu())
        record = bool(cfg.return_dict_in_generate)
        if cfg.num_beams > 1:
            out = _beam_search(steps, prompt_ids, procs, cfg, eos, pad, max_length, generator,
                               record and bool(cfg.output_scores), record and bool(cfg.output_logits))
        else:
            out = _greedy_or_sample(steps, prompt_ids, procs, cfg, eos, pad, max_length, streamer, generator,
                                    record and bool(cfg.output_scores), record and bool(cfg.output_logits))
        if streamer is not None:
            streamer.end()
        if not record:
            return out.sequences
        if not cfg.output_scores:
            out.sequences_scores = None
        return out

    def _prompt(self, input_ids, attention_mask, cfg, pad, eos, vocab_size, is_seq2seq):
        """The prompt as a (B, T) batch on the model's device, and its attention mask (None when unpadded)."""
        device = self.device
        if input_ids is None:
            if is_seq2seq:
                raise ValueError("input_ids (the encoder input) is required for an encoder-decoder model")
            if cfg.bos_token_id is None:
                raise ValueError("input_ids is None and bos_token_id is not set: give a prompt")
            input_ids = torch.full((1, 1), cfg.bos_token_id, dtype=torch.long, device=device)
        input_ids = as_ids_tensor(input_ids).to(device)
        if attention_mask is not None:
            attention_mask = as_ids_tensor(attention_mask, "attention_mask").to(device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"the prompt is empty (input_ids of shape {tuple(input_ids.shape)}): give at least "
                             f"one token")
        check_input_ids(input_ids, vocab_size)
        input_ids = input_ids.to(device=device, dtype=torch.long)
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                                 f"{tuple(input_ids.shape)}: they must match")
            attention_mask = attention_mask.to(device)
        elif not is_seq2seq and pad is not None and cfg.pad_token_id is not None:
            # transformers infers the mask from pad tokens, unless pad is an eos token (then a prompt's eos
            # could not be told from padding).
            if bool((input_ids == pad).any()) and (eos is None or not bool((eos == pad).any())):
                attention_mask = (input_ids != pad).long()
        if not is_seq2seq and attention_mask is not None:
            if input_ids.shape[0] > 1 and bool((attention_mask[:, -1] == 0).any()):
                logger.warning("generate(): right padding detected in a batch for a decoder-only model; results "
                               "will be wrong. Pad on the left (tokenizer padding_side='left').")
            if bool((attention_mask == 1).all()):
                attention_mask = None  # nothing padded: the model need not build masks at all
        return input_ids, attention_mask


def resolve_generation_config(model_config: GenerationConfig, generation_config: Optional[GenerationConfig],
                              call_args: dict[str, Any]) -> tuple[GenerationConfig, bool]:
    """The settings of one generate() call: call arguments > `generation_config` > the model's generation
    config > transformers' global defaults.

    Returns:
        (the settings, whether max_length is the global default of 20 — then it counts new tokens)
    """
    default_max_length = ("max_length" not in call_args
                          and (generation_config is None or generation_config.max_length is None)
                          and model_config.max_length is None)
    cfg = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    for source in (model_config.to_dict(), DEFAULTS):
        for name, value in source.items():
            if name in METADATA_FIELDS:
                continue
            if getattr(cfg, name, None) is None:
                setattr(cfg, name, copy.deepcopy(value))
    cfg.update(**call_args)
    return cfg, default_max_length


def resolve_lengths(cfg: GenerationConfig, prompt_length: int, default_max_length: bool,
                    max_positions: Optional[int]) -> int:
    """Fold max_new_tokens and min_new_tokens into max_length and min_length, as transformers does; return
    max_length. `prompt_length` is the decoder's (1 for an encoder-decoder model)."""
    if cfg.max_new_tokens is not None:
        cfg.max_length = cfg.max_new_tokens + prompt_length
    elif default_max_length:
        cfg.max_length = cfg.max_length + prompt_length
        if max_positions is not None:
            cfg.max_length = min(cfg.max_length, max_positions)
    if cfg.min_new_tokens is not None:
        cfg.min_length = cfg.min_new_tokens + prompt_length
    if prompt_length >= cfg.max_length:
        raise ValueError(f"the input is {prompt_length} tokens long but max_length is {cfg.max_length}: nothing "
                         f"is left to generate. Set max_new_tokens instead of max_length")
    return cfg.max_length


def check_settings(cfg: GenerationConfig, vocab_size: int) -> None:
    """Raise ValueError for settings generate() cannot run with, NotImplementedError for unsupported ones."""
    for name, neutral in _UNSUPPORTED.items():
        if getattr(cfg, name, None) not in neutral:
            raise NotImplementedError(f"generation setting {name}={getattr(cfg, name)!r} is not supported by "
                                      f"pretrained's generate(); unset it")
    if cfg.do_sample:
        for name, neutral in _UNSUPPORTED_WHEN_SAMPLING.items():
            if getattr(cfg, name, None) not in neutral:
                raise NotImplementedError(f"sampling setting {name}={getattr(cfg, name)!r} is not supported by "
                                          f"pretrained's generate(); unset it")
    if not _is_int(cfg.num_beams) or cfg.num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {cfg.num_beams!r}")
    if cfg.num_beams > vocab_size:
        raise ValueError(f"num_beams={cfg.num_beams} is more than the vocabulary size ({vocab_size}): there are "
                         f"not that many different continuations to keep")
    if not _is_int(cfg.num_return_sequences) or cfg.num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive integer, got {cfg.num_return_sequences!r}")
    if cfg.max_length is not None and (not _is_int(cfg.max_length) or cfg.max_length <= 0):
        raise ValueError(f"max_length must be a positive integer, got {cfg.max_length!r}")
    for name in ("min_new_tokens", "min_length", "no_repeat_ngram_size"):
        value = getattr(cfg, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if cfg.top_p is not None and not (isinstance(cfg.top_p, (int, float)) and 0 < cfg.top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {cfg.top_p!r}")
    if cfg.top_k is not None and (not _is_int(cfg.top_k) or cfg.top_k < 0):
        raise ValueError(f"top_k must be a non-negative integer (0 turns it off), got {cfg.top_k!r}")
    if cfg.do_sample and not (isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0):
        raise ValueError(f"temperature must be > 0 when sampling, got {cfg.temperature!r}; for greedy decoding "
                         f"set do_sample=False")
    if not (isinstance(cfg.repetition_penalty, (int, float)) and cfg.repetition_penalty > 0):
        raise ValueError(f"repetition_penalty must be > 0 (1.0 turns it off), got {cfg.repetition_penalty!r}")
    if not isinstance(cfg.length_penalty, (int, float)) or isinstance(cfg.length_penalty, bool):
        raise ValueError(f"length_penalty must be a number, got {cfg.length_penalty!r}")
    for name in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id",
                 "forced_eos_token_id"):
        value = getattr(cfg, name)
        if value is None:
            continue
        ids = [value] if _is_int(value) else value
        if name in ("eos_token_id", "forced_eos_token_id") and isinstance(ids, (list, tuple)) and not ids:
            raise ValueError(f"{name} is an empty list")
        if not isinstance(ids, (list, tuple)) or not all(_is_int(i) and 0 <= i < vocab_size for i in ids):
            raise ValueError(f"{name}={value!r} is not a token id (or list of ids) in [0, {vocab_size})")


# -- the command line ----------------------------------------------------------------------------------------
class TextStreamer:
    """Print generated text as it comes, token by token (transformers' TextStreamer protocol: put / end).

    Decodes all tokens so far at each step and prints what is new, holding back an incomplete UTF-8 character.

    Args:
        tokenizer: anything with `decode(ids, skip_special_tokens=...)`.
        skip_prompt: do not print the prompt (the first `put`).
        file: where to print (default sys.stdout).
    """

    def __init__(self, tokenizer, skip_prompt: bool = True, file=None, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.skip_special_tokens = skip_special_tokens
        self.file = file
        self._ids: list[int] = []
        self._printed = 0
        self._prompt_seen = False

    def put(self, token_ids: Tensor) -> None:
        if token_ids.dim() > 0 and token_ids.shape[0] > 1:
            raise ValueError("TextStreamer streams a batch of one prompt only")
        if not self._prompt_seen:
            self._prompt_seen = True
            if self.skip_prompt:
                return
        self._ids.extend(int(i) for i in token_ids.reshape(-1).tolist())
        text = self.tokenizer.decode(self._ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):  # a multi-byte character not complete yet
            return
        self._write(text[self._printed:])
        self._printed = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self._ids, skip_special_tokens=self.skip_special_tokens)
        self._write(text[self._printed:] + "\n")
        self._ids, self._printed, self._prompt_seen = [], 0, False

    def _write(self, text: str) -> None:
        out = self.file if self.file is not None else sys.stdout
        out.write(text)
        out.flush()


def cli_options(args) -> dict:
    """generate() keyword arguments from the decoding flags of `pretrained run` / `pretrained chat` (unset
    flags left out, so that generation_config.json's values apply)."""
    options = {
        "max_new_tokens": getattr(args, "max_new_tokens", None),
        "do_sample": True if getattr(args, "do_sample", False) else None,
        "temperature": getattr(args, "temperature", None),
        "top_k": getattr(args, "top_k", None),
        "top_p": getattr(args, "top_p", None),
        "num_beams": getattr(args, "num_beams", None),
        "repetition_penalty": getattr(args, "repetition_penalty", None),
        "no_repeat_ngram_size": getattr(args, "no_repeat_ngram_size", None),
    }
    return {k: v for k, v in options.items() if v is not None}


def end_of_turn_ids(eos_token_id, tokenizer) -> list[int]:
    """Where a chat reply ends: the model's eos ids (one or several) and the tokenizer's eos token, which chat
    templates write to close a turn (<|im_end|>, <|eot_id|>, </s>)."""
    ids = [] if eos_token_id is None else list(_as_list(eos_token_id))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def cli_generate(model_name: str, config, texts: list[str], args) -> None:
    """`pretrained run MODEL "prompt"` for GPT-2 and BART checkpoints: generate from each prompt and print it,
    streaming the tokens of causal models as they come.

    When the tokenizer has a chat template (and `args.raw` is not set), each prompt is sent as a user message
    through it, and the model's reply is printed, ending at the model's or the tokenizer's eos token."""
    from . import auto
    from .tokenization import AutoTokenizer

    if not texts:
        raise SystemExit("error: give a prompt to generate from")
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    model_class = auto.AutoModelForSeq2SeqLM if is_seq2seq else auto.AutoModelForCausalLM
    model = model_class.from_pretrained(model_name, config=config)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    options = cli_options(args)
    chat = not is_seq2seq and not getattr(args, "raw", False) and tokenizer.chat_template is not None
    if chat:
        options["eos_token_id"] = end_of_turn_ids(model.generation_config.eos_token_id, tokenizer)
    # Refuse bad flags before anything is printed, rather than half-way through the first prompt.
    check_settings(resolve_generation_config(model.generation_config, None, options)[0], model.config.vocab_size)
    stream = not is_seq2seq and options.get("num_beams", model.generation_config.num_beams or 1) == 1
    print(f"model: {model_name} ({type(model).__name__}, {model.num_parameters() / 1e6:.1f}M parameters)"
          + (" — chat template applied (--raw to skip it)" if chat else ""))
    for text in texts:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=False)
        else:
            ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)
        if ids.shape[1] == 0:
            raise ValueError(f"the prompt {text!r} is empty after tokenization")
        print()
        prefix = "" if is_seq2seq or chat else text  # a continuation is printed after its prompt, a reply alone
        if stream:
            sys.stdout.write(prefix)
            sys.stdout.flush()
            model.generate(ids, streamer=TextStreamer(tokenizer), **options)
        else:
            out = model.generate(ids, **options)
            start = 0 if is_seq2seq else ids.shape[1]
            print(prefix + tokenizer.decode(out[0, start:].tolist(), skip_special_tokens=True))
