"""Simulated I2C devices behind an object with the smbus2 `SMBus` methods the
drivers use. Each SMBus call is turned into the I2C transactions a real
adapter would put on the wire (a write of bytes, a read of N bytes), and each
device answers transactions as its datasheet says: so the driver code is the
field code, and only the chip is simulated.

A missing address, or a device that does not acknowledge (an I2CXL while it
is ranging), raises OSError 121 (EREMOTEIO), as Linux's i2c-dev does.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

I2C_M_RD = 0x0001


def nack(address: int) -> OSError:
    return OSError(errno.EREMOTEIO, f"{os.strerror(errno.EREMOTEIO)} (no ACK from 0x{address:02x})")


class I2cDevice:
    """A device on the bus: answers a write (bytes) and a read (count) transaction."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, count: int) -> bytes:
        raise NotImplementedError


class SimBus:
    """Stands in for `smbus2.SMBus(bus)`: devices by 7-bit address."""

    def __init__(self, devices: dict[int, I2cDevice] | None = None):
        self.devices = dict(devices or {})
        self.closed = False
        self.opened = 0
        self._lock = threading.Lock()

    def factory(self, bus: int) -> "SimBus":
        """Use as a driver's `smbus_factory`: every open gets this bus."""
        self.closed = False
        self.opened += 1
        return self

    def _device(self, address: int) -> I2cDevice:
        if self.closed:
            raise OSError(errno.EBADF, "bus is closed")
        device = self.devices.get(address)
        if device is None:
            raise nack(address)
        return device

    def _write(self, address: int, data: bytes) -> None:
        with self._lock:
            self._device(address).write(bytes(data))

    def _read(self, address: int, count: int) -> bytes:
        with self._lock:
            return self._device(address).read(count)

    # --- the smbus2.SMBus methods ---------------------------------------------------------------

    def write_byte(self, i2c_addr: int, value: int, force=None) -> None:
        self._write(i2c_addr, bytes([value]))

    def read_byte(self, i2c_addr: int, force=None) -> int:
        return self._read(i2c_addr, 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force=None) -> None:
        self._write(i2c_addr, bytes([register, value]))

    def read_byte_data(self, i2c_addr: int, register: int, force=None) -> int:
        with self._lock:  # one combined transaction: write the register, repeated start, read
            device = self._device(i2c_addr)
            device.write(bytes([register]))
            return device.read(1)[0]

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force=None) -> list[int]:
        with self._lock:
            device = self._device(i2c_addr)
            device.write(bytes([register]))
            return list(device.read(length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data, force=None) -> None:
        self._write(i2c_addr, bytes([register, *data]))

    def i2c_rdwr(self, *msgs) -> None:
        with self._lock:
            for msg in msgs:
                device = self._device(msg.addr)
                if msg.flags & I2C_M_RD:
                    data = device.read(msg.len)
                    for i, b in enumerate(data[: msg.len]):
                        msg.buf[i] = bytes([b])
                else:
                    device.write(bytes(msg))

    def close(self) -> None:
        self.closed = True


# --- MaxBotix I2CXL-MaxSonar-EZ -------------------------------------------------------------------

class I2cxlDevice(I2cDevice):
    """Write 0x51 to range; about 80 ms later a 2-byte read gives the range in
    cm, high byte first. While ranging it ignores the bus (no ACK). Before any
    range command it answers with two part-information bytes. Targets nearer
    than the minimum read as the minimum."""

    RANGE = 0x51
    MIN_CM, MAX_CM = 20, 765

    def __init__(self, distance: Callable[[], float] | None = None, ranging_time: float = 0.08,
                 clock: Callable[[], float] = time.monotonic, answers: list[bytes] | None = None):
        self.distance = distance  # m to the target, from a physical model
        self.answers = list(answers or [])  # or raw 2-byte answers in turn (captures), the last one repeated
        self.ranging_time = ranging_time
        self.clock = clock
        self.busy_until = 0.0
        self.range_cm: int | None = None
        self.commands: list[bytes] = []
        self.override: bytes | None = None  # raw bytes to answer instead (a test's bad device)

    def _check_idle(self) -> None:
        if self.clock() < self.busy_until:
            raise nack(0x70)

    def write(self, data: bytes) -> None:
        self._check_idle()
        self.commands.append(data)
        if data[:1] == bytes([self.RANGE]):
            self.busy_until = self.clock() + self.ranging_time
            if self.answers:
                self.override = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                return
            cm = round(self.distance() * 100)
            self.range_cm = max(self.MIN_CM, min(self.MAX_CM, cm))
        # 0xAA 0xA5 <addr> (change address) is accepted and ignored here.

    def read(self, count: int) -> bytes:
        self._check_idle()
        if self.override is not None:
            data = self.override
        elif self.range_cm is None:
            data = bytes([0x01, 0x20])  # part information bytes after power-up
        else:
            data = self.range_cm.to_bytes(2, "big")
        return (data + bytes(count))[:count]


# --- Bosch BME280 ----------------------------------------------------------------------------------

class Bme280Device(I2cDevice):
    """The BME280's register map: chip id 0x60 at 0xD0, reset 0xB6 at 0xE0,
    trimming parameters at 0x88–0xA1 and 0xE1–0xE7, ctrl_hum 0xF2 (takes effect
    at the next ctrl_meas write), status 0xF3 (bit 3 measuring, bit 0
    im_update), ctrl_meas 0xF4, config 0xF5, data 0xF7–0xFE.

    A write to ctrl_meas with mode forced (01/10) starts one measurement of
    `measure_time` seconds; then the data registers hold the ADC values of
    `adc()` and the mode returns to sleep. A skipped measurement (oversampling
    0) reads 0x80000 / 0x8000, as the datasheet says."""

    def __init__(self, calibration: bytes | dict[int, bytes], adc: Callable[[], tuple[int, int, int]],
                 chip_id: int = 0x60, measure_time: float = 0.0093, clock: Callable[[], float] = time.monotonic):
        self.regs = bytearray(256)
        if isinstance(calibration, dict):
            for start, data in calibration.items():
                self.regs[start:start + len(data)] = data
        else:  # 0x88..0xA1 (26 bytes) then 0xE1..0xE7 (7 bytes)
            self.regs[0x88:0xA2] = calibration[:26]
            self.regs[0xE1:0xE8] = calibration[26:33]
        self.regs[0xD0] = chip_id
        self.adc = adc
        self.measure_time = measure_time
        self.clock = clock
        self.pointer = 0
        self.osrs_h = 0  # the active humidity oversampling (latched at a ctrl_meas write)
        self.done_at: float | None = None
        self.measurements = 0
        self._reset_data()

    def _reset_data(self) -> None:
        self.regs[0xF2:0xF6] = bytes(4)
        self.regs[0xF7:0xFF] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])

    def _finish(self) -> None:
        if self.done_at is not None and self.clock() >= self.done_at:
            self.done_at = None
            ctrl = self.regs[0xF4]
            t, p, h = self.adc()
            t = t if ctrl >> 5 else 0x80000
            p = p if (ctrl >> 2) & 7 else 0x80000
            h = h if self.osrs_h else 0x8000
            self.regs[0xF7:0xFA] = (p << 4).to_bytes(3, "big")
            self.regs[0xFA:0xFD] = (t << 4).to_bytes(3, "big")
            self.regs[0xFD:0xFF] = h.to_bytes(2, "big")
            self.regs[0xF4] = ctrl & ~0x03  # back to sleep
            self.measurements += 1

    def write(self, data: bytes) -> None:
        self._finish()
        # I2C writes are (register, value) pairs; a lone register byte sets the read pointer.
        self.pointer = data[0]
        for reg, value in zip(data[0::2], data[1::2]):
            if reg == 0xE0 and value == 0xB6:
                self._reset_data()
                self.osrs_h = 0
                self.done_at = None
            elif reg in (0xF2, 0xF5):
                self.regs[reg] = value
            elif reg == 0xF4:
                self.regs[reg] = value
                self.osrs_h = self.regs[0xF2] & 7
                if value & 3 in (1, 2):
                    self.done_at = self.clock() + self.measure_time

    def read(self, count: int) -> bytes:
        self._finish()
        out = bytearray()
        for _ in range(count):
            reg = self.pointer
            if reg == 0xF3:
                value = 0x08 if self.done_at is not None else 0
            else:
                value = self.regs[reg]
            out.append(value)
            self.pointer = (self.pointer + 1) & 0xFF
        return bytes(out)


