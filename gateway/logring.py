"""The recent log lines the daemon keeps in memory, for the `logs` management
command (SPEC §7) and the on-site page. Bounded, so a chatty failure cannot
grow it; lines are formatted when logged, so they read as the journal does."""

from __future__ import annotations

import collections
import logging
import threading
import time


class LogRing(logging.Handler):
    def __init__(self, capacity: int = 2000, level: int = logging.INFO):
        super().__init__(level)
        self._lines: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()  # drivers log from their own threads
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format argument must not break logging
            line = f"{record.levelname} {record.name}: {record.msg!r}"
        with self._guard:
            self._lines.append((record.created, record.levelno, line))

    def lines(self, since: float | None = None, level: int = logging.INFO) -> list[dict]:
        """Lines at or above `level`, newer than `since` seconds ago (all when None), oldest first."""
        cutoff = None if since is None else time.time() - since
        with self._guard:
            kept = list(self._lines)
        return [{"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), "level": logging.getLevelName(lv).lower(),
                 "line": text} for t, lv, text in kept if lv >= level and (cutoff is None or t >= cutoff)]


def install(capacity: int = 2000) -> LogRing:
    """Attach a ring to the root logger (the daemon does, at start) and return it."""
    ring = LogRing(capacity)
    for f in logging.getLogger().handlers[0].filters if logging.getLogger().handlers else ():
        ring.addFilter(f)  # the same repeat filter as stderr: the ring holds what the journal holds
    logging.getLogger().addHandler(ring)
    return ring


def shared() -> LogRing:
    """The root logger's ring, attached on first use: the on-site page and remote
    management read the same lines."""
    ring = next((h for h in logging.getLogger().handlers if isinstance(h, LogRing)), None)
    return ring or install()
