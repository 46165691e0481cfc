"""Model configurations: typed fields with transformers' names and defaults, config.json in and out.

A subclass declares its fields as annotated class attributes with their defaults::

    class BertConfig(PretrainedConfig):
        model_type = "bert"
        vocab_size: int = 30522

Keyword arguments override the defaults, keys the class does not know are kept as attributes and written
back, so a config.json written by transformers v4 or v5 round-trips unchanged.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from typing import Any, ClassVar

from .hub import Source, pop_hub_options
from .atomic import atomic_write

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# Fields every config has, with transformers' PreTrainedConfig defaults. A value equal to its default here
# (and to the subclass's default) is left out of config.json, as transformers' `to_diff_dict` does.
BASE_DEFAULTS: dict[str, Any] = {
    "architectures": None,
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "dtype": None,
    "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False,
    "id2label": {0: "LABEL_0", 1: "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "problem_type": None,
}
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# "sdpa" (the default): torch's scaled_dot_product_attention; "eager": the explicit softmax(q kᵀ) v, as
# transformers' eager attention computes it (also used whenever attention weights are returned).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# Documented sanity limits, checked before a model is built: a config beyond them is refused with ConfigError
# instead of hanging or exhausting memory. They are far above any published checkpoint (the deepest have ~10^2
# layers, the widest vocabularies ~10^6 entries).
MAX_LAYERS = 1_000           # any *_layers / n_layer field
MAX_LABELS = 1_000_000       # num_labels, len(id2label)
MAX_DIMENSION = 10_000_000   # vocab, hidden, intermediate, heads, positions
# Which declared int fields are layer counts and which are sizes (both must be >= 1); float fields that are
# probabilities (in [0, 1]) and epsilons (> 0). Other families' field names follow these patterns.
_LAYER_FIELD = re.compile(r"(^|_)(layers|n_layer)$")
_DIMENSION_FIELD = re.compile(r"(vocab_size|hidden_size|^n_embd$|^d_model$|heads$|^n_head$|intermediate_size|"
                              r"^n_inner$|ffn_dim$|max_position_embeddings|^n_positions$)")
_PROBABILITY_FIELD = re.compile(r"(dropout|pdrop|dropout_prob|layerdrop)$")
_EPSILON_FIELD = re.compile(r"(_eps|_epsilon)$")
# Keys that describe where a config came from, never written to config.json.
_NOT_SAVED = {"_name_or_path", "name_or_path", "num_labels", "_attn_implementation"}


class ConfigError(ValueError):
    """A config.json or a config value that cannot be used; the message names the file or key."""


class PretrainedConfig:
    """Base class of all configurations.

    Args:
        **kwargs: values for the declared fields (and base fields such as `num_labels`, `id2label`,
            `problem_type`, `dtype`/`torch_dtype`); unknown keys are kept as attributes.
    """

    model_type: ClassVar[str] = ""
    # Alternative names for fields, e.g. GPT-2's {"hidden_size": "n_embd"}.
    attribute_map: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs):
        kwargs = {self.attribute_map.get(k, k): v for k, v in kwargs.items()}
        if "torch_dtype" in kwargs:  # transformers v4 name
            legacy = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", legacy)
        kwargs.pop("model_type", None)
        num_labels = kwargs.pop("num_labels", None)
        self._name_or_path = kwargs.pop("_name_or_path", kwargs.pop("name_or_path", ""))
        self.attn_implementation = kwargs.pop("attn_implementation", kwargs.pop("_attn_implementation", None))

        for name, default in {**BASE_DEFAULTS, **self.field_defaults()}.items():
            value = kwargs.pop(name) if name in kwargs else copy.deepcopy(default)
            object.__setattr__(self, name, value)
        for name, value in kwargs.items():  # unknown keys: kept and written back
            object.__setattr__(self, name, value)

        self.dtype = _dtype_name(self.dtype)
        if self.id2label is not None:
            self.id2label = _int_keys(self.id2label, "id2label")
            if "label2id" not in kwargs and self.label2id == BASE_DEFAULTS["label2id"]:
                self.label2id = {label: i for i, label in self.id2label.items()}
        if num_labels is not None and (self.id2label is None or len(self.id2label) != num_labels):
            self.num_labels = num_labels
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        self.validate()

    def validate(self) -> None:
        """Check every declared field against its annotated type and the sanity limits above.

        Raises:
            ConfigError: naming the key and the value, e.g. `hidden_size='768' is not an integer`.
        """
        for name, annotation in self.field_types().items():
            _check_field(name, getattr(self, name), annotation)
        if self.id2label is not None and len(self.id2label) > MAX_LABELS:
            raise ConfigError(f"id2label has {len(self.id2label)} labels, more than the limit of {MAX_LABELS}")
    # -- fields -----------------------------------------------------------------------------------------
    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """The declared fields of this class and its parents, with their defaults."""
        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if not (isinstance(klass, type) and issubclass(klass, PretrainedConfig)) or klass is PretrainedConfig:
                continue
            for name in klass.__dict__.get("__annotations__", {}):
                fields[name] = klass.__dict__.get(name)
        return fields

    @classmethod
    def known_keys(cls) -> set[str]:
        """Every name a keyword argument may use to set a field of this class (fields, aliases, base keys)."""
        return set(BASE_DEFAULTS) | set(cls.field_defaults()) | set(cls.attribute_map) | {
            "num_labels", "torch_dtype", "attn_implementation"}

    @classmethod
    def field_types(cls) -> dict[str, str]:
        """The declared fields with their annotations, as written in the class ("int", "Optional[float]", …)."""
        types: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, PretrainedConfig) and klass is not PretrainedConfig:
                types.update({k: str(v) for k, v in klass.__dict__.get("__annotations__", {}).items()
                              if not str(v).startswith("ClassVar")})
        return types

    def __getattr__(self, name):  # only called when normal lookup fails: resolve aliases
        alias = type(self).attribute_map.get(name)
        if alias is not None:
            return getattr(self, alias)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        object.__setattr__(self, type(self).attribute_map.get(name, name), value)

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @property
    def attn_implementation(self) -> str:
        """How attention is computed: "sdpa" (default) or "eager"; set with from_pretrained(attn_implementation=…)."""
        return self._attn_implementation or "sdpa"

    @attn_implementation.setter
    def attn_implementation(self, value: str | None) -> None:
        if value is not None and value not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(f"attn_implementation={value!r} is not supported; use one of "
                              f"{', '.join(ATTN_IMPLEMENTATIONS)}")
        object.__setattr__(self, "_attn_implementation", value)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label is not None else 0

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {n!r}")
        if n > MAX_LABELS:  # checked before a dict of n labels is made
            raise ConfigError(f"num_labels={n} is more than the limit of {MAX_LABELS} labels")
        if self.id2label is None or len(self.id2label) != n:  # the same number keeps the label names
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    # -- dict / JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field, with `model_type`. As in transformers, `id2label` keeps integer keys: json.dumps writes
        them as strings, sorted as numbers ("2" before "10")."""
        out = {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in _NOT_SAVED}
        out["model_type"] = self.model_type
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """What config.json holds: the fields that differ from the base defaults, plus every field of
        the architecture itself, as transformers writes them."""
        base_dict = BASE_DEFAULTS
        class_dict = type(self)().to_dict()
        out = {}
        for key, value in self.to_dict().items():
            if (key not in base_dict or key == "model_type" or value != base_dict[key]
                    or (key in class_dict and value != class_dict[key])):
                out[key] = value
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __deepcopy__(self, memo):
        return type(self).from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "PretrainedConfig":
        """Build a config from a dict (as read from config.json); `kwargs` override its values."""
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "PretrainedConfig":
        return cls.from_dict(read_config_dict(path))

    def to_json_file(self, path: str | os.PathLike, use_diff: bool = True) -> None:
        atomic_write(path, self.to_json_string(use_diff).encode())

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    # -- folders and Hub ids ----------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `config.json` into `save_directory` (created if needed), atomically."""
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_pretrained needs a folder, but '{save_directory}' is a file")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Source, **kwargs) -> "PretrainedConfig":
        """Read `config.json` from a folder or Hub id (or the path of the JSON file itself); keyword arguments
        override its values.

        Download options (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`,
        `subfolder`) are taken from `kwargs`. `return_unused_kwargs=True` returns `(config, unused)`,
        where `unused` holds the keys that are not config fields.
        """
        return_unused = kwargs.pop("return_unused_kwargs", False)
        if not isinstance(name_or_path, Source) and os.path.isfile(name_or_path):  # as transformers accepts
            pop_hub_options(kwargs)
            path = where = os.fspath(name_or_path)
        else:
            source = name_or_path if isinstance(name_or_path, Source) else Source(name_or_path, **pop_hub_options(kwargs))
            path, where = source.require(CONFIG_NAME), source.name_or_path
        config_dict = read_config_dict(path)
        file_type = config_dict.get("model_type")
        if cls.model_type and file_type and file_type != cls.model_type:
            logger.warning("%s has model_type '%s' but is loaded as %s (model_type '%s'); "
                           "results may be wrong", path, file_type, cls.__name__, cls.model_type)
        config_dict["_name_or_path"] = where
        known = cls.known_keys()
        unused = {k: v for k, v in kwargs.items() if k not in known and k not in config_dict}
        overrides = {k: v for k, v in kwargs.items() if k not in unused}
        try:
            config = cls.from_dict(config_dict, **overrides)
        except ConfigError as e:  # name the file the bad value came from
            raise ConfigError(f"{path}: {e}") from None
        return (config, unused) if return_unused else config


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _check_field(name: str, value: Any, annotation: str) -> None:
    """Raise ConfigError when `value` does not fit the field's annotation or its range (see the limits above)."""
    optional = annotation.startswith("Optional[") or annotation.endswith("| None")
    base = annotation.removeprefix("Optional[").removesuffix("]").removesuffix("| None").strip()
    if value is None:
        if optional or base not in _TYPE_NAMES:
            return
        raise ConfigError(f"{name} must be {_TYPE_NAMES[base]}, got null")
    if name.endswith("_token_id") and isinstance(value, list):  # several ids (e.g. eos) are allowed
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{name}={value!r} must be a token id or a list of token ids")
        return
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
          "str": lambda v: isinstance(v, str)}.get(base)
    if ok is None:
        return
    if not ok(value):
        raise ConfigError(f"{name}={value!r} is not {_TYPE_NAMES[base]} (it is {type(value).__name__}); "
                          f"{name} is declared {annotation}")
    if base == "float" and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if base == "float" and _PROBABILITY_FIELD.search(name) and not 0 <= value <= 1:
        raise ConfigError(f"{name}={value!r} is a probability and must be between 0 and 1")
    if base == "float" and _EPSILON_FIELD.search(name) and not value > 0:
        raise ConfigError(f"{name}={value!r} must be a small positive number")
    if base == "int" and _LAYER_FIELD.search(name) and not 1 <= value <= MAX_LAYERS:
        raise ConfigError(f"{name}={value!r} must be a number of layers between 1 and {MAX_LAYERS}")
    if base == "int" and _DIMENSION_FIELD.search(name) and not 1 <= value <= MAX_DIMENSION:
        raise ConfigError(f"{name}={value!r} must be a size between 1 and {MAX_DIMENSION}")