def bme280_calibration(t: tuple[int, int, int], p: tuple[int, ...], h: tuple[int, int, int, int, int, int]) -> dict[int, bytes]:
    """Trimming parameters (dig_T1..3, dig_P1..9, dig_H1..6) as the chip stores them."""
    t1, t2, t3 = t
    regs = bytearray()
    regs += t1.to_bytes(2, "little") + t2.to_bytes(2, "little", signed=True) + t3.to_bytes(2, "little", signed=True)
    regs += p[0].to_bytes(2, "little") + b"".join(v.to_bytes(2, "little", signed=True) for v in p[1:])
    h1, h2, h3, h4, h5, h6 = h
    low = bytes([h1])  # 0xA1 (0xA0 is reserved)
    high = (h2.to_bytes(2, "little", signed=True) + bytes([h3, (h4 >> 4) & 0xFF, (h4 & 0x0F) | ((h5 & 0x0F) << 4),
                                                           (h5 >> 4) & 0xFF]) + h6.to_bytes(1, "little", signed=True))
    return {0x88: bytes(regs), 0xA1: low, 0xE1: high}


# The datasheet's worked example (T, P) and a derived humidity trimming set.
EXAMPLE_TRIMMING = ((27504, 26435, -1000), (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000),
                    (75, 362, 0, 333, 0, 30))
