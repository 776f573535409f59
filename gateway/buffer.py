"""The buffer: one SQLite file (WAL) between the drivers and the uplinks (SPEC §5).

- Appends wait in memory and are written in group commits (at most
  `commit_interval` or `commit_rows`), because an SD card wears with every write.
- Each uplink has a cursor: every seq at or below it is delivered (or a dead
  letter). Uplinks only ever read committed rows.
- Rows every uplink has passed are deleted in large batches.
- Over `max_readings`, the oldest rows that are not alerts go first, counted.
- A corrupt file is moved aside, kept for inspection, and replaced; a full
  disk or a locked file never is (gateway/bufferfile.py). On a full disk the
  WAL is checkpointed and truncated, and held readings are written once it has
  room; a stop says exactly what reached the disk and what did not.

Cursors, dead letters and sensor states ride in the same commits as the
readings, so the buffer costs few writes per reading. All methods are meant for
one thread (the daemon's event loop); other processes (`gateway buffer …`) open
their own connection and rely on WAL for concurrency.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from gateway.bufferfile import (WRITE_WAIT, BufferUnavailable, DeadRow, Row, describe, fit_wal, is_disk_full,
                                open_connection, pack, unpack)
# The `gateway buffer` reports, long imported from here:
from gateway.bufferfile import dead_letters, reading_id, retry_dead_letters, stats  # noqa: F401
from gateway.sdk.reading import Reading, epoch_ms, format_ms

log = logging.getLogger(__name__)


GC_ROWS = 2000  # delete delivered rows in chunks of at least this many …
GC_SECONDS = 60.0  # … or at least this often
MEMORY_LIMIT = 100_000  # rows held in memory while the disk refuses writes
FIT_WAL_SECONDS = 30.0  # how often the WAL's size is fitted to the free space again


@dataclass
class _Pending:
    rows: list[tuple] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    dead: list[tuple] = field(default_factory=list)
    dead_done: list[int] = field(default_factory=list)
    dead_rejected: list[tuple[str, int]] = field(default_factory=list)
    sensors: dict[str, tuple] = field(default_factory=dict)
    memo: dict[str, str | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows or self.cursors or self.dead or self.dead_done or self.dead_rejected or self.sensors
                    or self.memo)


class Buffer:
    def __init__(self, path: Path, uplinks: list[str], *, gateway: str, max_readings: int = 5_000_000,
                 durability: str = "normal", commit_rows: int = 500):
        self.path = path
        self.gateway = gateway
        self.uplinks = list(uplinks)
        self.max_readings = max_readings
        self.commit_rows = commit_rows
        self.conn = open_connection(path, durability)
        self._pending = _Pending()
        self._listeners: list[Callable[[], None]] = []
        self._last_gc = time.monotonic()
        self._next_fit = time.monotonic() + FIT_WAL_SECONDS  # open_connection has just fitted it
        self._write_failing = False
        self._write_failures = 0  # episodes of refused writes, so each new one is logged (logs.RepeatFilter)
        self.lost = 0  # readings this run that never reached the disk (evicted from memory while it refused)
        try:
            self._load_state()
        except sqlite3.Error as exc:
            self.conn.close()
            raise BufferUnavailable(path, exc) from exc
        self.commit()

    def _load_state(self) -> None:
        c = self.conn
        self.count = self._meta("count")
        if self.count is None:  # a new or pre-counter file: count once
            self.count = c.execute("SELECT count(*) FROM readings").fetchone()[0]
        self.evictions = self._meta("evictions") or 0
        last = max(c.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()[0],
                   c.execute("SELECT coalesce(max(value), 0) FROM state WHERE key LIKE 'cursor:%'").fetchone()[0],
                   c.execute("SELECT coalesce(max(seq), 0) FROM dead").fetchone()[0],
                   self._meta("last_seq") or 0)
        self._next_seq = last + 1
        first = c.execute("SELECT coalesce(min(seq), ?) FROM readings", (self._next_seq,)).fetchone()[0]
        self.acked: dict[str, int] = {}
        for name in self.uplinks:
            acked = self._meta(f"cursor:{name}")
            # A new uplink starts at the oldest reading still buffered.
            self.acked[name] = acked if acked is not None else first - 1
            if acked is None:
                self._pending.cursors[name] = first - 1
        self._gc_floor = min(self.acked.values(), default=0)

    @property
    def last_seq(self) -> int:
        """The newest seq appended (committed or not)."""
        return self._next_seq - 1

    def _meta(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # --- writing -------------------------------------------------------------------------------

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Called after each commit that added readings (uplink workers wake on it)."""
        self._listeners.append(callback)

    def append(self, r: Reading) -> int:
        """Queue a reading (its id made by gateway.ids) for the next group commit."""
        seq = self._next_seq
        _, _, ms, counter = r.id.rsplit(".", 3)
        row = (seq, r.sensor, r.kind, r.device, epoch_ms(r.observed_at), int(r.alert),
               int(ms) * 1_000_000 + int(counter), pack(r.rest_json()))  # raises before anything is queued
        self._next_seq += 1
        self._pending.rows.append(row)
        if len(self._pending.rows) >= self.commit_rows and not self._write_failing:
            self.commit()
        return seq

    def ack(self, uplink: str, upto: int) -> None:
        """Every seq of `uplink` up to `upto` is delivered (or a dead letter)."""
        if upto > self.acked[uplink]:
            self.acked[uplink] = upto
            self._pending.cursors[uplink] = upto

    def dead_letter(self, uplink: str, seq: int, body: str, reason: str) -> None:
        log.error("uplink %s rejected reading seq %d: %s (kept as a dead letter)", uplink, seq, reason)
        self._pending.dead.append((uplink, seq, body, reason, int(time.time() * 1000)))

    def dead_retry_done(self, dead_id: int) -> None:
        self._pending.dead_done.append(dead_id)

    def dead_retry_rejected(self, dead_id: int, reason: str) -> None:
        self._pending.dead_rejected.append((reason, dead_id))

    def set_sensor_state(self, sensor: str, state: str, detail: str | None, failures: int) -> None:
        self._pending.sensors[sensor] = (sensor, state, detail, int(time.time() * 1000), failures)

    def remember(self, key: str, value: str | None) -> None:
        """Keep `value` under `key` across restarts, in the next commit with the
        readings (None forgets it). Whoever reads it back sees what was written
        in the same transaction as the readings and cursors it belongs to."""
        self._pending.memo[key] = value

    def recall(self, prefix: str) -> dict[str, str]:
        """Every remembered key starting with `prefix` (committed or pending)."""
        found = dict(self.conn.execute("SELECT key, value FROM memo WHERE key >= ? AND key < ?",
                                       (prefix, prefix + "\U0010ffff")).fetchall())
        for key, value in self._pending.memo.items():
            if key.startswith(prefix):
                if value is None:
                    found.pop(key, None)
                else:
                    found[key] = value
        return found

    def commit(self) -> bool:
        """Write everything pending in one transaction. On a write error (full
        disk, I/O error) nothing is lost: it stays pending and is retried. When
        the disk is full, a checkpoint may free the WAL's space: then at once."""
        p = self._pending
        if not p:
            return True
        added = len(p.rows)
        try:
            count, evicted = self._write(p)
        except sqlite3.Error as exc:
            self._rollback()
            if not (is_disk_full(exc) and self._checkpoint_for_space()):
                self._on_write_failure(exc)
                return False
            try:
                count, evicted = self._write(p)
            except sqlite3.Error as again:
                self._rollback()
                self._on_write_failure(again)
                return False
        if self._write_failing:
            log.warning("buffer %s writes again; %d held readings are now on disk", self.path, added,
                        extra={"episode": self._write_failures})
        if self._write_failing or time.monotonic() >= self._next_fit:
            self._fit_wal()
        self._write_failing = False
        self.count = count
        if evicted:
            self.evictions += evicted
            log.warning("buffer full (max_readings %d): evicted the %d oldest non-alert readings (%d in total)",
                        self.max_readings, evicted, self.evictions)
        self._pending = _Pending()
        if added:
            for callback in self._listeners:
                callback()
        return True

    def _write(self, p: _Pending) -> tuple[int, int]:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        if p.rows:
            c.executemany("INSERT INTO readings (seq, sensor, kind, device, observed_ms, alert, ident, rest) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", p.rows)
        c.executemany("INSERT INTO dead (uplink, seq, body, reason, at_ms) VALUES (?, ?, ?, ?, ?)", p.dead)
        c.executemany("DELETE FROM dead WHERE id = ?", [(i,) for i in p.dead_done])
        c.executemany("UPDATE dead SET retry = 0, reason = ? WHERE id = ?", p.dead_rejected)
        c.executemany("INSERT OR REPLACE INTO sensors VALUES (?, ?, ?, ?, ?)", p.sensors.values())
        c.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?)", [(k, v) for k, v in p.memo.items() if v is not None])
        c.executemany("DELETE FROM memo WHERE key = ?", [(k,) for k, v in p.memo.items() if v is None])
        count = self.count + len(p.rows)
        count -= self._collect_garbage(c)
        evicted = self._evict(c, count)
        count -= evicted
        c.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                      [("count", count), ("evictions", self.evictions + evicted), ("last_seq", self._next_seq - 1),
                       *((f"cursor:{name}", acked) for name, acked in p.cursors.items())])
        c.execute("COMMIT")
        return count, evicted

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back itself

    def _checkpoint_for_space(self) -> bool:
        """The disk is full: copy the WAL into the main file and truncate it.
        True if that freed the WAL's space (worth trying the commit again)."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            before = wal.stat().st_size
            self.conn.execute("PRAGMA busy_timeout=200")  # a reader in the way: give up, the next commit retries
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            after = wal.stat().st_size
        except (sqlite3.Error, OSError) as exc:
            log.debug("checkpoint for space failed: %s", exc)
            return False
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={int(WRITE_WAIT * 1000)}")
        self._fit_wal()
        return not busy and after < before

    def _fit_wal(self) -> None:
        try:
            fit_wal(self.conn, self.path)
        except sqlite3.Error as exc:
            log.debug("cannot size the WAL: %s", exc)
        self._next_fit = time.monotonic() + FIT_WAL_SECONDS

    def _on_write_failure(self, exc: sqlite3.Error) -> None:
        if not self._write_failing:
            self._write_failures += 1
            log.error("buffer %s cannot write (%s); holding readings in memory and retrying", self.path, describe(exc),
                      extra={"episode": self._write_failures})
        self._write_failing = True
        rows = self._pending.rows
        if len(rows) > MEMORY_LIMIT:  # bounded: the oldest non-alerts go first, as on disk
            drop = [i for i, r in enumerate(rows) if not r[5]][: len(rows) - MEMORY_LIMIT]
            dropped = set(drop)
            self._pending.rows = [r for i, r in enumerate(rows) if i not in dropped]
            self.evictions += len(drop)
            self.lost += len(drop)
            log.error("buffer write failing: evicted %d held readings from memory; they are lost", len(drop))

    def _collect_garbage(self, c: sqlite3.Connection) -> int:
        """Delete rows every uplink has passed, in large chunks (few page writes)."""
        if not self.uplinks:
            return 0  # no uplink: readings stay until max_readings
        floor = min(self.acked.values())
        due = floor - self._gc_floor >= GC_ROWS or time.monotonic() - self._last_gc >= GC_SECONDS
        if floor <= self._gc_floor or not due:
            return 0
        deleted = c.execute("DELETE FROM readings WHERE seq <= ?", (floor,)).rowcount
        self._gc_floor = floor
        self._last_gc = time.monotonic()
        return deleted

    def _evict(self, c: sqlite3.Connection, count: int) -> int:
        excess = count - self.max_readings
        if excess <= 0:
            return 0
        return c.execute("DELETE FROM readings WHERE seq IN "
                         "(SELECT seq FROM readings WHERE alert = 0 ORDER BY seq LIMIT ?)", (excess,)).rowcount

    # --- changes while running (clock correction, config reload) ---------------------------------

    def rewrite(self, fix: Callable[[str], tuple[str, int] | None], first: int, last: int, containing: str, *,
                limit: int = 2000, memo: Callable[[int], tuple[str, str | None]] | None = None
                ) -> tuple[int, int]:
        """Rewrite one chunk of buffered readings in place: `fix(rest)` gets a
        row's stored JSON (all but id, names and time) and returns (new rest,
        observed_ms) or None to leave the row alone. Offered: up to `limit` rows
        from seq `first` to `last` whose rest contains `containing`. `memo(next)`
        gives a (key, value) written in the same transaction, so a record of
        its progress always agrees with the rows. Returns (the seq the next
        chunk starts at, rows changed). Used to correct the times of readings
        taken before the clock was trusted, in chunks the event loop can breathe
        between."""
        self.commit()
        rows = self.conn.execute("SELECT seq, rest FROM readings WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
                                 (first, last, limit)).fetchall()
        updates = []
        for seq, packed in rows:
            rest = unpack(packed)  # packed rows: the filter runs here, not in SQL
            if containing in rest and (new := fix(rest)) is not None:
                updates.append((pack(new[0]), new[1], seq))
        following = rows[-1][0] + 1 if len(rows) == limit else last + 1
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("UPDATE readings SET rest = ?, observed_ms = ? WHERE seq = ?", updates)
            if memo is not None:
                key, value = memo(following)
                if value is None:
                    self.conn.execute("DELETE FROM memo WHERE key = ?", (key,))
                else:
                    self.conn.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (key, value))
        return following, len(updates)

    def add_uplink(self, name: str) -> None:
        """A new uplink (config reload) starts at the oldest reading still buffered."""
        if name in self.acked:
            return
        self.commit()
        first = self.conn.execute("SELECT coalesce(min(seq), ?) FROM readings", (self._next_seq,)).fetchone()[0]
        acked = self._meta(f"cursor:{name}")  # an uplink that comes back resumes where it was
        self.uplinks.append(name)
        self.acked[name] = acked if acked is not None else first - 1
        self._pending.cursors[name] = self.acked[name]

    def remove_uplink(self, name: str) -> None:
        """An uplink gone from the config no longer holds readings back from deletion."""
        if name in self.acked:
            self.uplinks.remove(name)
            del self.acked[name]
            self._pending.cursors.pop(name, None)

    def off_commit(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    # --- reading (committed rows only) ---------------------------------------------------------

    def backlog(self, uplink: str) -> dict:
        """An uplink's pending readings (retried dead letters included), the oldest
        one's observed_ms, and its dead letters (committed rows only)."""
        acked = self.acked.get(uplink, self.last_seq)
        c = self.conn
        retries = c.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 1", (uplink,)).fetchone()[0]
        dead = c.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 0", (uplink,)).fetchone()[0]
        oldest = c.execute("SELECT observed_ms FROM readings WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)).fetchone()
        return {"pending": self.last_seq - acked + retries, "oldest_ms": oldest[0] if oldest else None,
                "dead_letters": dead}

    def fetch(self, after: int, limit: int) -> list[Row]:
        return self._rows("WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))

    def fetch_alerts(self, after: int, limit: int) -> list[Row]:
        return self._rows("WHERE alert = 1 AND seq > ? ORDER BY seq LIMIT ?", (after, limit))

    def _rows(self, where: str, args: tuple) -> list[Row]:
        rows = self.conn.execute(f"SELECT seq, sensor, kind, device, observed_ms, ident, rest, alert "
                                 f"FROM readings {where}", args).fetchall()
        return [Row(seq, sensor, kind, device, full_json(self.gateway, sensor, kind, device, ms, ident, rest), alert)
                for seq, sensor, kind, device, ms, ident, rest, alert in rows]

    def fetch_retries(self, uplink: str, limit: int = 100) -> list[DeadRow]:
        rows = self.conn.execute("SELECT id, uplink, seq, body, reason, at_ms, retry FROM dead "
                                 "WHERE uplink = ? AND retry = 1 ORDER BY id LIMIT ?", (uplink, limit)).fetchall()
        return [DeadRow(*r) for r in rows]

    def close(self) -> "Closed":
        """A last commit (after a checkpoint if the disk is full), then close.
        Says what is on disk for the next start and what could not be written."""
        self.commit()
        unwritten = len(self._pending.rows)
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("buffer checkpoint at close failed: %s", exc)
        try:
            left = {name: self._on_disk_after(name) for name in self.uplinks}
        except sqlite3.Error as exc:
            log.error("buffer %s: cannot count what it holds (%s)", self.path, describe(exc))
            left = {}
        self.conn.close()
        return Closed(left, unwritten, self.lost + unwritten)

    def _on_disk_after(self, uplink: str) -> int:
        """Committed readings past the uplink's committed cursor: what the next start sends it."""
        cursor = self._meta(f"cursor:{uplink}")
        return self.conn.execute("SELECT count(*) FROM readings WHERE seq > ?", (cursor or 0,)).fetchone()[0]


class Closed(NamedTuple):
    left: dict[str, int]  # per uplink: readings on disk the next start will send
    unwritten: int  # held in memory at the stop, not written
    lost: int  # readings of this run that never reached the disk (unwritten + evicted from memory)


def full_json(gateway: str, sensor: str, kind: str, device: str | None, observed_ms: int, ident: int,
              packed: bytes) -> str:
    """The reading's JSON exactly as Reading.to_json wrote it (ids and names are [a-z0-9-], safe to quote)."""
    rest = unpack(packed)
    ms, counter = divmod(ident, 1_000_000)
    dev = "" if device is None else f'"device":{json.dumps(device, ensure_ascii=False)},'
    return (f'{{"id":"{gateway}.{sensor}.{ms}.{counter:06d}","gateway":"{gateway}","sensor":"{sensor}",'
            f'"kind":"{kind}",{dev}"observed_at":"{format_ms(observed_ms)}",{rest[1:]}')