def read_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a config.json file; a file that is not a JSON object raises ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a config (a JSON array or object inside thousands "
                          f"of others)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _int_keys(mapping, name: str) -> dict[int, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{name} must be a mapping of label ids to names, got {mapping!r}")
    out = {}
    for key, value in mapping.items():
        try:
            out[int(key)] = value
        except (TypeError, ValueError):
            raise ConfigError(f"{name} keys must be integer label ids, got key {key!r} "
                              f"(all keys: {list(mapping)!r})") from None
    return out


def _dtype_name(dtype) -> str | None:
    """Normalise a dtype given as torch.dtype or string ('float16', 'torch.float16') to its name."""
    if dtype is None or isinstance(dtype, str) and dtype == "auto":
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "float16", "bfloat16", "float64", "float", "half", "double"):
        raise ConfigError(f"dtype={dtype!r} is not a floating-point dtype (float32, float16, bfloat16, float64)")
    return {"float": "float32", "half": "float16", "double": "float64"}.get(name, name)


# -- rotary position embeddings: the config side (torch-free) ---------------------------------------------------
# transformers v4 wrote `rope_theta` beside an optional `rope_scaling` dict; v5 writes one `rope_parameters` dict
# holding both. Configs with rotary embeddings read either and keep v5's form, as transformers 5 does.
ROPE_LEGACY_KEYS = ("rope_scaling", "rope_theta", "partial_rotary_factor")


