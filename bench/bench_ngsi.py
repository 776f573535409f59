"""Readings/s draining a backlog through the NGSI-LD uplink, and how many requests it took.

    python bench/bench_ngsi.py                      # 100k readings to a sink that accepts without reading
    python bench/bench_ngsi.py --broker             # to the test broker, its checks off
    python bench/bench_ngsi.py --validate -n 10000  # the test broker with its OpenAPI/pyld/schema checks

The backlog is what a day-long outage leaves: river, snow and beacon readings,
interleaved as the gateway records them. The far end runs in a child process so
it does not share the gateway's event loop; on this 2-core machine the two still
compete, so the figure is a floor for a Pi talking to a remote broker. The sink
(bench/ngsi_sink.py) answers 204 to everything: the drain then costs what the
uplink costs (buffer fetch, mapping, JSON, HTTP), not what a broker does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.buffer import Buffer  # noqa: E402
from gateway.config import NgsiLdUplinkConfig  # noqa: E402
from gateway.delivery import Delivery  # noqa: E402
from gateway.sdk.reading import Reading, Value  # noqa: E402
from gateway.uplinks.ngsi_ld import NgsiLdTransport  # noqa: E402

GW = "bench-gw"


def _serve_sink(conn, validate: bool, temporal: bool) -> None:
    from bench.ngsi_sink import serve
    serve(conn)


def _serve(conn, validate: bool, temporal: bool) -> None:
    from tests.ngsi_broker import NgsiBroker
    broker = NgsiBroker(validate=validate, temporal=temporal).start()
    conn.send(broker.port)
    conn.recv()  # until told to stop
    with broker.lock:
        instances = sum(len(v) for v in broker.instances.values())
        conn.send({"invalid": len(broker.invalid), "instances": instances, "entities": len(broker.entities),
                   "requests": len(broker.log)})
    broker.stop()


def fill(buffer: Buffer, n: int) -> None:
    sensors = [("river-1", "river_level", None), ("river-2", "river_level", None), ("snow-1", "snow_depth", None)]
    sensors += [("beacons-1", "beacon", f"p-{i:04x}") for i in range(20)]
    t0 = time.time() - n
    for i in range(n):
        sensor, kind, device = sensors[i % len(sensors)]
        if kind == "river_level":
            values = {"water_level": Value(round(1 + (i % 500) / 1000, 3), "m"), "distance": Value(5.0, "m")}
        elif kind == "snow_depth":
            values = {"snow_depth": Value(0.4, "m"), "distance": Value(1.6, "m"), "air_temperature": Value(-2.0, "°C")}
        else:
            values = {"rssi": Value(-70 - i % 20, "dBm"), "count": Value(3), "tx_power": Value(-59, "dBm")}
        r = Reading(sensor=sensor, kind=kind, values=values, observed_at=t0 + i, device=device,
                    id=f"{GW}.{sensor}.{int((t0 + i) * 1000)}.{i % 1_000_000:06d}", gateway=GW,
                    location=(34.3428, 134.0466))
        buffer.append(r)
    buffer.commit()


async def drain(buffer: Buffer, transport: NgsiLdTransport) -> float:
    await transport.start()
    d = Delivery(buffer, transport)
    started, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(d.run())
    while not d.caught_up:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    transport.cpu_seconds = time.process_time() - cpu  # this process only: the far end runs in its own
    task.cancel()
    await transport.stop()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2000, help="the uplink's default")
    ap.add_argument("--broker", action="store_true", help="the test broker instead of the sink")
    ap.add_argument("--validate", action="store_true", help="the test broker, checking every request (slow)")
    ap.add_argument("--no-temporal", action="store_true", help="a broker without TRoE: backlog replayed by upsert")
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    far_end = _serve if args.broker or args.validate or args.no_temporal else _serve_sink
    proc = ctx.Process(target=far_end, args=(child, args.validate, not args.no_temporal), daemon=True)
    proc.start()
    port = parent.recv()
    with tempfile.TemporaryDirectory() as tmp:
        buffer = Buffer(Path(tmp) / "buffer.db", ["orion"], gateway=GW, max_readings=10 * args.n)
        fill(buffer, args.n)
        cfg = NgsiLdUplinkConfig(name="orion", type="ngsi-ld", url=f"http://127.0.0.1:{port}", batch=args.batch)
        transport = NgsiLdTransport(cfg, GW, buffer=buffer)
        elapsed = asyncio.run(drain(buffer, transport))
        buffer.close()
    parent.send("stop")
    seen = parent.recv()
    proc.join(10)
    print(json.dumps({"readings": args.n, "batch": args.batch, "far_end": far_end.__name__.removeprefix("_serve_")
                      .removeprefix("_serve") or "broker", "validate": args.validate,
                      "temporal": not args.no_temporal, "seconds": round(elapsed, 2),
                      "readings_per_s": round(args.n / elapsed),
                      "readings_per_cpu_s": round(args.n / transport.cpu_seconds), "requests": transport.requests,
                      "readings_per_request": round(args.n / transport.requests, 1), "broker": seen}))


if __name__ == "__main__":
    main()
