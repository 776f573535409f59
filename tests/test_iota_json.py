"""`format: iota-json` on the MQTT uplink: FIWARE IoT Agent JSON measures, against a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from gateway.buffer import Row
from gateway.config import ConfigError, parse_config
from gateway.uplinks.mqtt import iota_device_id, iota_measures
from tests.helpers import GatewayProcess, Subscriber, wait_for, write_config


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


def test_gateway_publishes_iota_json_measures(tmp_path, broker):
    sub = Subscriber(broker.port, topic="/json/#", client_id="iota-agent")
    cfg = {"gateway": {"id": "test-gw", "location": [34.34, 134.05]},
           "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "100ms"},
           "uplinks": [{"name": "iota", "type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}",
                        "format": "iota-json", "apikey": "k3y", "attributes": {"water_level": "wl", "distance": "d"}}],
           "sensors": [{"id": "river-1", "driver": "sim_river", "interval": "100ms"}]}
    gw = GatewayProcess(write_config(tmp_path / "gw.yaml", cfg), tmp_path / "gw.log").start()
    try:
        wait_for(lambda: len(sub.messages) >= 3, 20, what="iota-json measures")
    finally:
        assert gw.terminate() == 0
        sub.stop()
    topic, payload = sub.messages[0]
    measures = json.loads(payload)
    assert topic == "/json/k3y/test-gw.river-1/attrs"
    assert set(measures) == {"wl", "d", "TimeInstant"}
    assert measures["TimeInstant"].endswith("Z")


def test_one_reading_is_a_bare_object_whatever_batch_says_and_the_status_topic_is_configurable(tmp_path, broker):
    """iota-json ≥ 3.7 (commonBindings.js) turns [{...}] into one attribute named "0" and drops
    TimeInstant: a message holding one reading must be an object, also with batch: 10."""
    sub = Subscriber(broker.port, topic="#", client_id="iota-agent")
    cfg = {"gateway": {"id": "test-gw", "location": [34.34, 134.05]},
           "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "100ms"},
           "uplinks": [{"name": "iota", "type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}", "batch": 10,
                        "format": "iota-json", "apikey": "k3y", "status_topic": "devices/{gateway}/lwt"}],
           "sensors": [{"id": "river-1", "driver": "sim_river", "interval": "300ms"}]}
    gw = GatewayProcess(write_config(tmp_path / "gw.yaml", cfg), tmp_path / "gw.log").start()
    try:
        wait_for(lambda: sum(t.startswith("/json/") for t, _ in sub.messages) >= 5, 20, what="iota-json measures")
    finally:
        assert gw.terminate() == 0
        sub.stop()
    payloads = [json.loads(p) for t, p in sub.messages if t.startswith("/json/")]
    assert all(isinstance(p, dict) or len(p) > 1 for p in payloads), "never a one-element array"
    assert sum(isinstance(p, dict) for p in payloads) >= 3
    assert ("devices/test-gw/lwt", b"online") in sub.messages
    assert not any(t == "city/test-gw/status" for t, _ in sub.messages)
