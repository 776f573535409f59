"""The NGSI-LD uplink against the strict test broker (tests/ngsi_broker.py): every
request checked against the official OpenAPI, expanded against its context and
validated against its Smart Data Model.

The end-to-end outage test stops the broker for NGSI_OUTAGE_S seconds (default 60, the
issue's figure; `NGSI_OUTAGE_S=5` for a quick local run)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from gateway import ngsi_ld_mapping as mapping
from gateway.buffer import stats as buffer_stats
from gateway.uplinks.ngsi_http import retry_after
from tests.helpers import GatewayProcess, wait_for, write_config
from tests.ngsi_broker import CORE_V18, NgsiBroker, check_entity
from tests.ngsi_helpers import GW, LEVELS, Harness, doc, river

OUTAGE_S = float(os.environ.get("NGSI_OUTAGE_S", "60"))


@pytest.fixture
def broker():  # this module's broker is the NGSI-LD one (conftest's is Mosquitto)
    b = NgsiBroker().start()
    yield b
    b.stop()


# --- mapping ------------------------------------------------------------------------------------

def test_every_kind_maps_to_a_valid_smart_data_model_entity():
    class RiverOptions:
        mount_height = 6.0
        alert_levels = LEVELS

    river = mapping.entities(doc("river_level", {"water_level": (2.1, "m"), "distance": (3.9, "m"),
                                                 "alert_level": ("caution",)}, "river-1"), RiverOptions())[0]
    assert river["id"] == "urn:ngsi-ld:FloodMonitoring:test-gw.river-1"
    assert river["location"]["value"]["coordinates"] == [134.0466, 34.3428], "GeoJSON is [lon, lat]"
    assert river["currentLevel"] == {"type": "Property", "value": 2.1, "observedAt": "2025-11-22T03:04:05.678Z",
                                     "unitCode": "MTR"}
    assert (river["referenceLevel"]["value"], river["alertLevel"]["value"], river["dangerLevel"]["value"]) == (6.0, 2.0, 3.0)
    assert river["floodLevelStatus"]["value"] == "caution"
    assert river["observationDateTime"]["value"] == {"@type": "DateTime", "@value": "2025-11-22T03:04:05.678Z"}

    snow = mapping.entities(doc("snow_depth", {"snow_depth": (0.42, "m"), "distance": (1.58, "m"),
                                               "air_temperature": (-2.5, "°C")}, "snow-1"))[0]
    assert (snow["snowHeight"]["value"], snow["snowHeight"]["unitCode"]) == (42.0, "CMT")
    assert snow["temperature"]["unitCode"] == "CEL"
    assert snow["refDevice"]["object"] == "urn:ngsi-ld:Device:test-gw.snow-1"

    env = mapping.entities(doc("environment", {"air_temperature": (12.5, "°C"), "relative_humidity": (55.0, "%"),
                                               "air_pressure": (1013.2, "hPa")}, "env-1"))[0]
    assert env["relativeHumidity"]["value"] == 0.55 and env["atmosphericPressure"]["unitCode"] == "A97"

    beacon = mapping.entities(doc("beacon", {"rssi": (-71, "dBm"), "count": (4,), "battery": (2.9, "V"),
                                             "temperature": (21.0, "°C")}, "ble-1", "p-3f9a"),
                              {"battery": {"empty": 2.0, "full": 3.0}})[0]
    assert beacon["id"] == "urn:ngsi-ld:Device:test-gw.ble-1.p-3f9a"
    assert beacon["deviceCategory"]["value"] == ["beacon"]
    assert beacon["controlledProperty"]["value"] == ["location", "temperature"]
    assert beacon["batteryLevel"]["value"] == 0.9
    assert "unitCode" not in beacon["rssi"], "no UN/CEFACT code for dBm (see the mapping's docstring)"

    lora = mapping.entities(doc("lora_node", {"temperature": (8.5, "°C"), "rssi": (-101, "dBm"),
                                              "snr": (7.5, "dB")}, "lora-1", "node-7"))
    assert [e["type"] for e in lora] == ["Device", "DeviceMeasurement"]
    assert lora[1]["refDevice"]["object"] == lora[0]["id"]

    heartbeat = mapping.gateway_device(GW, (34.3428, 134.0466), ["river_level", "snow_depth"], "0.1.0", "ok",
                                       "2025-11-22T03:04:05.678Z")
    assert heartbeat["deviceCategory"]["value"] == ["network"]
    assert heartbeat["controlledProperty"]["value"] == ["waterLevel", "depth", "temperature"]

    for e in [river, snow, env, beacon, *lora, heartbeat]:
        assert check_entity(e, mapping.SDM_CONTEXTS[e["type"]], CORE_V18) == [], e["id"]


def test_the_broker_is_strict():
    """The checks that make 'zero invalid requests' mean something."""
    e = mapping.entities(doc("environment", {"relative_humidity": (55.0, "%")}, "env-1"))[0]
    e["relativeHumidity"]["value"] = 55  # a percentage where the model wants a fraction
    e["madeUp"] = {"type": "Property", "value": 1}
    problems = check_entity(e, mapping.SDM_CONTEXTS["WeatherObserved"], CORE_V18)
    assert any("maximum of 1" in p for p in problems)
    assert any("madeUp" in p and "default context" in p for p in problems)
    e2 = mapping.entities(doc("river_level", {"water_level": (1.0, "m")}, "river-1"))[0]
    e2["location"]["value"]["coordinates"] = [134.0, 234.0]
    assert any("[lon, lat]" in p for p in check_entity(e2, mapping.SDM_CONTEXTS["FloodMonitoring"], CORE_V18))


@pytest.mark.parametrize("model, folder, status, defect", [
    ("FloodMonitoring", "Environment/FloodMonitoring", 400, "'type': 'string'"),
    ("Device", "Device/Device", 400, "'object': ["),
    ("DeviceMeasurement", "Device/DeviceMeasurement", 400, "GeoProperty"),
    ("WeatherObserved", "Weather/WeatherObserved", 201, None),
])
def test_the_broker_finds_the_known_defects_of_the_official_examples(broker, model, folder, status, defect):
    """The README of tests/ngsi-ld lists which official examples are wrong; the broker must agree."""
    import httpx

    from tests.ngsi_broker import HERE
    example = json.loads((HERE / "sdm" / folder / "example-normalized.jsonld").read_text())
    example.pop("@context")
    link = f'<{mapping.SDM_CONTEXTS[model]}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    r = httpx.post(f"{broker.url}/ngsi-ld/v1/entityOperations/upsert?options=update", json=[example],
                   headers={"Link": link})
    assert r.status_code == status, r.text
    if defect:
        assert defect in r.json()["detail"]


def test_an_ngsi_ld_uplink_needs_a_location_for_every_sensor():
    from gateway.config import ConfigError, parse_config
    text = ("gateway: {id: g}\nuplinks:\n  - {name: orion, type: ngsi-ld, url: 'http://127.0.0.1:1026'}\n"
            "sensors:\n  - {id: river-1, driver: sim_river, interval: 1s}\n")
    with pytest.raises(ConfigError, match="needs a location for every sensor"):
        parse_config(text)
    parse_config(text.replace("{id: g}", "{id: g, location: [34.34, 134.05]}"))


def test_retry_after_header_forms_and_its_cap():
    assert retry_after("3", 30) == 3.0
    assert retry_after(None, 30) is None
    assert 0 <= retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5)), 30) <= 6
    assert retry_after("999999", 30) == 30, "a broker cannot stall the uplink for days (capped at reconnect_max)"
    assert retry_after("nan", 30) is None and retry_after("-5", 30) == 0


# --- the transport through the real delivery worker and buffer -------------------------------------

def test_207_one_bad_entity_others_released_bad_one_dead_lettered(tmp_path, broker):
    h = Harness(tmp_path, broker.url)
    broker.reject["urn:ngsi-ld:FloodMonitoring:test-gw.river-2"] = "stationID unknown to this city"
    for i in range(3):
        river(h, 1.0 + i / 10, "river-1")
        river(h, 1.0 + i / 10, "river-2")
        river(h, 1.0 + i / 10, "river-3")
    h.run()
    assert broker.invalid == []
    assert 207 in [status for _, status, _ in broker.log]
    dead = h.dead()
    assert [s for s, _ in dead] == ["river-2"] * 3, "river-2's history and current state are refused, one by one"
    assert all("stationID unknown to this city" in reason for _, reason in dead)
    assert "207" in dead[-1][1], "the newest went through upsert: the 207 names it"
    for s in ("river-1", "river-3"):
        eid = f"urn:ngsi-ld:FloodMonitoring:test-gw.{s}"
        assert broker.entities[eid]["currentLevel"]["value"] == 1.2
        assert broker.history(eid, "currentLevel") == [1.0, 1.1, 1.2]
    assert h.buffer.acked["orion"] == h.buffer.last_seq


def test_413_splits_the_batch_until_each_part_fits(tmp_path):
    broker = NgsiBroker(max_body=4_000).start()
    try:
        h = Harness(tmp_path, broker.url)
        for s in range(12):
            river(h, 1.5, f"river-{s}")
        h.run()
        statuses = [status for _, status, _ in broker.log]
        assert 413 in statuses and statuses[-1] in (201, 204)
        assert broker.invalid == [] and h.dead() == []
        assert len([e for e in broker.entities if "FloodMonitoring" in e]) == 12
    finally:
        broker.stop()


def test_429_retry_after_is_honoured(tmp_path, broker):
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    broker.fail_next.append((429, {"Retry-After": "2", "Content-Type": "application/json"},
                             b'{"type":"https://uri.etsi.org/ngsi-ld/errors/TooManyRequests","title":"slow down"}'))
    river(h, 1.0)
    started = time.monotonic()
    h.run()
    assert time.monotonic() - started >= 1.9, "the retry waited for Retry-After"
    assert [status for _, status, _ in broker.log] == [429, 201]
    assert broker.times[1] - broker.times[0] >= 1.9
    assert h.dead() == []


def test_backlog_goes_to_the_temporal_store_oldest_first_then_current_state(tmp_path, broker):
    h = Harness(tmp_path, broker.url)
    levels = [1.0, 1.1, 1.2, 1.3, 1.4]
    for lv in levels:
        river(h, lv)
    h.add("snow-1", "snow_depth", {"snow_depth": (0.3, "m"), "air_temperature": (-1.0, "°C")})
    for _ in range(2):  # a device answering with errors: no values, nothing for the history
        h.add("river-9", "river_level", {})
    h.run()
    eid = "urn:ngsi-ld:FloodMonitoring:test-gw.river-1"
    assert broker.invalid == [] and h.dead() == []
    assert broker.count("/temporal/entities") == 1, "one temporal request for the river's four older readings"
    assert "urn:ngsi-ld:FloodMonitoring:test-gw.river-9" in broker.entities
    assert broker.history(eid, "currentLevel") == levels
    assert broker.entities[eid]["currentLevel"]["value"] == 1.4


def test_a_retried_send_does_not_write_accepted_instances_twice(tmp_path, broker):
    h = Harness(tmp_path, broker.url, reconnect_max="1s")
    broker.fail_on.append(("/upsert", (503, {"Retry-After": "0"}, b"")))  # after the temporal POST went through
    levels = [1.0, 1.1, 1.2]
    for lv in levels:
        river(h, lv)
    h.run()
    eid = "urn:ngsi-ld:FloodMonitoring:test-gw.river-1"
    assert [s for _, s, _ in broker.log] == [201, 503, 201]
    assert broker.history(eid, "currentLevel") == levels
    assert broker.entities[eid]["currentLevel"]["value"] == 1.2


def test_without_a_temporal_store_the_backlog_is_replayed_in_order_through_upsert(tmp_path):
    broker = NgsiBroker(temporal=False).start()
    try:
        h = Harness(tmp_path, broker.url)
        levels = [1.0, 1.1, 1.2, 1.3]
        for lv in levels:
            river(h, lv)
            river(h, lv + 1, "river-2")
        h.run()
        assert broker.invalid == [] and h.dead() == []
        statuses = [(p.rsplit("/", 1)[-1], s) for p, s, _ in broker.log]
        assert statuses[0] == ("entities", 503), "temporal path refused: TRoE not enabled"
        eid = "urn:ngsi-ld:FloodMonitoring:test-gw.river-1"
        assert [e["currentLevel"]["value"] for i, e in broker.upserted if i == eid] == levels, "replayed oldest first"
        assert broker.entities[eid]["currentLevel"]["value"] == 1.3
        assert broker.count("/temporal/entities") == 1, "the transport remembers the broker has no temporal store"
    finally:
        broker.stop()


# --- end to end: the real gateway process with simulated sensors ------------------------------------

def gateway_config(tmp_path: Path, url: str) -> Path:
    cfg = {
        "gateway": {"id": GW, "location": [34.3428, 134.0466], "shutdown_timeout": "10s"},
        "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "200ms"},
        "uplinks": [
            {"name": "orion", "type": "ngsi-ld", "url": url, "tenant": "takamatsu", "reconnect_max": "2s",
             "token_file": str(tmp_path / "orion.token")},
            {"name": "record", "type": "console", "path": str(tmp_path / "readings.jsonl")},
        ],
        "sensors": [
            {"id": "river-1", "driver": "sim_river", "interval": "200ms", "mount_height": 6.0, "alert_levels": LEVELS},
            {"id": "snow-1", "driver": "sim_snow", "interval": "300ms", "location": [43.0642, 141.3469]},
            {"id": "beacons-1", "driver": "sim_beacon", "interval": "500ms", "seed": 7, "population": 3},
        ],
    }
    (tmp_path / "orion.token").write_text("s3cret-token\n")
    return write_config(tmp_path / "gw.yaml", cfg)


def recorded(tmp_path: Path) -> list[dict]:
    path = tmp_path / "readings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


MEASURED = {"river_level": ("FloodMonitoring", "currentLevel", "water_level"),
            "snow_depth": ("WeatherObserved", "temperature", "air_temperature"),
            "beacon": ("Device", "rssi", "rssi")}


def expected_history(readings: list[dict]) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list] = {}
    for r in readings:
        etype, _, value = MEASURED[r["kind"]]
        eid = mapping.entity_id(etype, r["gateway"], r["sensor"], r.get("device"))
        out.setdefault(eid, []).append((r["observed_at"], r["values"][value]["value"]))
    return out


def test_end_to_end_outage_every_reading_in_the_temporal_store_in_order(tmp_path):
    broker = NgsiBroker(token="s3cret-token").start()
    config = gateway_config(tmp_path, broker.url)
    gw = GatewayProcess(config, tmp_path / "gw.log").start()
    try:
        wait_for(lambda: len(broker.entities) >= 4, 20, what="entities at the broker")
        broker.stop()
        outage_start = len(recorded(tmp_path))
        time.sleep(OUTAGE_S)  # the outage itself: readings pile up in the buffer meanwhile
        assert len(recorded(tmp_path)) > outage_start, "readings were taken during the outage"
        broker.start()
        time.sleep(1.0)  # some live readings after the outage
        assert gw.terminate() == 0
    finally:
        if gw.proc.poll() is None:
            gw.kill()
        broker.stop()
    readings = recorded(tmp_path)
    gw_log = (tmp_path / "gw.log").read_text()
    assert "s3cret-token" not in gw_log, "the token is never logged"
    with sqlite3.connect(tmp_path / "buffer.db") as conn:
        orion = buffer_stats(conn, ["orion"])["uplinks"]["orion"]
        pending, dead = orion["pending"], orion["dead_letters"]
    assert pending == 0 and dead == 0, gw_log[-3000:]
    assert broker.invalid == [], broker.invalid[:3]
    assert broker.tenants == {"takamatsu"}
    expected = expected_history(readings)
    assert len(expected) >= 4 and sum(map(len, expected.values())) > 30
    for eid, want in expected.items():
        etype, attr, _ = next(v for v in MEASURED.values() if f":{v[0]}:" in eid)
        got = list(zip(broker.observed(eid, attr), broker.history(eid, attr)))
        deduped = list(dict.fromkeys(got))  # at-least-once: a resend after a lost answer may repeat one
        assert deduped == want, f"{eid}: the temporal store holds every reading, oldest first"
        current = broker.entities[eid][attr]
        assert (current["observedAt"], current["value"]) == want[-1], f"{eid}: current state is the newest reading"
    river_now = broker.entities["urn:ngsi-ld:FloodMonitoring:test-gw.river-1"]
    assert (river_now["alertLevel"]["value"], river_now["dangerLevel"]["value"]) == (2.0, 3.0)
    assert river_now["referenceLevel"]["value"] == 6.0
    heartbeat = broker.entities[f"urn:ngsi-ld:Device:{GW}"]
    assert heartbeat["deviceCategory"]["value"] == ["network"] and heartbeat["deviceState"]["value"] == "ok"
    assert set(heartbeat["controlledProperty"]["value"]) == {"waterLevel", "depth", "temperature", "location"}
