"""The buffer's SQLite file: its schema, how each kind of user opens it, and what
a failure to open means (SPEC §5).

- The daemon opens it for writing. Only real corruption (SQLITE_CORRUPT,
  SQLITE_NOTADB, a format this gateway does not write) moves the file aside; a
  locked file, an I/O error or a full disk never does: the daemon waits and
  retries, loudly, until the file opens (`open_when_possible`).
- `gateway buffer stats` and `dead` open it read-only (no PRAGMA that writes,
  no wait for the write lock), `dead --retry` read-write without changing the
  format; neither ever moves or replaces a file.
- The WAL is kept small enough to be checkpointed in the space the file system
  has left (`fit_wal`), so it cannot wedge a small partition.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

from gateway.backoff import Backoff

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

TABLES = {"readings", "dead", "state", "sensors"}  # what every buffer since format 1 has

WRITE_WAIT = 10.0  # seconds the daemon waits for the write lock (a `dead --retry` is short)
READ_WAIT = 2.0  # seconds a command waits: never for long behind a running daemon
CHANGE_WAIT = 5.0  # `dead --retry`: a large delete by the daemon may hold the lock longer; then it says so

# A checkpoint copies the WAL's pages into the main file, which may grow by as much: keep the WAL
# (and the file it leaves) at an eighth of the free space, and at most this many 1 KiB pages.
WAL_MAX_PAGES = 4000
WAL_MIN_PAGES = 16
WAL_SHARE = 8

_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


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


class ForeignFormat(sqlite3.DatabaseError):
    """A buffer written by a gateway of another format: this one cannot use it."""


class BufferUnavailable(Exception):
    """The buffer file cannot be used now (locked, I/O error, full disk, permissions):
    nothing is moved or replaced; the daemon retries, a command reports it."""

    def __init__(self, path: Path, cause: BaseException | str):
        self.path = path
        self.cause = cause
        self.reason = cause if isinstance(cause, str) else describe(cause)
        super().__init__(f"buffer {path}: {self.reason}")


def describe(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", None):
        return f"{exc} ({exc.sqlite_errorname})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def is_corruption(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, ForeignFormat) or (code is not None and code & 0xFF in _CORRUPT)


def is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or getattr(exc, "errno", None) == errno.ENOSPC


def free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def wal_pages_for(free: int | None, page_size: int) -> int:
    if free is None:
        return WAL_MAX_PAGES
    return max(WAL_MIN_PAGES, min(WAL_MAX_PAGES, free // WAL_SHARE // (page_size + 24)))


def fit_wal(conn: sqlite3.Connection, path: Path) -> int:
    """Size the autocheckpoint (and the WAL file left after one) to the free space; returns the pages."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = wal_pages_for(free_bytes(path.parent), page_size)
    conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
    conn.execute(f"PRAGMA journal_size_limit={pages * (page_size + 24)}")
    return pages


# --- the daemon ------------------------------------------------------------------------------------

def _connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=WRITE_WAIT)
    try:
        # Small pages for a new file: each group commit rewrites its last, partly filled page and the
        # pages above it; at 1 KiB instead of 4 KiB that is a quarter of the bytes (SD cards wear).
        conn.execute("PRAGMA page_size=1024")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ForeignFormat(f"buffer format {version}, this gateway writes format {SCHEMA_VERSION}")
        conn.executescript(SCHEMA)  # writes only what is missing: an open on a full disk writes nothing
        if version == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("SELECT count(*) FROM state").fetchone()
        conn.execute("SELECT max(seq) FROM readings").fetchone()
        fit_wal(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_connection(path: Path, durability: str = "normal") -> sqlite3.Connection:
    """Open (or create) the daemon's buffer file. A corrupt file is moved aside,
    loudly, and a new one started; any other failure raises BufferUnavailable
    and leaves every file as it is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _connect(path, durability)
    except sqlite3.Error as exc:
        if not is_corruption(exc):
            raise BufferUnavailable(path, exc) from exc
        corrupt = exc
    except OSError as exc:
        raise BufferUnavailable(path, exc) from exc
    try:
        move_aside(path, corrupt)
        return _connect(path, durability)
    except (sqlite3.Error, OSError) as exc:
        raise BufferUnavailable(path, exc) from exc


def move_aside(path: Path, exc: BaseException) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    log.critical("buffer %s does not open (%s): moved aside to %s, starting a new buffer; "
                 "readings in the old file were NOT delivered and are kept there for inspection",
                 path, describe(exc), aside)
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))


T = TypeVar("T")


async def open_when_possible(open_buffer: Callable[[], T], path: Path, notifier, stopping: asyncio.Event) -> T | None:
    """Open the buffer, waiting and retrying (loudly: the log and systemd's STATUS)
    while it cannot be opened, e.g. on a full disk. None if a stop came first."""
    backoff = Backoff(1.0, 30.0)
    while True:
        try:
            return open_buffer()
        except BufferUnavailable as exc:
            delay = backoff.next()
            free = free_bytes(path.parent)
            why = (f"buffer {path} cannot be opened: {exc.reason} ({'?' if free is None else free} bytes free); "
                   f"nothing is read until it opens; retrying in {delay:.0f}s")
            log.error("%s", why)
            notifier.status(why)
            notifier.extend_timeout(delay + 30)  # systemd's start timeout must not kill a daemon that waits
        try:
            await asyncio.wait_for(stopping.wait(), delay)
            return None
        except TimeoutError:
            pass


# --- the `gateway buffer` commands: another process beside the running daemon ----------------------

class NoBuffer(Exception):
    """No buffer file yet (the gateway has not run with this config)."""


def open_for_reading(path: Path) -> sqlite3.Connection:
    """Read-only: no write, no format change, a short wait; a file that is not a
    gateway buffer is reported (BufferUnavailable), never touched."""
    return _open_command(path, "ro", READ_WAIT)


def open_for_change(path: Path) -> sqlite3.Connection:
    """Read-write for `dead --retry`: the format is left as it is, nothing is moved aside."""
    return _open_command(path, "rw", CHANGE_WAIT)


def _open_command(path: Path, mode: str, wait: float) -> sqlite3.Connection:
    if not path.exists():
        raise NoBuffer(path)
    side_files = _side_files(path)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None, timeout=wait)
    except sqlite3.Error as exc:
        raise BufferUnavailable(path, exc) from exc
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise BufferUnavailable(path, "not a gateway buffer (not SQLite, or corrupt: the daemon moves a buffer of its "
                                      "own that went corrupt aside at its next start); left untouched"
                                if is_corruption(exc) else exc) from exc
    finally:
        _give_to_owner(path, _side_files(path) - side_files)
    if (tables and not TABLES <= tables) or version not in (0, SCHEMA_VERSION):
        conn.close()
        raise BufferUnavailable(path, "not a gateway buffer of this version (its tables or format differ); "
                                      "left untouched")
    if not tables:  # an empty file: the same report as no file
        conn.close()
        raise NoBuffer(path)
    return conn


def _side_files(path: Path) -> set[Path]:
    return {p for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()}


def _give_to_owner(path: Path, created: set[Path]) -> None:
    """A command run as root must not leave a -wal/-shm that the daemon's user cannot write."""
    if os.geteuid() != 0 or not created:
        return
    st = path.stat()
    for p in created:
        try:
            os.chown(p, st.st_uid, st.st_gid)
        except OSError:
            pass


# --- what the commands report ----------------------------------------------------------------------

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
