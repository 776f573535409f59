"""The sensor catalogue uplinks get instead of the config and the registry
(issue 9, "readings describe themselves"): kind, location, mount height and
thresholds per sensor; a reload replaces it in place, so a sensor change no
longer restarts the NGSI-LD uplink."""

from __future__ import annotations

import signal

import pytest

from gateway import catalogue
from gateway.catalogue import SensorEntry
from gateway.config import parse_config
from tests.daemon_helpers import Daemon, base_config, wait_for, write_config
from tests.ngsi_broker import NgsiBroker

LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}

CONFIG = """
gateway: {id: gw, location: [34.34, 134.05]}
storage: {path: /tmp/x.db}
sensors:
  - {id: river-1, driver: sim_river, interval: 60s, mount_height: 5.5,
     alert_levels: {standby: 1.5, caution: 2.0, evacuation: 2.5, danger: 3.0}}
  - {id: snow-1, driver: sim_snow, interval: 60s, location: [43.06, 141.35], removal_threshold: 0.1}
  - {id: env-1, driver: bme280, interval: 60s}
  - {id: beacons-1, driver: ble_beacon, interval: 60s, publish_raw_ids: true, battery: {empty: 2.2, full: 3.0}}
"""


def test_the_catalogue_holds_what_uplinks_need_per_sensor():
    cat = catalogue.from_config(parse_config(CONFIG, "gw.yaml"))
    assert cat.get("river-1") == SensorEntry("river_level", (34.34, 134.05), 5.5, LEVELS)
    assert cat.get("snow-1") == SensorEntry("snow_depth", (43.06, 141.35), 2.0, removal_threshold=0.1)
    assert cat.get("env-1") == SensorEntry("environment", (34.34, 134.05))
    assert cat.get("beacons-1").kind == "beacon" and cat.get("beacons-1").battery == {"empty": 2.2, "full": 3.0}
    assert cat.get("nope") is None
    assert cat.kinds() == ["beacon", "environment", "river_level", "snow_depth"]
    assert cat.location == (34.34, 134.05)


def test_a_reload_replaces_the_entries_in_place():
    cat = catalogue.from_config(parse_config(CONFIG, "gw.yaml"))
    same = catalogue.from_config(parse_config(CONFIG, "gw.yaml"))
    assert not cat.replace(same)
    assert cat.replace(catalogue.from_config(parse_config(CONFIG.replace("danger: 3.0", "danger: 3.5"), "gw.yaml")))
    assert cat.get("river-1").alert_levels["danger"] == 3.5


@pytest.fixture
def ngsi():
    b = NgsiBroker().start()
    yield b
    b.stop()


def test_a_sensor_change_reaches_the_ngsi_ld_uplink_without_restarting_it(tmp_path, ngsi):
    doc = base_config(tmp_path, uplinks=[{"name": "orion", "type": "ngsi-ld", "url": ngsi.url, "heartbeat": "1s"}],
                      sensors=[{"id": "river-1", "driver": "sim_river", "interval": "200ms", "mount_height": 6.0,
                                "alert_levels": LEVELS}])
    config = write_config(tmp_path / "gw.yaml", doc)
    d = Daemon(config)
    river, heartbeat = "urn:ngsi-ld:FloodMonitoring:test-gw.river-1", "urn:ngsi-ld:Device:test-gw"
    try:
        wait_for(lambda: ngsi.entities.get(river, {}).get("dangerLevel", {}).get("value") == 3.0, 60,
                 what="the river entity with its danger level")
        doc["sensors"][0]["alert_levels"] = {**LEVELS, "danger": 3.5}
        doc["sensors"].append({"id": "snow-1", "driver": "sim_snow", "interval": "200ms"})
        write_config(config, doc)
        d.signal(signal.SIGHUP)
        wait_for(lambda: "config reloaded" in d.logs(), 30, what="the reload")
        wait_for(lambda: ngsi.entities.get(river, {}).get("dangerLevel", {}).get("value") == 3.5, 60,
                 what="the new danger level at the broker")
        wait_for(lambda: "depth" in ngsi.entities.get(heartbeat, {}).get("controlledProperty", {}).get("value", []),
                 60, what="the heartbeat naming the new snow sensor's property")
        assert "uplink orion" not in d.logs()  # neither stopped nor started again
        assert ngsi.invalid == []
        assert d.stop() == 0
    finally:
        d.kill()
