"""The buffer: one SQLite file (WAL) between the drivers and the uplinks (SPEC §5).

- Appends wait in memory and are written in group commits (at most
  `commit_interval` or `commit_rows`), because an SD card wears with every write.
- Each uplink has a cursor: every seq at or below it is delivered (or a dead
  letter). Uplinks only ever read committed rows.
- Rows every uplink has passed are deleted in large batches.
- Over `max_readings`, the oldest rows that are not alerts go first, counted.
- A file that does not open is moved aside, kept for inspection, and replaced.

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
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from gateway.sdk.reading import Reading, epoch_ms, format_ms

log = logging.getLogger(__name__)

SCHEMA = """
-- A reading is stored compactly (SD cards wear with every byte): its id, sensor, kind, device and
-- time as columns, `rest` the JSON of everything else; fetch() rebuilds the exact SPEC §3 JSON.
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    sensor TEXT NOT NULL,
    kind TEXT NOT NULL,
    device TEXT,
    observed_ms INTEGER NOT NULL,
    alert INTEGER NOT NULL DEFAULT 0,
    ident INTEGER NOT NULL,  -- the id's <ms>.<counter> as ms * 1000000 + counter
    rest BLOB NOT NULL       -- deflated with PACK_DICT (see pack/unpack)
);
CREATE INDEX IF NOT EXISTS readings_alerts ON readings(seq) WHERE alert = 1;
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uplink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    retry INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_uplink ON dead(uplink, retry);
-- Counters and each uplink's cursor ("cursor:<uplink>"): one small table, so a commit touches one page for them.
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- State that must outlive a restart, owned by other parts of the daemon (pipeline stages and windows,
-- the newest observedAt upserted per NGSI-LD entity, the last accepted management seq): text values
-- under namespaced keys ("pipeline:<sensor>", "ngsi:<uplink>:<entity>"), written in the readings' commits.
-- An added table, not a new format: a buffer with it still opens in a gateway that predates it.
CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensors (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT, since_ms INTEGER NOT NULL, failures INTEGER NOT NULL
);
"""

SCHEMA_VERSION = 3

# The rest of a reading's JSON is deflated with this preset dictionary of the names, units and
# stages readings carry: a river reading's 170 bytes become about 40. The dictionary is part of
# the file format: changing it needs a new SCHEMA_VERSION.
PACK_DICT = (
    b'"unit":"dBm"},"count":{"value":"tx_power":"battery":"unit":"V"},"temperature":"unit":"\xc2\xb0C"},'
    b'"air_temperature":"relative_humidity":"unit":"%"},"air_pressure":"unit":"hPa"},"snr":"unit":"dB"},'
    b'"snowfall_1h":"snowfall_24h":"snow_depth":"clock":"unsynced","monotonic":"error":"suspect"'
    b',"rssi":{"value":-"alert_level":{"value":"normal"},"standby","caution","evacuation","danger","removal"'
    b'{"values":{"water_level":{"value":1.,"unit":"m"},"distance":{"value":5.,"unit":"m"}},"quality":"ok","location":[3'
)
_WBITS = -10  # raw deflate, 1 KiB window: small tables, so packing one reading takes microseconds


def pack(text: str) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, _WBITS, 1, zdict=PACK_DICT)
    return c.compress(text.encode()) + c.flush()


def unpack(blob: bytes) -> str:
    return zlib.decompressobj(_WBITS, zdict=PACK_DICT).decompress(blob).decode()

GC_ROWS = 2000  # delete delivered rows in chunks of at least this many …
GC_SECONDS = 60.0  # … or at least this often
MEMORY_LIMIT = 100_000  # rows held in memory while the disk refuses writes


class Row(NamedTuple):
    seq: int
    sensor: str
    kind: str
    device: str | None
    body: str
    alert: bool


class DeadRow(NamedTuple):
    id: int
    uplink: str
    seq: int
    body: str
    reason: str
    at_ms: int
    retry: bool


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


def _connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    # Small pages for a new file: each group commit rewrites its last, partly filled page and the
    # pages above it; at 1 KiB instead of 4 KiB that is a quarter of the bytes (SD cards wear).
    conn.execute("PRAGMA page_size=1024")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    # Fewer, larger checkpoints: a page changed by many commits is written to the main file once.
    conn.execute("PRAGMA wal_autocheckpoint=4000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"buffer format {version}, this gateway writes format {SCHEMA_VERSION}")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


def open_connection(path: Path, durability: str = "normal") -> sqlite3.Connection:
    """Open (or create) a buffer file; a file that does not open is moved aside, loudly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connect(path, durability)
        conn.execute("SELECT count(*) FROM state").fetchone()
        conn.execute("SELECT max(seq) FROM readings").fetchone()
        return conn
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        log.critical("buffer %s does not open (%s): moved aside to %s, starting a new buffer; "
                     "readings in the old file were NOT delivered and are kept there for inspection", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                src.rename(aside.with_name(aside.name + suffix))
        return _connect(path, durability)


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
        self._write_failing = False
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
        self.commit()

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
        self._next_seq += 1
        _, _, ms, counter = r.id.rsplit(".", 3)
        self._pending.rows.append((seq, r.sensor, r.kind, r.device, epoch_ms(r.observed_at), int(r.alert),
                                   int(ms) * 1_000_000 + int(counter), pack(r.rest_json())))
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
        disk, I/O error) nothing is lost: it stays pending and is retried."""
        p = self._pending
        if not p:
            return True
        added = len(p.rows)
        try:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            if p.rows:
                c.executemany("INSERT INTO readings (seq, sensor, kind, device, observed_ms, alert, ident, rest) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", p.rows)
            c.executemany("INSERT INTO dead (uplink, seq, body, reason, at_ms) VALUES (?, ?, ?, ?, ?)", p.dead)
            c.executemany("DELETE FROM dead WHERE id = ?", [(i,) for i in p.dead_done])
            c.executemany("UPDATE dead SET retry = 0, reason = ? WHERE id = ?", p.dead_rejected)
            c.executemany("INSERT OR REPLACE INTO sensors VALUES (?, ?, ?, ?, ?)", p.sensors.values())
            c.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?)",
                          [(k, v) for k, v in p.memo.items() if v is not None])
            c.executemany("DELETE FROM memo WHERE key = ?", [(k,) for k, v in p.memo.items() if v is None])
            count = self.count + added
            count -= self._collect_garbage(c)
            evicted = self._evict(c, count)
            count -= evicted
            c.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                          [("count", count), ("evictions", self.evictions + evicted), ("last_seq", self._next_seq - 1),
                           *((f"cursor:{name}", acked) for name, acked in p.cursors.items())])
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._on_write_failure(exc)
            return False
        if self._write_failing:
            log.warning("buffer %s writes again; %d held readings are now on disk", self.path, added)
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

    def _on_write_failure(self, exc: sqlite3.Error) -> None:
        if not self._write_failing:
            log.error("buffer %s cannot write (%s); holding readings in memory and retrying", self.path, exc)
        self._write_failing = True
        rows = self._pending.rows
        if len(rows) > MEMORY_LIMIT:  # bounded: the oldest non-alerts go first, as on disk
            drop = [i for i, r in enumerate(rows) if not r[5]][: len(rows) - MEMORY_LIMIT]
            dropped = set(drop)
            self._pending.rows = [r for i, r in enumerate(rows) if i not in dropped]
            self.evictions += len(drop)
            log.error("buffer write failing: evicted %d held readings from memory", len(drop))

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

    def rewrite(self, fix: Callable[[str], tuple[str, int] | None], since_seq: int, containing: str) -> int:
        """Rewrite buffered readings in place: `fix(rest)` gets a row's stored
        JSON (all but id, names and time) and returns (new rest, observed_ms) or
        None to leave the row alone. Only rows from `since_seq` whose rest
        contains `containing` are offered. Used to correct the times of
        readings taken before the clock was trusted."""
        self.commit()
        updates = []
        for seq, packed in self.conn.execute("SELECT seq, rest FROM readings WHERE seq >= ?", (since_seq,)):
            rest = unpack(packed)  # packed rows: the filter runs here, not in SQL
            if containing in rest and (new := fix(rest)) is not None:
                updates.append((pack(new[0]), new[1], seq))
        if updates:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("UPDATE readings SET rest = ?, observed_ms = ? WHERE seq = ?", updates)
        return len(updates)

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

    def close(self) -> None:
        self.commit()
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("buffer checkpoint at close failed: %s", exc)
        self.conn.close()


def full_json(gateway: str, sensor: str, kind: str, device: str | None, observed_ms: int, ident: int,
              packed: bytes) -> str:
    """The reading's JSON exactly as Reading.to_json wrote it (ids and names are [a-z0-9-], safe to quote)."""
    rest = unpack(packed)
    ms, counter = divmod(ident, 1_000_000)
    dev = "" if device is None else f'"device":{json.dumps(device, ensure_ascii=False)},'
    return (f'{{"id":"{gateway}.{sensor}.{ms}.{counter:06d}","gateway":"{gateway}","sensor":"{sensor}",'
            f'"kind":"{kind}",{dev}"observed_at":"{format_ms(observed_ms)}",{rest[1:]}')


