"""The config file on disk, replaced atomically with the one before kept beside
it (`gateway.yaml.previous`): a power cut at any moment leaves either the old or
the new file whole, and an operator can always see what was there before."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.atomicfile import sync_directory, write_synced


def config_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".previous")


def replace_keeping_previous(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    new = path.with_name(path.name + ".new")
    write_synced(new, data, mode)
    if path.exists():
        kept = path.with_name(path.name + ".previous.new")
        write_synced(kept, path.read_bytes(), mode)
        os.replace(kept, previous_path(path))
    os.replace(new, path)
    sync_directory(path.parent)  # the renames themselves survive a power cut
