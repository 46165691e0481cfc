"""PreTrainedModel: random init from a config, from_pretrained and save_pretrained.

`from_pretrained` is a pipeline of named steps, each a function of its own:
resolve the source -> read the config -> build on the meta device -> find and read the weights ->
normalise the keys -> load them (assign, no copy) -> initialise what is missing and tie weights ->
set the dtype -> eval mode.

A model class declares its checkpoint quirks as class attributes; this one loader reads them:
`base_model_prefix`, `_tied_weights_keys`, `_keys_to_ignore_on_load_unexpected`,
`_keys_to_ignore_on_load_missing` and `_checkpoint_renames`.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from . import fastpath
from .configuration import CONFIG_NAME, PretrainedConfig, read_config_dict
from .hub import Source, pop_hub_options
from .weights import CheckpointError, CheckpointSave, check_whole_save, find_weights, read_weights

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


class ShapeMismatchError(ValueError):
    """A checkpoint tensor whose shape differs from the model's; names the key and both shapes."""


class PreTrainedModel(nn.Module):
    """Base class of every model: holds `config`, knows how to initialise, load and save itself."""

    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    # The attribute under which a head model keeps its base model ("bert", "transformer", "model").
    base_model_prefix: ClassVar[str] = ""
    main_input_name: ClassVar[str] = "input_ids"
    # target key -> source key; the target is the same Parameter as the source when
    # config.tie_word_embeddings is true, and is not written to the checkpoint.
    _tied_weights_keys: ClassVar[dict[str, str]] = {}
    # Like _tied_weights_keys, but always tied whatever the config says (e.g. BERT's decoder bias).
    _aliased_weights_keys: ClassVar[dict[str, str]] = {}
    # Regexes of checkpoint keys dropped without a word (old buffers) or not reported when missing.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = []
    _keys_to_ignore_on_load_missing: ClassVar[list[str]] = []
    # (regex, replacement) applied to checkpoint keys before loading (legacy names such as LayerNorm.gamma).
    _checkpoint_renames: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    def post_init(self) -> None:
        """Called at the end of every model's __init__: random init (free on the meta device), then ties."""
        self.init_weights()
        self.tie_weights()

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def exact(self) -> bool:
        """Exact mode: True computes transformers' bits; False (the default unless PRETRAINED_EXACT=1) takes the
        fast CPU path, within 1e-4 of them (fastpath.py). Setting it sets every layer of the model."""
        return fastpath.EXACT if self._exact is None else self._exact

    @exact.setter
    def exact(self, value: Optional[bool]) -> None:
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"exact must be True, False or None (follow PRETRAINED_EXACT), got {value!r}")
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module._exact = value
            elif hasattr(module, "prepack"):  # the layers with a fast path (layers.Linear, GPT-2's Conv1D)
                module.exact = value
        if self.exact:
            fastpath.drop_packs(self)

    _exact: Optional[bool] = None

    def _apply(self, fn, recurse: bool = True):
        # .to() / .half() / .cuda() may replace the weights: packs of the old ones would only hold memory
        result = super()._apply(fn, recurse)
        fastpath.drop_packs(self, stale_only=True)
        return result

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not only_trainable}
        return sum(p.numel() for p in params.values())

    # -- initialisation -----------------------------------------------------------------------------------
    def _init_std(self) -> float:
        for name in ("initializer_range", "init_std", "initializer_factor"):
            value = getattr(self.config, name, None)
            if value is not None:
                return float(value)
        return 0.02

    @torch.no_grad()
    def _init_tensor(self, module: nn.Module, name: str, qualified_name: str, tensor: torch.Tensor) -> None:
        """Initialise one parameter as transformers does: normal(0, std) weights, zero biases, LayerNorm 1/0,
        the padding row of an embedding 0. Architectures override this for their own special cases."""
        if isinstance(module, nn.LayerNorm):
            tensor.fill_(1.0 if name == "weight" else 0.0)
        elif name.endswith("bias"):
            tensor.zero_()
        else:
            tensor.normal_(0.0, self._init_std())
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                tensor[module.padding_idx].zero_()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init of every parameter and persistent buffer, reproducible under torch.manual_seed."""
        for prefix, module in self.named_modules():
            for name, tensor in _own_tensors(module):
                if not tensor.is_meta:  # no storage to fill; and a meta normal_ imports torch._dynamo (~2 s)
                    self._init_tensor(module, name, f"{prefix}.{name}" if prefix else name, tensor)

    def _tie_pairs(self) -> dict[str, str]:
        pairs = dict(self._aliased_weights_keys)
        if getattr(self.config, "tie_word_embeddings", True):
            pairs.update(self._tied_weights_keys)
        return pairs

    def tie_weights(self) -> None:
        """Make every tied target the very same Parameter as its source."""
        for target, source in self._tie_pairs().items():
            _set_tensor(self, target, _get_tensor(self, source))

    @classmethod
    def _mismatch_hint(cls, key: str, config: PretrainedConfig) -> str:
        """More words for the shape-mismatch error of checkpoint key `key` (e.g. which config field sets it)."""
        return ""

    def get_input_embeddings(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} does not define get_input_embeddings")

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "PreTrainedModel":
        """A model with random weights, built from `config`."""
        return cls(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *,
                        config: Optional[PretrainedConfig] = None, dtype: Any = None, torch_dtype: Any = None,
                        ignore_mismatched_sizes: bool = False, allow_missing_weights: bool = False,
                        exact: Optional[bool] = None,
                        **kwargs) -> "PreTrainedModel":
        """Load a model from a folder or Hub id.

        Args:
            pretrained_model_name_or_path: folder or Hub id.
            config: a config to use instead of the checkpoint's config.json.
            dtype / torch_dtype: torch dtype or its name; "auto" (the default) keeps the checkpoint's: the dtype
                its config.json declares, else that of its weights.
            ignore_mismatched_sizes: re-initialise weights whose shape differs instead of raising.
            allow_missing_weights: initialise the weights the checkpoint lacks even when they are most of the
                model (without it that raises; a missing head, such as a new classifier, is only a warning).
            exact: True for transformers' exact numbers, False for the fast path, None (the default) for the
                mode PRETRAINED_EXACT sets (fast unless it is 1); see `exact`.
            **kwargs: download options (revision, cache_dir, token, local_files_only, force_download,
                subfolder) and config overrides such as num_labels=3.

        Raises:
            FileNotFoundError, CheckpointError, ConfigError, ShapeMismatchError: naming the file or key.
        """
        source = pretrained_model_name_or_path if isinstance(pretrained_model_name_or_path, Source) \
            else Source(pretrained_model_name_or_path, **pop_hub_options(kwargs))
        init_kwargs = pop_init_kwargs(cls, kwargs)
        config = load_config(cls, source, config, kwargs)
        model = build_on_meta(cls, config, **init_kwargs)
        paths = find_weights(source)
        check_whole_save(source, paths)
        state, origin = read_weights(paths)
        state = normalise_keys(model, state, origin)
        mismatched = check_shapes(model, state, origin, ignore_mismatched_sizes)
        state, unexpected = drop_unexpected(model, state)
        check_enough_matched(model, source, config, state, unexpected, mismatched, allow_missing_weights)
        target = resolve_dtype(dtype if dtype is not None else torch_dtype, config, state)
        state = cast_floating(state, target)
        missing, _ = load_assigned(model, state)
        finalise(model, missing, target)
        report(model, source, config, missing, unexpected, mismatched)
        model.config.dtype = _dtype_name(target)
        model.config._name_or_path = source.name_or_path
        model._load_extra(source)
        model.eval()
        if exact is not None:
            model.exact = exact
        prepare_for_inference(model)
        return model

    # -- saving -------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, safe_serialization: bool = True,
                        max_shard_size: int | str = "5GB", state_dict: Optional[dict] = None) -> None:
        """Write config.json and the weights (tied weights once) into `save_directory`, atomically per file;
        transformers loads the result."""
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_pretrained needs a folder, but '{save_directory}' is a file")
        os.makedirs(save_directory, exist_ok=True)
        state = self.state_dict() if state_dict is None else dict(state_dict)
        for target in self._tie_pairs():
            state.pop(target, None)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = _dtype_name(self.dtype)
        # Whole or not at all: weights and config.json are staged, then renamed together (config.json last); a
        # load of a folder whose save was interrupted raises instead of mixing old and new files.
        with CheckpointSave(save_directory) as save:
            save.stage_weights(state, safe_serialization=safe_serialization, max_shard_size=max_shard_size)
            save.stage_file(CONFIG_NAME, self.config.to_json_string().encode())
            save.commit()
            self._save_extra(save_directory)
            save.finish()

    def _save_extra(self, save_directory: str) -> None:
        """Hook for files beside the weights (e.g. generation_config.json)."""

    def _load_extra(self, source: Source) -> None:
        """from_pretrained's last step, the hook for files beside the weights (generation_config.json for
        models with GenerationMixin)."""


# -- the steps of from_pretrained ------------------------------------------------------------------------------
def load_config(cls: type[PreTrainedModel], source: Source, config: Optional[PretrainedConfig],
                overrides: dict) -> PretrainedConfig:
    """The config to build: the one given, or the checkpoint's config.json, with keyword overrides applied."""
    if config is None:
        config, unused = cls.config_class.from_pretrained(source, return_unused_kwargs=True, **overrides)
    else:
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.config_class.__name__}, got {type(config).__name__}")
        unused = {k: v for k, v in overrides.items() if k not in type(config).known_keys() and not hasattr(config, k)}
        config = type(config).from_dict(config.to_dict(), **{k: v for k, v in overrides.items() if k not in unused})
    if unused:
        raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword arguments {sorted(unused)}: "
                        f"they are neither download options nor fields of {cls.config_class.__name__}")
    return config


