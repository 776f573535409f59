"""Each driver folder's sample config is a valid config, and `gateway drivers` lists the drivers with their keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pathlib import Path

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


SHARED_VECTORS = DRIVERS.parent.parent.parent / "shared" / "hw" / "vectors.json"  # /work/shared beside the checkout


def test_every_applicable_vector_is_a_testcase():
    """Each HC-SR04, I2CXL and BME280 vector of shared/hw/vectors.json is copied into one of our testcases."""
    import json
    path = SHARED_VECTORS if SHARED_VECTORS.exists() else Path("/work/shared/hw/vectors.json")
    if not path.exists():
        pytest.skip("shared/hw/vectors.json is not on this machine; the copied testcases still run")
    vectors = json.loads(path.read_text())
    wanted = [v for v in vectors if v["sensor"].startswith(("HC-SR04", "MaxBotix I2CXL", "Bosch BME280"))]
    copied = [v for driver in ("bme280", "i2cxl", "hcsr04")
              for p in (DRIVERS / driver / "testcases").glob("*/expected.json")
              for v in json.loads(p.read_text()).get("vectors", [])]
    for v in wanted:
        assert {k: v[k] for k in ("sensor", "input_hex_or_line", "source", "provenance")} in copied, v["input_hex_or_line"]
    assert len(wanted) == 10
