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
import zipfile

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_write, temp_path_beside
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
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
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
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"refusing to load {path}: it is not plain weights and unpickling it could run "
                              f"code ({reason}). Convert it to safetensors with a tool you trust.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint (truncated or corrupt?): {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a mapping of names to tensors")
    return state


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


def write_weights(state: dict[str, torch.Tensor], folder: str, *, safe_serialization: bool = True,
                  max_shard_size: int | str = "5GB") -> list[str]:
    """Write a state dict into `folder` as transformers does; returns the file names written.

    Every file is written under a temporary name first and renamed into place only when all are complete.
    Weight files of an earlier save that the new one does not use are removed afterwards.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    groups = shard(state, parse_size(max_shard_size))
    ext, index_name, stem = ((".safetensors", SAFE_INDEX, "model") if safe_serialization
                             else (".bin", BIN_INDEX, "pytorch_model"))
    if len(groups) == 1:
        names = [stem + ext]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(groups):05d}{ext}" for i in range(len(groups))]

    pending: list[tuple[str, str]] = []  # (temporary file, final name)
    try:
        for name, group in zip(names, groups):
            tmp = temp_path_beside(os.path.join(folder, name))
            pending.append((tmp, name))
            mode = os.stat(tmp).st_mode
            if safe_serialization:
                save_file(_unshare(group), tmp, metadata={"format": "pt"})
            else:
                torch.save(group, tmp)
            os.chmod(tmp, mode)  # safetensors replaces the file with a 0600 one; keep the umask's permissions
        if len(groups) > 1:
            index = {"metadata": {"total_size": sum(_nbytes(t) for t in state.values())},
                     "weight_map": {key: name for name, group in zip(names, groups) for key in group}}
            tmp = temp_path_beside(os.path.join(folder, index_name))
            pending.append((tmp, index_name))
            atomic_write(tmp, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    except BaseException:
        for tmp, _ in pending:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    for tmp, name in pending:
        os.replace(tmp, os.path.join(folder, name))
    written = [name for _, name in pending]
    for stale in os.listdir(folder):
        if _OUR_WEIGHT_FILES.match(stale) and stale not in written:
            os.remove(os.path.join(folder, stale))
    return written


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
