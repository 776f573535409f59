"""One daemon per buffer: an exclusive lock on `<buffer>.lock`, held for the
daemon's life. A second `gateway run` on the same buffer would fail every
commit and take the first one's status socket; it refuses to start instead,
naming the process that holds the lock. The kernel lets go of the lock when
its holder dies (kill -9 included), so a stale lock file never blocks a start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AlreadyRunning(Exception):
    pass


def lock_file(buffer_path: Path) -> Path:
    return buffer_path.with_name(buffer_path.name + ".lock")


class InstanceLock:
    def __init__(self, buffer_path: Path):
        self.buffer_path = buffer_path
        self.path = lock_file(buffer_path)
        self._fd: int | None = None

    def acquire(self) -> "InstanceLock":
        """Take the lock or raise AlreadyRunning; OSError if the file cannot be made."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another gateway (pid {holder}) is running on the buffer {self.buffer_path} (it holds {self.path}); "
                f"not starting a second one: stop it first, or give this config another storage.path") from None
        try:  # who holds it, for the next one that asks; a full disk only costs the note
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None
