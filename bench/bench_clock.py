"""The clock correction of a large unsynced backlog (issue 9, defect 8):
`ClockCorrector` (chunks of CHUNK rows, the event loop runs between them)
against the same rewrite as one transaction (the raw baseline, as before the
fix), in the same run. Measured: total time, and the longest time the event
loop could not run (a ticker that wakes every millisecond records its gaps).

    .venv/bin/python -m bench.bench_clock [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from gateway import clock_corrector
from gateway.buffer import Buffer
from gateway.clock import ManualClock
from gateway.sdk.reading import Reading, Value

YEAR = 365 * 86400.0


def _filled(path: Path, rows: int) -> Buffer:
    buf = Buffer(path, ["u"], gateway="bench", commit_rows=5000)
    for i in range(rows):
        buf.append(Reading("river-1", "river_level", {"water_level": Value(round(i / 1e4, 4), "m")},
                           observed_at=1_000_000.0 + i, monotonic=100.0 + i, clock_synced=False,
                           id=f"bench.river-1.{1_000_000_000 + i}.000000", gateway="bench"))
    buf.commit()
    return buf


async def _stalls(work) -> tuple[float, float]:
    """(seconds for `work()`, longest gap between ticks while it ran)."""
    longest, last, done = 0.0, time.perf_counter(), False

    async def ticker():
        nonlocal longest, last
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    last = started
    await work()
    elapsed = time.perf_counter() - started
    done = True
    await tick
    return elapsed, longest


async def _chunked(buf: Buffer) -> tuple[float, float]:
    clock = ManualClock(synced=False, offset=YEAR)
    corrector = clock_corrector.ClockCorrector(clock, buf, hold=600, stopping=asyncio.Event(), poll=0.001)
    corrector.first_seq = 1  # the backlog was taken in "this run"
    clock.is_synced = True
    result = await _stalls(corrector.watch)
    assert corrector.corrected_total == buf.last_seq
    return result


async def _one_shot(buf: Buffer) -> tuple[float, float]:
    fix = clock_corrector._fixer(YEAR)

    async def work():
        buf.rewrite(fix, 1, buf.last_seq, clock_corrector.FLAG, limit=buf.last_seq + 1)
    return await _stalls(work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        base = asyncio.run(_one_shot(_filled(Path(tmp) / "base.db", rows)))
        ours = asyncio.run(_chunked(_filled(Path(tmp) / "ours.db", rows)))
    print(f"correct {rows:,} unsynced readings (chunks of {clock_corrector.CHUNK:,})")
    print(f"  one transaction (baseline): {base[0]:.2f} s, event loop blocked up to {base[1] * 1000:.0f} ms")
    print(f"  ClockCorrector:             {ours[0]:.2f} s, event loop blocked up to {ours[1] * 1000:.0f} ms")
    print(f"  time ratio {ours[0] / base[0]:.2f}, longest stall ratio {ours[1] / base[1]:.3f}")


if __name__ == "__main__":
    main()
