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

from pydantic import Field

from gateway.sdk.devices import HARDWARE, Devices
from gateway.sdk.fields import Duration, Location, Name, Strict
from gateway.sdk.reading import Reading, Value


class DeviceError(Exception):
    """The device could not be opened or read (unplugged, no answer, bus error)."""


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
    """Keys of every distance sensor's driver (river level or snow depth). The
    driver reports the raw `distance`; the pipeline's own keys (mount_height,
    alert levels, snowfall ...) are composed in when the config is loaded
    (gateway/pipeline_options.py), so a driver never declares them."""

    kind: Literal["river_level", "snow_depth"] = "river_level"
    # The farthest distance in m the device measures (its datasheet; the largest model the driver
    # speaks to). `check` rejects a mount height beyond it: the sensor could not see low water or bare
    # ground. None: not known.
    measuring_range: ClassVar[float | None] = None

    def range_limit(self) -> float | None:
        """The range of the configured model, when options pick one (e.g. a 5 m or 10 m MaxBotix)."""
        return self.measuring_range


class Driver(ABC):
    """Base of every driver. Subclasses set Options and implement read(); one
    that does not is refused when the registry loads it, with its name."""

    name: ClassVar[str] = ""  # set by the registry from the entry-point name
    summary: ClassVar[str] = ""
    Options: ClassVar[type[SensorOptions]] = SensorOptions
    event_driven: ClassVar[bool] = False
    # Distance sensors: does the device correct for air temperature itself? If
    # not, the pipeline rescales `distance` from the speed of sound the device
    # assumed to the one at the measured air temperature. Every Reading from
    # `reading()` carries both, so the pipeline never needs the driver class.
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
                device: str | None = None, kind: str | None = None,
                at: tuple[float, float] | None = None) -> Reading:
        """A Reading for this sensor stamped now, or at `at` (wall clock, monotonic clock):
        the readings of one interval's summary share their time."""
        wall, mono = at if at is not None else (time.time(), time.monotonic())
        return Reading(sensor=self.options.id, kind=kind or self.kind, values=values, observed_at=wall,
                       monotonic=mono, quality=quality, error=error, device=device,
                       temperature_compensated=self.temperature_compensated,
                       assumed_sound_speed=self.assumed_sound_speed)
