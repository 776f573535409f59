"""HC-SR04 driver on gpiozero's own MockFactory, with hil/gpio.py emulating the
module's trigger/echo behaviour: the vectors, no-target and silent modules,
fuzzing of the echo classification, and a run through the gateway where a
BME280 corrects the speed of sound (temperature_from)."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings, strategies as st

from drivers.hcsr04 import Hcsr04, Hcsr04Error, classify, echo_to_distance
from hil import gpio
from hil.buses import FixedDevices
from hil.i2c import SimBus, bme280_in_air
from hil.models import Snowpack
from tests import hw_cases

TRIG, ECHO = 23, 24


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def opts(**keys):
    return hw_cases.options(Hcsr04, {"trigger_pin": TRIG, "echo_pin": ECHO, **keys})


def echoes(text: str) -> list:
    return [line if not line[0].isdigit() else float(line) for line in text.split()]


def test_trigger_pulse_is_at_least_10us_and_pings_are_60ms_apart(factory):
    trig = gpio.hcsr04(factory, TRIG, ECHO, gpio.scripted([5800]))
    (r,) = hw_cases.run(Hcsr04, opts(samples=3), 1, FixedDevices(pins=factory))
    assert trig.pings == 3 and trig.ignored == 0
    t, rises, widths = 0.0, [], []
    for s in trig.states[1:]:  # (time since the previous change, new state)
        t += s.timestamp
        if s.state:
            rises.append(t)
        else:
            widths.append(s.timestamp)
    assert len(rises) == 3 and all(w >= 0.00001 for w in widths)
    assert all(b - a >= 0.0599 for a, b in zip(rises, rises[1:]))  # trigger to trigger: the 60 ms cycle
    assert r.value("distance") == 1.0


def test_silent_module_is_a_device_error(factory):
    gpio.hcsr04(factory, TRIG, ECHO, gpio.scripted(["silent"]))
    with pytest.raises(Hcsr04Error, match=r"TRIG 23 / ECHO 24: no echo pulse to 2 triggers"):
        hw_cases.run(Hcsr04, opts(samples=2), 1, FixedDevices(pins=factory))


def test_pins_are_released_on_close_and_reopen_works(factory):
    gpio.hcsr04(factory, TRIG, ECHO, gpio.scripted([5800]))
    hw_cases.run(Hcsr04, opts(samples=1), 1, FixedDevices(pins=factory))
    (r,) = hw_cases.run(Hcsr04, opts(samples=1), 1, FixedDevices(pins=factory))  # would fail with GPIOPinInUse if not released
    assert r.value("distance") == 1.0


def test_same_pin_twice_is_a_config_error():
    with pytest.raises(ValueError, match="different pins"):
        hw_cases.options(Hcsr04, {"trigger_pin": 5, "echo_pin": "5"})


def test_model_driven_echo_matches_the_physics(factory):
    # 1.5 m at -10 °C: the module measures the true round trip; the datasheet's rule reads it long,
    # and the pipeline's correction with the same temperature gives the true distance back.
    gpio.hcsr04(factory, TRIG, ECHO, gpio.from_model(lambda: 1.5, lambda: -10.0))
    (raw,) = hw_cases.run(Hcsr04, opts(samples=1), 1, FixedDevices(pins=factory))
    assert raw.value("distance") == pytest.approx(1.5 * 344.83 / 325.18, abs=0.001)
    (fixed,) = hw_cases.run(Hcsr04, opts(samples=1, air_temperature=-10.0), 1, FixedDevices(pins=factory))
    assert fixed.value("distance") == pytest.approx(1.5, abs=0.0002)


@pytest.mark.parametrize("seconds, code", [(None, "no_echo"), (-0.001, "bad_timing"), (0.0058, None),
                                           (0.0359, None), (0.036, "no_target"), (0.0379999, "no_target"),
                                           (0.038, "no_target"), (0.06, "no_target")])
def test_classify(seconds, code):
    assert classify(seconds) == code


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=1)))
def test_fuzz_echo_classification(seconds):
    code = classify(seconds)
    assert code in (None, "no_echo", "bad_timing", "no_target")
    if code is None:
        assert 0 <= echo_to_distance(seconds) < 6.21


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["no_target", "silent"]), st.floats(min_value=0, max_value=40000)),
                min_size=1, max_size=3))
def test_fuzz_driver_with_random_echoes(script):
    f = MockFactory()
    gpio.hcsr04(f, TRIG, ECHO, gpio.scripted(script))
    try:
        (r,) = hw_cases.run(Hcsr04, opts(samples=len(script)), 1, FixedDevices(pins=f))
    except Hcsr04Error:
        return
    assert r.quality in ("ok", "error")
    assert r.error in (None, "no_target")


def test_end_to_end_snow_depth_corrected_by_a_bme280(factory, tmp_path):
    snow = Snowpack(seed=4, start_depth=0.6)
    depth, air = snow.step(0.0)
    mount = 2.0
    gpio.hcsr04(factory, TRIG, ECHO, gpio.from_model(lambda: mount - depth, lambda: air))
    bus = SimBus({0x76: bme280_in_air(lambda: (air, 1008.0, 90.0))})
    config = hw_cases.e2e_config(tmp_path, [
        {"id": "env-1", "driver": "bme280", "interval": "100ms"},
        {"id": "snow-gpio", "driver": "hcsr04", "interval": "400ms", "trigger_pin": TRIG, "echo_pin": ECHO,
         "samples": 3, "kind": "snow_depth", "mount_height": mount, "temperature_from": "env-1",
         "removal_threshold": 0.1},
    ])

    def enough(readings, gateway):
        return sum(1 for r in readings if r["sensor"] == "snow-gpio" and "air_temperature" in r["values"]) >= 2

    rc, readings = hw_cases.run_gateway(config, tmp_path / "console.jsonl", enough,
                                        devices=FixedDevices(bus, pins=factory))
    assert rc == 0
    env = [r for r in readings if r["sensor"] == "env-1"]
    snowy = [r for r in readings if r["sensor"] == "snow-gpio" and "air_temperature" in r["values"]]
    assert env and env[0]["kind"] == "environment"
    assert env[0]["values"]["air_temperature"]["value"] == pytest.approx(air, abs=0.01)
    r = snowy[-1]
    assert r["kind"] == "snow_depth" and r["quality"] == "ok"
    assert r["values"]["air_temperature"]["value"] == pytest.approx(air, abs=0.01)
    assert r["values"]["snow_depth"]["value"] == pytest.approx(depth, abs=0.001)  # true depth, sound corrected
    assert r["values"]["snowfall_24h"] == {"value": 0.0, "unit": "m"}
    assert r["values"]["alert_level"] == {"value": "normal"}
