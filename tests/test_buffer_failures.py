"""The buffer's failure paths (issue 9, defects 1, 11, 12) on real SQLite files,
disk-full cases on a real small tmpfs: only corruption moves a file aside; the
commands read beside a long write without waiting or touching the file; the WAL
never wedges a small partition; every new write failure is logged."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from gateway import bufferfile, logs
from gateway.buffer import Buffer
from gateway.bufferfile import BufferUnavailable
from tests.helpers import buffer_stats, gateway_cli, sim_config, write_config
from tests.small_disk import small_disk  # noqa: F401  (fixture)
from tests.test_buffer import reading


def _filled(path, rows: int = 50) -> Buffer:
    buf = Buffer(path, ["u"], gateway="gw")
    for i in range(rows):
        buf.append(reading(i))
    assert buf.commit()
    return buf


def _rows(path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def _aside(directory) -> list:
    return sorted(p.name for p in directory.glob("*.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


# --- defect 1: only corruption moves a buffer aside ---------------------------------------------------

def test_a_locked_buffer_is_not_moved_aside(tmp_path, monkeypatch):
    path = tmp_path / "buffer.db"
    _filled(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM readings WHERE seq < 10")  # a long delete holds the file
    monkeypatch.setattr(bufferfile, "WRITE_WAIT", 0.3)
    with pytest.raises(BufferUnavailable, match="locked"):
        Buffer(path, ["u"], gateway="gw")
    assert _aside(tmp_path) == []
    holder.execute("ROLLBACK")
    holder.close()
    assert Buffer(path, ["u"], gateway="gw").count == 50, "the same file, every reading in it"


def test_a_buffer_that_cannot_be_opened_for_another_reason_is_left_as_it_is(tmp_path):
    path = tmp_path / "buffer.db"
    _filled(path).close()
    (tmp_path / "buffer.db-wal").mkdir()  # SQLite cannot open its WAL: not corruption
    with pytest.raises(BufferUnavailable, match="unable to open"):
        Buffer(path, ["u"], gateway="gw")
    assert _aside(tmp_path) == [] and path.exists()


def test_a_buffer_on_a_full_disk_is_left_untouched_and_opens_once_there_is_room(small_disk):
    path = small_disk.path / "buffer.db"
    _filled(path).close()
    small_disk.fill()
    with pytest.raises(BufferUnavailable, match="disk I/O error"):  # SQLite cannot size its -shm file
        Buffer(path, ["u"], gateway="gw")
    assert _aside(small_disk.path) == []
    small_disk.make_room()
    assert _rows(path) == 50
    buf = Buffer(path, ["u", "new-uplink"], gateway="gw")
    small_disk.fill()  # and full again while it runs
    seqs = [buf.append(reading(100 + i)) for i in range(20)]
    assert not buf.commit(), "the disk is full"
    small_disk.make_room()
    assert buf.commit()
    assert [r.seq for r in buf.fetch(0, 1000)][-20:] == seqs and _rows(path) == 70


def test_a_corrupt_buffer_is_moved_aside_and_replaced(tmp_path, caplog):
    path = tmp_path / "buffer.db"
    _filled(path).close()
    with open(path, "r+b") as f:  # the schema page's cells, behind an intact file header
        f.seek(100)
        f.write(b"\xff" * 900)
    with pytest.raises(sqlite3.DatabaseError) as broken:
        sqlite3.connect(path).execute("SELECT count(*) FROM readings").fetchone()
    assert bufferfile.is_corruption(broken.value)
    buf = Buffer(path, ["u"], gateway="gw")
    assert buf.count == 0 and len(_aside(tmp_path)) == 1
    assert any(r.levelname == "CRITICAL" and "moved aside" in r.getMessage() for r in caplog.records)


def _hold_a_long_write(path) -> subprocess.Popen:
    """Another process in the middle of a long write (a 1M-row delete, a clock rewrite)."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); c.execute('DELETE FROM readings')\n"
            "print('holding', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_buffer_commands_read_beside_a_long_write_without_waiting_or_touching_the_file(tmp_path):
    config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [{"name": "u", "type": "console", "path": "-"}]))
    buf = _filled(tmp_path / "buffer.db")
    buf.dead_letter("u", 1, reading(1).to_json(), "HTTP 400: bad attribute")
    assert buf.commit()
    holder = _hold_a_long_write(tmp_path / "buffer.db")
    try:
        started = time.monotonic()
        s = buffer_stats(config)
        listing = gateway_cli("buffer", "-c", str(config), "dead").stdout
        took = time.monotonic() - started
        retry = gateway_cli("buffer", "-c", str(config), "dead", "--retry", check=False)
    finally:
        holder.kill()
        holder.wait()
    assert s["uplinks"]["u"]["pending"] == 50 and s["uplinks"]["u"]["dead_letters"] == 1, "the committed state"
    assert "HTTP 400: bad attribute" in listing
    assert took < 8, f"reads never wait for the write lock ({took:.1f}s)"
    assert retry.returncode == 1 and "nothing was changed, try again" in retry.stderr
    assert _aside(tmp_path) == [] and _rows(tmp_path / "buffer.db") == 50
    gateway_cli("buffer", "-c", str(config), "dead", "--retry")  # the lock gone: it goes through
    assert buffer_stats(config)["uplinks"]["u"]["dead_letters"] == 0