EXAMPLE_CALIBRATION = bme280_calibration(*EXAMPLE_TRIMMING)


def _invert(f: Callable[[int], float], target: float, bits: int) -> int:
    """The ADC value whose compensated result is nearest `target` (f is monotonic)."""
    lo, hi = 0, (1 << bits) - 2
    rising = f(hi) > f(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda a: abs(f(a) - target))


# The chip's physics, as an oracle independent of the driver: the datasheet's compensation formulas in
# double-precision floating point (BME280 datasheet, §8.1), where the driver uses the integer ones (§4.2.3).
# Simulating with the driver's own code would let a shared mistake pass unseen.

def _t_fine(adc_t: int, t: tuple) -> float:
    t1, t2, t3 = t
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
    return var1 + var2


def _pressure_pa(adc_p: int, t_fine: float, p: tuple) -> float:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = p
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    pa = (1048576.0 - adc_p - var2 / 4096.0) * 6250.0 / var1
    return pa + (p9 * pa * pa / 2147483648.0 + pa * p8 / 32768.0 + p7) / 16.0


def _humidity(adc_h: int, t_fine: float, h: tuple) -> float:
    h1, h2, h3, h4, h5, h6 = h
    v = t_fine - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    return min(max(v * (1.0 - h1 * v / 524288.0), 0.0), 100.0)


def bme280_adc_for(temp_c: float, pressure_hpa: float, humidity: float,
                   trimming: tuple = EXAMPLE_TRIMMING) -> tuple[int, int, int]:
    """The raw ADC values a chip with these trimming parameters would measure in this air."""
    t, p, h = trimming
    adc_t = _invert(lambda a: _t_fine(a, t) / 5120.0, temp_c, 20)
    t_fine = _t_fine(adc_t, t)
    adc_p = _invert(lambda a: _pressure_pa(a, t_fine, p) / 100, pressure_hpa, 20)
    adc_h = _invert(lambda a: _humidity(a, t_fine, h), humidity, 16)
    return adc_t, adc_p, adc_h


def bme280_in_air(air: Callable[[], tuple[float, float, float]], **kwargs) -> Bme280Device:
    """A BME280 measuring the air of a model: air() -> (°C, hPa, %RH)."""
    return Bme280Device(EXAMPLE_CALIBRATION, adc=lambda: bme280_adc_for(*air()), **kwargs)
