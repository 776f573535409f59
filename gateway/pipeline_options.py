"""The pipeline's own keys of a distance sensor: what turns a distance into a
water level or a snow depth, and when that is an alert. They sit beside the
driver's keys in one sensor entry (SPEC §2); `compose(driver.Options)` joins
them to a distance driver's options when the config is loaded, so a driver
never declares them and the YAML stays as it is.

Every length is in m and every key states its range. `check` also rejects
what cannot be right on site: a mount height beyond the sensor's range
(4500 is mm written for m), stages out of order, stages or a removal
threshold at or above the mount height.
"""

from __future__ import annotations

from functools import cache

from pydantic import Field, model_validator

from gateway.sdk.driver import DistanceOptions, SensorOptions
from gateway.sdk.fields import Duration, Name, Strict, key_error

MAX_MOUNT_HEIGHT = 100.0  # m: where a driver does not say its range
STAGES = ("standby", "caution", "evacuation", "danger")
M = {"unit": "m"}


def _stage(name: str) -> float:
    return Field(ge=0, le=MAX_MOUNT_HEIGHT, json_schema_extra=M, description=f"{name}: water level above the datum")


def looks_like(value: float, limit: float) -> str:
    """A hint for a length in m beyond `limit` that fits as mm or cm ('' when neither does)."""
    fits = [f"{unit} ({value / scale:g} m)" for unit, scale in (("mm", 1000), ("cm", 100))
            if value > limit and 0.1 <= value / scale <= limit]  # no sensor hangs 10 cm or less above
    return f"; {value:g} looks like {' or '.join(fits)}: write metres" if fits else ""


class AlertLevels(Strict):
    """The four Japanese river stages, water level in m above the gauge datum:
    standby 水防団待機水位, caution 氾濫注意水位, evacuation 避難判断水位, danger 氾濫危険水位."""

    standby: float = _stage("水防団待機水位")
    caution: float = _stage("氾濫注意水位")
    evacuation: float = _stage("避難判断水位")
    danger: float = _stage("氾濫危険水位")

    @model_validator(mode="after")
    def _rising(self) -> AlertLevels:
        for lower, upper in zip(STAGES, STAGES[1:]):
            low, high = getattr(self, lower), getattr(self, upper)
            if high <= low:
                raise ValueError(f"alert levels must rise: standby < caution < evacuation < danger "
                                 f"({upper} {high:g} m is not above {lower} {low:g} m)")
        return self


