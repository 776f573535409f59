"""Core benchmarks (issue 2), each beside a raw baseline measured in the same run.

    .venv/bin/python -m bench.bench_core [--quick]

1. buffer append of 200k readings vs raw sqlite3.executemany of the same rows in batches of 1000
2. draining a 100k backlog to Mosquitto at QoS 1: gateway (batch 1) vs a raw paho publish loop with the
   same payloads and in-flight window; and the gateway with batch 100
3. bytes written to disk per reading at a steady 50 readings/s with delivery on (/proc/self/io)

Prints a Markdown table (copy it into docs/benchmarks.md) and writes bench/results/core.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.buffer import Buffer
from gateway.config import MqttUplinkConfig, parse_config
from gateway.delivery import Delivery
from gateway.sdk.reading import Reading, Value
from gateway.uplinks.mqtt import MqttTransport
from tests.helpers import Mosquitto

WINDOW = 20


def sample_readings(n: int) -> list[Reading]:
    return [Reading(sensor=f"river-{i % 3}", kind="river_level", observed_at=1_763_780_645.678 + i * 0.05,
                    values={"water_level": Value(1.234, "m"), "distance": Value(5.266, "m")},
                    id=f"bench-gw.river-{i % 3}.{1763780645678 + i}.000000", gateway="bench-gw",
                    location=(34.3431, 134.047)) for i in range(n)]


def bench_append(n: int, tmp: Path) -> dict:
    """Raw: each batch of 1000 readings serialised to JSON rows and inserted with one executemany in
    one transaction. Gateway: Buffer.append one by one (compact rows, group commits of 500). Both
    pay for turning a Reading into a row; the rest is what the buffer costs over raw SQLite."""
    readings = sample_readings(n)
    raw_db = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw_db.execute("PRAGMA journal_mode=WAL")
    raw_db.execute("PRAGMA synchronous=NORMAL")
    raw_db.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, sensor TEXT, kind TEXT, device TEXT, "
                   "observed_ms INTEGER, body TEXT)")
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        raw_db.execute("BEGIN")
        raw_db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?)",
                           [(start + i + 1, r.sensor, r.kind, r.device, int(r.observed_at * 1000), r.to_json())
                            for i, r in enumerate(readings[start:start + 1000])])
        raw_db.execute("COMMIT")
    raw = time.perf_counter() - t0
    raw_db.close()

    buf = Buffer(tmp / "gw.db", ["u"], gateway="bench-gw", max_readings=10_000_000)
    t0 = time.perf_counter()
    for r in readings:
        buf.append(r)
    buf.commit()
    ours = time.perf_counter() - t0
    buf.close()
    return {"readings": n, "raw_s": round(raw, 3), "gateway_s": round(ours, 3),
            "raw_per_s": round(n / raw), "gateway_per_s": round(n / ours), "ratio": round(raw / ours, 2)}


def raw_paho_drain(port: int, payloads: list[tuple[str, str]]) -> float:
    done = threading.Event()
    window = threading.Semaphore(WINDOW)  # the loop keeps the window itself, as the gateway does:
    acked = 0  # queueing everything inside paho is quadratic (it rescans its queue on every PUBACK)

    def on_publish(client, userdata, mid, rc, props):
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.5)  # connected
    t0 = time.perf_counter()
    for topic, payload in payloads:
        window.acquire()
        client.publish(topic, payload, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return elapsed


async def gateway_drain(port: int, db: Path, batch: int) -> float:
    buf = Buffer(db, ["bench"], gateway="bench-gw", max_readings=10_000_000)
    config = MqttUplinkConfig(name="bench", type="mqtt", url=f"mqtt://127.0.0.1:{port}", batch=batch, window=WINDOW)
    transport = MqttTransport(config, "bench-gw")
    await transport.start()
    connection = asyncio.create_task(transport.run())
    await transport.ready()
    delivery = Delivery(buf, transport)
    target = buf.last_seq
    t0 = time.perf_counter()
    task = asyncio.create_task(delivery.run())
    while buf.acked["bench"] < target:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await transport.stop()
    await asyncio.gather(connection, return_exceptions=True)
    buf.close()
    return elapsed


def bench_drain(n: int, tmp: Path) -> dict:
    readings = sample_readings(n)
    broker = Mosquitto(tmp / "mq").start()
    try:
        payloads = [(f"city/bench-gw/{r.sensor}", r.to_json()) for r in readings]
        raw = raw_paho_drain(broker.port, payloads)
        results = {"readings": n, "window": WINDOW, "raw_paho_s": round(raw, 3), "raw_paho_per_s": round(n / raw)}
        for batch in (1, 100):
            db = tmp / f"drain-{batch}.db"
            buf = Buffer(db, ["bench"], gateway="bench-gw", max_readings=10_000_000)
            for r in readings:
                buf.append(r)
            buf.close()
            ours = asyncio.run(gateway_drain(broker.port, db, batch))
            results[f"batch{batch}_s"] = round(ours, 3)
            results[f"batch{batch}_per_s"] = round(n / ours)
        results["ratio_batch1"] = round(raw / results["batch1_s"], 2)
        return results
    finally:
        broker.stop()


def proc_io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def bench_disk(seconds: float, tmp: Path) -> dict:
    """50 readings/s (5 simulated sensors at 100 ms) through the real Gateway, delivered to Mosquitto."""
    from gateway.service import Gateway

    broker = Mosquitto(tmp / "mq-disk").start()
    sensors = "\n".join(f"  - {{id: river-{i}, driver: sim_river, interval: 100ms, seed: {i}}}" for i in range(5))
    config = parse_config(f"""