# --- the `gateway buffer` command: a second process reading the same file ----------------------

def stats(conn: sqlite3.Connection, uplinks: list[str]) -> dict:
    now_ms = time.time() * 1000
    out: dict = {"uplinks": {}, "sensors": {}}
    for name in uplinks:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (f"cursor:{name}",)).fetchone()
        acked = row[0] if row else 0
        pending = conn.execute("SELECT count(*) FROM readings WHERE seq > ?", (acked,)).fetchone()[0]
        oldest = conn.execute("SELECT observed_ms FROM readings WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)).fetchone()
        retries = conn.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 1", (name,)).fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 0", (name,)).fetchone()[0]
        out["uplinks"][name] = {
            "pending": pending + retries,
            "oldest_pending_age_s": round((now_ms - oldest[0]) / 1000, 1) if oldest else None,
            "dead_letters": dead,
        }
    for sid, state, detail, since_ms, failures in conn.execute("SELECT * FROM sensors ORDER BY id"):
        out["sensors"][sid] = {"state": state, "detail": detail, "failures": failures,
                               "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since_ms / 1000))}
    meta = dict(conn.execute("SELECT key, value FROM state").fetchall())
    out["buffer"] = {"readings": meta.get("count", 0), "evictions": meta.get("evictions", 0),
                     "appended": meta.get("last_seq", 0), "file_bytes": _file_bytes(conn)}
    return out


def _file_bytes(conn: sqlite3.Connection) -> int:
    pages, size = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    return pages * size


def dead_letters(conn: sqlite3.Connection) -> list[DeadRow]:
    return [DeadRow(*r) for r in conn.execute(
        "SELECT id, uplink, seq, body, reason, at_ms, retry FROM dead ORDER BY id")]


def retry_dead_letters(conn: sqlite3.Connection) -> int:
    """Move dead letters back to pending; the running daemon picks them up."""
    return conn.execute("UPDATE dead SET retry = 1 WHERE retry = 0").rowcount


def reading_id(body: str) -> str:
    return json.loads(body).get("id", "?")
