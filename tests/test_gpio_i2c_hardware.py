"""The same drivers on a real Raspberry Pi rig. GATEWAY_RIG_CONFIG names a
gateway config whose bme280 / i2cxl / hcsr04 sensors are wired to the rig;
each is opened with its real seam (smbus2, gpiozero's default pin factory)
and read once. Without a rig config these are skipped, saying why."""

from __future__ import annotations

import os

import pytest

from gateway import registry
from gateway.config import load_config
from gateway.pipeline import Pipeline

pytestmark = pytest.mark.hardware
RIG = os.environ.get("GATEWAY_RIG_CONFIG")
DRIVERS = ("bme280", "i2cxl", "hcsr04")


def rig_sensors():
    if not RIG:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no rig: set GATEWAY_RIG_CONFIG to a config "
                                                                    "naming the rig's bme280/i2cxl/hcsr04 sensors"))]
    sensors = [s for s in load_config(RIG).sensors if s.driver in DRIVERS]
    return [pytest.param(s, id=s.id) for s in sensors] or [
        pytest.param(None, marks=pytest.mark.skip(reason=f"{RIG} has no bme280/i2cxl/hcsr04 sensor"))]


@pytest.mark.parametrize("options", rig_sensors())
def test_real_device_reads(options):
    driver_cls = registry.load(options.driver)
    driver = driver_cls(options)
    driver.open()
    try:
        (reading,) = driver.read(options.read_timeout)
    finally:
        driver.close()
    reading = Pipeline(options, None).process(reading)
    assert reading.quality == "ok", reading.as_json()
    if options.driver == "bme280":
        assert -40 <= reading.value("air_temperature") <= 85
        assert 300 <= reading.value("air_pressure") <= 1100
    else:
        assert 0.02 <= reading.value("distance") <= 7.65
