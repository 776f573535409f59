"""The city side for the management tests: a fleet key pair, an operator that
signs with it, publishes to a real broker and waits for the answers, and a
managed unit (`gateway run` with a serial sensor behind a pseudo-terminal)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.manage.envelope import load_private_key, sign, utc_stamp
from gateway.manage.fleet import keygen
from hil.distance_devices import MaxbotixDevice
from tests.daemon_helpers import console_lines
from tests.helpers import GatewayProcess, wait_for, write_config


def fleet_keys(directory: Path) -> tuple[Path, Path]:
    assert keygen(directory) == 0
    return directory / "fleet.key", directory / "fleet.pub"


class Operator:
    """Records everything under `city/#` (retained flag kept) and sends signed messages."""

    def __init__(self, port: int, key_file: Path, gateway: str = "test-gw", client_id: str | None = None):
        self.key = load_private_key(key_file)
        self.gateway = gateway
        self.prefix = f"city/{gateway}"
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"ops-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe("city/#", qos=1), self.ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        wait_for(self.ready.is_set, 10, what="the operator's connection")
        self.seq = time.time_ns() // 1000

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def docs(self, suffix: str) -> list[dict]:
        with self.lock:
            found = [m for m in self.messages if m[0] == f"{self.prefix}/{suffix}"]
        return [json.loads(body) for _, body, _ in found]

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"\n".join(body for _, body, _ in self.messages)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def payload(self, kind: str, **fields) -> dict:
        return {"type": kind, "gateway": self.gateway, "issued_at": utc_stamp(), "seq": self.next_seq(), **fields}

    def publish(self, suffix: str, envelope: str) -> None:
        self.client.publish(f"{self.prefix}/{suffix}", envelope, qos=1).wait_for_publish(10)

    def push_config(self, text: str, **override) -> dict:
        body = {**self.payload("config", config=text), **override}
        self.publish("config/set", sign(self.key, body))
        return body

    def command(self, name: str, args: dict | None = None, **override) -> dict:
        body = {**self.payload("cmd", id=uuid.uuid4().hex, name=name, args=args or {}), **override}
        self.publish(f"cmd/{name}", sign(self.key, body))
        return body

    def state_for(self, seq: int, timeout: float = 30) -> dict:
        return wait_for(lambda: next((d for d in self.docs("config/state") if d.get("seq") == seq), None),
                        timeout, what=f"config/state for seq {seq}")

    def result_for(self, name: str, request_id, timeout: float = 30) -> dict:
        return wait_for(lambda: next((d for d in self.docs(f"cmd/{name}/result") if d.get("id") == request_id), None),
                        timeout, what=f"the result of {name} {request_id}")

    def health(self) -> list[dict]:
        return self.docs("health")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


SECRET = "pw-7c1d0e5b-never-shown"


@dataclass
class Unit:
    tmp: Path
    config: Path
    doc: dict
    gateway: GatewayProcess
    city: Operator
    device: MaxbotixDevice
    key_file: Path

    def config_bytes(self) -> bytes:
        return self.config.read_bytes()

    def readings(self) -> list[dict]:
        return console_lines(self.tmp / "out.jsonl")

    def mqtt_reading_ids(self) -> set[str]:
        ids = set()
        for topic, body, _ in list(self.city.messages):
            if topic.count("/") == 2 and not topic.endswith(("/status", "/health")):
                ids.add(json.loads(body)["id"])
        return ids


def unit_config(tmp: Path, port: int, pub: Path, **manage) -> dict:
    (tmp / "mqtt.secret").write_text(SECRET + "\n")
    return {
        "gateway": {"id": "test-gw", "location": [34.34, 134.05], "shutdown_timeout": "3s"},
        "storage": {"path": str(tmp / "buffer.db"), "commit_interval": "100ms"},
        "uplinks": [
            {"name": "console", "type": "console", "path": str(tmp / "out.jsonl")},
            {"name": "city-mqtt", "type": "mqtt", "url": f"mqtt://127.0.0.1:{port}", "username": "gw07",
             "password_file": str(tmp / "mqtt.secret"), "reconnect_max": "2s",
             "manage": {"public_key_file": str(pub), "rollback_after": "8s", **manage}},
        ],
        "sensors": [
            {"id": "river-1", "driver": "sim_river", "interval": "300ms", "seed": 1},
            {"id": "river-mb", "driver": "maxbotix", "port": str(tmp / "maxbotix"), "mount_height": 4.5,
             "interval": "500ms", "samples": 1},
        ],
    }


@pytest.fixture
def unit(tmp_path, broker):
    key_file, pub = fleet_keys(tmp_path / "city")
    device = MaxbotixDevice(tmp_path / "maxbotix")
    device.distance = 2.0
    device.start()
    doc = unit_config(tmp_path, broker.port, pub)
    config = write_config(tmp_path / "gateway.yaml", doc)
    city = Operator(broker.port, key_file)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    u = Unit(tmp_path, config, doc, gateway, city, device, key_file)
    wait_for(lambda: any(h["sensors"].get("river-mb", {}).get("state") == "ok" for h in city.health()), 60,
             what="a health message with the serial sensor ok")
    yield u
    if gateway.proc.poll() is None:
        assert gateway.terminate() == 0
    city.stop()
    device.stop()
    log = gateway.log_text()
    assert SECRET not in log and "PRIVATE KEY" not in log
