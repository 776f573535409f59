"""The advertisement record that both scanners (bleak and replay) hand the
driver, its replay-file form (one JSON object a line), and a walker for raw AD
structures (the bytes on the air, as the test vectors give them).

Replay line, shaped like bleak's AdvertisementData:
  {"t": 0.25, "address": "C4:7C:8D:6A:11:02", "rssi": -71,
   "manufacturer_data": {"1177": "0512fc53..."},
   "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "20000b18..."}}
company ids as decimal keys, bytes as hex, t in seconds from the start.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_BASE_UUID = "-0000-1000-8000-00805f9b34fb"


# A replay line is played at start + t: a t of 1e300 would hold the scanner for ever.
MAX_T = 7 * 24 * 3600


class AdvertError(ValueError):
    """A replay line or an AD byte string that cannot be read."""


@dataclass(frozen=True, slots=True)
class Advertisement:
    address: str  # "C4:7C:8D:6A:11:02", upper case as BlueZ reports it
    rssi: int  # dBm
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    t: float = 0.0  # seconds from the start of the scan or replay

    def to_json(self) -> str:
        return json.dumps({
            "t": round(self.t, 3), "address": self.address, "rssi": self.rssi,
            "manufacturer_data": {str(k): v.hex() for k, v in self.manufacturer_data.items()},
            "service_data": {k: v.hex() for k, v in self.service_data.items()},
        }, separators=(",", ":"))


def normalise_mac(text: str) -> str:
    mac = text.strip().upper().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"not a MAC address: {text!r} (write AA:BB:CC:DD:EE:FF)")
    return mac


def _hex(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise AdvertError(f"{where} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AdvertError(f"{where} is not hex") from None


def from_json(line: str) -> Advertisement:
    """One replay line; AdvertError for anything that is not a valid record."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        raise AdvertError("not a JSON line") from None
    if not isinstance(doc, dict):
        raise AdvertError("a replay line is a JSON object")
    t, rssi, address = doc.get("t", 0.0), doc.get("rssi"), doc.get("address")
    # Compared, not math.isfinite(): an integer of 400 digits overflows a float.
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= MAX_T:
        raise AdvertError(f"t must be a number of seconds from 0 to {MAX_T} (a week)")
    if isinstance(rssi, bool) or not isinstance(rssi, int) or not -127 <= rssi <= 20:
        raise AdvertError("rssi must be an integer dBm in -127..20")
    if not isinstance(address, str):
        raise AdvertError("address must be a MAC address string")
    try:
        address = normalise_mac(address)
    except ValueError as exc:
        raise AdvertError(str(exc)) from None
    mfr, svc = doc.get("manufacturer_data", {}), doc.get("service_data", {})
    if not isinstance(mfr, dict) or not isinstance(svc, dict):
        raise AdvertError("manufacturer_data and service_data must be objects")
    manufacturer = {}
    for key, value in mfr.items():
        if not (key.isascii() and key.isdigit()) or int(key) > 0xFFFF:
            raise AdvertError(f"company id {key!r} must be a decimal number 0..65535")
        manufacturer[int(key)] = _hex(value, f"manufacturer_data[{key}]")
    service = {str(key).lower(): _hex(value, f"service_data[{key}]") for key, value in svc.items()}
    return Advertisement(address, rssi, manufacturer, service, float(t))


def parse_ad(data: bytes) -> tuple[dict[int, bytes], dict[str, bytes]]:
    """Manufacturer and service data from raw AD structures (`len type data…`),
    keyed as bleak keys them. A zero length ends the data (padding); a last
    structure cut short is ignored, as receivers do."""
    manufacturer: dict[int, bytes] = {}
    service: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0 or i + 1 + length > len(data):
            break
        kind, body = data[i + 1], bytes(data[i + 2:i + 1 + length])
        if kind == 0xFF and len(body) >= 2:
            manufacturer[int.from_bytes(body[:2], "little")] = body[2:]
        elif kind == 0x16 and len(body) >= 2:
            service[f"0000{int.from_bytes(body[:2], 'little'):04x}{_BASE_UUID}"] = body[2:]
        i += 1 + length
    return manufacturer, service
