"""The last 24 hours of each sensor's numbers, for the on-site page's plots.

Not the delivery buffer: a small SQLite file of its own beside it
(`<buffer>.history`), so plotting never reads or locks the readings that are
waiting for an uplink, and losing it loses nothing that must reach the city.
Bounded three ways: points older than `span` are dropped, at most one point per
sensor (and remote device) per `step` seconds is kept (an alert change always
is), and the whole table holds at most `max_points`. Writes are committed by
`flush()`, every minute or so: the SD card sees few writes, and a crash loses
at most that much plot.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from pathlib import Path

from gateway.sdk.reading import Reading

log = logging.getLogger(__name__)

DAY = 86_400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    sensor TEXT NOT NULL,
    device TEXT NOT NULL,      -- '' for a sensor without remote devices
    at_ms  INTEGER NOT NULL,   -- observed_at, ms since the epoch
    name   TEXT NOT NULL,      -- the value's name: water_level, snow_depth, count ...
    value  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_sensor ON points (sensor, at_ms);
"""


def history_path(buffer_path: Path) -> Path:
    return buffer_path.with_name(buffer_path.name + ".history")


def _numbers(reading: Reading) -> list[tuple[str, float]]:
    out = []
    for name, v in reading.values.items():
        if isinstance(v.value, (int, float)) and not isinstance(v.value, bool) and math.isfinite(v.value):
            out.append((name, float(v.value)))
    return out


class RecentHistory:
    def __init__(self, path: Path | str, *, span: float = DAY, step: float = 60.0, max_points: int = 200_000):
        self.path = Path(path)
        self.span, self.step, self.max_points = span, step, max_points
        self._last_kept: dict[tuple[str, str], float] = {}
        self.conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.executescript(SCHEMA)
            return conn
        except sqlite3.DatabaseError as exc:  # a plot is not worth keeping a broken file for
            log.warning("recent history %s does not open (%s); starting it again", self.path, exc)
            self.path.unlink(missing_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.executescript(SCHEMA)
            return conn

    def add(self, reading: Reading) -> None:
        """Keep a published reading's numbers (thinned to one per `step`)."""
        key = (reading.sensor, reading.device or "")
        last = self._last_kept.get(key)
        if last is not None and reading.observed_at - last < self.step and not reading.alert:
            return
        self._last_kept[key] = reading.observed_at
        at_ms = int(round(reading.observed_at * 1000))
        self.conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?)",
                              [(key[0], key[1], at_ms, name, value) for name, value in _numbers(reading)])

    def flush(self, now: float | None = None) -> None:
        """Drop what is too old or too much, and commit."""
        now = time.time() if now is None else now
        self.conn.execute("DELETE FROM points WHERE at_ms < ?", (int((now - self.span) * 1000),))
        excess = self.conn.execute("SELECT count(*) FROM points").fetchone()[0] - self.max_points
        if excess > 0:
            self.conn.execute("DELETE FROM points WHERE rowid IN (SELECT rowid FROM points ORDER BY at_ms LIMIT ?)",
                              (excess,))
        self.conn.commit()

    def series(self, sensor: str, since: float | None = None,
               names: tuple[str, ...] | None = None) -> dict[str, list[tuple[float, str, float]]]:
        """Per value name (all, or those in `names`): (observed_at seconds, device, value) oldest first."""
        since = time.time() - self.span if since is None else since
        wanted = "" if names is None else f" AND name IN ({', '.join('?' * len(names))})"
        rows = self.conn.execute("SELECT at_ms, device, name, value FROM points WHERE sensor = ? AND at_ms >= ?"
                                 f"{wanted} ORDER BY at_ms", (sensor, int(since * 1000), *(names or ())))
        out: dict[str, list[tuple[float, str, float]]] = {}
        for at_ms, device, name, value in rows:
            out.setdefault(name, []).append((at_ms / 1000, device, value))
        return out

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.conn.close()
