"""The river and snow rules of the pipeline, as tables (issue 3: alert stages
with hysteresis, fast interval, snowfall, the removal call, speed-of-sound
correction, suspect jumps)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from gateway.pipeline_options import AlertLevels, compose
from gateway.sdk.driver import DistanceOptions, Driver
from gateway.config import ConfigError, parse_config
from gateway.pipeline import Pipeline, alert_stage, corrected_distance, removal_stage, rise_rate, speed_of_sound
from gateway.sdk.reading import Reading, Value

LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}


class SelfCompensating(Driver):
    temperature_compensated = True


class TimeOfFlight(Driver):  # e.g. HC-SR04: distance from the echo time at the datasheet's 58 µs/cm
    temperature_compensated = False
    assumed_sound_speed = 20000 / 58


def options(**keys) -> DistanceOptions:
    return compose(DistanceOptions).model_validate({"id": "s-1", "driver": "test", "interval": "60s", **keys})


class Fed(Pipeline):
    """A pipeline fed readings from `driver`'s device: each reading carries what
    Driver.reading() stamps on it (compensation, assumed speed of sound)."""

    def __init__(self, options, location, *, driver: type[Driver] = SelfCompensating, **kw):
        super().__init__(options, location, **kw)
        self.device = driver


def feed(pipeline: Fed, points, kind: str = "river_level", extra=None) -> list[Reading]:
    """points: (seconds, distance in m) — or (seconds, None) for an error reading."""
    out = []
    for t, d in points:
        values = {} if d is None else {"distance": Value(d, "m")}
        r = Reading(sensor="s-1", kind=kind, values={**values, **(extra or {})}, monotonic=float(t),
                    quality="error" if d is None else "ok", error="no_target" if d is None else None,
                    temperature_compensated=pipeline.device.temperature_compensated,
                    assumed_sound_speed=pipeline.device.assumed_sound_speed)
        out.append(pipeline.process(r))
    return out


def river(**keys) -> Pipeline:
    return Fed(options(mount_height=6.0, **keys), None, driver=SelfCompensating)


# --- alert stages with hysteresis ------------------------------------------------------------------

@pytest.mark.parametrize("levels, expected", [
    ([1.0, 1.4, 1.49], ["normal", "normal", "normal"]),
    ([1.0, 1.5], ["normal", "standby"]),                                    # at the threshold counts
    ([1.0, 2.7], ["normal", "evacuation"]),                                 # a jump over stages lands on the highest
    ([1.6, 1.47, 1.46, 1.44], ["standby", "standby", "standby", "normal"]),  # leaves only 0.05 below
    ([1.6, 1.49, 1.51, 1.49, 1.50], ["standby"] * 5),                       # hovering does not flap
    ([3.1, 2.96, 2.94, 2.44, 1.0], ["danger", "danger", "evacuation", "caution", "normal"]),
    ([3.1, 0.5], ["danger", "normal"]),                                     # a big fall steps all the way down
])
def test_alert_stages_with_hysteresis(levels, expected):
    p = river(alert_levels=LEVELS)
    readings = feed(p, [(i * 60, 6.0 - lv) for i, lv in enumerate(levels)])
    assert [r.value("alert_level") for r in readings] == expected
    # Every stage change (and only a change) is an alert, sent ahead of the backlog.
    changes = [i > 0 and expected[i] != expected[i - 1] or (i == 0 and expected[0] != "normal")
               for i in range(len(expected))]
    assert [r.alert for r in readings] == changes


@pytest.mark.parametrize("level, previous, hysteresis, expected", [
    (2.0, "normal", 0.05, "caution"),
    (1.96, "caution", 0.05, "caution"),
    (1.94, "caution", 0.05, "standby"),
    (1.94, "caution", 0.0, "standby"),
    (1.99, "caution", 0.0, "standby"),
    (1.2, "caution", 0.5, "standby"),   # 1.2 < 2.0-0.5 leaves caution, but not < 1.5-0.5: stays standby
])
def test_alert_stage_function(level, previous, hysteresis, expected):
    assert alert_stage(level, previous, AlertLevels(**LEVELS), hysteresis) == expected


def test_water_level_is_mount_height_minus_distance_and_comes_first():
    (r,) = feed(river(), [(0, 5.266)])
    assert list(r.values) == ["water_level", "distance"]
    assert r.value("water_level") == pytest.approx(0.734)
    assert "alert_level" not in r.values  # only with alert_levels


def test_error_reading_keeps_its_stage_and_derives_nothing():
    p = river(alert_levels=LEVELS)
    a, b = feed(p, [(0, 6.0 - 2.1), (60, None)])
    assert a.value("alert_level") == "caution"
    assert b.quality == "error" and b.value("alert_level") == "caution" and "water_level" not in b.values
    assert not b.alert


# --- fast interval -----------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, points, expected", [
    # at or above standby -> fast; back below standby - hysteresis -> normal
    ({"alert_levels": LEVELS}, [(0, 1.0), (60, 1.5), (120, 1.46), (180, 1.44)], [None, 10.0, 10.0, None]),
    # rising faster than rise_rate (m/h) over the window -> fast, below it -> normal
    ({"rise_rate": 0.3}, [(0, 1.0), (600, 1.01), (1200, 1.02)], [None, None, None]),          # 0.06 m/h
    ({"rise_rate": 0.3}, [(0, 1.0), (600, 1.1), (1200, 1.2)], [None, 10.0, 10.0]),            # 0.6 m/h
    ({"rise_rate": 0.3}, [(0, 1.0), (600, 1.1), (1200, 1.1), (1800, 1.1), (2400, 1.1)],        # levels off
     [None, 10.0, None, None, None]),  # the 15 min window has only the flat part
    ({"rise_rate": 0.3}, [(0, 1.0), (600, 0.8)], [None, None]),                                # falling fast
    ({"rise_rate": 0.3, "alert_levels": LEVELS}, [(0, 1.0), (600, 1.6), (1200, 1.6), (1800, 1.6)],
     [None, 10.0, 10.0, 10.0]),                                                                # standby keeps it fast
])
def test_fast_interval(keys, points, expected):
    p = river(fast_interval="10s", **keys)
    got = []
    for t, level in points:
        feed(p, [(t, 6.0 - level)])
        got.append(p.interval_override)
    assert got == expected


def test_rise_rate_ignores_points_older_than_the_window():
    p = river(fast_interval="10s", rise_rate=0.3, rise_window="10m")
    feed(p, [(0, 6.0 - 0.5), (3000, 6.0 - 1.0), (3300, 6.0 - 1.0), (3600, 6.0 - 1.0)])
    assert p.interval_override is None  # the old rise is out of the window


# --- speed of sound ------------------------------------------------------------------------------------

@pytest.mark.parametrize("temp, speed", [(0.0, 331.3), (20.0, 343.21), (-10.0, 325.18), (30.0, 349.02)])
def test_speed_of_sound_formula(temp, speed):
    assert speed_of_sound(temp) == pytest.approx(speed, abs=0.01)


@pytest.mark.parametrize("echo_us, temp, expected", [
    (5831, 20.0, 1.00064),    # HC-SR04 datasheet rule, sqrt formula
    (5831, -10.0, 0.94806),
])
def test_time_of_flight_vectors(echo_us, temp, expected):
    device_distance = echo_us / 58 / 100  # what the device reports at 58 µs/cm
    assert corrected_distance(device_distance, temp, 20000 / 58) == pytest.approx(expected, abs=0.00001)


@pytest.mark.parametrize("driver, keys, latest_temp, expected_distance, expected_temp", [
    (TimeOfFlight, {"air_temperature": 20.0}, None, 1.0006, 20.0),
    (TimeOfFlight, {"air_temperature": -10.0}, None, 0.9480, -10.0),
    (TimeOfFlight, {}, None, 1.0053, None),                                   # nothing known: as the device said
    (SelfCompensating, {"air_temperature": -10.0}, None, 1.0053, None),       # the device compensates itself
    (TimeOfFlight, {"temperature_from": "env-1"}, -10.0, 0.9480, -10.0),
    (TimeOfFlight, {"temperature_from": "env-1", "air_temperature": 20.0}, -10.0, 0.9480, -10.0),
    (TimeOfFlight, {"temperature_from": "env-1", "air_temperature": 20.0}, None, 1.0006, 20.0),  # fallback
    (TimeOfFlight, {"temperature_from": "env-1"}, None, 1.0053, None),
])
def test_speed_of_sound_correction(driver, keys, latest_temp, expected_distance, expected_temp):
    env = None
    if latest_temp is not None:
        env = Reading(sensor="env-1", kind="environment", values={"air_temperature": Value(latest_temp, "°C")},
                      monotonic=0.0)
    p = Fed(options(mount_height=3.0, **keys), None, driver=driver,
                 latest=lambda sid: env if sid == "env-1" else None)
    (r,) = feed(p, [(10, round(5831 / 58 / 100, 4))])
    assert r.value("distance") == pytest.approx(expected_distance, abs=0.0001)
    assert r.value("water_level") == pytest.approx(3.0 - expected_distance, abs=0.0001)
    assert r.value("air_temperature") == expected_temp


def test_stale_or_failed_temperature_is_not_used():
    env = Reading(sensor="env-1", kind="environment", values={"air_temperature": Value(-10.0, "°C")}, monotonic=0.0)
    p = Fed(options(temperature_from="env-1", air_temperature=20.0, temperature_max_age="5m"), None,
                 driver=TimeOfFlight, latest=lambda sid: env)
    fresh, stale = feed(p, [(299, 1.0), (301, 1.0)])
    assert fresh.value("air_temperature") == -10.0 and stale.value("air_temperature") == 20.0
    env.quality, env.monotonic = "error", 400.0
    (failed,) = feed(p, [(401, 1.0)])
    assert failed.value("air_temperature") == 20.0


def test_sr50a_snow_vector():
    """SR50A manual, Formula 1: SR50A 2.000 m at -10 °C, assuming 331.4 m/s at 0 °C, 2.5 m mount -> 1.96305 m, 0.53695 m."""
    class Sr50a(Driver):
        temperature_compensated = False
        assumed_sound_speed = 331.4
    p = Fed(options(kind="snow_depth", mount_height=2.5, air_temperature=-10.0), None, driver=Sr50a)
    (r,) = feed(p, [(0, 2.0)], kind="snow_depth")
    # 331.3 vs the device's 331.4 at 0 °C moves the result by 0.6 mm; the vector used 331.4 for both.
    assert r.value("distance") == pytest.approx(1.96305, abs=0.001)
    assert r.value("snow_depth") == pytest.approx(0.53695, abs=0.001)


# --- snow: depth, median, snowfall, removal ---------------------------------------------------------------

def snow(**keys) -> Pipeline:
    return Fed(options(kind="snow_depth", mount_height=2.0, **keys), None, driver=SelfCompensating)


@pytest.mark.parametrize("distance, depth", [(2.0, 0.0), (2.3, 0.0), (1.5, 0.5), (0.2, 1.8)])
def test_snow_depth_clamped_at_zero(distance, depth):
    (r,) = feed(snow(), [(0, distance)], kind="snow_depth")
    assert r.value("snow_depth") == depth
    assert list(r.values)[0] == "snow_depth"


@pytest.mark.parametrize("depths, window, expected", [
    ([0.50, 0.52, 0.90, 0.51, 0.53], 1, [0.50, 0.52, 0.90, 0.51, 0.53]),
    ([0.50, 0.52, 0.90, 0.51, 0.53], 3, [0.50, 0.51, 0.52, 0.52, 0.53]),   # the 0.90 echo off a snowflake goes
    ([0.50, 0.52, 0.90, 0.51, 0.53], 5, [0.50, 0.51, 0.52, 0.515, 0.52]),
])
def test_median_filtering(depths, window, expected):
    readings = feed(snow(median_window=window), [(i * 600, 2.0 - d) for i, d in enumerate(depths)], kind="snow_depth")
    assert [r.value("snow_depth") for r in readings] == pytest.approx(expected)


@pytest.mark.parametrize("depths, step, fall_1h, fall_24h", [
    # (depths every `step` seconds) -> snowfall_1h and snowfall_24h after the last one
    ([0.50, 0.50, 0.50], 600, 0.0, 0.0),
    ([0.50, 0.52, 0.55], 600, 0.05, 0.05),
    ([0.50, 0.55, 0.53, 0.58], 600, 0.10, 0.10),        # settling is not negative snowfall; new snow on top counts
    ([0.50, 0.505, 0.50, 0.506, 0.50], 600, 0.0, 0.0),  # noise inside the dead band is not snow
    ([0.50, 0.505, 0.51, 0.515, 0.52], 600, 0.02, 0.02),  # slow steady snowfall still counts
    ([0.50, 0.60, 0.60, 0.60], 1800, 0.0, 0.10),        # the fall is more than an hour ago
    ([0.50, 0.60] + [0.60] * 48, 1800, 0.0, 0.0),       # ... and more than a day ago
    ([0.50, 0.40, 0.30, 0.35], 600, 0.05, 0.05),        # melt then new snow on top
])
def test_snowfall_counts_new_snow_only(depths, step, fall_1h, fall_24h):
    readings = feed(snow(), [(i * step, 2.0 - d) for i, d in enumerate(depths)], kind="snow_depth")
    assert readings[-1].value("snowfall_1h") == pytest.approx(fall_1h, abs=1e-6)
    assert readings[-1].value("snowfall_24h") == pytest.approx(fall_24h, abs=1e-6)


@pytest.mark.parametrize("gains, expected", [
    ([0.0, 0.04, 0.04, 0.04], ["normal", "normal", "normal", "removal"]),   # reaches 0.12 of 0.12
    ([0.0, 0.2], ["normal", "removal"]),
    ([0.0, 0.05], ["normal", "normal"]),
])
def test_removal_call(gains, expected):
    p = snow(removal_threshold=0.12)
    depth, points = 0.3, []
    for i, g in enumerate(gains):
        depth += g
        points.append((i * 600, 2.0 - depth))
    readings = feed(p, points, kind="snow_depth")
    assert [r.value("alert_level") for r in readings] == expected
    assert readings[-1].alert == (expected[-1] != expected[-2])


def test_removal_call_ends_when_the_day_has_passed():
    p = snow(removal_threshold=0.1, hysteresis=0.02)
    readings = feed(p, [(0, 1.7), (600, 1.5), (DAY_S := 86_400, 1.5), (DAY_S + 700, 1.5)], kind="snow_depth")
    assert [r.value("alert_level") for r in readings] == ["normal", "removal", "removal", "normal"]
    assert [r.alert for r in readings] == [False, True, False, True]


@pytest.mark.parametrize("fall, previous, expected", [
    (0.10, "normal", "removal"), (0.09, "normal", "normal"), (0.09, "removal", "removal"),
    (0.079, "removal", "normal"),
])
def test_removal_stage_hysteresis(fall, previous, expected):
    assert removal_stage(fall, previous, 0.10, 0.02) == expected


# --- suspect jumps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels, expected", [
    ([1.0, 1.05, 1.1], ["ok", "ok", "ok"]),
    ([1.0, 1.5, 1.05], ["ok", "suspect", "ok"]),            # a spike: marked, kept, not the new baseline
    ([1.0, 1.5, 1.5, 1.5, 1.5], ["ok", "suspect", "suspect", "ok", "ok"]),  # a real step: accepted on the 3rd
    ([1.0, 1.5, 2.5, 1.02], ["ok", "suspect", "suspect", "ok"]),
])
def test_suspect_jumps_are_marked_never_dropped(levels, expected):
    p = river(max_jump=0.3, alert_levels=LEVELS)
    readings = feed(p, [(i * 60, 6.0 - lv) for i, lv in enumerate(levels)])
    assert len(readings) == len(levels)
    assert [r.quality for r in readings] == expected
    assert [r.value("water_level") for r in readings] == pytest.approx(levels)  # the measured level is published
    if levels == [1.0, 1.5, 2.5, 1.02]:
        assert all(r.value("alert_level") == "normal" for r in readings)  # a suspect level moves no stage


def test_a_ploughed_then_refilled_field_is_no_snowfall():
    # Ploughed from 0.5 m to 0.1 m (a jump, accepted on the third agreeing reading), then a snow pile dumped
    # back to 0.5 m (again a step): neither is new snow.
    depths = [0.5, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5]
    readings = feed(snow(max_jump=0.1), [(i * 600, 2.0 - d) for i, d in enumerate(depths)], kind="snow_depth")
    assert [r.quality for r in readings] == ["ok", "suspect", "suspect", "ok", "suspect", "suspect", "ok"]
    assert readings[-1].value("snow_depth") == 0.5
    assert readings[-1].value("snowfall_24h") == 0.0


def test_suspect_depth_does_not_count_as_snowfall():
    readings = feed(snow(max_jump=0.1), [(0, 1.5), (600, 1.0), (1200, 1.495)], kind="snow_depth")
    assert [r.quality for r in readings] == ["ok", "suspect", "ok"]
    assert "snowfall_24h" not in readings[1].values
    assert readings[-1].value("snowfall_24h") == 0.0


# --- config ----------------------------------------------------------------------------------------------

BASE = """
gateway: {id: gw}
storage: {path: /tmp/x.db}
sensors:
  - {id: env-1, driver: bme280, interval: 60s}
  - {id: river-1, driver: sim_river, interval: 60s, %s}
