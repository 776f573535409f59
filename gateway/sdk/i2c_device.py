"""The I2C seam: a driver for one chip at one address on one bus.

`smbus_factory(bus number)` returns an object with the smbus2.SMBus methods the
driver uses; a register-map simulator (hil/i2c.py) stands in for it in tests
and in the simulated rig, so the driver code is the field code."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from smbus2 import SMBus

from gateway.sdk.driver import Driver


class I2cDriver(Driver):
    chip: ClassVar[str] = "I2C device"  # for messages: "BME280 at 0x76 on I2C bus 1"
    smbus_factory: ClassVar[Callable[[int], Any]] = SMBus

    def __init__(self, options):
        super().__init__(options)
        self.bus = None

    def _where(self) -> str:
        return f"{self.chip} at 0x{self.options.address:02x} on I2C bus {self.options.bus}"

    def close(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError:
                pass
