"""Helpers of the LoRa modem tests: drivers wired to their pty simulators."""

from __future__ import annotations

import time
from pathlib import Path

from drivers.lora_e220 import E220
from drivers.lora_es920lr import Es920lr
from drivers.lora_rak3172 import Rak3172
from drivers.lora_rn2483 import Rn2483
from hil.lora_modems import E220Sim, Es920lrSim, Rak3172Sim, Rn2483Sim
from tests.helpers import wait_for  # noqa: F401  (re-exported for the LoRa tests)

DRIVERS = {
    "lora_rak3172": (Rak3172, Rak3172Sim),
    "lora_rn2483": (Rn2483, Rn2483Sim),
    "lora_e220": (E220, E220Sim),
    "lora_es920lr": (Es920lr, Es920lrSim),
}
ROOT = Path(__file__).resolve().parent.parent


def make_driver(name: str, port: Path, **keys):
    cls = DRIVERS[name][0]
    cls.name = name
    options = cls.Options.model_validate({"id": "lora-1", "driver": name, "interval": "1s", "port": str(port), **keys})
    return cls(options)


def read_readings(driver, count: int, timeout: float = 5.0) -> list:
    """Read until `count` readings arrived (or fail at the deadline)."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(out)} of {count} readings before the deadline: {out}")
        out.extend(driver.read(min(left, 0.5)))
    return out
