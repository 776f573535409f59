"""Reading ids that stay unique for ever on one gateway (SPEC §3).

An id is `<gateway>.<sensor>.<ms>.<counter>`. A Pi has no RTC, so after a reboot
the wall clock can repeat earlier times, and a corrupt buffer can be replaced by
an empty one. The millisecond part therefore comes from a lease kept in a small
file beside the buffer: ids are only issued below a persisted ceiling, and a
restart starts above it. One tiny write per hour of issued ids.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LEASE_MS = 3_600_000


class IdGenerator:
    def __init__(self, gateway: str, lease_file: Path):
        self.gateway = gateway
        self.lease_file = lease_file
        floor = self._read_lease()
        self._last_ms = max(floor, int(time.time() * 1000)) - 1
        self._counter = 0
        self._ceiling = 0

    def _read_lease(self) -> int:
        try:
            return int(self.lease_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _extend_lease(self, ms: int) -> None:
        self._ceiling = ms + LEASE_MS
        tmp = self.lease_file.with_name(self.lease_file.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(self._ceiling))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.lease_file)

    def next(self, sensor: str) -> str:
        ms = max(int(time.time() * 1000), self._last_ms)
        if ms == self._last_ms:
            self._counter += 1
            if self._counter > 999_999:  # a million ids in one millisecond: borrow the next one
                ms, self._counter = ms + 1, 0
        else:
            self._counter = 0
        self._last_ms = ms
        if ms >= self._ceiling:
            self._extend_lease(ms)
        return f"{self.gateway}.{sensor}.{ms}.{self._counter:06d}"
