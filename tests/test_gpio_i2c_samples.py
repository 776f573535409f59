"""Each driver folder's sample config is a valid config, and `gateway drivers` lists the drivers with their keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.config import load_config
from tests.hw_cases import DRIVERS


@pytest.mark.parametrize("driver", ["bme280", "i2cxl", "hcsr04"])
def test_sample_config_is_valid(driver):
    config = load_config(DRIVERS / driver / "sample.yaml")
    assert any(s.driver == driver for s in config.sensors)
    for name in ("README.md", "sample.yaml"):
        assert (DRIVERS / driver / name).is_file()


def test_gateway_drivers_lists_them_with_their_keys():
    out = subprocess.run([sys.executable, "-m", "gateway", "drivers"], capture_output=True, text=True, timeout=60).stdout
    for key in ("bme280", "i2cxl", "hcsr04", "trigger_pin", "echo_pin", "temperature_from", "removal_threshold"):
        assert key in out


