"""The serial distance drivers against real sensors on a Pi rig. Runs only when
GATEWAY_RIG_CONFIG names a gateway config whose maxbotix / a02yyuw / sr50a
sensors point at real ports (`pytest -m hardware`)."""

from __future__ import annotations

import os

import pytest

from gateway import registry
from gateway.config import load_config

pytestmark = pytest.mark.hardware
RIG = os.environ.get("GATEWAY_RIG_CONFIG")
SERIAL_DISTANCE = ("maxbotix", "a02yyuw", "sr50a")


def rig_sensors():
    if not RIG:
        return []
    return [s for s in load_config(RIG).sensors if s.driver in SERIAL_DISTANCE]


@pytest.mark.skipif(not RIG, reason="no rig: set GATEWAY_RIG_CONFIG to a config naming real serial ports")
@pytest.mark.parametrize("options", rig_sensors(), ids=lambda o: o.id)
def test_real_sensor_gives_a_plausible_distance(options):
    driver = registry.load(options.driver)(options)
    driver.open()
    try:
        [reading] = driver.read(options.read_timeout)
    finally:
        driver.close()
    assert reading.quality in ("ok", "suspect"), reading.error
    assert 0.0 < reading.value("distance") < 10.0
    assert driver.bad_frames <= 1  # a sound cable: at most one noise burst in a read
