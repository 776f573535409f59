"""Readings (SPEC §3 JSON) to NGSI-LD entities of the Smart Data Models.

Pure functions: a reading's JSON in, normalized NGSI-LD entities out (no
`@context` member: the transport names each type's context in a Link header).

| kind          | entity                                                          |
| ------------- | --------------------------------------------------------------- |
| river_level   | FloodMonitoring                                                 |
| snow_depth    | WeatherObserved (+ refDevice)                                   |
| environment   | WeatherObserved                                                 |
| beacon        | Device, deviceCategory [beacon], id from the pseudonym          |
| lora_node     | Device per node + one DeviceMeasurement per decoded value       |
| (the gateway) | Device, deviceCategory [network]: the heartbeat                 |

Ids: urn:ngsi-ld:<Type>:<gateway>.<sensor>[.<device>]. Locations are GeoJSON
Points, [lon, lat] (the config writes [lat, lon]).

Units are UN/CEFACT Rec 20 common codes. RSSI carries no unitCode on purpose:
Rec 20 has 2N (decibel), but that is a plain ratio, while dBm is a power level
relative to 1 mW; we found no Rec 20 code for decibel-milliwatt, and a wrong
code would mislead a consumer more than none. The SDM Device model documents
rssi in dBm, which is what we send.
"""

from __future__ import annotations

from typing import Any, Iterable

# The Smart Data Models subject contexts, one per entity type, pinned to the commits whose
# schemas this mapping is checked against: `master` changes under a running fleet. A city
# network that cannot reach GitHub names its own copy with the uplink's `context:`.
SDM = "https://raw.githubusercontent.com/smart-data-models"
SDM_CONTEXTS = {
    "FloodMonitoring": f"{SDM}/dataModel.Environment/f0150e5c97f41e4c0881a0bcfa05d559058bdea1/context.jsonld",
    "WeatherObserved": f"{SDM}/dataModel.Weather/adf1dd5918da36980208a0a46ed76c81fba91ea5/context.jsonld",
    "Device": f"{SDM}/dataModel.Device/96e38834eda502ed6a764e1fa7059a8c3561dcda/context.jsonld",
    "DeviceMeasurement": f"{SDM}/dataModel.Device/96e38834eda502ed6a764e1fa7059a8c3561dcda/context.jsonld",
}

UNIT_CODES = {"m": "MTR", "cm": "CMT", "mm": "MMT", "°C": "CEL", "hPa": "A97", "Pa": "PAL", "V": "VLT",
              "dB": "2N", "%": "P1", "1": "C62"}

# What a reading's values measure, in the Device schema's controlledProperty enum.
CONTROLLED = {"water_level": "waterLevel", "distance": "depth", "snow_depth": "depth",
              "air_temperature": "temperature", "temperature": "temperature", "relative_humidity": "humidity",
              "humidity": "humidity", "air_pressure": "atmosphericPressure", "pressure": "pressure",
              "battery": "batterySupply", "precipitation": "precipitation", "soil_moisture": "soilMoisture"}
KIND_PROPERTIES = {"river_level": ["waterLevel"], "snow_depth": ["depth", "temperature"],
                   "environment": ["temperature", "humidity", "atmosphericPressure"], "beacon": ["location"]}

# river stage (gateway/pipeline.py STAGES) to floodLevelStatus; the model leaves the vocabulary
# open ("Danger if the current level is higher than the danger level"): ours is the Japanese
# river stages, documented in docs/ngsi-ld.md
FLOOD_STATUS = {"normal": "normal", "standby": "standby", "caution": "caution", "evacuation": "evacuation",
                "danger": "danger"}


class Unmappable(ValueError):
    """A reading this uplink cannot express (kind unknown, no location): it becomes a dead letter."""


def entity_id(entity_type: str, gateway: str, sensor: str, device: str | None = None, *extra: str) -> str:
    parts = [gateway, sensor] + ([device] if device else []) + list(extra)
    return f"urn:ngsi-ld:{entity_type}:{'.'.join(parts)}"


def point(location: Iterable[float]) -> dict[str, Any]:
    lat, lon = location
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def measured(value: Any, observed_at: str, unit: str | None = None, unit_code: str | None = None) -> dict[str, Any]:
    prop = {"type": "Property", "value": value, "observedAt": observed_at}
    code = unit_code or UNIT_CODES.get(unit or "")
    if code:
        prop["unitCode"] = code
    return prop


def prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