def test_buffer_stats_never_replaces_a_file_that_is_not_a_buffer(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("gateway:\n  id: river-07\n" * 20)
    before = text.read_bytes()
    with pytest.raises(BufferUnavailable, match="not a gateway buffer"):
        bufferfile.open_for_reading(text)
    with pytest.raises(BufferUnavailable, match="not a gateway buffer"):
        bufferfile.open_for_change(text)
    assert text.read_bytes() == before and _aside(tmp_path) == []


# --- defect 11: the WAL on a small partition -----------------------------------------------------------

def test_the_wal_fits_a_small_partition_and_commits_never_stop(small_disk):
    buf = Buffer(small_disk.path / "buffer.db", ["u"], gateway="gw")
    wal = small_disk.path / "buffer.db-wal"
    largest = 0
    for batch in range(160):  # 80,000 readings through a 4 MiB file system, delivered as they come
        seqs = [buf.append(reading(batch * 500 + i)) for i in range(500)]
        assert buf.commit(), f"commit {batch} failed: the WAL filled the partition"
        buf.ack("u", seqs[-1])
        largest = max(largest, wal.stat().st_size)
    assert largest < 2 * 1024 * 1024, f"the WAL grew to {largest} bytes on a 4 MiB partition"


def test_a_write_that_finds_the_disk_full_checkpoints_and_truncates_the_wal(small_disk):
    path = small_disk.path / "buffer.db"
    buf = Buffer(path, ["u"], gateway="gw")
    for i in range(12_000):  # a backlog, delivered and deleted: the file keeps its pages for new rows
        buf.append(reading(i))
    assert buf.commit()
    buf.ack("u", buf.last_seq)
    assert buf.commit() and buf.count == 0
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM readings").fetchone()  # an open snapshot: no checkpoint completes
    n, delivered = 12_000, buf.last_seq
    failures = 0
    while failures < 3:  # delivered as they come, yet the WAL grows until the partition is full
        if not buf.commit():
            failures += 1
            continue
        failures = 0
        buf.ack("u", delivered)
        held = [buf.append(reading(n + i)) for i in range(50)]
        delivered, n = held[-1], n + 50
    reader.execute("COMMIT")
    reader.close()
    assert buf.commit(), "the checkpoint freed the WAL's space: the held readings are written"
    assert [r.seq for r in buf.fetch(held[0] - 1, 100)] == held
    assert (small_disk.path / "buffer.db-wal").stat().st_size < 1024 * 1024


# --- defect 12: every new episode of write failures is logged --------------------------------------------

def test_a_new_write_failure_after_a_recovery_is_logged_again(small_disk):
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    handler.addFilter(logs.RepeatFilter(window=60))
    logging.getLogger("gateway.buffer").addHandler(handler)
    try:
        buf = Buffer(small_disk.path / "buffer.db", ["u"], gateway="gw")
        for episode in range(2):
            small_disk.fill()
            while buf.commit():  # until the WAL's own space is used up too
                buf.append(reading(episode))
            small_disk.fill()
            assert not buf.commit() and not buf.commit()
            small_disk.make_room()
            assert buf.commit()
    finally:
        logging.getLogger("gateway.buffer").removeHandler(handler)
    assert sum("cannot write" in m for m in seen) == 2, seen
    assert sum("writes again" in m for m in seen) == 2, seen


def test_close_during_write_failures_says_what_is_on_disk_and_what_was_lost(small_disk):
    buf = Buffer(small_disk.path / "buffer.db", ["u"], gateway="gw")
    for i in range(30):
        buf.append(reading(i))
    assert buf.commit()
    small_disk.fill()
    for i in range(30, 45):
        buf.append(reading(i))
    assert not buf.commit()
    closed = buf.close()
    assert closed.left == {"u": 30} and closed.unwritten == 15 and closed.lost == 15
    small_disk.make_room()
    assert _rows(small_disk.path / "buffer.db") == 30, "exactly what close() said is on disk"


def test_close_writes_what_it_holds_when_the_disk_has_room_again(small_disk):
    buf = Buffer(small_disk.path / "buffer.db", ["u"], gateway="gw")
    small_disk.fill()
    for i in range(15):
        buf.append(reading(i))
    assert not buf.commit()
    small_disk.make_room()
    closed = buf.close()  # the last commit comes first
    assert closed.left == {"u": 15} and closed.lost == 0
    assert _rows(small_disk.path / "buffer.db") == 15
    assert os.path.exists(small_disk.path / "buffer.db")
