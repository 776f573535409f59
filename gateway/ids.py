"""Reading ids that stay unique for ever on one gateway (SPEC §3).

An id is `<gateway>.<sensor>.<ms>.<counter>`. A Pi has no RTC, so after a reboot
the wall clock can repeat earlier times, and a corrupt buffer can be replaced by
an empty one. The millisecond part therefore comes from a lease kept in a small
file beside the buffer: ids are only issued below a ceiling that is on disk
(written, synced and renamed into place before it counts), and a restart starts
at it. One tiny write per hour of issued ids.

When the lease cannot be written (a full disk), no id is issued: IdStamper holds
the readings, in order, until it can be, instead of losing them or giving one a
number that a later start could give again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Callable

from gateway.atomicfile import replace_atomically

log = logging.getLogger(__name__)

LEASE_MS = 3_600_000
HOLD_LIMIT = 100_000  # readings held while the lease cannot be written (as the buffer holds rows in memory)


class IdsUnavailable(Exception):
    """The lease cannot be extended: no id may be issued now."""


class IdGenerator:
    def __init__(self, gateway: str, lease_file: Path, clock: Callable[[], float] = time.time):
        self.gateway = gateway
        self.lease_file = lease_file
        self.clock = clock
        # Every id of an earlier run lies below its lease: this run starts at it (counter 0 comes next).
        self._last_ms = max(self._read_lease(), int(clock() * 1000))
        self._counter = -1
        self._ceiling = 0  # nothing leased yet by this run: the first id writes the lease

    def _read_lease(self) -> int:
        try:
            return int(self.lease_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            # Not what we write (we rename a synced file into place): the ceiling it held was set at
            # most LEASE_MS past the file's last change, so starting beyond that cannot repeat an id.
            floor = int(self.lease_file.stat().st_mtime * 1000) + LEASE_MS
            log.error("id lease %s unreadable (%s): issuing ids from %d on", self.lease_file, exc, floor)
            return floor

    def _extend_lease(self, ms: int) -> None:
        ceiling = ms + LEASE_MS
        try:
            replace_atomically(self.lease_file, str(ceiling).encode())
        except OSError as exc:
            raise IdsUnavailable(f"cannot write the id lease {self.lease_file}: {exc.strerror or exc}") from exc
        self._ceiling = ceiling  # only now: an id below it can never be issued again

    def next(self, sensor: str) -> str:
        """A new id; raises IdsUnavailable (and issues none) while the lease cannot be written."""
        ms = max(int(self.clock() * 1000), self._last_ms)
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



class IdStamper:
    """Gives each reading its id and passes it to `sink`, in arrival order.
    While no id can be issued the readings wait here (bounded: over
    HOLD_LIMIT the oldest non-alerts go, counted in `lost`)."""

    def __init__(self, ids: IdGenerator, sink: Callable[[object], object], limit: int = HOLD_LIMIT):
        self.ids, self.sink, self.limit = ids, sink, limit
        self.held: deque = deque()
        self.lost = 0
        self._failing = False

    def __call__(self, reading) -> None:
        self.held.append(reading)
        if len(self.held) > self.limit:
            self._drop_one()
        self.flush()

    def flush(self) -> None:
        """Stamp and pass on whatever waits, as far as the lease allows."""
        while self.held:
            reading = self.held[0]
            try:
                reading.id = self.ids.next(reading.sensor)
            except IdsUnavailable as exc:
                if not self._failing:
                    log.error("%s; holding readings (%d) until it can be written", exc, len(self.held))
                self._failing = True
                return
            self.held.popleft()
            self.sink(reading)
        if self._failing:
            log.warning("id lease %s written again: held readings are on their way", self.ids.lease_file)
            self._failing = False

    def _drop_one(self) -> None:
        victim = next((r for r in self.held if not getattr(r, "alert", False)), self.held[0])
        self.held.remove(victim)
        self.lost += 1
        if self.lost % 1000 == 1:
            log.error("id lease still not writable: dropped the oldest held reading (%d lost so far)", self.lost)
