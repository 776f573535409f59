"""`gateway scan serial|i2c|ble`: what is plugged in, for a technician at the
cabinet with a laptop.

- serial: every port pyserial finds, with USB vendor:product ids and serial
  numbers, plus the stable /dev/serial/by-id names, plus any paths given
  (a pseudo-terminal, a port pyserial does not list); each one is opened to
  show whether this user may use it.
- i2c: every 7-bit address that answers on a bus, and the chip when known
  (a BME280 by its chip-id register, a MaxBotix I2CXL at 0x70).
- ble: decoded beacons nearby, through drivers/ble_beacon/scan.py when that
  driver is installed.
"""

from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import serial
from serial.tools import list_ports


@dataclass
class SerialPort:
    path: str
    device: str  # what the path resolves to
    usb_id: str | None  # "vvvv:pppp"
    serial_number: str | None
    description: str
    by_id: str | None
    access: str  # "ok" or why it does not open


def _by_id_links(root: Path = Path("/dev/serial/by-id")) -> dict[str, str]:
    try:
        return {os.path.realpath(p): str(p) for p in root.iterdir()}
    except OSError:
        return {}


def _access(path: str) -> str:
    try:
        s = serial.Serial(path, timeout=0)
    except serial.SerialException as exc:
        inner = exc.__context__ if isinstance(exc.__context__, OSError) else None
        if (inner and inner.errno == errno.EACCES) or "Permission denied" in str(exc):
            return "permission denied (add the user to the dialout group)"
        if (inner and inner.errno == errno.EBUSY) or "busy" in str(exc).lower():
            return "busy (in use by another program, the gateway itself?)"
        return f"does not open: {exc}"
    s.close()
    return "ok"


def scan_serial(extra: list[str] = (), probe: bool = True) -> list[SerialPort]:
    by_id = _by_id_links()
    ports: list[SerialPort] = []
    seen = set()
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        real = os.path.realpath(p.device)
        seen.add(real)
        usb = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else None
        desc = " ".join(x for x in (p.manufacturer, p.product) if x) or (p.description if p.description != "n/a" else "")
        ports.append(SerialPort(p.device, real, usb, p.serial_number, desc, by_id.get(real),
                                _access(p.device) if probe else "-"))
    for path in extra:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        if not os.path.exists(path):
            ports.append(SerialPort(path, real, None, None, "", None, "does not exist"))
            continue
        kind = "pseudo-terminal" if real.startswith("/dev/pts/") else "not listed by the system (no USB ids)"
        ports.append(SerialPort(path, real, None, None, kind, by_id.get(real), _access(path) if probe else "-"))
    return ports


def print_serial(ports: list[SerialPort]) -> None:
    if not ports:
        print("no serial ports found (a USB adapter plugged in? `dmesg | tail` shows what the kernel saw)")
        return
    print(f"{'port':<28} {'usb id':<10} {'serial no.':<14} {'access':<10} description")
    for p in ports:
        name = p.path if p.device == p.path else f"{p.path} -> {p.device}"
        print(f"{name:<28} {p.usb_id or '-':<10} {p.serial_number or '-':<14} {p.access:<10} {p.description}")
        if p.by_id:
            print(f"    stable name for the config: {p.by_id}")


# --- I2C -----------------------------------------------------------------------------------------

class SMBusLike(Protocol):
    def read_byte(self, address: int) -> int: ...
    def read_byte_data(self, address: int, register: int) -> int: ...


BOSCH_CHIP_IDS = {0x60: "BME280", 0x58: "BMP280", 0x56: "BMP280 (sample)", 0x57: "BMP280 (sample)", 0x61: "BME680"}


def identify(bus: SMBusLike, address: int) -> str | None:
    """The chip at an address that answered, when we know it."""
    if address in (0x76, 0x77):
        try:
            chip = bus.read_byte_data(address, 0xD0)  # chip-id register
        except OSError:
            return "unknown (no chip id at 0xD0)"
        return BOSCH_CHIP_IDS.get(chip, f"unknown Bosch-address chip (id 0x{chip:02x})")
    if address == 0x70:
        return "MaxBotix I2CXL-MaxSonar (default address; or a TCA9548A multiplexer)"
    return None


def scan_i2c(bus: SMBusLike, first: int = 0x08, last: int = 0x77) -> list[tuple[int, str | None]]:
    """(address, chip) for every address that acknowledges a one-byte read, like `i2cdetect -r`."""
    found = []
    for address in range(first, last + 1):
        try:
            bus.read_byte(address)
        except OSError:
            continue  # no ACK (EREMOTEIO / ENXIO): nothing there
        found.append((address, identify(bus, address)))
    return found


def print_i2c(bus_number: int, found: list[tuple[int, str | None]]) -> None:
    if not found:
        print(f"nothing answers on I2C bus {bus_number} (wiring, power, pull-ups? `raspi-config` → I2C enabled?)")
        return
    print(f"I2C bus {bus_number}:")
    for address, chip in found:
        print(f"  0x{address:02x}  {chip or 'unknown device'}")


def as_dicts(ports: list[SerialPort]) -> list[dict]:
    return [asdict(p) for p in ports]