"""


@pytest.mark.parametrize("keys, message", [
    ("temperature_from: nope", "must name a bme280 sensor (no sensor 'nope')"),
    ("temperature_from: river-1", "must name a bme280 sensor (sensor 'river-1' uses driver 'sim_river')"),
    ("fast_interval: 10s", "fast_interval needs alert_levels or rise_rate"),
    ("rise_rate: 0.3", "rise_rate needs fast_interval"),
    ("fast_interval: 2m, rise_rate: 0.3", "must be shorter than interval"),
    ("removal_threshold: 0.1", "removal_threshold is for kind snow_depth"),
])
def test_config_rejects(keys, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE % keys, "gw.yaml")
    assert any(message in str(p) for p in exc.value.problems), exc.value.problems


def test_config_accepts_temperature_from_a_bme280():
    config = parse_config(BASE % "temperature_from: env-1, fast_interval: 10s, rise_rate: 0.3", "gw.yaml")
    assert config.sensor("river-1").temperature_from == "env-1"


# --- fuzz: any sequence of distances keeps the published values within the rules ----------------------------

@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["river_level", "snow_depth"]),
       points=st.lists(st.tuples(st.floats(min_value=0, max_value=200_000),
                                 st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6),
                                           st.sampled_from([math.nan, math.inf, -math.inf]))), max_size=30))
def test_fuzz_pipeline_never_raises_and_keeps_its_rules(kind, points):
    keys = {"alert_levels": LEVELS, "fast_interval": "10s", "rise_rate": 0.3} if kind == "river_level" \
        else {"removal_threshold": 0.1}
    p = Fed(options(kind=kind, mount_height=6.0, max_jump=0.5, median_window=3, air_temperature=-5.0, **keys),
                 None, driver=TimeOfFlight)
    readings = feed(p, sorted(points, key=lambda x: x[0]), kind=kind)
    for r in readings:
        doc = r.as_json()
        assert r.quality in ("ok", "suspect", "error")
        assert all(not isinstance(v["value"], float) or math.isfinite(v["value"]) for v in doc["values"].values())
        assert doc["values"]["alert_level"]["value"] in ("normal", "standby", "caution", "evacuation", "danger",
                                                         "removal")
        if kind == "snow_depth" and "snow_depth" in doc["values"]:
            assert doc["values"]["snow_depth"]["value"] >= 0
            if r.quality == "ok":
                assert doc["values"]["snowfall_24h"]["value"] >= doc["values"]["snowfall_1h"]["value"] >= 0
    assert p.interval_override in (None, 10.0)


def test_non_finite_distance_is_an_error_not_nan_in_json():
    (r,) = feed(river(), [(0, float("nan"))])
    assert r.quality == "error" and r.error == "distance is nan" and "distance" not in r.values


@pytest.mark.parametrize("history", [[(0.0, 1.0)], [(5.0, 1.0), (5.0, 1.2)],
                                     [(0.0, 0.0), (1.3858733721360243e-249, 0.0)]])
def test_rise_rate_of_indistinguishable_times_is_unknown(history):
    assert rise_rate(history) is None


# --- readings describe their device: the pipeline never loads a driver class ------------------------------

class EchoTimer(Driver):
    """A time-of-flight device at the datasheet's 58 µs/cm, as a real driver declares it."""
    temperature_compensated = False
    assumed_sound_speed = 20000 / 58

    def read(self, timeout):
        return [self.reading({"distance": Value(round(5831 / 58 / 100, 4), "m")})]


def test_the_reading_carries_what_the_pipeline_needs_of_the_device():
    opts = options(driver="not-installed-anywhere", mount_height=3.0, air_temperature=20.0)
    (r,) = EchoTimer(opts).read(1.0)
    assert (r.temperature_compensated, r.assumed_sound_speed) == (False, 20000 / 58)
    assert "temperature_compensated" not in r.to_json()  # not part of the published reading (SPEC §3)
    r = Pipeline(opts, None).process(r)  # no driver class given, none looked up
    assert r.value("distance") == pytest.approx(1.0006, abs=0.0001)


def test_a_compensating_device_with_a_temperature_configured_is_said_once(caplog):
    p = Fed(options(mount_height=3.0, air_temperature=20.0), None, driver=SelfCompensating)
    feed(p, [(0, 1.0), (60, 1.0)])
    assert caplog.text.count("compensates for air temperature itself; air_temperature not used") == 1