class DistanceRules(Strict):
    """The pipeline's keys. Only ever used composed with a driver's DistanceOptions
    (`compose`), whose kind, interval and range the cross-checks read."""

    mount_height: float | None = Field(None, gt=0, le=MAX_MOUNT_HEIGHT, json_schema_extra=M,
                                       description="sensor height above the gauge datum / ground "
                                                   "(at most the sensor's range)")
    # Speed of sound: used only when the device does not compensate by itself.
    air_temperature: float | None = Field(None, ge=-60, le=70, json_schema_extra={"unit": "°C"},
                                          description="fixed air temperature (with temperature_from: used while "
                                                      "that sensor has no fresh reading)")
    temperature_from: Name | None = Field(None, description="id of a bme280 sensor whose air_temperature to use")
    temperature_max_age: Duration = Field(900.0, description="older temperature readings are not used")
    median_window: int = Field(1, ge=1, le=101, description="median of the last N levels (1: off)")
    max_jump: float | None = Field(None, gt=0, le=10, json_schema_extra=M,
                                   description="change per reading beyond which a reading is suspect")
    # River
    alert_levels: AlertLevels | None = Field(None, description="m above the gauge datum, rising, below mount_height")
    hysteresis: float = Field(0.05, ge=0, le=1, json_schema_extra=M,
                              description="how far a level (or snowfall_24h) must fall below a stage to leave it")
    fast_interval: Duration | None = Field(None, description="interval while at/above standby or rising fast")
    rise_rate: float | None = Field(None, gt=0, le=10, json_schema_extra={"unit": "m/h"},
                                    description="rise that switches to fast_interval")
    rise_window: Duration = Field(900.0, description="time over which the rise rate is measured")
    # Snow
    snowfall_deadband: float = Field(0.01, ge=0, le=0.5, json_schema_extra=M,
                                     description="depth gain below which it is noise, not snow")
    removal_threshold: float | None = Field(None, gt=0, le=5, json_schema_extra=M,
                                            description="snowfall in 24 h that calls for removal")

    @model_validator(mode="after")
    def _consistent(self) -> DistanceRules:
        self._kind_rules()
        self._fast_rules()
        self._heights()
        return self

    def _kind_rules(self) -> None:
        river = self.kind == "river_level"
        for key in ("alert_levels", "removal_threshold"):
            if getattr(self, key) is not None and self.mount_height is None:
                raise key_error(key, f"{key} needs mount_height (levels are measured from it)")
        for key in ("alert_levels", "fast_interval", "rise_rate"):
            if not river and getattr(self, key) is not None:
                raise key_error(key, "alert_levels, fast_interval and rise_rate are for kind river_level")
        if river and self.removal_threshold is not None:
            raise key_error("removal_threshold", "removal_threshold is for kind snow_depth")

    def _fast_rules(self) -> None:
        if self.fast_interval is not None:
            if self.alert_levels is None and self.rise_rate is None:
                raise key_error("fast_interval", "fast_interval needs alert_levels or rise_rate (what switches it on)")
            if self.fast_interval >= self.interval:
                raise key_error("fast_interval", f"fast_interval ({self.fast_interval:g}s) must be shorter than "
                                f"interval ({self.interval:g}s)")
        elif self.rise_rate is not None:
            raise key_error("rise_rate", "rise_rate needs fast_interval (the interval it switches to)")

    def _heights(self) -> None:
        mount = self.mount_height
        if mount is None:
            return
        limit = self.range_limit()
        if mount > (limit or MAX_MOUNT_HEIGHT):
            what = (f"beyond the {self.driver} sensor's range ({limit:g} m)" if limit is not None
                    else f"higher than any distance sensor is mounted ({MAX_MOUNT_HEIGHT:g} m)")
            raise key_error("mount_height", f"{mount:g} m is {what}; mount_height is the sensor's height in m above "
                            "the gauge datum / ground" + looks_like(mount, limit or MAX_MOUNT_HEIGHT))
        for stage in STAGES if self.alert_levels is not None else ():
            level = getattr(self.alert_levels, stage)
            if level >= mount:
                raise key_error(f"alert_levels.{stage}", f"{stage} {level:g} m is not below mount_height "
                                f"({mount:g} m): the water cannot rise to the sensor (both are m above the datum)")
        if self.removal_threshold is not None and self.removal_threshold >= mount:
            raise key_error("removal_threshold", f"{self.removal_threshold:g} m of snowfall is not below "
                            f"mount_height ({mount:g} m): the sensor would be buried")


def _mount_height(limit: float) -> float:
    return Field(None, gt=0, le=limit, json_schema_extra=M,
                 description="sensor height above the gauge datum / ground (at most the sensor's range)")


@cache
def compose(options: type[SensorOptions]) -> type[SensorOptions]:
    """A distance driver's options with the pipeline's keys; other options as they are.
    Where the driver states its range, mount_height's own bound is that range."""
    if not issubclass(options, DistanceOptions) or issubclass(options, DistanceRules):
        return options
    namespace: dict = {"__module__": options.__module__, "__doc__": options.__doc__,
                       "__qualname__": options.__qualname__}
    if options.measuring_range is not None and "mount_height" not in options.model_fields:
        namespace["__annotations__"] = {"mount_height": float | None}
        namespace["mount_height"] = _mount_height(options.measuring_range)
    return type(options.__name__, (options, DistanceRules), namespace)


def is_distance(options: SensorOptions) -> bool:
    """Does the pipeline derive levels for this sensor?"""
    return isinstance(options, DistanceRules)
