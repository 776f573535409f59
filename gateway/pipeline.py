"""From what a driver measured to what is published: speed-of-sound
correction, derived levels, median filtering, plausibility, river alert stages
and fast interval, snowfall and the snow-removal call, location.

Pure functions plus one small state object per sensor (and remote device), so
every rule is testable with a table. Time comes from the reading
(`Reading.monotonic`), never from a clock read here.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import deque
from typing import Callable

from gateway import pipeline_state
from gateway.pipeline_state import SensorState
from gateway.pipeline_options import AlertLevels, DistanceRules, is_distance
from gateway.sdk.driver import SensorOptions
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

STAGES = ("normal", "standby", "caution", "evacuation", "danger")
SNOW_STAGES = ("normal", "removal")
HOUR = 3600.0
DAY = 86_400.0
JUMP_RESET = 3  # consecutive readings that agree on a new level make it the new baseline

Latest = Callable[[str], Reading | None]  # sensor id -> its latest reading, or None
Recall = Callable[[str], dict[str, str]]  # Buffer.recall: key prefix -> {key: text}
Remember = Callable[[str, str | None], None]  # Buffer.remember: key, text (None forgets)
# The options levels are derived with: when one changes, saved levels and windows no longer compare.
MEASURING_KEYS = ("kind", "mount_height", "air_temperature", "temperature_from", "temperature_max_age",
                  "median_window", "max_jump", "snowfall_deadband")


def state_key(sensor_id: str) -> str:
    return f"pipeline:{sensor_id}"


def saved_state(recall: Recall, sensor_id: str) -> str | None:
    """The state kept for `sensor_id` (Buffer.recall matches a prefix: river-1 must not find river-10)."""
    key = state_key(sensor_id)
    return recall(key).get(key)


def kept_fields(options: SensorOptions) -> frozenset[str]:
    """The parts of the state some rule of these options reads (the rest is not saved)."""
    keep = {"last_level": getattr(options, "max_jump", None) is not None,
            "recent": getattr(options, "median_window", 1) > 1,
            "history": getattr(options, "rise_rate", None) is not None,
            "snow": getattr(options, "kind", None) == "snow_depth"}
    return frozenset(k for k, used in keep.items() if used)


def forget_other_sensors(recall: Recall, remember: Remember, sensor_ids) -> None:
    """Drop the state of sensors no longer configured (removed while the daemon was stopped)."""
    keep = {state_key(i) for i in sensor_ids}
    for key in recall(state_key("")):
        if key not in keep:
            remember(key, None)


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
    if len(history) < 2:
        return None
    times, levels = zip(*history)
    try:
        return statistics.linear_regression(times, levels).slope * HOUR
    except statistics.StatisticsError:  # times too close for a fit (their variance underflows to 0)
        return None


def window_sum(events: deque[tuple[float, float]], now: float, span: float) -> float:
    return sum((amount for t, amount in events if t > now - span), 0.0)


class Pipeline:
    """One per sensor. What it needs to know of the device (does it compensate
    for air temperature, what speed of sound it assumed) comes with each
    reading; `latest` gives other sensors' latest readings (for `temperature_from`).

    State: with the first reading, what was kept for this sensor is looked up
    with `recall` (Buffer.recall, the buffer's `pipeline:<sensor>`: at the first
    reading, not before, so a pipeline that replaced another on a reload takes
    over what that one left); after a reading the changed state goes to
    `remember` (Buffer.remember), which writes it in the same commit."""

    def __init__(self, options: SensorOptions, location: tuple[float, float] | None, *,
                 latest: Latest | None = None, recall: Recall | None = None, remember: Remember | None = None,
                 boot: str | None = None):
        self.options = options
        self.location = location
        self.latest = latest or (lambda sensor_id: None)
        self.state: dict[str | None, SensorState] = {}
        self.key = state_key(options.id)
        self._remember = remember
        self._recall, self._boot = recall, boot
        self._measure = json.dumps([getattr(options, k, None) for k in MEASURING_KEYS], default=str)
        self._keep = kept_fields(options)
        self._remembered: list | None = None  # the states as last handed to `remember`
        self._warned_no_temperature = False
        self._unused_temperature = [k for k in ("air_temperature", "temperature_from")
                                    if getattr(options, k, None) is not None]

    @property
    def interval_override(self) -> float | None:
        """The interval the scheduler should use now (None: the configured one)."""
        if any(s.fast for s in self.state.values()):
            return getattr(self.options, "fast_interval", None)
        return None

    def process(self, reading: Reading) -> Reading:
        reading.location = self.location
        if is_distance(self.options) and reading.kind in ("river_level", "snow_depth"):
            if self._recall is not None:
                self._restore(reading)
            self._distance(reading, self.state.setdefault(reading.device, SensorState()))
            self._save(reading)
        return reading

    def _restore(self, first: Reading) -> None:
        saved = saved_state(self._recall, self.options.id)
        self._recall = None
        if saved is None:
            return
        self.state = pipeline_state.load(saved, first, self._boot, self._measure)
        stages = STAGES if first.kind == "river_level" else SNOW_STAGES
        for device, state in self.state.items():
            if state.stage not in stages:  # saved under another kind (or edited by hand)
                log.warning("sensor %s: saved stage %r is not one of %s; starting from normal",
                            self.options.id, state.stage, ", ".join(stages))
                self.state[device] = SensorState()

    def _save(self, reading: Reading) -> None:
        """Hand the state to `remember` when it changed (it goes in the commit with this reading)."""
        saved = pipeline_state.devices(self.state, self._keep)
        if self._remember is not None and saved != self._remembered:
            self._remember(self.key, pipeline_state.dump(saved, reading, self._boot, self._measure))
            self._remembered = saved

    def forget(self) -> None:
        """The sensor is gone from the config: drop its saved state."""
        if self._remember is not None:
            self._remember(self.key, None)

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
        o: DistanceRules = self.options  # type: ignore[assignment]
        distance = r.value("distance")
        if not isinstance(distance, (int, float)) or isinstance(distance, bool) or r.quality == "error":
            self._stage_value(r, state)
            return
        if not math.isfinite(distance):  # JSON has no NaN or infinity: say so instead of deriving from it
            r.values.pop("distance")
            r.quality, r.error = "error", r.error or f"distance is {distance}"
            self._stage_value(r, state)
            return
        if r.temperature_compensated:
            self._warn_unused_temperature()
        else:
            temp = self.air_temperature(r.monotonic)
            if temp is not None:
                distance = round(corrected_distance(distance, temp, r.assumed_sound_speed), 4)
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

    def _warn_unused_temperature(self) -> None:
        if self._unused_temperature:  # once: the device says so with every reading
            log.warning("sensor %s: the %s device compensates for air temperature itself; %s not used",
                        self.options.id, self.options.driver, " and ".join(self._unused_temperature))
            self._unused_temperature = []

    def _plausible(self, r: Reading, state: SensorState, raw: float) -> float:
        """Marks jumps `suspect` (published, never dropped, kept out of the
        filters); returns the median-filtered level of accepted readings."""
        o: DistanceRules = self.options  # type: ignore[assignment]
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
        o: DistanceRules = self.options  # type: ignore[assignment]
        if o.rise_rate is not None:  # the rise rate is the history's only use: kept (and saved) only for it
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
        o: DistanceRules = self.options  # type: ignore[assignment]
        now = r.monotonic
        # New snow only: count a gain over the lowest depth since the last counted
        # snowfall once it clears the dead band; settling and melt lower the reference.
        if state.snow_reference is None or depth < state.snow_reference:
            state.snow_reference = depth
        elif depth - state.snow_reference > o.snowfall_deadband:
            state.snowfall.append((now, round(depth - state.snow_reference, 4)))  # depths have 4 decimals
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
