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


def test_every_vector_testcase_names_its_primary_source():
    """The published vectors copied into our testcases (HC-SR04, I2CXL, BME280) each name the document they
    come from and how (verbatim or derived): a datasheet or manual by name, never a file elsewhere."""
    import json
    copied = [v for driver in ("bme280", "i2cxl", "hcsr04")
              for p in (DRIVERS / driver / "testcases").glob("*/expected.json")
              for v in json.loads(p.read_text()).get("vectors", [])]
    assert len(copied) >= 10
    for v in copied:
        assert v["source"] and v["provenance"], v
        assert not any(local in v["source"] for local in ("vectors.json", "WIRE-FORMATS", "shared/")), v["source"]
