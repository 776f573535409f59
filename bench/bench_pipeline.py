"""What keeping the pipeline's state in the buffer costs (issue 9, defect 6),
against the same pipeline and buffer without it, in the same run.

    .venv/bin/python -m bench.bench_pipeline [--quick]

One distance sensor read every 10 s for a day (8,640 readings), one reading per
commit (the default 1 s commit interval: the worst case, every commit can carry
the state),
through Pipeline.process, Buffer.append and Buffer.commit. Bytes are the
process's write calls (/proc/self/io wchar: WAL frames and checkpoints), time
is the CPU of the loop. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from gateway.buffer import Buffer
from gateway.pipeline import Pipeline
from gateway.pipeline_options import compose
from gateway.sdk.driver import DistanceOptions
from gateway.sdk.reading import Reading, Value

LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}
CASES = {
    "river, stages only": {"mount_height": 6.0, "alert_levels": LEVELS},
    "river, stages + rise rate (90 points in its 15 min)": {"mount_height": 6.0, "alert_levels": LEVELS,
                                                            "fast_interval": "10s", "rise_rate": 0.3},
    "snow, removal + median of 5": {"kind": "snow_depth", "mount_height": 2.0, "removal_threshold": 0.5,
                                    "median_window": 5},
}


def wchar() -> int:
    return next(int(line.split(":")[1]) for line in open("/proc/self/io") if line.startswith("wchar"))


def run(keys: dict, n: int, path: Path, keep_state: bool) -> tuple[float, float]:
    """(seconds per reading, bytes written per reading)."""
    buffer = Buffer(path, [], gateway="bench-gw")
    options = compose(DistanceOptions).model_validate({"id": "s-1", "driver": "bench", "interval": "60s", **keys})
    pipeline = Pipeline(options, None, remember=buffer.remember if keep_state else None)
    kind = options.kind
    before, t0 = wchar(), time.process_time()
    noise = random.Random(7)
    for i in range(n):
        # 10 s apart: a river rising and falling 0.2 m an hour; snow falling 3 cm an hour. ±2 mm of noise.
        hours = i * 10 / 3600
        level = 1.0 + 0.2 * abs(hours % 2 - 1) if kind == "river_level" else 0.3 + 0.03 * hours
        distance = options.mount_height - level + noise.uniform(-0.002, 0.002)
        r = Reading(sensor="s-1", kind=kind, values={"distance": Value(round(distance, 4), "m")},
                    monotonic=i * 10.0, observed_at=1_800_000_000.0 + i * 10)
        r = pipeline.process(r)
        r.gateway, r.id = "bench-gw", f"bench-gw.s-1.{1_800_000_000_000 + i * 10_000}.000000"
        buffer.append(r)
        buffer.commit()
    cpu = time.process_time() - t0
    buffer.close()
    return cpu / n, (wchar() - before) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a tenth of the readings")
    n = 864 if ap.parse_args().quick else 8640
    print(f"| {n:,} readings, one per commit | without state: µs, B written per reading | with state | ratio (B) |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="gateway-bench-") as d:
        for i, (name, keys) in enumerate(CASES.items()):
            base = run(keys, n, Path(d) / f"base-{i}.db", keep_state=False)
            ours = run(keys, n, Path(d) / f"state-{i}.db", keep_state=True)
            print(f"| {name} | {base[0] * 1e6:.0f} µs, {base[1]:,.0f} B | {ours[0] * 1e6:.0f} µs, {ours[1]:,.0f} B "
                  f"| {ours[1] / base[1]:.2f} |")


if __name__ == "__main__":
    main()