# Attributes that only say when: on their own they are no history worth keeping (an error reading).
TIME_ATTRIBUTES = frozenset({"dateObserved", "observationDateTime", "dateLastValueReported"})


def date_time(stamp: str) -> dict[str, Any]:
    # observedAt too, so the temporal store keeps these per reading like the measured values
    return {"type": "Property", "value": {"@type": "DateTime", "@value": stamp}, "observedAt": stamp}


def _v(doc: dict, name: str) -> tuple[Any, str | None]:
    v = doc["values"].get(name)
    return (None, None) if v is None else (v["value"], v.get("unit"))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _option(options: Any, name: str) -> Any:
    if options is None:
        return None
    return options.get(name) if isinstance(options, dict) else getattr(options, name, None)


def _level(levels: Any, stage: str) -> float | None:
    return _option(levels, stage) if levels is not None else None


def _base(entity_type: str, doc: dict, *extra: str) -> dict[str, Any]:
    if not doc.get("location"):
        raise Unmappable("reading has no location (set the sensor's or gateway.location)")
    return {"id": entity_id(entity_type, doc["gateway"], doc["sensor"], doc.get("device"), *extra),
            "type": entity_type, "location": point(doc["location"])}


def flood_monitoring(doc: dict, options: Any = None) -> dict[str, Any]:
    e = _base("FloodMonitoring", doc)
    at = doc["observed_at"]
    e["observationDateTime"] = date_time(at)
    distance, unit = _v(doc, "distance")
    if _number(distance):
        e["measuredDistance"] = measured(distance, at, unit)
    level, unit = _v(doc, "water_level")
    if _number(level):
        e["currentLevel"] = measured(level, at, unit)
    mount = _option(options, "mount_height")  # the sensor above the gauge datum (see docs/ngsi-ld.md)
    if _number(mount):
        e["referenceLevel"] = {"type": "Property", "value": mount, "unitCode": "MTR"}
    levels = _option(options, "alert_levels")
    for attr, stage in (("alertLevel", "caution"), ("dangerLevel", "danger")):
        threshold = _level(levels, stage)
        if _number(threshold):
            e[attr] = {"type": "Property", "value": threshold, "unitCode": "MTR"}
    stage, _ = _v(doc, "alert_level")
    if isinstance(stage, str):
        e["floodLevelStatus"] = measured(FLOOD_STATUS.get(stage, stage), at)
    return e


def weather_observed(doc: dict, options: Any = None) -> dict[str, Any]:
    e = _base("WeatherObserved", doc)
    at = doc["observed_at"]
    e["dateObserved"] = date_time(at)
    depth, unit = _v(doc, "snow_depth")
    if _number(depth):
        # snowHeight in cm (CMT), as the model's examples and Japanese snow reports give it
        cm = {"m": 100, "cm": 1, "mm": 0.1}.get(unit or "")
        e["snowHeight"] = measured(round(depth * cm, 1) if cm else depth, at, unit, "CMT" if cm else None)
    temp, unit = _v(doc, "air_temperature")
    if _number(temp):
        e["temperature"] = measured(temp, at, unit)
    rh, unit = _v(doc, "relative_humidity")
    if _number(rh):
        e["relativeHumidity"] = measured(round(rh / 100, 4) if unit == "%" else rh, at, unit_code="C62")
    p, unit = _v(doc, "air_pressure")
    if _number(p):
        e["atmosphericPressure"] = measured(p, at, unit)
    if doc["kind"] == "snow_depth":
        e["refDevice"] = {"type": "Relationship",
                          "object": entity_id("Device", doc["gateway"], doc["sensor"], doc.get("device"))}
    return e


def battery_fraction(volts: float, battery: Any) -> float | None:
    """Linear between the configured empty and full voltages, clamped to 0..1."""
    empty, full = _option(battery, "empty"), _option(battery, "full")
    if not (_number(empty) and _number(full)) or full <= empty:
        return None
    return round(min(1.0, max(0.0, (volts - empty) / (full - empty))), 3)


