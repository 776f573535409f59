"""From what a driver measured to what is published: speed-of-sound
correction, derived levels, median filtering, plausibility, river alert stages
and fast interval, snowfall and the snow-removal call, location.

Pure functions plus one small state object per sensor (and remote device), so
every rule is testable with a table. Time comes from the reading
(`Reading.monotonic`), never from a clock read here.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from gateway.sdk.driver import AlertLevels, DistanceOptions, Driver, SensorOptions
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

STAGES = ("normal", "standby", "caution", "evacuation", "danger")
SNOW_STAGES = ("normal", "removal")
HOUR = 3600.0
DAY = 86_400.0
JUMP_RESET = 3  # consecutive readings that agree on a new level make it the new baseline

Latest = Callable[[str], Reading | None]  # sensor id -> its latest reading, or None


# --- pure rules ----------------------------------------------------------------------------------

def speed_of_sound(temp_c: float) -> float:
    """m/s in dry air at `temp_c` °C: c = 331.3·sqrt(1 + T/273.15)."""
    return 331.3 * math.sqrt(1 + temp_c / 273.15)


def corrected_distance(distance: float, temp_c: float, assumed_speed: float) -> float:
    """A distance the device computed with `assumed_speed`, rescaled to the speed at `temp_c`
    (the time of flight is what was measured; distance = time · c / 2)."""
    return distance * speed_of_sound(temp_c) / assumed_speed


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


def removal_stage(snowfall_24h: float, previous: str, threshold: float, hysteresis: float) -> str:
    """`removal` once the 24 h snowfall reaches the threshold; back to `normal`
    only when it has fallen `hysteresis` below it."""
    if snowfall_24h >= threshold:
        return "removal"
    if previous == "removal" and snowfall_24h >= threshold - hysteresis:
        return "removal"
    return "normal"


def is_jump(previous: float | None, current: float, max_jump: float | None) -> bool:
    return max_jump is not None and previous is not None and abs(current - previous) > max_jump


def rise_rate(history: list[tuple[float, float]]) -> float | None:
    """m/h: least-squares slope of (seconds, level) points; None with fewer than
    two distinct times. A fit, not two end points, so one noisy reading cannot
    fake a flood."""
    if len(history) < 2 or history[-1][0] == history[0][0]:
        return None
    times, levels = zip(*history)
    return statistics.linear_regression(times, levels).slope * HOUR


def window_sum(events: deque[tuple[float, float]], now: float, span: float) -> float:
    return sum((amount for t, amount in events if t > now - span), 0.0)


# --- state ---------------------------------------------------------------------------------------

@dataclass
class SensorState:
    stage: str = "normal"
    last_level: float | None = None  # the last accepted (not suspect) raw level
    suspect_run: list[float] = field(default_factory=list)  # consecutive jumped levels
    recent: deque = field(default_factory=deque)  # accepted raw levels for the median
    history: deque = field(default_factory=deque)  # river: (monotonic, filtered level) for the rise rate
    snow_reference: float | None = None  # lowest depth since the last counted snowfall
    snowfall: deque = field(default_factory=deque)  # (monotonic, m of new snow)
    fast: bool = False


class Pipeline:
    """One per sensor. `driver` says whether the device compensates for air
    temperature (default: looked up by the sensor's driver name); `latest`
    gives other sensors' latest readings (for `temperature_from`)."""

    def __init__(self, options: SensorOptions, location: tuple[float, float] | None, *,
                 driver: type[Driver] | None = None, latest: Latest | None = None):
        self.options = options
        self.location = location
        if driver is None:
            from gateway import registry  # late: the registry is only needed when no class is given
            try:
                driver = registry.load(options.driver)
            except registry.DriverLoadError:  # a validated config always loads; a bare test object may not
                driver = Driver
        self.driver = driver
        self.latest = latest or (lambda sensor_id: None)
        self.state: dict[str | None, SensorState] = {}
        self._warned_no_temperature = False
        given = [k for k in ("air_temperature", "temperature_from") if getattr(options, k, None) is not None]
        if given and driver.temperature_compensated:
            log.warning("sensor %s: driver %s compensates for air temperature itself; %s not used",
                        options.id, options.driver, " and ".join(given))

    @property
    def interval_override(self) -> float | None:
        """The interval the scheduler should use now (None: the configured one)."""
        if any(s.fast for s in self.state.values()):
            return getattr(self.options, "fast_interval", None)
        return None

    def process(self, reading: Reading) -> Reading:
        reading.location = self.location
        if isinstance(self.options, DistanceOptions) and reading.kind in ("river_level", "snow_depth"):
            self._distance(reading, self.state.setdefault(reading.device, SensorState()))
        return reading

    # --- distance sensors --------------------------------------------------------------------------

    def air_temperature(self, now: float) -> float | None:
        """°C for the speed of sound: the named bme280's fresh reading, else the fixed value."""
        o = self.options
        if o.temperature_from is not None:
            r = self.latest(o.temperature_from)
            t = r.value("air_temperature") if r is not None and r.quality != "error" else None
            if isinstance(t, (int, float)) and now - r.monotonic <= o.temperature_max_age:
                self._warned_no_temperature = False
                return float(t)
            if not self._warned_no_temperature:
                log.warning("sensor %s: no fresh air_temperature from %s; %s", o.id, o.temperature_from,
                            "using air_temperature %g °C" % o.air_temperature if o.air_temperature is not None
                            else "distance not corrected for the speed of sound")
                self._warned_no_temperature = True
        return o.air_temperature

    def _distance(self, r: Reading, state: SensorState) -> None:
        o: DistanceOptions = self.options  # type: ignore[assignment]
        distance = r.value("distance")
        if not isinstance(distance, (int, float)) or isinstance(distance, bool) or r.quality == "error":
            self._stage_value(r, state)
            return
        if not math.isfinite(distance):  # JSON has no NaN or infinity: say so instead of deriving from it
            r.values.pop("distance")
            r.quality, r.error = "error", r.error or f"distance is {distance}"
            self._stage_value(r, state)
            return
        if not self.driver.temperature_compensated:
            temp = self.air_temperature(r.monotonic)
            if temp is not None:
                distance = round(corrected_distance(distance, temp, self.driver.assumed_sound_speed), 4)
                r.values["distance"] = Value(distance, "m")
                r.values.setdefault("air_temperature", Value(round(temp, 2), "°C"))
        if o.mount_height is None:
            return
        river = r.kind == "river_level"
        raw = water_level(distance, o.mount_height) if river else snow_depth(distance, o.mount_height)
        level = self._plausible(r, state, raw)
        r.values = {("water_level" if river else "snow_depth"): Value(level, "m"), **r.values}
        if r.quality == "ok":
            if river:
                self._river(r, state, level)
            else:
                self._snow(r, state, level)
        self._stage_value(r, state)

    def _plausible(self, r: Reading, state: SensorState, raw: float) -> float:
        """Marks jumps `suspect` (published, never dropped, kept out of the
        filters); returns the median-filtered level of accepted readings."""
        o: DistanceOptions = self.options  # type: ignore[assignment]
        if r.quality == "ok" and is_jump(state.last_level, raw, o.max_jump):
            run = state.suspect_run
            if run and abs(raw - run[-1]) > o.max_jump:
                run.clear()
            run.append(raw)
            if len(run) < JUMP_RESET:
                r.quality = "suspect"
                return raw
            # The level really moved (a remounted sensor, a ploughed snow field): start again from here,
            # and do not count the step as snowfall.
            state.recent.clear()
            state.history.clear()
            state.snow_reference = None
        state.suspect_run.clear()
        if r.quality != "ok":
            return raw
        state.last_level = raw
        state.recent.append(raw)
        while len(state.recent) > o.median_window:
            state.recent.popleft()
        return round(statistics.median(state.recent), 4)

    def _river(self, r: Reading, state: SensorState, level: float) -> None:
        o: DistanceOptions = self.options  # type: ignore[assignment]
        state.history.append((r.monotonic, level))
        while state.history and state.history[0][0] < r.monotonic - o.rise_window:
            state.history.popleft()
        if o.alert_levels is not None:
            stage = alert_stage(level, state.stage, o.alert_levels, o.hysteresis)
            r.alert = stage != state.stage
            state.stage = stage
        if o.fast_interval is not None:
            rate = rise_rate(list(state.history)) if o.rise_rate is not None else None
            state.fast = state.stage != "normal" or (rate is not None and rate > o.rise_rate)

    def _snow(self, r: Reading, state: SensorState, depth: float) -> None:
        o: DistanceOptions = self.options  # type: ignore[assignment]
        now = r.monotonic
        # New snow only: count a gain over the lowest depth since the last counted
        # snowfall once it clears the dead band; settling and melt lower the reference.
        if state.snow_reference is None or depth < state.snow_reference:
            state.snow_reference = depth
        elif depth - state.snow_reference > o.snowfall_deadband:
            state.snowfall.append((now, depth - state.snow_reference))
            state.snow_reference = depth
        while state.snowfall and state.snowfall[0][0] <= now - DAY:
            state.snowfall.popleft()
        fall_1h, fall_24h = window_sum(state.snowfall, now, HOUR), window_sum(state.snowfall, now, DAY)
        r.values["snowfall_1h"] = Value(round(fall_1h, 4), "m")
        r.values["snowfall_24h"] = Value(round(fall_24h, 4), "m")
        if o.removal_threshold is not None:
            stage = removal_stage(fall_24h, state.stage, o.removal_threshold, o.hysteresis)
            r.alert = stage != state.stage
            state.stage = stage

    def _stage_value(self, r: Reading, state: SensorState) -> None:
        o = self.options
        if getattr(o, "alert_levels", None) is not None or getattr(o, "removal_threshold", None) is not None:
            r.values["alert_level"] = Value(state.stage)
