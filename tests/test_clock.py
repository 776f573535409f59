"""A Pi has no RTC (issue 5, SPEC §3): readings taken before the clock is
trusted say "clock": "unsynced" with their monotonic time, and leave with
observed_at corrected from the monotonic offset once it is trusted."""

from __future__ import annotations

import asyncio
import json
import time

from tests.daemon_helpers import base_config, console_lines
from gateway.clock import ManualClock, SystemClock, corrected, kernel_synced
from gateway.config import parse_config
from gateway.sdk.reading import Reading, Value, parse_time
from gateway.service import Gateway

import yaml

YEAR = 365 * 86400.0  # the true time is a year after what the Pi believed at boot


async def _until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_readings_buffered_while_unsynced_leave_with_corrected_times(tmp_path):
    out = tmp_path / "out.jsonl"
    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}],
                      uplinks=[{"name": "console", "type": "console", "path": str(out)}], clock_hold="10m")
    config = parse_config(yaml.safe_dump(doc))
    clock = ManualClock(synced=False, offset=YEAR)

    async def scenario():
        gw = Gateway(config, clock=clock, clock_poll=0.02)
        task = asyncio.create_task(gw.run())
        await _until(lambda: gw.sensors is not None and gw.sensors.readings_total >= 5)
        gw.buffer.commit()
        held = {(doc := json.loads(row.body))["id"]: doc for row in gw.buffer.fetch(0, 10_000)}
        assert console_lines(out) == []  # held back while the clock is not trusted
        assert held and all(r["clock"] == "unsynced" and "monotonic" in r for r in held.values())
        clock.is_synced = True
        offset = clock.wall() - time.monotonic()
        await _until(lambda: held.keys() <= {r["id"] for r in console_lines(out)})
        gw.request_stop("test")
        assert await task == 0
        return held, offset

    held, offset = asyncio.run(scenario())
    sent = {r["id"]: r for r in console_lines(out)}
    for rid, before in held.items():
        after = sent[rid]
        assert "clock" not in after and "monotonic" not in after
        assert abs(parse_time(after["observed_at"]) - (before["monotonic"] + offset)) < 0.5
        assert parse_time(after["observed_at"]) - parse_time(before["observed_at"]) > YEAR - 60


def test_an_unsynced_reading_says_so_with_its_monotonic_time():
    r = Reading("river-1", "river_level", {"distance": Value(1.0, "m")}, observed_at=0.0, monotonic=12.5,
                clock_synced=False)
    doc = r.as_json()
    assert doc["clock"] == "unsynced" and doc["monotonic"] == 12.5
    fixed, true_time = corrected(doc, 1_800_000_000.0)
    assert true_time == 1_800_000_012.5
    assert "clock" not in fixed and "monotonic" not in fixed and fixed["values"] == doc["values"]
    assert corrected(fixed, 5.0) is None  # already trusted: left alone


def test_a_time_before_the_package_was_built_is_not_trusted(monkeypatch):
    clock = SystemClock("build-time")
    assert clock.synced()  # this machine's clock is after the build
    monkeypatch.setattr(clock, "wall", lambda: 86400.0)  # 2 January 1970: a Pi without RTC or network
    assert not clock.synced()
    assert SystemClock("off").synced()


def test_auto_uses_the_kernel_status_only_under_systemd():
    assert SystemClock("auto", env={}).check == "build-time"
    assert SystemClock("auto", env={"INVOCATION_ID": "x"}).check == "kernel"
    assert kernel_synced() in (True, False, None)


def _flagged(i: int) -> Reading:
    return Reading("river-1", "river_level", {"water_level": Value(round(i / 1000, 3), "m")},
                   observed_at=1_000_000.0 + i, monotonic=100.0 + i, clock_synced=False,
                   id=f"test-gw.river-1.{1_000_000_000 + i}.000000", gateway="test-gw")


def test_the_clock_rewrite_runs_in_chunks_that_let_the_event_loop_run(tmp_path):
    """Issue 9, defect 8: a long rewrite must not starve sensors, deliveries and the watchdog."""
    from gateway import clock_corrector
    from gateway.buffer import Buffer

    buf = Buffer(tmp_path / "buffer.db", ["console"], gateway="test-gw")
    clock = ManualClock(synced=False, offset=YEAR)
    rows = 3 * clock_corrector.CHUNK + 10
    ticks_at_chunk: list[int] = []

    async def scenario():
        corrector = clock_corrector.ClockCorrector(clock, buf, hold=600, stopping=asyncio.Event(), poll=0.01)
        for i in range(rows):
            buf.append(_flagged(i))
        buf.commit()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        rewrite = buf.rewrite

        def counting(*args, **kwargs):
            ticks_at_chunk.append(ticks)
            return rewrite(*args, **kwargs)

        buf.rewrite = counting
        other = asyncio.create_task(ticker())
        clock.is_synced = True
        await corrector.watch()
        other.cancel()
        assert corrector.trusted.is_set() and corrector.corrected_total == rows

    asyncio.run(scenario())
    assert len(ticks_at_chunk) >= 4
    assert all(b > a for a, b in zip(ticks_at_chunk, ticks_at_chunk[1:])), "the loop ran between chunks"
    assert not any('"clock":"unsynced"' in row.body for row in buf.fetch(0, rows + 1))
    assert buf.recall("clock:") == {}, "no rewrite left to resume"
    buf.close()


