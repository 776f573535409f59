"""Bosch BME280 over I2C (smbus2): air temperature, humidity and pressure,
read in forced mode (one measurement per read; the die does not self-heat as
in normal mode). The compensation is the datasheet's integer code (BST-BME280-
DS002 §4.2.3, §8.2), with C's int32/int64 division (truncation) kept.

The bus comes through `self.devices.i2c_bus(options)` (gateway/sdk/devices.py), so a simulated register map
(hil/i2c.py) stands in for the chip in tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field, field_validator

from gateway.sdk.driver import DeviceError, SensorOptions
from gateway.sdk.i2c_device import I2cDriver
from gateway.sdk.fields import parse_i2c_address
from gateway.sdk.reading import Reading, Value

CHIP_ID = 0xD0
RESET = 0xE0
CTRL_HUM, STATUS, CTRL_MEAS, CONFIG, DATA = 0xF2, 0xF3, 0xF4, 0xF5, 0xF7
BME280_ID = 0x60
BMP280_IDS = (0x56, 0x57, 0x58)
SKIPPED_20BIT, SKIPPED_16BIT = 0x80000, 0x8000
FORCED_X1 = (1 << 5) | (1 << 2) | 0b01  # osrs_t ×1, osrs_p ×1, forced mode
MEASURE_MAX = 0.0093  # s, §9.1: T, P and H at ×1 oversampling


class Bme280Error(DeviceError):
    """The chip or its data cannot be used (wrong chip, bad calibration, bus error)."""


@dataclass(frozen=True)
class Calibration:
    T1: int
    T2: int
    T3: int
    P: tuple[int, ...]  # P1..P9
    H1: int
    H2: int
    H3: int
    H4: int
    H5: int
    H6: int


def _u16(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "little")


def _s16(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "little", signed=True)


def _s12(value: int) -> int:
    return value - 0x1000 if value & 0x800 else value


def parse_calibration(low: bytes, high: bytes) -> Calibration:
    """`low` = registers 0x88..0xA1 (26 bytes), `high` = 0xE1..0xE7 (7 bytes), datasheet Table 16."""
    if len(low) != 26 or len(high) != 7:
        raise Bme280Error(f"calibration read returned {len(low)}+{len(high)} bytes, expected 26+7")
    cal = Calibration(
        T1=_u16(low, 0), T2=_s16(low, 2), T3=_s16(low, 4),
        P=(_u16(low, 6), *(_s16(low, 8 + 2 * i) for i in range(8))),
        H1=low[25], H2=_s16(high, 0), H3=high[2],
        # H4 and H5 are 12-bit signed, sharing the nibbles of 0xE5.
        H4=_s12((high[3] << 4) | (high[4] & 0x0F)), H5=_s12((high[5] << 4) | (high[4] >> 4)),
        H6=int.from_bytes(high[6:7], "little", signed=True),
    )
    if cal.T1 == 0 or cal.P[0] == 0 or low == bytes(26) or low == b"\xff" * 26:
        raise Bme280Error("calibration data is blank (all 0x00/0xFF or dig_T1/dig_P1 = 0): the chip's NVM was not read")
    return cal


def parse_adc(data: bytes) -> tuple[int, int, int]:
    """Registers 0xF7..0xFE -> (adc_T, adc_P, adc_H)."""
    if len(data) != 8:
        raise Bme280Error(f"data read returned {len(data)} bytes, expected 8")
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7]
    return adc_t, adc_p, adc_h


def _div(a: int, b: int) -> int:
    """C integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_t(adc_t: int, c: Calibration) -> tuple[int, int]:
    """-> (temperature in 0.01 °C, t_fine). BME280_compensate_T_int32."""
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    var2 = (((((adc_t >> 4) - c.T1) * ((adc_t >> 4) - c.T1)) >> 12) * c.T3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_p(adc_p: int, t_fine: int, c: Calibration) -> int | None:
    """-> pressure in Pa as Q24.8 (Pa·256), or None (the datasheet's 0: would divide by zero).
    BME280_compensate_P_int64."""
    P1, P2, P3, P4, P5, P6, P7, P8, P9 = c.P
    var1 = t_fine - 128000
    var2 = var1 * var1 * P6
    var2 = var2 + ((var1 * P5) << 17)
    var2 = var2 + (P4 << 35)
    var1 = ((var1 * var1 * P3) >> 8) + ((var1 * P2) << 12)
    var1 = (((1 << 47) + var1) * P1) >> 33
    if var1 == 0:
        return None
    p = 1048576 - adc_p
    p = _div(((p << 31) - var2) * 3125, var1)
    var1 = (P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (P7 << 4)


def compensate_h(adc_h: int, t_fine: int, c: Calibration) -> int:
    """-> relative humidity as Q22.10 (%RH·1024). bme280_compensate_H_int32."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15) * \
        (((((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = min(max(v, 0), 419430400)
    return v >> 12


# The sensor's operating range (datasheet §1): values outside are not believed.
RANGES = {"air_temperature": (-40.0, 85.0), "relative_humidity": (0.0, 100.0), "air_pressure": (300.0, 1100.0)}


def decode(data: bytes, cal: Calibration) -> tuple[dict[str, Value], str]:
    """Data registers 0xF7..0xFE -> (values, quality). Raises Bme280Error for a skipped measurement."""
    adc_t, adc_p, adc_h = parse_adc(data)
    if adc_t == SKIPPED_20BIT or adc_p == SKIPPED_20BIT or adc_h == SKIPPED_16BIT:
        raise Bme280Error("the chip skipped a measurement (data reads 0x80000/0x8000): settings were not applied")
    centi, t_fine = compensate_t(adc_t, cal)
    q24_8 = compensate_p(adc_p, t_fine, cal)
    if q24_8 is None:
        raise Bme280Error("pressure compensation divides by zero: calibration data is invalid")
    values = {
        "air_temperature": Value(round(centi / 100, 2), "°C"),
        "relative_humidity": Value(round(compensate_h(adc_h, t_fine, cal) / 1024, 2), "%"),
        "air_pressure": Value(round(q24_8 / 256 / 100, 2), "hPa"),
    }
    ok = all(lo <= values[k].value <= hi for k, (lo, hi) in RANGES.items())
    return values, "ok" if ok else "suspect"


class Bme280Options(SensorOptions):
    bus: int = Field(1, ge=0, description="I2C bus number (/dev/i2c-N)")
    address: int = Field(0x76, description="0x76 (SDO to GND) or 0x77 (SDO to VDDIO)")

    @field_validator("address", mode="before")
    @classmethod
    def _hex(cls, v: Any) -> Any:
        try:
            v = parse_i2c_address(v)
        except ValueError:
            raise ValueError(f"a BME280 answers at 0x76 or 0x77 only (got {v!r})") from None
        if isinstance(v, int) and v not in (0x76, 0x77):
            raise ValueError(f"a BME280 answers at 0x76 or 0x77 only (got 0x{v:02x})")
        return v


class Bme280(I2cDriver):
    summary = "Bosch BME280 over I2C: air temperature, humidity, pressure (forced mode)"
    Options = Bme280Options
    kind = "environment"
    chip = "BME280"

    def __init__(self, options: Bme280Options, devices=None):
        super().__init__(options, devices)
        self.calibration: Calibration | None = None

    def open(self) -> None:
        o = self.options
        try:
            self.bus = self._open_bus()
            chip = self.bus.read_byte_data(o.address, CHIP_ID)
            if chip in BMP280_IDS:
                raise Bme280Error(f"{self._where()}: chip id 0x{chip:02x} is a BMP280 (no humidity); a BME280 reads 0x60")
            if chip != BME280_ID:
                raise Bme280Error(f"{self._where()}: chip id 0x{chip:02x} is not a BME280 (0x60)")
            self.bus.write_byte_data(o.address, RESET, 0xB6)
            self._wait(lambda s: not s & 0x01, "the calibration copy (im_update) after reset")
            low = bytes(self.bus.read_i2c_block_data(o.address, 0x88, 26))
            high = bytes(self.bus.read_i2c_block_data(o.address, 0xE1, 7))
            self.calibration = parse_calibration(low, high)
            self.bus.write_byte_data(o.address, CTRL_HUM, 0x01)  # osrs_h ×1; applies at the ctrl_meas write
            self.bus.write_byte_data(o.address, CONFIG, 0x00)  # filter off
        except OSError as exc:
            self.close()
            raise Bme280Error(f"{self._where()}: {exc}") from exc
        except Bme280Error:
            self.close()
            raise

    def _wait(self, done: Callable[[int], bool], what: str, timeout: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.bus.read_byte_data(self.options.address, STATUS)):
            if time.monotonic() > deadline:
                raise Bme280Error(f"{self._where()}: timed out waiting for {what}")
            time.sleep(0.002)

    def read(self, timeout: float) -> list[Reading]:
        if self.bus is None or self.calibration is None:
            raise Bme280Error(f"{self._where()}: not open")
        o = self.options
        try:
            self.bus.write_byte_data(o.address, CTRL_MEAS, FORCED_X1)
            time.sleep(MEASURE_MAX * 0.8)
            self._wait(lambda s: not s & 0x08, "the measurement (status.measuring)")
            data = bytes(self.bus.read_i2c_block_data(o.address, DATA, 8))
        except OSError as exc:
            raise Bme280Error(f"{self._where()}: {exc}") from exc
        values, quality = decode(data, self.calibration)
        return [self.reading(values, quality=quality)]
