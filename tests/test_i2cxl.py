"""I2CXL driver against the simulated sensor at its SMBus seam (hil/i2c.py):
the wire sequence, the vectors, NACK while ranging, fuzzing, and a run
through the gateway to the console."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from drivers.i2cxl import I2cxl, I2cxlError, classify, parse_range
from hil.buses import FixedDevices
from hil.i2c import I2cxlDevice, SimBus
from hil.models import Hydrograph
from gateway.sdk.reading import parse_time
from tests import hw_cases


@pytest.fixture
def bus():
    return SimBus()


def opts(**keys):
    return hw_cases.options(I2cxl, keys)


def test_wire_sequence_is_range_command_then_two_byte_read(bus):
    sensor = bus.devices[0x70] = I2cxlDevice(distance=lambda: 1.234)
    (r,) = hw_cases.run(I2cxl, opts(samples=2), 1, FixedDevices(bus))
    assert sensor.commands == [b"\x51", b"\x51"]  # one range command per sample, nothing else written
    assert r.value("distance") == 1.23 and r.quality == "ok"


def test_slow_sensor_that_nacks_past_100ms_is_waited_for(bus):
    bus.devices[0x70] = I2cxlDevice(distance=lambda: 2.0, ranging_time=0.15)
    (r,) = hw_cases.run(I2cxl, opts(), 1, FixedDevices(bus))
    assert r.value("distance") == 2.0


def test_target_nearer_than_the_minimum_reads_the_minimum(bus):
    bus.devices[0x70] = I2cxlDevice(distance=lambda: 0.05)
    (r,) = hw_cases.run(I2cxl, opts(), 1, FixedDevices(bus))
    assert r.value("distance") == 0.2


def test_absent_sensor_is_a_device_error_naming_the_address(bus):
    driver = I2cxl(opts(address="0x71"), FixedDevices(bus))
    driver.open()
    with pytest.raises(I2cxlError, match=r"I2CXL at 0x71 on I2C bus 1: no answer .*Remote I/O error"):
        driver.read(1)
    driver.close()


def test_pipeline_derives_water_level_from_the_hydrograph(bus):
    river = Hydrograph(seed=3, noise=0.0)
    bus.devices[0x70] = I2cxlDevice(distance=lambda: 5.0 - river.level(0))
    (r,) = hw_cases.run(I2cxl, opts(mount_height=5.0, kind="river_level"), 1, FixedDevices(bus))
    assert r.value("water_level") == pytest.approx(river.level(0), abs=0.006)  # 1 cm resolution


@pytest.mark.parametrize("cm, code", [(0, "out_of_range"), (19, "out_of_range"), (20, None), (765, None),
                                      (766, "out_of_range"), (65535, "out_of_range")])
def test_classify(cm, code):
    assert classify(cm) == code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4))
def test_fuzz_parse_range(data):
    try:
        cm = parse_range(data)
    except I2cxlError:
        assert len(data) != 2
        return
    assert 0 <= cm <= 65535


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=3))
def test_fuzz_driver_with_random_answers(answers):
    bus = SimBus({0x70: I2cxlDevice(answers=answers, ranging_time=0.0)})
    import drivers.i2cxl as module
    saved_time, module.RANGING_TIME = module.RANGING_TIME, 0.0  # no 100 ms waits in a fuzz loop
    try:
        readings = hw_cases.run(I2cxl, opts(samples=len(answers), mount_height=7.5), 1, FixedDevices(bus))
    except I2cxlError:
        return
    finally:
        module.RANGING_TIME = saved_time
    (r,) = readings
    assert r.quality in ("ok", "error")
    assert (r.quality == "error") == ("distance" not in r.values)


def test_end_to_end_through_the_gateway_with_fast_interval_in_alert(bus, tmp_path):
    level = {"now": 1.0}
    bus.devices[0x70] = I2cxlDevice(distance=lambda: 4.0 - level["now"])
    config = hw_cases.e2e_config(tmp_path, [{
        "id": "river-i2c", "driver": "i2cxl", "interval": "1s", "fast_interval": "150ms", "mount_height": 4.0,
        "alert_levels": {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}}])
    overrides = []

    def enough(readings, gateway):
        runner = gateway.sensors.runner("river-i2c") if gateway.sensors else None
        overrides.append(runner.interval_override if runner else None)
        if len(readings) >= 2:
            level["now"] = 2.2  # the river rises to caution
        in_alert = [r for r in readings if r["values"].get("alert_level", {}).get("value") == "caution"]
        return len(in_alert) >= 4

    rc, readings = hw_cases.run_gateway(config, tmp_path / "console.jsonl", enough, devices=FixedDevices(bus))
    assert rc == 0
    first, last = readings[0], readings[-1]
    assert first["sensor"] == "river-i2c" and first["kind"] == "river_level" and first["quality"] == "ok"
    assert first["values"]["water_level"] == {"value": 1.0, "unit": "m"}
    assert first["values"]["distance"] == {"value": 3.0, "unit": "m"}
    assert first["values"]["alert_level"] == {"value": "normal"}
    assert last["values"]["water_level"]["value"] == pytest.approx(2.2)
    assert first["location"] == [34.3428, 134.0466] and first["id"].startswith("hil-gw.river-i2c.")
    # In caution the scheduler reads every 150 ms instead of every second.
    assert overrides[0] is None and overrides[-1] == 0.15
    times = [parse_time(r["observed_at"]) for r in readings if r["values"]["alert_level"]["value"] == "caution"]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert gaps[len(gaps) // 2] < 0.6, gaps
