"""`format: iota-json` on the MQTT uplink: FIWARE IoT Agent JSON measures, against a real Mosquitto."""

from __future__ import annotations

import getpass
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.buffer import Row
from gateway.config import ConfigError, parse_config
from gateway.uplinks.mqtt import iota_device_id, iota_measures
from tests.test_ngsi_ld import wait_for


def test_measures_use_the_configured_short_names_and_carry_the_time():
    body = json.dumps({"id": "g.r.1", "gateway": "g", "sensor": "river-1", "kind": "river_level",
                       "observed_at": "2026-11-22T03:04:05.678Z",
                       "values": {"water_level": {"value": 1.2, "unit": "m"}, "distance": {"value": 4.8, "unit": "m"},
                                  "alert_level": {"value": "normal"}}, "quality": "ok"})
    assert iota_measures(body, {"water_level": "wl", "distance": "d"}) == {
        "wl": 1.2, "d": 4.8, "alert_level": "normal", "TimeInstant": "2026-11-22T03:04:05.678Z"}
    assert iota_device_id("g", Row(1, "ble-1", "beacon", "p-3f", body, False)) == "g.ble-1.p-3f"


def test_iota_json_needs_an_apikey():
    text = ("gateway: {id: g}\nuplinks:\n  - {name: iota, type: mqtt, url: 'mqtt://127.0.0.1:1883', "
            "format: iota-json}\n")
    with pytest.raises(ConfigError, match="apikey"):
        parse_config(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mosquitto(tmp_path):
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, 10, what="mosquitto")
    yield port
    proc.terminate()
    proc.wait(10)


def test_gateway_publishes_iota_json_measures(tmp_path, mosquitto):
    got: list[tuple[str, dict]] = []
    lock = threading.Lock()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="iota-agent")

    def on_message(client, userdata, msg):
        with lock:
            got.append((msg.topic, json.loads(msg.payload)))
    sub.on_message = on_message
    sub.on_connect = lambda c, *a: c.subscribe("/json/#", qos=1)
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    cfg = {"gateway": {"id": "test-gw", "location": [34.34, 134.05]},
           "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "100ms"},
           "uplinks": [{"name": "iota", "type": "mqtt", "url": f"mqtt://127.0.0.1:{mosquitto}",
                        "format": "iota-json", "apikey": "k3y", "attributes": {"water_level": "wl", "distance": "d"}}],
           "sensors": [{"id": "river-1", "driver": "sim_river", "interval": "100ms"}]}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "gw.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(tmp_path / "gw.yaml")],
                            stdout=log, stderr=log)
    try:
        wait_for(lambda: len(got) >= 3, 20, what="iota-json measures")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        sub.loop_stop()
    with lock:
        topic, measures = got[0]
    assert topic == "/json/k3y/test-gw.river-1/attrs"
    assert set(measures) == {"wl", "d", "TimeInstant"}
    assert measures["TimeInstant"].endswith("Z")
