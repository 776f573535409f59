"""ble_beacon against a real adapter on a Pi rig. Runs only when
GATEWAY_RIG_CONFIG names a gateway config with a ble_beacon sensor on an hciN
adapter and a beacon in range (`pytest -m hardware`)."""

from __future__ import annotations

import os
import re
import time

import pytest

from gateway import registry
from gateway.config import load_config

pytestmark = pytest.mark.hardware
RIG = os.environ.get("GATEWAY_RIG_CONFIG")


def rig_sensors():
    if not RIG:
        return []
    return [s for s in load_config(RIG).sensors if s.driver == "ble_beacon" and s.adapter.startswith("hci")]


@pytest.mark.skipif(not RIG, reason="no rig: set GATEWAY_RIG_CONFIG to a config with a ble_beacon sensor on hciN")
@pytest.mark.parametrize("options", rig_sensors(), ids=lambda o: o.id)
def test_a_real_adapter_hears_a_beacon_and_publishes_only_pseudonyms(options):
    driver = registry.load(options.driver)(options)
    driver.open()
    try:
        time.sleep(options.interval)  # one aggregation window on the air
        readings = driver.read(options.read_timeout)
    finally:
        driver.close()
    assert readings, "no beacon heard within one interval: is one in range and advertising?"
    for r in readings:
        assert r.kind == "beacon" and r.value("count") >= 1
        if not options.publish_raw_ids:
            assert re.fullmatch(r"[0-9a-f]{24}", r.device)
