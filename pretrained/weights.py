"""Checkpoint files: find, read and write weights as transformers lays them out.

Reads `model.safetensors` (memory-mapped), `pytorch_model.bin` (torch.load with weights_only=True, so a
file that would run code is refused) and sharded checkpoints through their `*.index.json`. Writes
safetensors by default, shards above `max_shard_size`, every file through a temporary name and an atomic
rename, so a failure half-way leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import uuid
import warnings
import zipfile

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_write, fsync_file, fsync_folder, remove_leftover_temps, temp_path_beside, write_temp
from .hub import Source

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# Looked for in this order; the first one present wins (safetensors before pickle, single before sharded).
WEIGHTS_ORDER = (SAFE_WEIGHTS, SAFE_INDEX, BIN_WEIGHTS, BIN_INDEX)
_OUR_WEIGHT_FILES = re.compile(r"^(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?$")


class CheckpointError(OSError):
    """A weights file that is missing, corrupt, truncated or unsafe; the message names the file."""


def find_weights(source: Source) -> list[str]:
    """Local paths of the weight files of a checkpoint: one file, or every shard listed by its index.

    Raises:
        CheckpointError: when the folder or repo has none of the weight files, or a shard is missing.
    """
    for name in WEIGHTS_ORDER:
        path = source.file(name)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return [path]
        shards = _read_index(path)
        paths = []
        for shard in shards:
            shard_path = source.file(shard)
            if shard_path is None:
                raise CheckpointError(f"{path} lists shard '{shard}', but {source} has no such file")
            paths.append(shard_path)
        return paths
    raise CheckpointError(f"{source} has no weights: looked for {', '.join(WEIGHTS_ORDER)}")


def _read_index(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a valid shard index (needs a 'weight_map' object): {e}") from None
    if not shards or not all(isinstance(s, str) and "/" not in s and s not in ("", ".", "..") for s in shards):
        raise CheckpointError(f"{path} has an invalid weight_map: shard names {shards!r}")
    return shards


def read_weights(paths: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of the given files.

    Returns:
        (state dict, key -> file it came from)
    """
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in paths:
        part = _read_safetensors(path) if path.endswith(".safetensors") else _read_pickle(path)
        for key, tensor in part.items():
            if key in state:
                raise CheckpointError(f"weight '{key}' appears in both {origin[key]} and {path}")
            state[key] = tensor
            origin[key] = path
    return state, origin


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Tensors that stay views of the memory-mapped file: nothing is copied until written to."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format", "pt") not in ("pt", "tf", "flax", "mlx", "np"):
                raise CheckpointError(f"{path} declares format '{metadata['format']}', not a PyTorch checkpoint")
            return {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a valid safetensors file (truncated or corrupt?): {e}") from None


def _read_pickle(path: str) -> dict[str, torch.Tensor]:
    try:
        mmap = zipfile.is_zipfile(path)  # the zip format can be memory-mapped; the legacy format cannot
        # Corrupt bytes can make torch warn before it fails (e.g. "Detected pickle protocol 186"): such a warning
        # belongs to the error below, so it is held back and only passed on when the load succeeds.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(e)
        if "GLOBAL" in reason:
            raise CheckpointError(f"refusing to load {path}: it is not plain weights, and unpickling it could run "
                                  f"code ({reason}). Convert it to safetensors with a tool you trust.") from None
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint (truncated or corrupt?): {reason}") from None
    except Exception as e:  # noqa: BLE001 - corrupt bytes make the unpickler raise anything (IndexError, KeyError, ...)
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {_unpickling_reason(e)}") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a mapping of names to tensors (it holds a {type(state).__name__})")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path} holds a weight named {key!r} ({type(key).__name__}): weight names must be "
                                  f"strings")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} is not a mapping of names to tensors: it holds {type(value).__name__} "
                                  f"{_short_repr(value)} under {key!r}")
    return state