KILLED_MID_WAY = """
import asyncio, os, signal, sys
from pathlib import Path
from gateway import clock_corrector
from gateway.buffer import Buffer
from gateway.clock import ManualClock
from tests.test_clock import YEAR, _flagged

buf = Buffer(Path(sys.argv[1]), ["console"], gateway="test-gw")
clock = ManualClock(synced=False, offset=YEAR)

async def main():
    corrector = clock_corrector.ClockCorrector(clock, buf, hold=600, stopping=asyncio.Event(), poll=0.01)
    for i in range(int(sys.argv[2])):
        buf.append(_flagged(i))
    buf.commit()
    rewrite, calls = buf.rewrite, []
    def killed_at_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return rewrite(*args, **kwargs)
    buf.rewrite = killed_at_the_third_chunk
    clock.is_synced = True
    await corrector.watch()

asyncio.run(main())
"""


def test_a_rewrite_killed_mid_way_resumes_at_the_next_start(tmp_path):
    """Issue 9, defect 8: kill -9 after two chunks; `gateway run` finishes the rewrite
    with the offset of the run that took the readings, before anything is delivered."""
    import sqlite3
    import subprocess
    import sys

    from gateway import clock_corrector
    from tests.daemon_helpers import Daemon, wait_for, write_config

    db = tmp_path / "buffer.db"
    rows = 3 * clock_corrector.CHUNK + 10
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WAY, str(db), str(rows)], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    with sqlite3.connect(db) as c:
        (memo,) = c.execute("SELECT value FROM memo WHERE key = 'clock:rewrite'").fetchone()
    plan = json.loads(memo)
    assert plan["next"] == plan["first"] + 2 * clock_corrector.CHUNK, plan

    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[], uplinks=[{"name": "console", "type": "console", "path": str(out)}], clock_check="off"))
    d = Daemon(cfg)
    try:
        wait_for(lambda: len(console_lines(out)) >= rows, 120, what="every reading delivered")
        assert d.stop() == 0
    finally:
        d.kill()
    sent = console_lines(out)
    assert len(sent) == rows and not [r for r in sent if "clock" in r or "monotonic" in r]
    for r in sent:
        i = int(r["id"].split(".")[2]) - 1_000_000_000
        assert abs(parse_time(r["observed_at"]) - (100.0 + i + plan["offset"])) < 0.01, r
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM memo WHERE key = 'clock:rewrite'").fetchone() == (0,)


KILLED_UNSYNCED = """
import os, signal, sys, time
from pathlib import Path
from gateway import clock_corrector
from gateway.buffer import Buffer
from gateway.clock import ManualClock
from gateway.sdk.reading import Reading, Value

buf = Buffer(Path(sys.argv[1]), ["console"], gateway="test-gw")
corrector = clock_corrector.ClockCorrector(ManualClock(synced=False, offset=-30 * 86400.0), buf, hold=600,
                                           stopping=None)
for i in range(int(sys.argv[2])):
    buf.append(Reading("river-1", "river_level", {"water_level": Value(i / 1000, "m")},
                       observed_at=time.time() - 30 * 86400.0, monotonic=time.monotonic(), clock_synced=False,
                       id=f"test-gw.river-1.{1_000_000_000 + i}.000000", gateway="test-gw"))
buf.commit()
os.kill(os.getpid(), signal.SIGKILL)  # killed before the clock was ever trusted
"""


def _killed_unsynced_then_run(tmp_path, boot: str) -> tuple[list[dict], str]:
    import subprocess
    import sys

    from tests.daemon_helpers import Daemon, wait_for, write_config

    import sqlite3

    db = tmp_path / "buffer.db"
    killed = subprocess.run([sys.executable, "-c", KILLED_UNSYNCED, str(db), "50"], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -9, killed.stderr
    with sqlite3.connect(db) as c:
        run = json.loads(c.execute("SELECT value FROM memo WHERE key = 'clock:unsynced'").fetchone()[0])
        assert run["first"] == 1
        if boot != "this":  # as if the Pi rebooted since
            c.execute("UPDATE memo SET value = ? WHERE key = 'clock:unsynced'", (json.dumps({**run, "boot": boot}),))
    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[], uplinks=[{"name": "console", "type": "console", "path": str(out)}], clock_check="off"))
    d = Daemon(cfg)
    try:
        wait_for(lambda: len(console_lines(out)) >= 50, 120, what="the killed run's readings delivered")
        assert d.stop() == 0
    finally:
        d.kill()
    return console_lines(out), d.logs()


def test_readings_of_a_run_killed_before_the_clock_was_trusted_are_corrected_by_the_next_run_of_the_boot(tmp_path):
    """Issue 9, defect 8: no reading stays flagged for ever because its run was killed."""
    sent, _ = _killed_unsynced_then_run(tmp_path, "this")
    assert len(sent) == 50 and not [r for r in sent if "clock" in r]
    assert all(abs(parse_time(r["observed_at"]) - time.time()) < 600 for r in sent), "true times, not a month ago"


def test_readings_of_an_earlier_boot_keep_their_flag(tmp_path):
    sent, logs = _killed_unsynced_then_run(tmp_path, "another-boot")
    assert len(sent) == 50 and all(r["clock"] == "unsynced" for r in sent)
    assert "by a run of an earlier boot keep their flag" in logs
