"""The serial seam: every serial driver reaches its device through a SerialLink
opened by path, so a pseudo-terminal simulator (hil/pty_device.py) can stand in
for a USB adapter and the driver code is the field code.

Errors become DeviceError with the port named; the scheduler then closes the
driver, backs off and reopens it (a USB adapter unplugged and plugged back in).
"""

from __future__ import annotations

import time

import serial

from gateway.sdk.driver import DeviceError


class SerialLink:
    def __init__(self, port: str, baudrate: int):
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._pending = b""

    def open(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0.05, write_timeout=2)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"cannot open serial port {self.port}: {exc}") from exc
        self._pending = b""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise DeviceError(f"serial port {self.port} is not open")
        return self._serial

    def read_some(self, deadline: float) -> bytes:
        """Whatever bytes arrive before the monotonic `deadline` (b"" if none)."""
        s = self._port()
        try:
            while True:
                data = s.read(max(1, s.in_waiting))
                if data or time.monotonic() >= deadline:
                    return data
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"serial port {self.port} failed (unplugged?): {exc}") from exc

    def read_until(self, terminator: bytes, deadline: float, max_len: int = 4096) -> bytes | None:
        """The next chunk ending in `terminator` (terminator stripped), or None
        at the deadline. A chunk longer than max_len is garbage and is cut."""
        while True:
            end = self._pending.find(terminator)
            if end >= 0:
                chunk, self._pending = self._pending[:end], self._pending[end + len(terminator):]
                return chunk
            if len(self._pending) > max_len:
                self._pending = self._pending[-max_len:]
            if time.monotonic() >= deadline:
                return None
            self._pending += self.read_some(deadline)

    def write(self, data: bytes) -> None:
        try:
            self._port().write(data)
            self._port().flush()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"serial port {self.port} write failed: {exc}") from exc

    def discard_input(self) -> None:
        self._pending = b""
        try:
            self._port().reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"serial port {self.port} failed: {exc}") from exc

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None
