"""The on-site page (issue 11 point 1): what one status page costs to make, beside a raw baseline in the same run.

    .venv/bin/python -m bench.bench_web [--quick]

Six sensors with a full day of history each (one point a minute, as the recent history keeps it): a river with
its four stage lines, a snow sensor, a beacon sensor with 20 devices, three more rivers. The gateway side is
WebServer.status_html(): the snapshot, six history queries on the SQLite file and the HTML with six inline SVG
plots. The baseline reads the same rows (the plotted values) from the same file and writes them out as JSON: what a
page drawn in the browser would be sent instead. Prints a Markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from gateway.history import RecentHistory
from gateway.sdk.reading import Reading, Value
from gateway.web import WebServer
from gateway.webpage import PLOTTED

STAGES = SimpleNamespace(standby=1.5, caution=2.0, evacuation=2.5, danger=3.0)
SENSORS = {"river-1": "river_level", "river-2": "river_level", "river-3": "river_level", "river-4": "river_level",
           "snow-1": "snow_depth", "beacons-1": "beacon"}


def fill(history: RecentHistory, now: float) -> None:
    for minute in range(1440):
        at = now - 86_400 + minute * 60
        for sid, kind in SENSORS.items():
            if kind == "river_level":
                history.add(Reading(sid, kind, {"water_level": Value(1 + minute / 1000, "m"),
                                                "distance": Value(5 - minute / 1000, "m")}, observed_at=at))
            elif kind == "snow_depth":
                history.add(Reading(sid, kind, {"snow_depth": Value(0.3, "m"), "snowfall_24h": Value(0.05, "m")},
                                    observed_at=at))
            else:
                for d in range(20):
                    history.add(Reading(sid, kind, {"count": Value(4), "rssi": Value(-70.0, "dBm")},
                                        observed_at=at, device=f"beacon{d:02d}"))
    history.flush(now)


def snapshot() -> dict:
    last = {"id": "g.river-1.1", "observed_at": "2026-12-01T00:00:00.000Z", "quality": "ok",
            "values": {"water_level": {"value": 2.44, "unit": "m"}, "distance": {"value": 3.56, "unit": "m"}}}
    return {"gateway": "bench-gw", "healthy": True, "uptime_s": 86_400, "clock": {"synced": True},
            "sensors": {sid: {"driver": "maxbotix", "state": "ok", "detail": None, "reads": 8640, "read_errors": 0,
                              "last_reading": {**last, "kind": kind}, "age_s": 3.0} for sid, kind in SENSORS.items()},
            "uplinks": {"city": {"type": "mqtt", "connected": True, "pending": 0, "oldest_pending_age_s": None,
                                 "dead_letters": 0}},
            "buffer": {"readings": 100_000, "evictions": 0}}


def per_second(fn, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return rounds / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 40")
    quick = parser.parse_args().quick
    rounds = 5 if quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        now = time.time()
        history = RecentHistory(Path(tmp) / "buffer.db.history", step=60)
        fill(history, now)
        lines = {"river-1": SimpleNamespace(alert_levels=STAGES, kind="river_level")}
        server = WebServer("127.0.0.1:8080", None, snapshot=snapshot, history=history,
                           sensor_options=lambda sid: lines.get(sid))
        page = server.status_html()

        def baseline() -> str:  # the same rows the page plots, straight out as JSON
            return json.dumps({sid: history.series(sid, names=PLOTTED.get(kind)) for sid, kind in SENSORS.items()})

        raw = baseline()
        base_rate = per_second(baseline, rounds)
        page_rate = per_second(server.status_html, rounds)
        history.conn.close()
    print("| page | baseline: rows as JSON | gateway: status page | ratio | page size |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| 6 sensors × 24 h (1 point/min; beacons 20 devices) | {base_rate:.1f}/s ({len(raw) / 1e3:.0f} kB) | "
          f"{page_rate:.1f}/s | {page_rate / base_rate:.2f} | {len(page.encode()) / 1e3:.0f} kB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