gateway: {{id: bench-gw, location: [34.3428, 134.0466]}}
storage: {{path: {tmp / 'disk.db'}}}
uplinks:
  - {{name: city, type: mqtt, url: "mqtt://127.0.0.1:{broker.port}"}}
sensors:
{sensors}
""")
    gw = Gateway(config)

    async def run() -> dict:
        before = proc_io()
        task = asyncio.create_task(gw.run())
        await asyncio.sleep(seconds)
        gw.request_stop("benchmark done")
        await task  # includes the final commit and checkpoint
        after = proc_io()
        return {k: after[k] - before[k] for k in ("write_bytes", "wchar")}

    try:
        delta = asyncio.run(run())
    finally:
        broker.stop()
    n = gw.sensors.readings_total
    return {"seconds": seconds, "readings": n, "readings_per_s": round(n / seconds, 1),
            "disk_bytes_per_reading": round(delta["write_bytes"] / n), "write_call_bytes_per_reading": round(delta["wchar"] / n)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    # /var/tmp: on the real disk (not tmpfs, so /proc/self/io sees the writes) and outside the repository.
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="gateway-bench-") as d:
        tmp = Path(d)
        append = bench_append(200_000 // scale, tmp)
        print("append", append, file=sys.stderr)
        drain = bench_drain(100_000 // scale, tmp)
        print("drain", drain, file=sys.stderr)
        disk = bench_disk(60.0 / scale, tmp)
        print("disk", disk, file=sys.stderr)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "core.json").write_text(json.dumps({"append": append, "drain": drain, "disk": disk}, indent=2))
    print(f"""| benchmark | baseline | gateway | ratio | target |
| --- | --- | --- | --- | --- |
| append {append['readings']:,} readings | executemany ×1000: {append['raw_per_s']:,}/s | {append['gateway_per_s']:,}/s | {append['ratio']} | ≥ 0.5 |
| drain {drain['readings']:,} to Mosquitto, QoS 1, window {WINDOW}, batch 1 | raw paho: {drain['raw_paho_per_s']:,}/s | {drain['batch1_per_s']:,}/s | {drain['ratio_batch1']} | ≥ 0.8 |
| drain {drain['readings']:,}, batch 100 | – | {drain['batch100_per_s']:,} readings/s | – | ≥ 50,000/s |
| disk bytes per reading at {disk['readings_per_s']}/s, delivery on ({disk['readings']} readings) | – | {disk['disk_bytes_per_reading']} B (write_bytes); {disk['write_call_bytes_per_reading']} B (wchar) | – | ≤ 500 B |""")


if __name__ == "__main__":
    main()
