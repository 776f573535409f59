"""From what a driver measured to what is published: derived values, alert
stages, plausibility, location. Pure functions plus one small state object per
sensor, so every rule is testable with a table."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import AlertLevels, SensorOptions
from gateway.reading import Reading, Value

STAGES = ("normal", "standby", "caution", "evacuation", "danger")


def water_level(distance: float, mount_height: float) -> float:
    """Water level above the gauge datum from the sensor's height and its distance to the water."""
    return round(mount_height - distance, 4)


def snow_depth(distance: float, mount_height: float) -> float:
    """Snow depth below a downward-looking sensor; never negative (bare ground reads as 0)."""
    return round(max(0.0, mount_height - distance), 4)


def alert_stage(level: float, previous: str, levels: AlertLevels, hysteresis: float) -> str:
    """The highest stage reached; a stage is left only once the level falls
    `hysteresis` below it, so a level hovering at a threshold does not flap."""
    reached = "normal"
    for stage in STAGES[1:]:
        if level >= getattr(levels, stage):
            reached = stage
    if STAGES.index(reached) >= STAGES.index(previous):
        return reached
    # Falling: step down only past each stage's threshold minus the hysteresis.
    stage = previous
    while stage != "normal" and level < getattr(levels, stage) - hysteresis:
        stage = STAGES[STAGES.index(stage) - 1]
    return stage


def is_jump(previous: float | None, current: float, max_jump: float | None) -> bool:
    return max_jump is not None and previous is not None and abs(current - previous) > max_jump


@dataclass
class SensorState:
    stage: str = "normal"
    last_level: float | None = None


class Pipeline:
    def __init__(self, options: SensorOptions, location: tuple[float, float] | None):
        self.options = options
        self.location = location
        self.state: dict[str | None, SensorState] = {}

    def process(self, reading: Reading) -> Reading:
        reading.location = self.location
        if reading.kind in ("river_level", "snow_depth"):
            self._distance(reading, self.state.setdefault(reading.device, SensorState()))
        return reading

    def _distance(self, r: Reading, state: SensorState) -> None:
        o = self.options
        mount = getattr(o, "mount_height", None)
        distance = r.value("distance")
        if mount is None or not isinstance(distance, (int, float)) or r.quality == "error":
            return
        name = "water_level" if r.kind == "river_level" else "snow_depth"
        level = water_level(distance, mount) if r.kind == "river_level" else snow_depth(distance, mount)
        r.values = {name: Value(level, "m"), **r.values}
        if is_jump(state.last_level, level, getattr(o, "max_jump", None)) and r.quality == "ok":
            r.quality = "suspect"
        else:
            state.last_level = level
        levels = getattr(o, "alert_levels", None)
        if r.kind == "river_level" and levels is not None and r.quality == "ok":
            stage = alert_stage(level, state.stage, levels, o.hysteresis)
            r.alert = stage != state.stage
            state.stage = stage
        if levels is not None and r.kind == "river_level":
            r.values["alert_level"] = Value(state.stage)
