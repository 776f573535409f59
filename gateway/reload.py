"""A config reload (SIGHUP, and later config/set), all-or-nothing.

`ReloadPlan(old, new)` says what changes: uplinks and sensors added, changed
or removed. `apply` then
1. builds everything new (drivers, pipelines, transports) and starts the new
   transports; any failure discards what was built and raises ReloadRefused,
   the old set running untouched;
2. swaps: stops what is replaced and starts its successor under the same name
   (an uplink kept by name keeps its cursor, so its pending readings go out
   with the new settings);
3. stops what is gone.
Only then is the new config the daemon's config. The buffer stays open;
storage, service and gateway.id take effect at the next restart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from gateway import catalogue
from gateway.config import Config
from gateway.sdk.reading import format_time
from gateway.sensor_supervisor import SensorSupervisor, SensorUnit
from gateway.uplink_supervisor import UplinkSupervisor, UplinkUnit

log = logging.getLogger(__name__)


class ReloadRefused(Exception):
    """The new config could not be put into effect; nothing changed."""


def outcome(result: str, source: str, reason: str | None = None, errors: list[str] | None = None) -> dict:
    """What `gateway status` shows of the last reload."""
    return {"result": result, "at": format_time(time.time()), "source": source, "reason": reason,
            "errors": errors or []}


def _kept_settings(old: Config, new: Config) -> Config:
    if new.storage != old.storage or new.gateway.id != old.gateway.id or new.service != old.service:
        log.warning("storage, service and gateway.id changes take effect at the next restart")
        new = new.model_copy(update={"storage": old.storage, "service": old.service,
                                     "gateway": new.gateway.model_copy(update={"id": old.gateway.id})})
    return new


@dataclass
class ReloadPlan:
    old: Config
    new: Config
    uplinks_in: list = field(default_factory=list)  # configs to start (added or changed)
    uplinks_out: list[str] = field(default_factory=list)  # names to stop (changed or removed)
    sensors_in: list = field(default_factory=list)
    sensors_out: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.new = _kept_settings(self.old, self.new)
        old_u = {u.name: u for u in self.old.uplinks}
        new_u = {u.name: u for u in self.new.uplinks}
        old_s = {s.id: (s, self.old.location_of(s)) for s in self.old.sensors}
        new_s = {s.id: (s, self.new.location_of(s)) for s in self.new.sensors}
        # Uplinks learn sensor changes from the catalogue (replaced in place below), never by a restart.
        self.uplinks_out = [n for n, u in old_u.items() if new_u.get(n) != u]
        self.uplinks_in = [u for n, u in new_u.items() if old_u.get(n) != u]
        self.sensors_out = [sid for sid, s in old_s.items() if new_s.get(sid) != s]
        self.sensors_in = [new_s[sid] for sid in new_s if old_s.get(sid) != new_s[sid]]
        self._old_uplinks, self._old_sensors = set(old_u), set(old_s)
        self._gone_uplinks = set(old_u) - set(new_u)

    @property
    def empty(self) -> bool:
        return not (self.uplinks_in or self.uplinks_out or self.sensors_in or self.sensors_out)

    async def apply(self, sensors: SensorSupervisor, uplinks: UplinkSupervisor) -> None:
        built_u, built_s = await self._build(sensors, uplinks)
        # 2. swap: from here on nothing can fail for a reason of the new config
        uplinks.catalogue.replace(catalogue.from_config(self.new))
        for name in self.uplinks_out:
            await uplinks.remove(name, forget=name in self._gone_uplinks)
            if name in self._gone_uplinks:
                log.info("uplink %s removed", name)
        for unit in built_u:
            uplinks.add(unit)
            log.info("uplink %s %s", unit.name, "changed" if unit.name in self._old_uplinks else "added")
        for sid in self.sensors_out:
            await sensors.remove(sid, forget=sid not in {s.id for s in self.new.sensors})
            if sid not in {u.options.id for u in built_s}:
                log.info("sensor %s removed", sid)
        for unit in built_s:
            sensors.add(unit)
            log.info("sensor %s %s", unit.options.id, "changed" if unit.options.id in self._old_sensors else "added")

    async def _build(self, sensors: SensorSupervisor,
                     uplinks: UplinkSupervisor) -> tuple[list[UplinkUnit], list[SensorUnit]]:
        """1. Everything new, built and (transports) started, or nothing."""
        built_u: list[UplinkUnit] = []
        built_s: list[SensorUnit] = []
        what = ""
        try:
            for u in self.uplinks_in:
                what = f"uplink {u.name}"
                unit = uplinks.build(u)
                built_u.append(unit)
                await uplinks.start(unit)
            for options, location in self.sensors_in:
                what = f"sensor {options.id}"
                built_s.append(sensors.build(options, location))
        except Exception as exc:
            for unit in built_u:
                await uplinks.discard(unit)
            for unit in built_s:
                await sensors.discard(unit)
            raise ReloadRefused(f"{what} cannot start: {type(exc).__name__}: {exc}") from exc
        return built_u, built_s