def pop_init_kwargs(cls: type[PreTrainedModel], kwargs: dict) -> dict:
    """Take the arguments of the model's own __init__ besides `config` (e.g. BertModel's `add_pooling_layer`) out
    of `kwargs`: as in transformers, they go to the constructor, not to the config."""
    params = inspect.signature(cls.__init__).parameters
    return {name: kwargs.pop(name) for name in list(kwargs) if name in params and name not in ("self", "config")}


def build_on_meta(cls: type[PreTrainedModel], config: PretrainedConfig, **init_kwargs) -> PreTrainedModel:
    """The model's structure with no storage behind it: nothing is initialised only to be overwritten."""
    with torch.device("meta"), _meta_normal_skipped():
        return cls(config, **init_kwargs)


@contextlib.contextmanager
def _meta_normal_skipped():
    """nn.init.normal_ (nn.Embedding's init) leaves meta tensors alone: torch's meta `normal_` imports
    torch._dynamo on first use, 1.5-2.5 s, which was most of the time of a bert-base from_pretrained."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor if tensor.is_meta else normal(tensor, *args, **kwargs)
    try:
        yield
    finally:
        nn.init.normal_ = normal


def normalise_keys(model: PreTrainedModel, state: dict[str, torch.Tensor],
                   origin: dict[str, str]) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto the model's: legacy renames, the base-model prefix added or stripped, ignored
    keys dropped, a tied target loaded into its source when only the target was saved."""
    expected = set(model.state_dict().keys())
    prefix = model.base_model_prefix
    ignore = re.compile("|".join(model._keys_to_ignore_on_load_unexpected)) \
        if model._keys_to_ignore_on_load_unexpected else None
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        for pattern, replacement in model._checkpoint_renames:
            new = re.sub(pattern, replacement, new)
        if new not in expected and prefix:
            if f"{prefix}.{new}" in expected:
                new = f"{prefix}.{new}"
            elif new.startswith(prefix + ".") and new[len(prefix) + 1:] in expected:
                new = new[len(prefix) + 1:]
        if new not in expected and ignore is not None and ignore.search(new):
            continue
        if new in out:
            raise ValueError(f"checkpoint keys '{key}' and another both map to '{new}' ({origin.get(key)})")
        out[new] = tensor
        origin[new] = origin.get(key, "")
    for target, source_key in model._tie_pairs().items():
        if target in out and source_key not in out:
            out[source_key] = out.pop(target)
        else:
            out.pop(target, None)
    return out


