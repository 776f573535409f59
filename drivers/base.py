"""The driver seam. A driver opens its device, reads it and returns Readings;
it knows nothing of buffers or uplinks.

Polled drivers (distance sensors, BME280) are called once per `interval`.
Event-driven drivers (BLE, LoRa) set `event_driven = True`: the scheduler calls
`read(timeout)` back to back, and the call returns whatever arrived (possibly
nothing) within `timeout` seconds.

`read` and `open` block and run in a worker thread of their own, so a driver may
use plain blocking I/O. Raise `DeviceError` (or any OSError) for a device that
cannot be reached; the scheduler backs off and reopens.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from gateway.fields import Duration, Location, Name, Strict
from gateway.reading import Reading, Value


class DeviceError(Exception):
    """The device could not be opened or read (unplugged, no answer, bus error)."""


class AlertLevels(Strict):
    """The four Japanese river stages, water level in m above the gauge datum:
    standby 水防団待機水位, caution 氾濫注意水位, evacuation 避難判断水位, danger 氾濫危険水位."""

    standby: float
    caution: float
    evacuation: float
    danger: float

    @model_validator(mode="after")
    def _ascending(self) -> "AlertLevels":
        if not self.standby <= self.caution <= self.evacuation <= self.danger:
            raise ValueError("alert levels must rise: standby <= caution <= evacuation <= danger")
        return self


class SensorOptions(Strict):
    """Keys every sensor has. A driver's own Options subclass this and add its keys."""

    id: Name
    driver: str
    interval: Duration
    location: Location | None = None
    timeout: Duration | None = Field(None, description="per-read timeout (default: the interval, at most 30s)")

    @property
    def read_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(max(self.interval, 1.0), 30.0)


class DistanceOptions(SensorOptions):
    """Keys of every distance sensor (river level or snow depth)."""

    kind: Literal["river_level", "snow_depth"] = "river_level"
    mount_height: float | None = Field(None, gt=0, description="sensor height above the gauge datum / ground, m")
    alert_levels: AlertLevels | None = None
    hysteresis: float = Field(0.05, ge=0, description="m a level must fall below a stage to leave it")
    max_jump: float | None = Field(None, gt=0, description="m per reading beyond which a reading is suspect")


class Driver:
    """Base of every driver. Subclasses set Options and implement read()."""

    name: ClassVar[str] = ""  # set by the registry from the entry-point name
    summary: ClassVar[str] = ""
    Options: ClassVar[type[SensorOptions]] = SensorOptions
    event_driven: ClassVar[bool] = False
    # Distance sensors: does the device correct for air temperature itself? If
    # not, the pipeline rescales `distance` from the speed of sound the device
    # assumed to the one at the measured air temperature.
    temperature_compensated: ClassVar[bool] = True
    assumed_sound_speed: ClassVar[float] = 343.0  # m/s the device's distance is based on

    def __init__(self, options: SensorOptions):
        self.options = options

    @property
    def kind(self) -> str:
        return getattr(self.options, "kind", "")

    def open(self) -> None:
        """Open the device. Called before the first read and after a failure."""

    def read(self, timeout: float) -> list[Reading]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device. Must be safe to call twice."""

    def reading(self, values: dict[str, Value], *, quality: str = "ok", error: str | None = None,
                device: str | None = None, kind: str | None = None) -> Reading:
        """A Reading stamped now, for this sensor."""
        return Reading(sensor=self.options.id, kind=kind or self.kind, values=values, observed_at=time.time(),
                       monotonic=time.monotonic(), quality=quality, error=error, device=device)
