"""The device seams: how a driver reaches its hardware. A sensor's `devices`
key picks the set (default `hardware`, the machine's own buses and pins); a
simulator package registers another set in the entry-point group
`city_edge_gateway.devices` (hil/ registers `sim`), and tests hand the daemon
their own. The driver code is the same in every case: only what sits behind
the seam changes, as gpiozero's pin factories do for its devices.

Serial ports and BLE adapters need no set: their seam is already the port path
(a pseudo-terminal stands in for a USB adapter) and the adapter name
(`replay:FILE` for a recording)."""

from __future__ import annotations

from typing import Any


class Devices:
    """The real hardware. A simulated set overrides what it simulates."""

    name = "hardware"

    def i2c_bus(self, options: Any) -> Any:
        """An object with the smbus2.SMBus methods, for the sensor's `bus` (its
        `address` and `driver` tell a simulator which chip to put there)."""
        from smbus2 import SMBus  # late: importing it needs no bus, but a Pi without I2C has nothing to open
        return SMBus(options.bus)

    def gpio_pins(self, options: Any) -> Any:
        """A gpiozero pin factory for the sensor's pins; None is gpiozero's default (the board's)."""
        return None


HARDWARE = Devices()
