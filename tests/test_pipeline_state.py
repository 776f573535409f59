"""The pipeline's state outlives a restart and a reload (issue 9, defect 6): it
is kept in the buffer (`pipeline:<sensor>`) in the readings' commits and
restored with the first reading, so a snow `removal` call and a river stage's
hysteresis go on where they were. Tables against a real buffer file."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import example, given, settings, strategies as st

from gateway.pipeline_options import compose
from gateway.sdk.driver import DistanceOptions
from gateway.buffer import Buffer
from gateway.pipeline import Pipeline, saved_state
from gateway.sdk.reading import Reading, Value

LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}
BOOT = "boot-a"


def options(**keys) -> DistanceOptions:
    return compose(DistanceOptions).model_validate({"id": "s-1", "driver": "test", "interval": "60s", **keys})


def snow_keys(**keys) -> dict:
    return {"kind": "snow_depth", "mount_height": 2.0, "removal_threshold": 0.1, "hysteresis": 0.02, **keys}


def river_keys(**keys) -> dict:
    return {"mount_height": 6.0, "alert_levels": LEVELS, **keys}


def reading(t: float, distance: float, kind: str, wall: float | None = None, synced: bool = True) -> Reading:
    return Reading(sensor="s-1", kind=kind, values={"distance": Value(distance, "m")}, monotonic=t,
                   observed_at=1_800_000_000.0 + t if wall is None else wall, clock_synced=synced)


def pipeline(buffer: Buffer, boot: str = BOOT, **keys) -> Pipeline:
    return Pipeline(options(**keys), None, recall=buffer.recall, remember=buffer.remember, boot=boot)


def restart(buffer: Buffer) -> Buffer:
    """Commit, close and open the buffer file again, as a daemon restart does."""
    buffer.commit()
    buffer.close()
    return Buffer(buffer.path, [], gateway="gw")


@pytest.fixture
def buffer(tmp_path):
    b = Buffer(tmp_path / "buffer.db", [], gateway="gw")
    yield b
    b.close()


def snow_to_removal(buffer: Buffer) -> Pipeline:
    p = pipeline(buffer, **snow_keys())
    first, second = p.process(reading(0, 1.6, "snow_depth")), p.process(reading(600, 1.45, "snow_depth"))
    assert (first.value("alert_level"), second.value("alert_level")) == ("normal", "removal") and second.alert
    return p


def test_a_removal_call_outlives_a_restart(buffer):
    snow_to_removal(buffer)
    buffer = restart(buffer)
    r = pipeline(buffer, **snow_keys()).process(reading(1200, 1.45, "snow_depth"))
    assert r.value("alert_level") == "removal" and not r.alert  # no silent drop to normal, no new alert
    assert r.value("snowfall_24h") == pytest.approx(0.15)
    assert r.value("snowfall_1h") == pytest.approx(0.15)
    buffer.close()


def test_a_river_stage_keeps_its_hysteresis_across_a_restart(buffer):
    p = pipeline(buffer, **river_keys())
    assert p.process(reading(0, 6.0 - 2.1, "river_level")).value("alert_level") == "caution"
    buffer = restart(buffer)
    r = pipeline(buffer, **river_keys()).process(reading(60, 6.0 - 1.97, "river_level"))
    assert r.value("alert_level") == "caution" and not r.alert  # 1.97 is within 0.05 of caution: stays
    r = pipeline(buffer, **river_keys()).process(reading(120, 6.0 - 1.94, "river_level"))
    assert r.value("alert_level") == "standby" and r.alert
    buffer.close()


def test_fast_interval_and_the_rise_window_outlive_a_restart(buffer):
    keys = river_keys(alert_levels=None, fast_interval="10s", rise_rate=0.3)
    p = pipeline(buffer, **keys)
    p.process(reading(0, 6.0 - 1.0, "river_level"))
    p.process(reading(600, 6.0 - 1.1, "river_level"))
    assert p.interval_override == 10.0
    buffer = restart(buffer)
    p = pipeline(buffer, **keys)
    p.process(reading(660, 6.0 - 1.11, "river_level"))  # alone it tells no rate; with the saved window 0.6 m/h
    assert p.interval_override == 10.0
    buffer.close()


@pytest.mark.parametrize("boot, wall_gap, synced, expected", [
    (BOOT, None, True, "removal"),               # same boot: the monotonic clock says 10 min passed
    ("boot-b", 3600.0, True, "removal"),          # rebooted, the clock tells 1 h passed: still inside the day
    ("boot-b", 86_400.0, True, "normal"),         # rebooted a day later: the snowfall is out of the window
    ("boot-b", 86_400.0, False, "removal"),       # rebooted, clock not trusted: the gap is unknown, windows go on
    ("", 86_400.0, True, "normal"),               # no boot id on this system: the wall clock decides
])
def test_saved_windows_are_placed_on_the_new_clock(buffer, boot, wall_gap, synced, expected):
    snow_to_removal(buffer)
    buffer = restart(buffer)
    # A reboot restarts the monotonic clock near zero.
    t, wall = (1200.0, None) if wall_gap is None else (30.0, 1_800_000_000.0 + 600 + wall_gap)
    r = pipeline(buffer, boot=boot, **snow_keys()).process(reading(t, 1.45, "snow_depth", wall=wall, synced=synced))
    assert r.value("alert_level") == expected
    assert r.alert == (expected != "removal")  # an ended call is announced, never silent
    buffer.close()


def test_a_changed_threshold_keeps_the_windows(buffer):
    snow_to_removal(buffer)
    r = pipeline(buffer, **snow_keys(removal_threshold=0.2)).process(reading(1200, 1.45, "snow_depth"))
    assert r.value("snowfall_24h") == pytest.approx(0.15)  # today's snowfall is still today's
    assert r.value("alert_level") == "normal" and r.alert  # judged by the new threshold, and announced


def test_changed_measuring_options_start_the_windows_afresh_and_announce_the_stage(buffer, caplog):
    snow_to_removal(buffer)
    caplog.set_level(logging.INFO, "gateway.pipeline_state")
    r = pipeline(buffer, **snow_keys(mount_height=2.5)).process(reading(1200, 1.95, "snow_depth"))
    assert r.value("snowfall_24h") == 0.0  # depths under another mount height do not compare
    assert r.value("alert_level") == "normal" and r.alert  # the call ends, and says so
    assert "measuring options changed" in caplog.text


@pytest.mark.parametrize("text", ["not json", '{"format": 99}', '{"format": 1, "devices": [[null, {}]]}', "[]"])
def test_an_unreadable_saved_state_starts_afresh_with_a_warning(buffer, caplog, text):
    buffer.remember("pipeline:s-1", text)
    r = pipeline(buffer, **snow_keys()).process(reading(0, 1.6, "snow_depth"))
    assert r.quality == "ok" and r.value("alert_level") == "normal"
    assert "saved pipeline state cannot be read" in caplog.text


def test_state_is_remembered_with_each_reading_and_forgotten_with_the_sensor(buffer):
    p = snow_to_removal(buffer)
    doc = json.loads(saved_state(buffer.recall, "s-1"))
    assert doc["devices"][0][1]["stage"] == "removal" and doc["boot"] == BOOT
    assert saved_state(buffer.recall, "s-10") is None  # the prefix look-up does not leak to a longer id
    p.forget()
    buffer.commit()
    assert buffer.recall("pipeline:") == {}


def test_a_sensor_without_rules_remembers_nothing(buffer):
    p = Pipeline(options(id="s-1"), None, remember=buffer.remember)
    p.process(Reading(sensor="s-1", kind="environment", values={"air_temperature": Value(3.0, "°C")}))
    assert buffer.recall("pipeline:") == {}


@settings(max_examples=150, deadline=None)
@example(kind="river_level", filters=True, cut=2, points=[(0.0, 0.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)])
@given(kind=st.sampled_from(["river_level", "snow_depth"]), filters=st.booleans(),
       cut=st.integers(min_value=0, max_value=40),
       points=st.lists(st.tuples(st.floats(min_value=0, max_value=200_000),
                                 st.one_of(st.none(), st.floats(min_value=-10, max_value=10))), max_size=40))
def test_fuzz_a_restart_anywhere_changes_no_published_value(kind, filters, cut, points):
    extra = {"max_jump": 0.5, "median_window": 3} if filters else {}  # without: those parts are not saved
    keys = river_keys(fast_interval="10s", rise_rate=0.3, **extra) if kind == "river_level" and filters \
        else river_keys(**extra) if kind == "river_level" else snow_keys(**extra)
    memo: dict[str, str] = {}

    def remember(key, text):
        memo[key] = text

    def run(p, part):
        out = []
        for t, d in part:
            r = Reading(sensor="s-1", kind=kind, values={} if d is None else {"distance": Value(d, "m")},
                        monotonic=t, observed_at=1_800_000_000.0 + t, quality="error" if d is None else "ok")
            out.append((p.process(r).as_json(), r.alert, p.interval_override))
        return out

    points = sorted(points, key=lambda p: p[0])
    straight = run(Pipeline(options(**keys), None), points)
    first = run(Pipeline(options(**keys), None, remember=remember, boot=BOOT), points[:cut])
    again = Pipeline(options(**keys), None, remember=remember, recall=lambda prefix: dict(memo),
                     boot=BOOT)
    assert first + run(again, points[cut:]) == straight


def test_every_pipeline_key_is_either_measuring_or_a_threshold():
    """A new key in the pipeline's options must be sorted into one of the two (see gateway.pipeline_state)."""
    from gateway.pipeline import MEASURING_KEYS
    from gateway.pipeline_options import DistanceRules
    thresholds = {"alert_levels", "hysteresis", "fast_interval", "rise_rate", "rise_window", "removal_threshold"}
    assert set(MEASURING_KEYS) - {"kind"} | thresholds == set(DistanceRules.model_fields)
    assert not set(MEASURING_KEYS) & thresholds


