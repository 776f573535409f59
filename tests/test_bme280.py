"""BME280 driver against a simulated register map at its SMBus seam (hil/i2c.py):
the datasheet's vectors, chip id, forced mode, bus errors, fuzzing, and a run
through the gateway to the console."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from drivers.bme280 import (Bme280, Bme280Error, compensate_h, compensate_p, compensate_t, decode, parse_adc,
                            parse_calibration)
from hil.buses import FixedDevices
from hil.i2c import EXAMPLE_CALIBRATION, Bme280Device, SimBus, bme280_in_air
from tests import hw_cases

LOW = EXAMPLE_CALIBRATION[0x88] + bytes(1) + EXAMPLE_CALIBRATION[0xA1]
HIGH = EXAMPLE_CALIBRATION[0xE1]


@pytest.fixture
def bus():
    return SimBus()


def opts(**keys):
    return hw_cases.options(Bme280, keys)


# --- the published vectors (tests/data/hw-vectors.json) ---------------------------------------------

def test_temperature_vector():
    cal = parse_calibration(LOW, HIGH)
    assert (cal.T1, cal.T2, cal.T3) == (27504, 26435, -1000)
    assert compensate_t(519888, cal) == (2508, 128422)


def test_pressure_vector():
    cal = parse_calibration(LOW, HIGH)
    q24_8 = compensate_p(415148, 128422, cal)
    assert q24_8 == 25767233
    assert q24_8 / 256 == pytest.approx(100653.27, abs=1.0)  # the datasheet's double result, int path tolerance


def test_humidity_vector():
    cal = parse_calibration(LOW, HIGH)
    assert (cal.H1, cal.H2, cal.H3, cal.H4, cal.H5, cal.H6) == (75, 362, 0, 333, 0, 30)
    assert compensate_h(25000, 128422, cal) == 21277
    assert compensate_h(25000, 128422, cal) / 1024 == pytest.approx(20.778, abs=0.001)


def test_raw_data_register_vector():
    assert parse_adc(bytes.fromhex("655AC07EED00" "61A8")) == (519888, 415148, 25000)


@pytest.mark.parametrize("e4, e5, e6, h4, h5", [
    (0x14, 0x0D, 0x00, 333, 0),
    (0xFF, 0xFF, 0xFF, -1, -1),       # 12-bit signed, not 16-bit: the known H4/H5 bug
    (0x80, 0x08, 0x80, -2040, -2048),
])
def test_h4_h5_are_12_bit_signed(e4, e5, e6, h4, h5):
    high = bytes([0x6A, 0x01, 0x00, e4, e5, e6, 0x1E])
    cal = parse_calibration(LOW, high)
    assert (cal.H4, cal.H5) == (h4, h5)


# --- driver behaviour ------------------------------------------------------------------------------

def test_forced_mode_one_measurement_per_read_then_sleep(bus):
    chip = bus.devices[0x76] = bme280_in_air(lambda: (-3.2, 1013.25, 85.0))
    driver = Bme280(opts(), FixedDevices(bus))
    driver.open()
    try:
        readings = [driver.read(1)[0] for _ in range(3)]
    finally:
        driver.close()
    assert chip.measurements == 3
    assert chip.regs[0xF4] & 0x03 == 0  # back in sleep mode between reads
    assert chip.regs[0xF2] == 0x01 and chip.osrs_h == 1  # humidity enabled, latched by the ctrl_meas write
    r = readings[-1]
    assert r.kind == "environment" and r.quality == "ok"
    assert r.value("air_temperature") == pytest.approx(-3.2, abs=0.01)
    assert r.value("air_pressure") == pytest.approx(1013.25, abs=0.01)
    assert r.value("relative_humidity") == pytest.approx(85.0, abs=0.05)
    assert {k: v.unit for k, v in r.values.items()} == {"air_temperature": "°C", "relative_humidity": "%",
                                                         "air_pressure": "hPa"}


def test_driver_waits_while_the_chip_is_measuring(bus):
    chip = bus.devices[0x76] = bme280_in_air(lambda: (10.0, 1000.0, 50.0), measure_time=0.03)
    driver = Bme280(opts(), FixedDevices(bus))
    driver.open()
    try:
        assert driver.read(1)[0].value("air_temperature") == pytest.approx(10.0, abs=0.01)
    finally:
        driver.close()
    assert chip.measurements == 1


def test_address_0x77_and_hex_text(bus):
    bus.devices[0x77] = bme280_in_air(lambda: (20.0, 1000.0, 40.0))
    (r,) = hw_cases.run(Bme280, opts(address="0x77"), 1, FixedDevices(bus))
    assert r.value("air_temperature") == pytest.approx(20.0, abs=0.01)


def test_no_chip_at_the_address_is_a_clear_device_error(bus):
    with pytest.raises(Bme280Error, match=r"BME280 at 0x76 on I2C bus 1: .*Remote I/O error"):
        Bme280(opts(), FixedDevices(bus)).open()


def test_bus_error_while_reading_is_a_device_error(bus):
    bus.devices[0x76] = bme280_in_air(lambda: (20.0, 1000.0, 40.0))
    driver = Bme280(opts(), FixedDevices(bus))
    driver.open()
    del bus.devices[0x76]  # the sensor cable came off
    with pytest.raises(Bme280Error, match="Remote I/O"):
        driver.read(1)
    driver.close()
    driver.close()  # twice is safe


def test_out_of_range_value_is_suspect():
    cal = parse_calibration(LOW, HIGH)
    values, quality = decode(bytes([0xFF, 0xFF, 0xF0, 0x7E, 0xED, 0x00, 0x61, 0xA8]), cal)  # absurd pressure
    assert quality == "suspect" and not 300 <= values["air_pressure"].value <= 1100


@pytest.mark.parametrize("address, message", [("0x78", "0x76 or 0x77"), ("seventy", "0x76 or 0x77")])
def test_bad_address_is_a_config_error(address, message):
    with pytest.raises(ValueError, match=message):
        opts(address=address)


# --- fuzz: random register bytes never raise anything but Bme280Error ---------------------------------------

@settings(max_examples=300, deadline=None)
@given(low=st.binary(min_size=26, max_size=26), high=st.binary(min_size=7, max_size=7), data=st.binary(min_size=8, max_size=8))
def test_fuzz_calibration_and_data(low, high, data):
    try:
        cal = parse_calibration(low, high)
        values, quality = decode(data, cal)
    except Bme280Error:
        return
    assert quality in ("ok", "suspect")
    assert all(isinstance(v.value, float) for v in values.values())


@settings(max_examples=60, deadline=None)
@given(regs=st.binary(min_size=256, max_size=256), chip=st.sampled_from([0x60, 0x58, 0x00, 0xFF]))
def test_fuzz_whole_register_map(regs, chip):
    bus = SimBus()
    device = Bme280Device({0: regs}, adc=lambda: parse_adc(regs[0xF7:0xFF]), chip_id=chip, measure_time=0.0)
    bus.devices[0x76] = device
    driver = Bme280(opts(), FixedDevices(bus))
    try:
        driver.open()
        driver.read(1)
    except Bme280Error:
        pass
    finally:
        driver.close()


def test_the_default_device_set_is_the_real_bus(monkeypatch):
    import smbus2
    opened = []
    monkeypatch.setattr(smbus2, "SMBus", lambda number: opened.append(number) or SimBus().factory(number))
    driver = Bme280(opts(bus=3))
    assert driver.devices.name == "hardware"
    with pytest.raises(Bme280Error):
        driver.open()  # nothing answers on the stand-in bus
    assert opened == [3]


@pytest.mark.parametrize("air", [(-30.0, 980.0, 95.0), (-3.2, 1013.25, 85.0), (0.0, 1005.0, 50.0),
                                 (24.5, 1020.0, 35.0), (40.0, 950.0, 10.0)])
def test_driver_agrees_with_the_simulators_independent_oracle(bus, air):
    """The simulated chip derives its ADC values from the datasheet's floating-point formulas; the driver
    decodes them with the integer ones. Both sides share nothing but the datasheet."""
    bus.devices[0x76] = bme280_in_air(lambda: air)
    (r,) = hw_cases.run(Bme280, opts(), 1, FixedDevices(bus))
    assert r.value("air_temperature") == pytest.approx(air[0], abs=0.01)
    assert r.value("air_pressure") == pytest.approx(air[1], abs=0.01)
    assert r.value("relative_humidity") == pytest.approx(air[2], abs=0.05)


def test_the_simulator_does_not_reuse_the_drivers_code():
    import ast
    import inspect

    import hil.i2c
    tree = ast.parse(inspect.getsource(hil.i2c))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("drivers") for m in imported), imported