def resolve_dtype(dtype: Any, config: PretrainedConfig, state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype to load in: the one asked for, or with "auto"/None the checkpoint's own: as in transformers
    (v4 and v5), the dtype its config.json declares, else the one most of its weights have."""
    if dtype is None or dtype == "auto":
        if config.dtype in _DTYPES:
            return _DTYPES[config.dtype]
        floats = [t.dtype for t in state.values() if t.dtype.is_floating_point]
        return max(set(floats), key=floats.count) if floats else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype} is not a floating-point dtype")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {', '.join(_DTYPES)} or 'auto'")
    return _DTYPES[name]


def drop_unexpected(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keep only the tensors the model has a place for (before any cast, so that an unused tensor, e.g. a
    huge stride-0 view in a .bin, never costs memory); returns (kept, names of the unexpected ones)."""
    expected = model.state_dict().keys()
    unexpected = [k for k in state if k not in expected]
    return {k: v for k, v in state.items() if k in expected}, unexpected


# Above this fraction of the model's parameters missing from the checkpoint, from_pretrained raises unless
# allow_missing_weights=True: a checkpoint for a new head (a classifier on a base model) stays far below it.
MAX_MISSING_FRACTION = 0.5


def check_enough_matched(model: PreTrainedModel, source: Source, config: PretrainedConfig,
                         state: dict[str, torch.Tensor], unexpected: list[str],
                         mismatched: list[tuple[str, tuple, tuple]], allow_missing: bool) -> None:
    """Refuse to return a mostly random model: raise CheckpointError when no checkpoint tensor matched a weight
    of the model, or (unless `allow_missing`) when most of its parameters would be newly initialised.
    Runs before anything is allocated for the missing weights."""
    name = type(model).__name__
    file_type = getattr(config, "model_type", "")
    if not state:
        what = (f"none of its {len(unexpected)} tensors (e.g. '{unexpected[0]}') matched a weight of {name} "
                f"(e.g. '{next(iter(model.state_dict()))}')") if unexpected else "it holds no tensors"
        if mismatched:
            what = f"every matching tensor had the wrong shape (e.g. '{mismatched[0][0]}')"
        archs = _declared_architectures(source)
        hint = (f"; its config.json names {', '.join(archs)}: load it with AutoModel.from_pretrained or that class"
                if archs and name not in archs else "; load it with AutoModel.from_pretrained, or the class "
                "for its architecture")
        raise CheckpointError(f"no weight of {name} could be loaded from {source}: {what}{hint}. "
                              f"(For a randomly initialised model use {name}(config) or from_config.)")
    if allow_missing:
        return
    tied = set(model._tie_pairs())
    sizes = {k: v.numel() for k, v in model.state_dict(keep_vars=True).items() if k not in tied}
    total = sum(sizes.values())
    missing = sum(n for k, n in sizes.items() if k not in state)
    if total and missing / total > MAX_MISSING_FRACTION:
        example = next(k for k in sizes if k not in state)
        raise CheckpointError(
            f"{source} lacks {missing / total:.0%} of the parameters of {name} (e.g. '{example}'; model_type of "
            f"the config: '{file_type}'): the model would be mostly random. Check that the checkpoint is for "
            f"{name} (AutoModel.from_pretrained picks the class config.json names), or pass "
            f"allow_missing_weights=True to initialise them.")


def _declared_architectures(source: Source) -> list[str]:
    """The `architectures` and model_type that the checkpoint's own config.json declares (for messages)."""
    try:
        data = read_config_dict(source.require(CONFIG_NAME))
    except (OSError, ValueError):
        return []
    archs = [a for a in data.get("architectures") or [] if isinstance(a, str)]
    if isinstance(data.get("model_type"), str):
        archs.append(f"model_type '{data['model_type']}'")
    return archs


def cast_floating(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast the floating-point tensors that will be loaded (only those: see drop_unexpected) to `dtype`."""
    return {k: v.to(dtype) if v.dtype.is_floating_point and v.dtype != dtype else v for k, v in state.items()}


def check_shapes(model: PreTrainedModel, state: dict[str, torch.Tensor], origin: dict[str, str],
                 ignore_mismatched_sizes: bool) -> list[tuple[str, tuple, tuple]]:
    """Raise ShapeMismatchError for a tensor whose shape differs from the model's, or with
    `ignore_mismatched_sizes` drop it (it is then initialised afresh) and return it in the list."""
    expected = model.state_dict()
    mismatched = []
    for key in list(state):
        if key in expected and expected[key].dtype.is_floating_point != state[key].dtype.is_floating_point:
            raise ShapeMismatchError(
                f"weight '{key}' in {origin.get(key, 'the checkpoint')} has dtype {state[key].dtype}, but "
                f"{type(model).__name__} expects a {'floating-point' if expected[key].dtype.is_floating_point else 'integer'}"
                f" tensor ({expected[key].dtype}); the checkpoint is not for this architecture or is corrupt.")
        if key in expected and state[key].shape != expected[key].shape:
            got, want = tuple(state[key].shape), tuple(expected[key].shape)
            if not ignore_mismatched_sizes:
                raise ShapeMismatchError(
                    f"weight '{key}' in {origin.get(key, 'the checkpoint')} has shape {got}, but "
                    f"{type(model).__name__} built from its config expects {want}. Check the config, or pass "
                    f"ignore_mismatched_sizes=True to initialise it afresh.{model._mismatch_hint(key, model.config)}")
            mismatched.append((key, got, want))
            del state[key]
    return mismatched


def load_assigned(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    # `state` holds only expected keys (drop_unexpected); the report takes the unexpected ones from that step.
    """Load by assignment: the model's parameters become the checkpoint's tensors (memory-mapped, no copy)."""
    result = model.load_state_dict(state, strict=False, assign=True)
    tied = set(model._tie_pairs())
    return [k for k in result.missing_keys if k not in tied], list(result.unexpected_keys)


def finalise(model: PreTrainedModel, missing: list[str], dtype: torch.dtype) -> None:
    """Give storage and a random init to what the checkpoint lacked, then tie weights."""
    model.tie_weights()
    for prefix, module in model.named_modules():
        for name, tensor in _own_tensors(module):
            if tensor.is_meta:
                real = torch.empty(tensor.shape, dtype=dtype if tensor.dtype.is_floating_point else tensor.dtype)
                model._init_tensor(module, name, f"{prefix}.{name}" if prefix else name, real)
                _set_tensor(module, name, real)
    model.tie_weights()


def report(model: PreTrainedModel, source: Source, config: PretrainedConfig, missing: list[str],
           unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]) -> None:
    """Log what was not loaded, as transformers does."""
    name = type(model).__name__
    quiet = re.compile("|".join(model._keys_to_ignore_on_load_missing)) if model._keys_to_ignore_on_load_missing else None
    reinitialised = {key for key, _, _ in mismatched}  # in the checkpoint, reported below as mismatched
    missing = [k for k in missing if k not in reinitialised and (quiet is None or not quiet.search(k))]
    if unexpected:
        # Expected when a base model is loaded from a checkpoint with a head: info, not a warning.
        log = logger.warning if name in (config.architectures or []) else logger.info
        log("Some weights of the checkpoint at %s were not used when initialising %s: %s", source, name, unexpected)
    if missing:
        logger.warning("Some weights of %s were not in the checkpoint at %s and are newly initialised: %s. "
                       "Train the model before using it for predictions.", name, source, missing)
    for key, got, want in mismatched:
        logger.warning("Weight '%s' of the checkpoint at %s has shape %s, %s expects %s: newly initialised.",
                       key, source, got, name, want)


def prepare_for_inference(model: PreTrainedModel) -> None:
    """from_pretrained's last step: no cold first forward. Packs the linear weights for the fast path now and
    maps the other weights' pages into the process (fastpath.prepare_for_inference), then runs one forward on
    four dummy tokens (`warm_up`)."""
    fastpath.prepare_for_inference(model)
    warm_up(model)


def warm_up(model: PreTrainedModel, tokens: int = 4) -> None:
    """One forward on `tokens` dummy tokens, its output thrown away, so that what the first call of a process
    builds (oneDNN's and MKL's kernels for each layer shape, torch's first-call paths) is built at load and not in
    the user's first forward (bench/RESULTS.md: first ÷ second forward). A model that generates also gets a
    one-token forward, the shape of a decoding step at batch 1 (see fastpath.single_row_plain). CPU models only;
    a model the dummy input does not suit (a head that needs particular tokens) skips the warm-up: the user's own
    call reports its error."""
    params = list(model.parameters())
    if not params or any(p.is_meta or p.device.type != "cpu" for p in params):
        return
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 1:
        return
    ids = torch.arange(tokens).clamp_(max=vocab - 1).unsqueeze(0)
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, int) and 0 <= eos < vocab:
        ids[0, -1] = eos  # sequence classification over BART pools at an eos token
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    accepted = inspect.signature(model.forward).parameters
    if "decoder_input_ids" in accepted:
        inputs["decoder_input_ids"] = ids
    if "use_cache" in accepted:
        inputs["use_cache"] = False
    calls = [inputs]
    if callable(getattr(model, "generate", None)):  # decoding feeds one token per row and step: warm that too
        if not model.exact:
            fastpath.single_row_plain(params[0].dtype)  # which kernel one-row calls take on this CPU
        calls.append({k: v[:, :1] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    try:
        with torch.inference_mode():
            for call in calls:
                model(**call)
    except Exception as err:  # noqa: BLE001 - a warm-up only; the user's own call raises what is wrong
        logger.debug("warm-up forward of %s skipped: %s", type(model).__name__, err)


# -- small helpers on parameter paths --------------------------------------------------------------------------
def _own_tensors(module: nn.Module):
    yield from module.named_parameters(recurse=False)
    for name, buf in module.named_buffers(recurse=False):
        if name not in module._non_persistent_buffers_set:
            yield name, buf


def _get_tensor(root: nn.Module, path: str) -> torch.Tensor:
    module_path, _, name = path.rpartition(".")
    return getattr(root.get_submodule(module_path), name)


def _set_tensor(root: nn.Module, path: str, tensor: torch.Tensor) -> None:
    module_path, _, name = path.rpartition(".")
    module = root.get_submodule(module_path)
    if name in module._parameters:
        module._parameters[name] = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(
            tensor, requires_grad=module._parameters[name].requires_grad if module._parameters[name] is not None else True)
    else:
        module._buffers[name] = tensor


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
