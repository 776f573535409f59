"""A file replaced whole or not at all, across a power cut: written beside its
place, synced, renamed over it, and the directory synced so the rename itself
survives. The id lease, the config file and the update request/result use it."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` (created with `mode`, or truncated) and sync it; not atomic by itself."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    staged = path.with_name(path.name + ".new")
    write_synced(staged, data, mode)
    os.chmod(staged, mode)  # whatever the umask took away
    os.replace(staged, path)
    sync_directory(path.parent)