def pop_legacy_rope_keys(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the v4 rope keys out of a config's keyword arguments (before the config sets them as attributes)."""
    return {key: kwargs.pop(key) for key in ROPE_LEGACY_KEYS if key in kwargs}


def standard_rope_parameters(rope_parameters: dict | None, legacy: dict[str, Any], max_position_embeddings: int,
                             default_theta: float = 10000.0) -> dict[str, Any]:
    """The v5 `rope_parameters` dict, from v5 `rope_parameters` and/or the v4 keys popped by
    `pop_legacy_rope_keys`, filled in as transformers 5's `convert_rope_params_to_dict` and
    `standardize_rope_params` do: `rope_type` (from v4's "type", default "default"), `rope_theta`, and for the
    llama3 / yarn / longrope types `original_max_position_embeddings` (default max_position_embeddings)."""
    params = legacy.get("rope_scaling") or rope_parameters
    params = copy.deepcopy(params) if params is not None else {}
    if not isinstance(params, dict):
        raise ConfigError(f"rope_parameters must be a JSON object, got {params!r}")
    params.setdefault("rope_theta", legacy.get("rope_theta", default_theta))
    if legacy.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", legacy["partial_rotary_factor"])
    params.setdefault("rope_type", params.get("type", "default"))
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        params.setdefault("original_max_position_embeddings", max_position_embeddings)
    return params
