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
        gw = Gateway(config, clock=clock)
        gw.clock_poll = 0.02
        task = asyncio.create_task(gw.run())
        await _until(lambda: getattr(gw, "readings_total", 0) >= 5)
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