def test_a_river_with_stages_only_is_written_when_its_stage_moves():
    written = []
    p = Pipeline(options(**river_keys()), None, remember=lambda key, text: written.append(text))
    for i, level in enumerate([1.0, 1.1, 1.2, 1.6, 1.7, 1.8, 1.2, 1.1]):
        p.process(reading(i * 60, 6.0 - level, "river_level"))
    stages = [json.loads(t)["devices"][0][1]["stage"] for t in written]
    assert stages == ["normal", "standby", "normal"]  # three writes for eight readings


def test_a_pipeline_replacing_another_takes_over_what_it_left(buffer):
    """A reload builds the new pipeline before the old one stops: the state is looked up at the first reading."""
    old = pipeline(buffer, **snow_keys())
    new = pipeline(buffer, **snow_keys())
    old.process(reading(0, 1.6, "snow_depth"))
    old.process(reading(600, 1.45, "snow_depth"))  # the removal call, after the new pipeline was built
    r = new.process(reading(1200, 1.45, "snow_depth"))
    assert r.value("alert_level") == "removal" and not r.alert


@pytest.mark.parametrize("stage", ["removal", "bogus"])
def test_a_saved_stage_this_kind_does_not_have_starts_from_normal(buffer, caplog, stage):
    """A snow sensor turned river (kind is a measuring key: the stage alone is kept), or a hand-edited buffer."""
    saved = {"format": 1, "boot": BOOT, "monotonic": 0.0, "wall": 1.8e9, "clock_synced": True, "measure": "x",
             "devices": [[None, {"stage": stage, "fast": False, "suspect_run": []}]]}
    buffer.remember("pipeline:s-1", json.dumps(saved))
    r = pipeline(buffer, **river_keys()).process(reading(60, 6.0 - 1.0, "river_level"))
    assert r.quality == "ok" and r.value("alert_level") == "normal"
    assert f"saved stage {stage!r} is not one of normal, standby" in caplog.text
