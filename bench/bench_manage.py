"""Remote management (issue 10): a signed command's round trip beside a raw MQTT
request/response on the same broker in the same run.

    .venv/bin/python -m bench.bench_manage [--count N]

Raw: a paho client answers each request on another topic at once (QoS 1 both
ways). Gateway: the management agent (its own channel, Ed25519 verification,
seq persisted through the hook, the `status` command, the result published),
with the daemon's side a fixed snapshot; the city side's signing is counted in
the gateway's figure. Sequential requests: this is latency, not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import parse_config
from gateway.manage.agent import Manager
from gateway.manage.commands import Hooks
from gateway.manage.envelope import load_private_key, sign, utc_stamp
from gateway.manage.fleet import keygen
from gateway.manage.health import Host
from tests.helpers import Mosquitto, wait_for


class Requester:
    def __init__(self, port: int, topic: str):
        self.answers: dict[str, threading.Event] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"req-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        event = self.answers.get(doc.get("id"))
        if event is not None:
            event.set()

    def ask(self, topic: str, request_id: str, payload: str) -> float:
        event = self.answers[request_id] = threading.Event()
        t0 = time.perf_counter()
        self.client.publish(topic, payload, qos=1)
        if not event.wait(10):
            raise RuntimeError("no answer within 10 s")
        return time.perf_counter() - t0


def raw_round_trips(port: int, count: int) -> list[float]:
    echo = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="echo")
    echo.on_message = lambda c, u, m: c.publish("bench/resp", m.payload, qos=1)
    echo.connect("127.0.0.1", port, 30)
    echo.subscribe("bench/req", qos=1)
    echo.loop_start()
    req = Requester(port, "bench/resp")
    times = [req.ask("bench/req", i, json.dumps({"id": i})) for i in (uuid.uuid4().hex for _ in range(count))]
    echo.loop_stop()
    return times


def gateway_round_trips(port: int, count: int, tmp: Path) -> list[float]:
    keygen(tmp)
    key = load_private_key(tmp / "fleet.key")
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({"gateway": {"id": "bench-gw"}, "storage": {"path": str(tmp / "b.db")},
                                    "uplinks": [{"name": "city", "type": "mqtt", "url": f"mqtt://127.0.0.1:{port}",
                                                 "manage": {"public_key_file": str(tmp / "fleet.pub")}}]}))
    snap = {"gateway": "bench-gw", "sensors": {f"s{i}": {"state": "ok"} for i in range(10)}, "uplinks": {},
            "buffer": {}}
    memo: dict[str, str] = {}

    async def never(*a):
        raise AssertionError

    hooks = Hooks(snapshot=lambda: snap, apply_config=never, reload=never, retry_dead=lambda: 0,
                  logs=lambda s, l: [], recall=memo.get, remember=memo.__setitem__, clock_synced=lambda: True)
    loop = asyncio.new_event_loop()
    manager = Manager(parse_config(path.read_text(), str(path)), hooks, Host(tmp / "none", "none"))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(manager.start(), loop).result(10)
    wait_for(lambda: manager.channel.connected.is_set(), 10, what="the management channel")
    req = Requester(port, "city/bench-gw/cmd/status/result")
    times, seq = [], time.time_ns() // 1000
    for i in range(count):
        rid = uuid.uuid4().hex
        body = {"type": "cmd", "gateway": "bench-gw", "issued_at": utc_stamp(), "seq": seq + i, "id": rid,
                "name": "status", "args": {}}
        t0 = time.perf_counter()
        req.ask("city/bench-gw/cmd/status", rid, sign(key, body))
        times.append(time.perf_counter() - t0)
    asyncio.run_coroutine_threadsafe(manager.stop(), loop).result(10)
    return times


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):.2f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            raw = raw_round_trips(broker.port, a.count)
            gw = gateway_round_trips(broker.port, a.count, tmp)
        finally:
            broker.stop()
    ratio = statistics.median(gw) / statistics.median(raw)
    print("| benchmark | baseline | gateway | ratio |\n| --- | --- | --- | --- |")
    print(f"| signed `status` command round trip, {a.count} sequential | raw MQTT request/response: {summary(raw)} "
          f"| {summary(gw)} | {ratio:.1f}× |")


if __name__ == "__main__":
    main()
