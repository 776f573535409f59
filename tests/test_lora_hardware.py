"""On a Pi rig with real modems: GATEWAY_RIG_CONFIG names a gateway config whose
lora_* sensors point at real ports, and a node in range sends packets. Each
modem must take its setup and deliver one reading within `LORA_RIG_WAIT` s."""

from __future__ import annotations

import os
import time

import pytest

RIG = os.environ.get("GATEWAY_RIG_CONFIG")
pytestmark = [pytest.mark.hardware,
              pytest.mark.skipif(not RIG, reason="no Pi rig: set GATEWAY_RIG_CONFIG to a config with real LoRa ports")]


def test_real_lora_modems_deliver_a_reading():
    from gateway import registry
    from gateway.config import load_config

    sensors = [s for s in load_config(RIG).sensors if s.driver.startswith("lora_")]
    assert sensors, f"{RIG} has no lora_* sensor"
    wait = float(os.environ.get("LORA_RIG_WAIT", "120"))
    for options in sensors:
        driver = registry.load(options.driver)(options)
        driver.open()
        try:
            deadline, readings = time.monotonic() + wait, []
            while not readings and time.monotonic() < deadline:
                readings = driver.read(min(5.0, deadline - time.monotonic()))
            assert readings, f"{options.id}: no packet within {wait}s"
            assert readings[0].kind == "lora_node" and "rssi" in readings[0].values
        finally:
            driver.close()
