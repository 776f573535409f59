"""Reconnect backoff (SPEC §4) and a disk that refuses writes (SPEC §5, brief: a full disk loses nothing)."""

import random
import subprocess
import sys
import textwrap

from gateway.backoff import Backoff


def test_reconnect_backoff_is_jittered_exponential_from_1s_to_the_cap():
    delays = [Backoff(1.0, 30.0, rng=random.Random(seed)).next() for seed in range(5)]
    assert delays == [1.0] * 5, "the first retry comes after 1 s"
    b = Backoff(1.0, 30.0, rng=random.Random(7))
    series = [b.next() for _ in range(12)]
    assert all(1.0 <= d <= 30.0 for d in series)
    assert series[5] >= 15.0 and series[-1] >= 15.0, "doubling up to the cap, drawn from its upper half"
    other = Backoff(1.0, 30.0, rng=random.Random(8))
    assert [other.next() for _ in range(12)] != series, "jittered: a fleet does not reconnect in step"
    b.reset()
    assert b.next() == 1.0


FULL_DISK = textwrap.dedent('''
    import logging, os, resource, signal, sqlite3, sys
    from pathlib import Path
    from gateway.buffer import Buffer
    from gateway.sdk.reading import Reading, Value
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    path = Path(sys.argv[1])
    buf = Buffer(path, ["u"], gateway="gw")
    wal = Path(str(path) + "-wal")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # No file may grow: the next commit finds the disk full.
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(path.stat().st_size, wal.stat().st_size), hard))
    for i in range(300):
        buf.append(Reading(sensor="s", kind="river_level", values={"water_level": Value(i / 100, "m")},
                           observed_at=1_763_780_000 + i, id=f"gw.s.{1_763_780_000_000 + i}.000000", gateway="gw"))
    assert not buf.commit(), "the commit fails on the full disk"
    assert len(buf._pending.rows) == 300, "held in memory, not dropped"
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    assert buf.commit()
    print("rows", len(buf.fetch(0, 1000)))
''')


def test_a_full_disk_holds_readings_in_memory_and_writes_them_later(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "b.db")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "rows 300"
    assert "cannot write" in result.stderr and "held readings are now on disk" in result.stderr


def test_a_fleet_that_lost_its_broker_together_retries_spread_over_the_window():
    from gateway.uplinks.mqtt_link import ReconnectSchedule

    random.seed(12)
    fleet = [ReconnectSchedule(30.0) for _ in range(500)]
    first = [s.lost() for s in fleet]  # everyone disconnected in the same second
    assert all(0 < d <= 30.0 for d in first)
    per_second = [sum(int(d) == k for d in first) for k in range(30)]
    assert max(per_second) <= 50, f"no second sees more than 10 % of the fleet: {per_second}"
    again = [s.failed() for s in fleet]  # the broker is still down
    assert all(15.0 <= d <= 30.0 for d in again), "retries stay in the window's upper half, not back at 1-2 s"
    boot = ReconnectSchedule(30.0)
    delays = [boot.failed() for _ in range(8)]
    assert all(d <= min(30.0, 2.0 ** i) for i, d in enumerate(delays)), "before the first connection: from 1 s up"


def test_when_the_broker_returns_after_a_long_outage_no_second_sees_10_percent_of_the_fleet():
    from gateway.uplinks.mqtt_link import ReconnectSchedule

    random.seed(7)
    back = 100.0  # the cluster serves again 100 s after everyone lost it
    connects = []
    for _ in range(500):
        s = ReconnectSchedule(30.0)
        t = s.lost()
        while t < back:
            t += s.failed()
        connects.append(t)
    per_second = [sum(int(c - back) == k for c in connects) for k in range(31)]
    assert sum(per_second) == 500 and max(per_second) <= 50, per_second
    assert max(connects) - back <= 30.0, "everyone is back within reconnect_max"