def device(doc: dict, options: Any = None, category: str = "sensor") -> dict[str, Any]:
    """A remote device (beacon, LoRa node): its radio link and battery."""
    e = _base("Device", doc)
    at = doc["observed_at"]
    controlled = list(KIND_PROPERTIES.get(doc["kind"], []))
    for name in doc["values"]:
        p = CONTROLLED.get(name)
        if p and p not in controlled and name not in ("distance", "battery"):
            controlled.append(p)
    e["deviceCategory"] = prop([category])
    e["controlledProperty"] = prop(controlled or ["location"])
    rssi, _ = _v(doc, "rssi")
    if _number(rssi):
        e["rssi"] = measured(rssi, at)  # dBm; no unitCode, see the module docstring
    battery, unit = _v(doc, "battery")
    if _number(battery):
        level = battery if unit in (None, "1") and 0 <= battery <= 1 else None
        if unit == "%":
            level = round(battery / 100, 3)
        elif unit == "V":
            level = battery_fraction(battery, _option(options, "battery"))
        if level is not None:
            e["batteryLevel"] = measured(level, at, unit_code="C62")
    e["dateLastValueReported"] = date_time(at)
    if doc.get("quality") == "error":
        e["deviceState"] = measured("error", at)
    return e


def device_measurements(doc: dict) -> list[dict[str, Any]]:
    """One DeviceMeasurement per decoded numeric value of a LoRa node."""
    out = []
    dev_id = entity_id("Device", doc["gateway"], doc["sensor"], doc.get("device"))
    for name, v in doc["values"].items():
        if name in ("rssi", "snr") or not _number(v["value"]):
            continue
        e = _base("DeviceMeasurement", doc, name)
        e["numValue"] = measured(v["value"], doc["observed_at"], v.get("unit"))
        e["controlledProperty"] = prop(CONTROLLED.get(name, name))
        e["refDevice"] = {"type": "Relationship", "object": dev_id}
        e["dateObserved"] = date_time(doc["observed_at"])
        if v.get("unit"):
            e["unit"] = prop(UNIT_CODES.get(v["unit"], v["unit"]))
        out.append(e)
    return out


def entities(doc: dict, options: Any = None) -> list[dict[str, Any]]:
    """Every entity one reading updates, in the order they should be sent."""
    kind = doc["kind"]
    if kind == "river_level":
        return [flood_monitoring(doc, options)]
    if kind in ("snow_depth", "environment"):
        return [weather_observed(doc, options)]
    if kind == "beacon":
        return [device(doc, options, "beacon")]
    if kind == "lora_node":
        return [device(doc, options, "sensor")] + device_measurements(doc)
    raise Unmappable(f"no NGSI-LD mapping for kind {kind!r}")


def gateway_device(gateway: str, location: Iterable[float] | None, kinds: Iterable[str], firmware: str,
                   state: str, at: str) -> dict[str, Any]:
    """The gateway's own heartbeat entity."""
    controlled: list[str] = []
    for kind in kinds:
        for p in KIND_PROPERTIES.get(kind, []):
            if p not in controlled:
                controlled.append(p)
    e: dict[str, Any] = {"id": f"urn:ngsi-ld:Device:{gateway}", "type": "Device",
                         "deviceCategory": prop(["network"]), "controlledProperty": prop(controlled or ["location"]),
                         "deviceState": measured(state, at), "firmwareVersion": prop(firmware),
                         "dateLastValueReported": date_time(at)}
    if location is not None:
        e["location"] = point(location)
    return e


def health_state(health: dict[str, Any], via: str | None = None) -> str:
    """The `health` message (SPEC §7) in one line a dashboard shows: "ok", or what is wrong.
    The uplink `via` carries this very line: if the city reads it, that uplink works, so it
    is not reported (it may still count as disconnected at the instant its reconnect is tried)."""
    wrong = [f"sensor {sid} {s['state']}" for sid, s in health.get("sensors", {}).items() if s.get("state") != "ok"]
    wrong += [f"uplink {name} disconnected" for name, u in health.get("uplinks", {}).items()
              if not u.get("connected") and name != via]
    host = health.get("host") or {}
    wrong += [fact for fact in ("undervoltage", "throttled") if host.get(fact)]
    if host.get("clock") == "unsynced":
        wrong.append("clock unsynced")
    return "ok" if not wrong else "degraded: " + "; ".join(wrong)


def gateway_device_health(gateway: str, location: Iterable[float] | None, kinds: Iterable[str],
                          health: dict[str, Any], via: str | None = None) -> dict[str, Any]:
    """The gateway's own Device entity carrying the facts of its `health` message
    (at least its "version" and "at"), sent through the uplink `via`."""
    e = gateway_device(gateway, location, kinds, health["version"], health_state(health, via), health["at"])
    e["softwareVersion"] = prop(health["version"])
    last = max((s["last_reading_at"] for s in health.get("sensors", {}).values() if s.get("last_reading_at")),
               default=None)
    if last is not None:
        e["dateLastValueReported"] = date_time(last)
    return e
