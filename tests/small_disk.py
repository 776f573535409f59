"""A real small file system for disk-full tests: a tmpfs of a few MiB mounted by
the test (root is available here and in CI), filled with a real file until the
kernel says ENOSPC, emptied again, unmounted at the end."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import GatewayProcess


class SmallDisk:
    def __init__(self, where: Path, size: str = "4m"):
        self.path = where
        self.filler = where / "filler"
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take every free byte but `leave` (the filler grows; call again to fill what was freed since)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while (room := self.free_bytes() - leave) > 0:
                try:
                    os.write(fd, b"\0" * min(room, 65536))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        finally:
            os.close(fd)

    def make_room(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        result = subprocess.run(["umount", str(self.path)], capture_output=True)
        if result.returncode != 0:  # something still holds a file open: detach now, freed when it lets go
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    for gw in list(GatewayProcess.running):  # a daemon holding files open would keep the mount busy
        gw.kill()
    disk.unmount()