def _unpickling_reason(error: BaseException) -> str:
    """The part of torch.load's message that says what is wrong (e.g. "Trying to load unsupported GLOBAL
    posix.system ..."), without torch's advice to re-run with weights_only=False."""
    paragraphs = [p.strip() for p in str(error).split("\n\n") if p.strip()]
    kept = [p for p in paragraphs if not p.startswith(("Weights only load failed", "Check the documentation"))
            and "weights_only" not in p]
    reason = " ".join(kept) or (paragraphs[-1] if paragraphs and "weights_only" not in paragraphs[-1] else "")
    reason = re.sub(r"^Please file an issue.*?WeightsUnpickler error:\s*", "", reason, flags=re.S)
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- writing -----------------------------------------------------------------------------------------------
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """'5GB' -> 5_000_000_000, '10MiB' -> 10_485_760; ints pass through (bytes)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", str(size).upper())
        if not match:
            raise ValueError(f"max_shard_size={size!r} is not a size such as '5GB', '500MB' or a number of bytes")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split a state dict into consecutive groups of at most `max_bytes` (a larger tensor gets its own)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        n = _nbytes(tensor)
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += n
    return shards


# A save into a folder is whole or not at all (`CheckpointSave`): every file is written to a temporary name and
# synced; then this journal is written, the files are renamed into place (weights first, config.json last) and
# the journal is removed. A load that finds the journal raises CheckpointError instead of reading a possible mix
# of old and new files. A save deletes only weight files a save wrote (safetensors files and indexes carrying
# SAVE_ID_KEY, and the shards an index it replaces lists), never other files.
SAVE_JOURNAL = ".pretrained-save-in-progress.json"
# Written into each safetensors file's metadata and the index's "metadata": marks the files of one save.
SAVE_ID_KEY = "pretrained_save_id"
# Names of the files a save writes (their leftover temporary files are removed by the next save).
_SAVED_NAMES = re.compile(r"^(config\.json|generation_config\.json|\.pretrained-save-in-progress\.json|"
                          r"(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?)$")


class CheckpointSave:
    """One save into `folder`: stage files under temporary names, then `commit` renames them all.

    Creating it removes the temporary files a killed save left in the folder. Use as a context manager: an
    exception before `commit` removes this save's temporary files and leaves the folder as it was.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.save_id = uuid.uuid4().hex
        self.pending: list[tuple[str, str]] = []  # (temporary file, final name), renamed in this order
        self.weights: list[str] = []
        remove_leftover_temps(folder, _SAVED_NAMES.match)

    def __enter__(self) -> "CheckpointSave":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        for tmp, _ in self.pending:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.pending = []

    def stage_weights(self, state: dict[str, torch.Tensor], *, safe_serialization: bool = True,
                      max_shard_size: int | str = "5GB") -> list[str]:
        """Write the state dict to temporary files as transformers lays it out; returns the final names."""
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        groups = shard(state, parse_size(max_shard_size))
        ext, index_name, stem = ((".safetensors", SAFE_INDEX, "model") if safe_serialization
                                 else (".bin", BIN_INDEX, "pytorch_model"))
        if len(groups) == 1:
            names = [stem + ext]
        else:
            names = [f"{stem}-{i + 1:05d}-of-{len(groups):05d}{ext}" for i in range(len(groups))]
        self._check_not_shadowed(index_name if len(groups) > 1 else names[0])
        for name, group in zip(names, groups):
            tmp = temp_path_beside(os.path.join(self.folder, name))
            self.pending.append((tmp, name))
            mode = os.stat(tmp).st_mode
            if safe_serialization:
                save_file(_unshare(group), tmp, metadata={"format": "pt", SAVE_ID_KEY: self.save_id})
            else:
                torch.save(group, tmp)
            os.chmod(tmp, mode)  # safetensors replaces the file with a 0600 one; keep the umask's permissions
            fsync_file(tmp)
        if len(groups) > 1:
            index = {"metadata": {"total_size": sum(_nbytes(t) for t in state.values()), SAVE_ID_KEY: self.save_id},
                     "weight_map": {key: name for name, group in zip(names, groups) for key in group}}
            self.stage_file(index_name, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
            names.append(index_name)
        self.weights = names
        return names

    def stage_file(self, name: str, data: bytes) -> None:
        """Write another file of the save (config.json) to a temporary file; it is renamed after the weights."""
        self.pending.append((write_temp(os.path.join(self.folder, name), data), name))

    def commit(self) -> list[str]:
        """Rename every staged file into place under the journal; returns the names written."""
        written = [name for _, name in self.pending]
        stale = self._stale(written)
        journal = {"save_id": self.save_id, "writing": written, "removing": stale}
        atomic_write(os.path.join(self.folder, SAVE_JOURNAL), (json.dumps(journal, indent=2) + "\n").encode())
        for name in stale:
            os.remove(os.path.join(self.folder, name))
        for tmp, name in self.pending:
            os.replace(tmp, os.path.join(self.folder, name))
        self.pending = []
        fsync_folder(self.folder)
        return written

    def finish(self) -> None:
        """Mark the save complete (after `commit` and any files written beside it): remove the journal."""
        os.remove(os.path.join(self.folder, SAVE_JOURNAL))
        fsync_folder(self.folder)

    def _previous_files(self, ext: str) -> set[str]:
        """Weight files that earlier saves wrote and that a save in format `ext` replaces: safetensors files
        and indexes that carry SAVE_ID_KEY, and the shards listed by an index of format `ext`."""
        ours: set[str] = set()
        for name in os.listdir(self.folder):
            if name.endswith(".safetensors") and _OUR_WEIGHT_FILES.match(name) and \
                    _safetensors_save_id(os.path.join(self.folder, name)) is not None:
                ours.add(name)
        for index_name in (SAFE_INDEX, BIN_INDEX):
            path = os.path.join(self.folder, index_name)
            if not os.path.isfile(path):
                continue
            try:
                shards = _read_index(path)
                with open(path, encoding="utf-8") as f:
                    marked = SAVE_ID_KEY in (json.load(f).get("metadata") or {})
            except (CheckpointError, OSError, ValueError, AttributeError):
                continue
            if marked or index_name == (SAFE_INDEX if ext == ".safetensors" else BIN_INDEX):
                ours.add(index_name)
                ours.update(shard for shard in shards if _OUR_WEIGHT_FILES.match(shard))
        return ours

    def _stale(self, written: list[str]) -> list[str]:
        ext = os.path.splitext(self.weights[0])[1] if self.weights else ".safetensors"
        previous = self._previous_files(ext)
        return sorted(name for name in previous - set(written) if os.path.isfile(os.path.join(self.folder, name)))

    def _check_not_shadowed(self, entry: str) -> None:
        """Refuse, before writing anything, a save that a load would not read: a weights file that a load
        prefers (WEIGHTS_ORDER) and that no save of ours wrote."""
        previous = self._previous_files(os.path.splitext(entry.removesuffix(".index.json"))[1])
        for name in WEIGHTS_ORDER[:WEIGHTS_ORDER.index(entry)]:
            if name not in previous and os.path.isfile(os.path.join(self.folder, name)):
                raise FileExistsError(
                    f"{os.path.join(self.folder, name)} exists and was not written by a save of pretrained; a load "
                    f"would read it instead of the {entry} this save writes. Remove it, or save into another folder.")


def write_weights(state: dict[str, torch.Tensor], folder: str, *, safe_serialization: bool = True,
                  max_shard_size: int | str = "5GB") -> list[str]:
    """Write a state dict into `folder` as transformers does, whole or not at all; returns the file names written.

    Every file is written under a temporary name first and renamed into place only when all are complete.
    Weight files of the earlier save that the new one replaces are removed; other files are left alone.
    """
    with CheckpointSave(folder) as save:
        save.stage_weights(state, safe_serialization=safe_serialization, max_shard_size=max_shard_size)
        written = save.commit()
        save.finish()
    return written


def _safetensors_save_id(path: str) -> str | None:
    """The SAVE_ID_KEY of a safetensors file's metadata (None when absent or the file is unreadable)."""
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get(SAVE_ID_KEY)
    except (SafetensorError, OSError):
        return None


def check_whole_save(source: Source, paths: list[str]) -> None:
    """Raise CheckpointError when the checkpoint is the remains of an interrupted save: its save record says
    "writing", or its shards come from different saves."""
    if source.is_local and os.path.isfile(os.path.join(source.folder, SAVE_JOURNAL)):
        raise CheckpointError(
            f"a save into {source.folder} is in progress or was interrupted ({SAVE_JOURNAL} is there): the folder "
            f"may hold a mix of old and new files. Save the model again, or restore the folder.")
    if len(paths) < 2:
        return
    ids = {path: _safetensors_save_id(path) for path in paths if path.endswith(".safetensors")}
    found = {v for v in ids.values() if v is not None}
    if len(found) > 1 or found and None in ids.values():
        raise CheckpointError(f"the shards of {source} come from different saves (an interrupted save?): "
                              + ", ".join(f"{os.path.basename(p)}: {v or 'no save id'}" for p, v in ids.items()))


def _unshare(group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (the same tensor twice, or overlapping views of one
    storage); clone the second and later tensors of one storage."""
    seen: set[int] = set()
    out = {}
    for key, t in group.items():
        ident = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ident in seen else t
        seen.add(ident)
    return out
