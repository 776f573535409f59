"""Real parts for the tests: a Mosquitto broker on a free loopback port, an MQTT
subscriber that records what arrives, the gateway as a subprocess, and waiting
on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A real broker. Persistence is saved on every change, so the test
    subscriber's session and its queued messages survive a SIGKILL."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "", head: str = ""):
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = extra
        self.head = head  # global options that must stand before the first listener
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Mosquitto":
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"{self.head}"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes true\n"
            # A large number, not 0: with 0 ("no limit") mosquitto 2.0.11 drops a client after a denied publish.
            "max_queued_messages 10000000\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            # As root, mosquitto would drop to its own user, which cannot write the test's private tmp dir.
            f"user {getpass.getuser()}\n"
            f"{self.extra}"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10, what="mosquitto to listen")
        assert self.proc.poll() is None, (self.workdir / "mosquitto.log").read_text()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Subscriber:
    """Records every message on `topic`, in arrival order, with a persistent session."""

    def __init__(self, port: int, topic: str = "city/#", client_id: str = "test-subscriber"):
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_for(self.connected.is_set, 10, what="subscriber to connect")

    def _on_connect(self, client, userdata, flags, rc, props):
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def readings(self) -> list[dict]:
        """Every reading received (arrays from batch>1 flattened), status messages left out."""
        out = []
        with self.lock:
            messages = list(self.messages)
        for topic, payload in messages:
            if topic.endswith("/status"):
                continue
            doc = json.loads(payload)
            out.extend(doc if isinstance(doc, list) else [doc])
        return out

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def sim_config(tmp: Path, uplinks: list[dict], *, interval: str = "50ms", gateway_id: str = "test-gw",
               sensors: list[dict] | None = None, **storage) -> dict:
    return {
        "gateway": {"id": gateway_id, "location": [34.3428, 134.0466], "shutdown_timeout": "10s"},
        "storage": {"path": str(tmp / "buffer.db"), **storage},
        "uplinks": uplinks,
        "sensors": sensors if sensors is not None else [
            {"id": "river-1", "driver": "sim_river", "interval": interval, "seed": 1},
            {"id": "snow-1", "driver": "sim_snow", "interval": interval, "seed": 2},
            {"id": "beacons-1", "driver": "sim_beacon", "interval": interval, "seed": 3, "population": 2},
        ],
    }


class GatewayProcess:
    """`gateway run` as a real process: stopped by SIGTERM or SIGKILL, its log kept.
    Every one still running when its test ends is killed (tests/conftest.py)."""

    running: set["GatewayProcess"] = set()

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log

    def start(self) -> "GatewayProcess":
        self._log = open(self.log, "ab")
        GatewayProcess.running.add(self)
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
                                     stdout=self._log, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def terminate(self, timeout: float = 30) -> int:
        # A SIGTERM before the daemon has its handlers (a loaded machine takes seconds to import) kills it
        # outright, as it would any process; a test that means the daemon's own stop waits for it first.
        deadline = time.monotonic() + 20
        while self.proc.poll() is None and " running: " not in self.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR2)  # asyncio task stacks into the log
            time.sleep(0.5)
            self.proc.send_signal(signal.SIGUSR1)  # thread stacks into the log
            time.sleep(1)
            self.kill()
            raise AssertionError(f"gateway did not stop within {timeout}s:\n{self.log_text()[-6000:]}") from None
        self._log.close()
        GatewayProcess.running.discard(self)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()
        GatewayProcess.running.discard(self)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def gateway_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"gateway {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def buffer_stats(config: Path) -> dict:
    return json.loads(gateway_cli("buffer", "-c", str(config), "stats", "--json").stdout)


def per_sensor_in_order(readings: list[dict], by_device: bool = True) -> bool:
    """observed_at never goes backwards per (sensor, device), or per sensor across its devices
    (by_device=False), duplicates ignored (first arrival kept)."""
    seen, last = set(), {}
    for r in readings:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        key = (r["sensor"], r.get("device") if by_device else None)
        if key in last and r["observed_at"] < last[key]:
            return False
        last[key] = r["observed_at"]
    return True


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A private CA, a server certificate for 127.0.0.1 and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test city CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
