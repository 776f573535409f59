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
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from gateway.sdk.devices import HARDWARE, Devices
from gateway.sdk.fields import Duration, Location, Name, Strict
from gateway.sdk.reading import Reading, Value


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
    devices: Name = Field("hardware", description="where the driver finds its bus or pins: hardware, or a "
                          "simulated set (hil's `sim`); see gateway/sdk/devices.py")

    @property
    def read_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(max(self.interval, 1.0), 30.0)


class DistanceOptions(SensorOptions):
    """Keys of every distance sensor (river level or snow depth). The pipeline
    (gateway/pipeline.py) uses them; a driver only reports the raw `distance`."""

    kind: Literal["river_level", "snow_depth"] = "river_level"
    mount_height: float | None = Field(None, gt=0, description="sensor height above the gauge datum / ground, m")
    # Speed of sound: used only when the driver's device does not compensate by itself.
    air_temperature: float | None = Field(None, ge=-60, le=70, description="fixed air temperature, °C "
                                          "(with temperature_from: used while that sensor has no fresh reading)")
    temperature_from: Name | None = Field(None, description="id of a bme280 sensor whose air_temperature to use")
    temperature_max_age: Duration = Field(900.0, description="older temperature readings are not used")
    median_window: int = Field(1, ge=1, le=101, description="median of the last N levels (1: off)")
    max_jump: float | None = Field(None, gt=0, description="m per reading beyond which a reading is suspect")
    # River
    alert_levels: AlertLevels | None = None
    hysteresis: float = Field(0.05, ge=0, description="m a level (or snowfall_24h) must fall below a stage to leave it")
    fast_interval: Duration | None = Field(None, description="interval while at/above standby or rising fast")
    rise_rate: float | None = Field(None, gt=0, description="m/h of rise that switches to fast_interval")
    rise_window: Duration = Field(900.0, description="time over which the rise rate is measured")
    # Snow
    snowfall_deadband: float = Field(0.01, ge=0, description="m of depth gain below which it is noise, not snow")
    removal_threshold: float | None = Field(None, gt=0, description="m of snowfall in 24 h that calls for removal")

    @model_validator(mode="after")
    def _consistent(self) -> "DistanceOptions":
        river = self.kind == "river_level"
        needs_mount = [k for k in ("alert_levels", "removal_threshold") if getattr(self, k) is not None]
        if needs_mount and self.mount_height is None:
            raise ValueError(f"{needs_mount[0]} needs mount_height (levels are measured from it)")
        if not river and (self.alert_levels is not None or self.fast_interval is not None or self.rise_rate is not None):
            raise ValueError("alert_levels, fast_interval and rise_rate are for kind river_level")
        if river and self.removal_threshold is not None:
            raise ValueError("removal_threshold is for kind snow_depth")
        if self.fast_interval is not None:
            if self.alert_levels is None and self.rise_rate is None:
                raise ValueError("fast_interval needs alert_levels or rise_rate (what switches it on)")
            if self.fast_interval >= self.interval:
                raise ValueError(f"fast_interval ({self.fast_interval:g}s) must be shorter than interval "
                                 f"({self.interval:g}s)")
        elif self.rise_rate is not None:
            raise ValueError("rise_rate needs fast_interval (the interval it switches to)")
        return self


class Driver(ABC):
    """Base of every driver. Subclasses set Options and implement read(); one
    that does not is refused when the registry loads it, with its name."""

    name: ClassVar[str] = ""  # set by the registry from the entry-point name
    summary: ClassVar[str] = ""
    Options: ClassVar[type[SensorOptions]] = SensorOptions
    event_driven: ClassVar[bool] = False
    # Distance sensors: does the device correct for air temperature itself? If
    # not, the pipeline rescales `distance` from the speed of sound the device
    # assumed to the one at the measured air temperature.
    temperature_compensated: ClassVar[bool] = True
    assumed_sound_speed: ClassVar[float] = 343.0  # m/s the device's distance is based on

    def __init__(self, options: SensorOptions, devices: Devices | None = None):
        self.options = options
        self.devices = devices or HARDWARE  # the seam to the hardware, chosen per sensor (gateway/sdk/devices.py)

    @property
    def kind(self) -> str:
        return getattr(self.options, "kind", "")

    def open(self) -> None:
        """Open the device. Called before the first read and after a failure."""

    @abstractmethod
    def read(self, timeout: float) -> list[Reading]:
        """The readings taken now (polled) or that arrived within `timeout` s (event-driven)."""

    def close(self) -> None:
        """Release the device. Must be safe to call twice."""

    def reading(self, values: dict[str, Value], *, quality: str = "ok", error: str | None = None,
                device: str | None = None, kind: str | None = None) -> Reading:
        """A Reading stamped now, for this sensor."""
        return Reading(sensor=self.options.id, kind=kind or self.kind, values=values, observed_at=time.time(),
                       monotonic=time.monotonic(), quality=quality, error=error, device=device)
