"""Atomic file writes: a failure half-way never leaves a truncated file where a good one was.

Every file is written to a temporary name beside its target (`.NAME.PID.XXXXXXXX.tmp`), flushed to disk (fsync),
renamed into place, and the folder is synced after the rename, so that a power cut leaves the old file or the
new one. Temporary files a killed process left behind (its PID no longer runs) are removed by
`remove_leftover_temps`.
"""
from __future__ import annotations

import os
import re
import tempfile

_UMASK = os.umask(0)
os.umask(_UMASK)
# What temp_path_beside names its files: "." + target name + "." + the writer's process id + "." + mkstemp's 8
# random characters + ".tmp". The process id tells a killed writer's leftovers from a live writer's files.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+?)(\.(?P<pid>\d+))?\.[A-Za-z0-9_]{8}\.tmp$")


def temp_path_beside(path: str | os.PathLike) -> str:
    """A new, empty temporary file in the same folder as `path` (so that os.replace is atomic)."""
    folder, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder or ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; saved checkpoints get normal permissions
    return tmp


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (the renames into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync, an atomic rename and a sync of the folder."""
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(os.path.dirname(os.fspath(path)))


def write_temp(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` to a synced temporary file beside `path` and return its name (for the caller to rename)."""
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (then its temporary files may still be in use)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, under another user (or we cannot tell): leave its files
    return True


def remove_leftover_temps(folder: str | os.PathLike, is_ours) -> list[str]:
    """Remove the temporary files (`.NAME.PID.XXXXXXXX.tmp`) of targets `is_ours(NAME)` accepts that a killed
    write into `folder` left (the process PID no longer runs); returns the names removed."""
    removed = []
    for entry in os.listdir(folder):
        match = _TEMP_NAME.match(entry)
        if not match or not is_ours(match.group("target")):
            continue
        if match.group("pid") is not None and _alive(int(match.group("pid"))):
            continue
        if os.path.isfile(os.path.join(folder, entry)):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed
