"""What an uplink may know about the sensors, per sensor id: kind, location,
mount height, alert thresholds, battery range. Plain data built from the
config by the composition root, so uplinks need neither the config nor the
driver registry; a reload replaces the entries in place (`replace`), so an
uplink holding the catalogue sees a changed sensor without a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gateway import registry


@dataclass(frozen=True)
class SensorEntry:
    kind: str | None
    location: tuple[float, float] | None
    mount_height: float | None = None  # m above the gauge datum / ground
    alert_levels: dict[str, float] | None = None  # river stages: standby, caution, evacuation, danger (m)
    removal_threshold: float | None = None  # m of snowfall in 24 h
    battery: dict[str, float] | None = None  # beacons: {empty: V, full: V}


class SensorCatalogue:
    def __init__(self, entries: dict[str, SensorEntry] | None = None,
                 location: tuple[float, float] | None = None):
        self._entries = dict(entries or {})
        self.location = location  # the gateway's own, for its heartbeat entity
        # The gateway's `health` facts (SPEC §7) for its own Device entity; set by the daemon, kept on reload.
        self.health: Callable[[], dict] | None = None

    def get(self, sensor_id: str) -> SensorEntry | None:
        return self._entries.get(sensor_id)

    def kinds(self) -> list[str]:
        return sorted({e.kind for e in self._entries.values() if e.kind})

    def replace(self, new: SensorCatalogue) -> bool:
        """Take `new`'s entries (a reload); True when anything changed."""
        changed = (self._entries, self.location) != (new._entries, new.location)
        self._entries, self.location = dict(new._entries), new.location
        return changed


def _kind(options: Any) -> str | None:
    """Distance sensors say their kind in their options; others in their driver class."""
    kind = getattr(options, "kind", None)
    if not isinstance(kind, str):
        try:
            kind = getattr(registry.load(options.driver), "kind", None)
        except registry.DriverLoadError:
            return None
    return kind if isinstance(kind, str) else None


def _plain(model: Any) -> dict[str, float] | None:
    return None if model is None else dict(model.model_dump() if hasattr(model, "model_dump") else model)


def entry(options: Any, location: tuple[float, float] | None) -> SensorEntry:
    return SensorEntry(kind=_kind(options), location=None if location is None else tuple(location),
                       mount_height=getattr(options, "mount_height", None),
                       alert_levels=_plain(getattr(options, "alert_levels", None)),
                       removal_threshold=getattr(options, "removal_threshold", None),
                       battery=_plain(getattr(options, "battery", None)))


def from_config(config: Any) -> SensorCatalogue:
    """From a validated Config (gateway/config.py)."""
    location = config.gateway.location
    return SensorCatalogue({s.id: entry(s, config.location_of(s)) for s in config.sensors},
                           None if location is None else tuple(location))
