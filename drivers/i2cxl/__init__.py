"""MaxBotix I2CXL-MaxSonar-EZ (MB1202/1212/1222/1232/1242) over I2C (smbus2).

Per sample: write the range command 0x51, wait 100 ms (the sensor ignores the
bus while ranging and does not acknowledge), then read two bytes, high byte
first: the range in cm. `samples` readings give their median.

The sensor has no temperature compensation: its cm are 58 µs of echo each
(MaxBotix's own conversion), i.e. 344.8 m/s; the pipeline rescales them with
the air temperature. The bus comes through `self.devices.i2c_bus(options)` (gateway/sdk/devices.py)."""

from __future__ import annotations

import errno
import statistics
import time
from typing import Any

from pydantic import Field, field_validator
from smbus2 import i2c_msg

from gateway.sdk.driver import DeviceError, DistanceOptions
from gateway.sdk.i2c_device import I2cDriver
from gateway.sdk.fields import parse_i2c_address
from gateway.sdk.reading import Reading, Value

RANGE_COMMAND = 0x51
RANGING_TIME = 0.1  # s, datasheet: "allow 100ms between readings"
MIN_CM, MAX_CM = 20, 765  # the sensor's reporting range (MB1242 family)
NACK = (errno.EREMOTEIO, errno.EIO, errno.ENXIO, errno.EAGAIN)


class I2cxlError(DeviceError):
    """The sensor did not answer or answered with bytes that are no range."""


def parse_range(data: bytes) -> int:
    """Two bytes, high first -> cm."""
    if len(data) != 2:
        raise I2cxlError(f"range read returned {len(data)} bytes, expected 2")
    return (data[0] << 8) | data[1]


def classify(cm: int) -> str | None:
    """None for a usable range, else why not. Values outside 20..765 cm are no range this sensor reports."""
    return None if MIN_CM <= cm <= MAX_CM else "out_of_range"


class I2cxlOptions(DistanceOptions):
    bus: int = Field(1, ge=0, description="I2C bus number (/dev/i2c-N)")
    address: int = Field(0x70, ge=0x08, le=0x77, description="7-bit address (factory default 0x70 = 224 8-bit)")
    samples: int = Field(1, ge=1, le=25, description="median of N ranges (100 ms each)")
    measuring_range = MAX_CM / 100  # 20 to 765 cm (I2CXL-MaxSonar-EZ datasheet)

    @field_validator("address", mode="before")
    @classmethod
    def _hex(cls, v: Any) -> Any:
        return parse_i2c_address(v)


class I2cxl(I2cDriver):
    summary = "MaxBotix I2CXL-MaxSonar-EZ over I2C: range command 0x51, 2-byte cm"
    Options = I2cxlOptions
    temperature_compensated = False
    assumed_sound_speed = 20000 / 58  # m/s: 58 µs of round trip per cm
    chip = "I2CXL"

    def __init__(self, options: I2cxlOptions, devices=None):
        super().__init__(options, devices)
        self.invalid = 0  # samples outside the reporting range, for the logs and tests

    def open(self) -> None:
        try:
            self.bus = self._open_bus()
        except OSError as exc:
            raise I2cxlError(f"{self._where()}: cannot open the bus: {exc}") from exc

    def _range_once(self) -> int:
        addr = self.options.address
        self.bus.write_byte(addr, RANGE_COMMAND)
        time.sleep(RANGING_TIME)
        deadline = time.monotonic() + RANGING_TIME
        while True:  # a slow sensor still ranging does not acknowledge: ask again briefly
            msg = i2c_msg.read(addr, 2)
            try:
                self.bus.i2c_rdwr(msg)
                return parse_range(bytes(msg))
            except OSError as exc:
                if exc.errno not in NACK or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def read(self, timeout: float) -> list[Reading]:
        if self.bus is None:
            raise I2cxlError(f"{self._where()}: not open")
        good, bad = [], []
        try:
            for _ in range(self.options.samples):
                cm = self._range_once()
                (bad if classify(cm) else good).append(cm)
        except OSError as exc:
            raise I2cxlError(f"{self._where()}: no answer ({exc}); check wiring, address and bus speed") from exc
        self.invalid += len(bad)
        if not good:
            return [self.reading({}, quality="error", error=f"out_of_range: {bad[-1]} cm")]
        return [self.reading({"distance": Value(round(statistics.median(good) / 100, 4), "m")})]
