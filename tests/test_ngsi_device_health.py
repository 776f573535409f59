"""Issue 10, item 1: the gateway's own NGSI-LD Device entity carries its health facts, so a city OS dashboard
sees a failing sensor or a browning-out Pi without the MQTT health topic."""

from __future__ import annotations

from gateway.catalogue import SensorCatalogue
from gateway.config import NgsiLdUplinkConfig
from gateway.uplinks.ngsi_ld import NgsiLdTransport

HEALTH = {"at": "2026-12-01T03:04:05.678Z", "version": "9.9.9", "config_hash": None, "uptime_s": 12.0,
          "sensors": {"river-1": {"state": "failing", "detail": "no answer on /dev/ttyUSB0",
                                  "last_reading_at": "2026-12-01T03:00:00.000Z"}},
          "uplinks": {"orion": {"connected": True}}, "buffer": {},
          "host": {"cpu_temperature_c": 61.2, "undervoltage": True, "throttled": False, "clock": "synced"}}


def heartbeat_entity(catalogue: SensorCatalogue, tmp_path) -> dict:
    from gateway.buffer import Buffer
    config = NgsiLdUplinkConfig(name="orion", type="ngsi-ld", url="http://127.0.0.1:1")
    transport = NgsiLdTransport(config, "gw-1", catalogue, buffer=Buffer(tmp_path / "b.db", ["orion"], gateway="gw-1"))
    (item,) = transport._heartbeat()
    return item.entity


def test_the_device_entity_says_what_is_wrong_and_the_software_version(tmp_path):
    catalogue = SensorCatalogue(location=(34.34, 134.04))
    catalogue.health = lambda: HEALTH
    e = heartbeat_entity(catalogue, tmp_path)
    assert e["id"] == "urn:ngsi-ld:Device:gw-1"
    assert e["deviceState"]["value"] == "degraded: sensor river-1 failing; undervoltage"
    assert e["softwareVersion"]["value"] == "9.9.9"
    assert e["dateLastValueReported"]["value"]["@value"] == "2026-12-01T03:00:00.000Z"


def test_without_health_facts_the_heartbeat_still_goes(tmp_path):
    catalogue = SensorCatalogue(location=(34.34, 134.04))
    catalogue.health = lambda: (_ for _ in ()).throw(RuntimeError("the health view is not up yet"))
    e = heartbeat_entity(catalogue, tmp_path)
    assert e["deviceState"]["value"] == "ok" and "softwareVersion" not in e
