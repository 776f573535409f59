"""The reading: what a driver measures and what every uplink receives (SPEC §3)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

QUALITIES = ("ok", "suspect", "error")


class Value(NamedTuple):
    value: float | int | str | bool
    unit: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value} if self.unit is None else {"value": self.value, "unit": self.unit}


def epoch_ms(epoch: float) -> int:
    return int(round(epoch * 1000))


_SECONDS: dict[int, str] = {}  # readings come in runs of the same second: format each second once


def format_ms(ms: int) -> str:
    """UTC with milliseconds and a Z, as SPEC §3 writes observed_at."""
    second = ms // 1000
    stamp = _SECONDS.get(second)
    if stamp is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        stamp = _SECONDS[second] = datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


def format_time(epoch: float) -> str:
    return format_ms(epoch_ms(epoch))


# The fields a stored reading keeps in columns; the rest of its JSON is stored as is (gateway/buffer.py).
HEAD_FIELDS = ("id", "gateway", "sensor", "kind", "device", "observed_at")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


@dataclass(slots=True)
class Reading:
    """One observation. Drivers fill what they measured; the pipeline and the
    gateway add derived values, location, the id and the alert flag."""

    sensor: str
    kind: str
    values: dict[str, Value]
    observed_at: float = field(default_factory=time.time)
    monotonic: float = field(default_factory=time.monotonic)
    quality: str = "ok"
    error: str | None = None
    device: str | None = None
    clock_synced: bool = True
    # Filled in after the driver:
    id: str | None = None
    gateway: str | None = None
    location: tuple[float, float] | None = None
    alert: bool = False  # an alert-level change: sent before the backlog, never evicted first
    # What the pipeline needs to know of the device (set by Driver.reading(); not part of the JSON):
    # does it correct its distance for air temperature itself, and if not, what speed of sound (m/s)
    # its distance is based on.
    temperature_compensated: bool = True
    assumed_sound_speed: float = 343.0

    def value(self, name: str) -> Any:
        v = self.values.get(name)
        return None if v is None else v.value

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "gateway": self.gateway,
            "sensor": self.sensor,
            "kind": self.kind,
        }
        if self.device is not None:
            doc["device"] = self.device
        doc["observed_at"] = format_time(self.observed_at)
        return self._rest(doc)

    def _rest(self, doc: dict[str, Any]) -> dict[str, Any]:
        if not self.clock_synced:
            doc["clock"] = "unsynced"
            doc["monotonic"] = round(self.monotonic, 3)
        doc["values"] = {name: v.as_json() for name, v in self.values.items()}
        doc["quality"] = self.quality
        if self.error is not None:
            doc["error"] = self.error
        if self.location is not None:
            doc["location"] = list(self.location)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, separators=(",", ":"))

    def rest_json(self) -> str:
        """The JSON of everything but HEAD_FIELDS, in the same order and form as to_json."""
        return json.dumps(self._rest({}), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: dict[str, Any] | str) -> Reading:
        if isinstance(doc, str):
            doc = json.loads(doc)
        return cls(
            sensor=doc["sensor"],
            kind=doc["kind"],
            values={k: Value(v["value"], v.get("unit")) for k, v in doc["values"].items()},
            observed_at=parse_time(doc["observed_at"]),
            monotonic=doc.get("monotonic", 0.0),
            quality=doc.get("quality", "ok"),
            error=doc.get("error"),
            device=doc.get("device"),
            clock_synced=doc.get("clock") != "unsynced",
            id=doc.get("id"),
            gateway=doc.get("gateway"),
            location=tuple(doc["location"]) if doc.get("location") else None,
        )
