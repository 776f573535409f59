"""`gateway fleet`: the city side of remote management (SPEC §7). It holds the
private key and nothing else of the city needs to: it signs locally and sends
only the envelope (payload + signature) to the broker.

    gateway fleet keygen [--dir D]                      fleet.key (0600) and fleet.pub
    gateway fleet sign GATEWAY config FILE | cmd NAME [key=value ...]
    gateway fleet push-config GATEWAY FILE              waits for config/state
    gateway fleet cmd GATEWAY NAME [key=value ...]      waits for cmd/NAME/result
    gateway fleet watch [--once]                        every gateway's retained health
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttUplinkConfig
from gateway.sdk.fields import parse_duration
from gateway.manage.envelope import load_private_key, sign, utc_stamp
from gateway.mqtt_session import authenticate, brokers_of

DEFAULT_PREFIX = "city/{gateway}"


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    fleet = sub.add_parser("fleet", parents=[common], help="city side: sign and send config and commands, watch")
    fsub = fleet.add_subparsers(dest="action", required=True)
    keygen = fsub.add_parser("keygen", help="write a new key pair: fleet.key (private, 0600) and fleet.pub")
    keygen.add_argument("--dir", type=Path, default=Path("."))
    signing = argparse.ArgumentParser(add_help=False)
    signing.add_argument("--key", type=Path, default=Path(os.environ.get("GATEWAY_FLEET_KEY", "fleet.key")),
                         help="the private key (default: $GATEWAY_FLEET_KEY, then ./fleet.key)")
    signing.add_argument("--seq", type=int, help="default: microseconds since 1970, always increasing")
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt:// or mqtts:// URL")
    broker.add_argument("--username")
    broker.add_argument("--password-file", type=Path)
    broker.add_argument("--ca-file", type=Path)
    broker.add_argument("--cert-file", type=Path)
    broker.add_argument("--key-file", type=Path, dest="tls_key_file")
    broker.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    broker.add_argument("--timeout", type=parse_duration, default=60.0, help="how long to wait for the answer")
    s = fsub.add_parser("sign", parents=[signing], help="print a signed envelope")
    s.add_argument("gateway")
    s.add_argument("kind", choices=["config", "cmd"])
    s.add_argument("what", nargs="+", help="config: FILE; cmd: NAME [key=value ...]")
    push = fsub.add_parser("push-config", parents=[signing, broker], help="send a config, print config/state")
    push.add_argument("gateway")
    push.add_argument("file", type=Path)
    cmd = fsub.add_parser("cmd", parents=[signing, broker], help="send a command, print its result")
    cmd.add_argument("gateway")
    cmd.add_argument("name")
    cmd.add_argument("args", nargs="*", help="key=value (values read as JSON when they parse)")
    watch = fsub.add_parser("watch", parents=[broker], help="a live table of every gateway's health")
    watch.add_argument("--once", action="store_true", help="print the table once the retained messages are in")


def keygen(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "fleet.key", directory / "fleet.pub"
    if private.exists() or public.exists():
        print(f"{private} or {public} exists already; not overwriting a fleet key", file=sys.stderr)
        return 1
    key = Ed25519PrivateKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"wrote {private} (keep it on the city side only) and {public} (give it to every gateway: "
          f"manage.public_key_file)", file=sys.stderr)
    return 0


def parse_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"command arguments are key=value (got {pair!r})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def payload(kind: str, gateway: str, seq: int | None, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "gateway": gateway, "issued_at": utc_stamp(),
            "seq": seq if seq is not None else time.time_ns() // 1000, **fields}


def config_payload(gateway: str, file: Path, seq: int | None) -> dict[str, Any]:
    return payload("config", gateway, seq, config=file.read_text(encoding="utf-8"))


def cmd_payload(gateway: str, name: str, args: dict, seq: int | None) -> dict[str, Any]:
    return payload("cmd", gateway, seq, id=uuid.uuid4().hex, name=name, args=args)


class FleetClient:
    """One paho connection to the city's broker, with messages queued for the caller."""

    def __init__(self, a):
        self.uplink = MqttUplinkConfig(name="fleet", type="mqtt", url=a.broker, username=a.username,
                                       password_file=a.password_file, ca_file=a.ca_file, cert_file=a.cert_file,
                                       key_file=a.tls_key_file)
        self.prefix, self.timeout = a.prefix, a.timeout
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{uuid.uuid4().hex[:12]}")
        authenticate(self.client, self.uplink)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        broker = brokers_of(self.uplink)[0]
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()

    def topic(self, gateway: str, suffix: str) -> str:
        return f"{self.prefix.format(gateway=gateway)}/{suffix}"

    def subscribe(self, topic: str) -> None:
        done = self.client.subscribe(topic, qos=1)
        if done[0] != mqtt.MQTT_ERR_SUCCESS:
            raise SystemExit(f"cannot subscribe to {topic}")

    def send(self, topic: str, envelope: str) -> None:
        self.client.publish(topic, envelope, qos=1).wait_for_publish(self.timeout)

    def wait(self, match, deadline: float):
        while time.monotonic() < deadline:
            try:
                topic, body, retain = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            if match(topic, doc, retain):
                return doc
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _request(a, listen: str, topic: str, body: dict, answers, what: str, *, settle: bool = False) -> dict | None:
    """Sign `body`, send it to `topic` and wait for the gateway's answer on `listen`; print it."""
    key = load_private_key(a.key)
    client = FleetClient(a)
    try:
        client.subscribe(client.topic(a.gateway, listen))
        if settle:
            time.sleep(0.2)  # the retained answer to an earlier request arrives first; it is skipped by seq
        client.send(client.topic(a.gateway, topic), sign(key, body))
        doc = client.wait(lambda t, d, r: answers(d), time.monotonic() + a.timeout)
    finally:
        client.close()
    if doc is None:
        print(f"no {what} within {a.timeout:g}s (is {a.gateway} online?)", file=sys.stderr)
    else:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    return doc


def push_config(a) -> int:
    body = config_payload(a.gateway, a.file, a.seq)
    doc = _request(a, "config/state", "config/set", body, lambda d: d.get("seq") == body["seq"],
                   f"config/state for seq {body['seq']}", settle=True)
    return 0 if doc and doc.get("result") == "applied" else 1


def send_command(a) -> int:
    body = cmd_payload(a.gateway, a.name, parse_args(a.args), a.seq)
    doc = _request(a, f"cmd/{a.name}/result", f"cmd/{a.name}", body, lambda d: d.get("id") == body["id"],
                   f"result for {a.name}")
    return 0 if doc and doc.get("ok") else 1


def main(a) -> int:
    if a.action == "keygen":
        return keygen(a.dir)
    if a.action == "sign":
        key = load_private_key(a.key)
        body = (config_payload(a.gateway, Path(a.what[0]), a.seq) if a.kind == "config" else
                cmd_payload(a.gateway, a.what[0], parse_args(a.what[1:]), a.seq))
        print(sign(key, body))
        return 0
    if a.action == "push-config":
        return push_config(a)
    if a.action == "cmd":
        return send_command(a)
    from gateway.manage.watch import watch
    return watch(FleetClient(a), a.once)
