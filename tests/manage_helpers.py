"""The city side for the management tests: a fleet key pair, and an operator
that signs with it, publishes to a real broker and waits for the answers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.manage.envelope import load_private_key, sign, utc_stamp
from gateway.manage.fleet import keygen
from tests.helpers import wait_for


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
