"""Simulated sensors for demos and CI: deterministic physics, no hardware.

Simulated time runs `time_scale` times faster than the wall clock, so a demo
can show a storm in minutes. Values carry the same kinds and units as the real
drivers (SPEC §3)."""

from __future__ import annotations

import statistics
import time
from typing import Literal

from pydantic import Field

from gateway.sdk.driver import DistanceOptions, Driver, SensorOptions
from gateway.sdk.fields import Duration
from gateway.sdk.pseudonym import pseudonym
from gateway.sdk.reading import Reading, Value
from hil.models import BeaconCrowd, Hydrograph, Snowpack


class _SimClock:
    def __init__(self, scale: float):
        self.scale = scale
        self.start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.start) * self.scale


class SimRiverOptions(DistanceOptions):
    kind: Literal["river_level"] = "river_level"
    mount_height: float = Field(6.0, gt=0)
    seed: int = 0
    time_scale: float = Field(1.0, gt=0, description="simulated seconds per real second")
    storm_at: Duration = 600.0
    base_level: float = 0.8
    peak_level: float = 3.2


class SimRiver(Driver):
    summary = "simulated river: base flow, a storm rise and recession, sensor noise"
    Options = SimRiverOptions

    def open(self) -> None:
        o = self.options
        self.clock = _SimClock(o.time_scale)
        self.river = Hydrograph(seed=o.seed, base=o.base_level, peak=o.peak_level, storm_at=o.storm_at)

    def read(self, timeout: float) -> list[Reading]:
        distance = self.options.mount_height - self.river.level(self.clock.now())
        return [self.reading({"distance": Value(round(distance, 3), "m")})]


class SimSnowOptions(DistanceOptions):
    kind: Literal["snow_depth"] = "snow_depth"
    mount_height: float = Field(2.0, gt=0)
    seed: int = 0
    time_scale: float = Field(1.0, gt=0, description="simulated seconds per real second")
    start_depth: float = Field(0.2, ge=0)


class SimSnow(Driver):
    summary = "simulated snow depth: snowfall events, settling, a daily temperature cycle"
    Options = SimSnowOptions

    def open(self) -> None:
        o = self.options
        self.clock = _SimClock(o.time_scale)
        self.snow = Snowpack(seed=o.seed, start_depth=o.start_depth)

    def read(self, timeout: float) -> list[Reading]:
        depth, temp = self.snow.step(self.clock.now())
        distance = self.options.mount_height - min(depth, self.options.mount_height)
        return [self.reading({"distance": Value(round(distance, 3), "m"),
                              "air_temperature": Value(round(temp, 2), "°C")})]


class SimBeaconOptions(SensorOptions):
    seed: int = 0
    population: int = Field(5, ge=1, le=1000)
    path_loss_exponent: float = Field(2.0, gt=0)


class SimBeacon(Driver):
    summary = "simulated BLE beacons arriving and leaving, with RSSI noise"
    Options = SimBeaconOptions
    kind = "beacon"

    def open(self) -> None:
        self.crowd = BeaconCrowd(seed=self.options.seed, population=self.options.population)
        self.salt = f"sim-beacon-{self.options.seed}".encode()

    def read(self, timeout: float) -> list[Reading]:
        out = []
        for b in self.crowd.tick():
            rssi = statistics.median(b["rssi"])
            distance = 10 ** ((b["tx_power"] - rssi) / (10 * self.options.path_loss_exponent))
            out.append(self.reading({
                "rssi": Value(rssi, "dBm"),
                "count": Value(len(b["rssi"])),
                "tx_power": Value(b["tx_power"], "dBm"),
                "distance": Value(round(distance, 2), "m"),
                "battery": Value(b["battery"], "V"),
            }, device=pseudonym(self.salt, b["raw"])))
        return out


__all__ = ["SimRiver", "SimSnow", "SimBeacon"]
