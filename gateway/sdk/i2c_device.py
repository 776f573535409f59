"""The I2C seam: a driver for one chip at one address on one bus.

`self.devices.i2c_bus(options)` (gateway/sdk/devices.py) returns an object
with the smbus2.SMBus methods the driver uses; a register-map simulator
(hil/i2c.py) stands in for it in tests and in the simulated rig, so the driver
code is the field code."""

from __future__ import annotations

from typing import ClassVar

from gateway.sdk.driver import Driver


class I2cDriver(Driver):
    chip: ClassVar[str] = "I2C device"  # for messages: "BME280 at 0x76 on I2C bus 1"

    def __init__(self, options, devices=None):
        super().__init__(options, devices)
        self.bus = None

    def _open_bus(self):
        return self.devices.i2c_bus(self.options)

    def _where(self) -> str:
        return f"{self.chip} at 0x{self.options.address:02x} on I2C bus {self.options.bus}"

    def close(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError:
                pass
