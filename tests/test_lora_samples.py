"""Each LoRa modem driver's sample config is a valid config (its testcases run in test_driver_testcases.py)."""

from __future__ import annotations

import pytest

from tests.lora_support import DRIVERS, ROOT


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_sample_config_is_valid(name):
    from gateway.config import load_config
    config = load_config(ROOT / "drivers" / name / "sample.yaml")
    (sensor,) = config.sensors
    assert sensor.driver == name and sensor.nodes
