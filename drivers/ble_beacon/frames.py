"""Beacon frame decoders: pure functions from the bytes of one advertisement
element to its fields, following the specifications (not the decoding
libraries, where they disagree). Every decoder raises FrameError, and only
FrameError, on bytes that are not a valid frame of its kind.

- iBeacon: Apple manufacturer data (company 0x004C) `02 15 UUID[16] major minor power`.
- Eddystone (google/eddystone): service data of UUID 0xFEAA, frames UID 0x00,
  URL 0x10, TLM 0x20 (plain, version 0). SEC_CNT counts 0.1 s (tlm-plain.md).
- RuuviTag data format 5 (ruuvi/docs data-format-5-rawv2.md): manufacturer
  data of company 0x0499; not-available sentinels decode to None.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

APPLE = 0x004C
RUUVI = 0x0499
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"


class FrameError(ValueError):
    """The bytes are not a valid frame of the kind being decoded."""


class Unsupported(FrameError):
    """A well-formed frame of a kind this driver does not read (Apple
    continuity messages, Ruuvi formats other than 5, Eddystone EID,
    encrypted TLM): ignored, not counted as bad."""


@dataclass(frozen=True, slots=True)
class IBeacon:
    uuid: str
    major: int
    minor: int
    tx_power: int  # measured power: RSSI at 1 m, dBm

    @property
    def raw_id(self) -> str:
        return f"ibeacon:{self.uuid}:{self.major}:{self.minor}"


@dataclass(frozen=True, slots=True)
class EddystoneUID:
    tx_power_0m: int
    namespace: str  # 10 bytes, lowercase hex
    instance: str  # 6 bytes, lowercase hex

    @property
    def raw_id(self) -> str:
        return f"eddystone:{self.namespace}:{self.instance}"


@dataclass(frozen=True, slots=True)
class EddystoneURL:
    tx_power_0m: int
    url: str


@dataclass(frozen=True, slots=True)
class EddystoneTLM:
    battery_mv: int | None  # None: the beacon does not measure it (0 on the air)
    temperature: float | None  # °C; None: not supported (0x8000 on the air)
    adv_count: int
    uptime_s: float  # SEC_CNT × 0.1 s


@dataclass(frozen=True, slots=True)
class RuuviV5:
    temperature: float | None  # °C
    humidity: float | None  # %
    pressure: int | None  # Pa
    acc_x: float | None  # g
    acc_y: float | None
    acc_z: float | None
    tx_power: int | None  # transmit power, dBm (not a calibrated 1 m RSSI)
    battery: float | None  # V
    movement_counter: int | None
    measurement_sequence: int | None
    mac: str | None  # "CB:B8:33:4C:88:4F"


Frame = IBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | RuuviV5


def decode_ibeacon(data: bytes) -> IBeacon:
    """Apple manufacturer data (after the company id)."""
    if len(data) < 2 or data[0] != 0x02:
        raise Unsupported("Apple manufacturer data that is not an iBeacon")
    if data[1] != 0x15 or len(data) < 23:
        raise FrameError(f"iBeacon needs 21 bytes after 02 15 (length byte {data[1]:#04x}, {len(data) - 2} bytes)")
    major, minor, power = struct.unpack(">HHb", data[18:23])
    return IBeacon(str(uuidlib.UUID(bytes=bytes(data[2:18]))), major, minor, power)


_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
_EXPANSIONS = (".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
               ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov")


def _url(scheme: int, body: bytes) -> str:
    if scheme >= len(_SCHEMES):
        raise FrameError(f"Eddystone-URL scheme {scheme:#04x} is reserved")
    parts = [_SCHEMES[scheme]]
    for b in body:
        if b < len(_EXPANSIONS):
            parts.append(_EXPANSIONS[b])
        elif 0x21 <= b <= 0x7E:
            parts.append(chr(b))
        else:
            raise FrameError(f"Eddystone-URL byte {b:#04x} is reserved")
    return "".join(parts)


def decode_eddystone(data: bytes) -> EddystoneUID | EddystoneURL | EddystoneTLM:
    """Service data of UUID 0xFEAA (after the UUID)."""
    if not data:
        raise FrameError("empty Eddystone service data")
    kind = data[0]
    if kind == 0x00:
        # 20 bytes with the two RFU bytes, 18 on legacy beacons that omit them.
        if len(data) not in (18, 20):
            raise FrameError(f"Eddystone-UID is 18 or 20 bytes, got {len(data)}")
        return EddystoneUID(struct.unpack(">b", data[1:2])[0], data[2:12].hex(), data[12:18].hex())
    if kind == 0x10:
        if not 3 <= len(data) <= 20:
            raise FrameError(f"Eddystone-URL is 3 to 20 bytes, got {len(data)}")
        return EddystoneURL(struct.unpack(">b", data[1:2])[0], _url(data[2], data[3:]))
    if kind == 0x20:
        if len(data) < 2:
            raise FrameError("Eddystone-TLM without a version byte")
        if data[1] == 0x01:
            raise Unsupported("encrypted Eddystone-TLM")
        if data[1] != 0x00:
            raise FrameError(f"Eddystone-TLM version {data[1]:#04x} is unknown")
        if len(data) != 14:
            raise FrameError(f"plain Eddystone-TLM is 14 bytes, got {len(data)}")
        mv, temp, adv, sec = struct.unpack(">HhII", data[2:14])
        return EddystoneTLM(mv or None, None if temp == -0x8000 else temp / 256, adv, round(sec / 10, 1))
    if kind in (0x30, 0x40):
        raise Unsupported(f"Eddystone frame {kind:#04x} (EID) is not read")
    raise FrameError(f"Eddystone frame type {kind:#04x} is unknown")


def decode_ruuvi(data: bytes) -> RuuviV5:
    """Ruuvi manufacturer data (after the company id), data format 5."""
    if not data:
        raise FrameError("empty Ruuvi manufacturer data")
    if data[0] != 5:
        raise Unsupported(f"Ruuvi data format {data[0]} is not read (only 5, RAWv2)")
    if len(data) != 24:
        raise FrameError(f"Ruuvi format 5 is 24 bytes, got {len(data)}")
    t, h, p, ax, ay, az, power, move, seq = struct.unpack(">hHHhhhHBH", data[1:18])
    mac = data[18:24]

    def acc(v: int) -> float | None:
        return None if v == -0x8000 else v / 1000

    volts, tx = power >> 5, power & 0x1F
    return RuuviV5(
        temperature=None if t == -0x8000 else round(t * 0.005, 3),
        humidity=None if h == 0xFFFF else round(h * 0.0025, 4),
        pressure=None if p == 0xFFFF else p + 50_000,
        acc_x=acc(ax), acc_y=acc(ay), acc_z=acc(az),
        tx_power=None if tx == 31 else -40 + 2 * tx,
        battery=None if volts == 2047 else (volts + 1600) / 1000,
        movement_counter=None if move == 0xFF else move,
        measurement_sequence=None if seq == 0xFFFF else seq,
        mac=None if mac == b"\xff" * 6 else ":".join(f"{b:02X}" for b in mac),
    )


def decode(manufacturer_data: dict[int, bytes], service_data: dict[str, bytes]) -> tuple[list[Frame], list[FrameError]]:
    """Every beacon frame in one advertisement, and the errors of the
    malformed ones. Elements of no beacon kind are left out silently."""
    frames: list[Frame] = []
    errors: list[FrameError] = []
    decoders = [(decode_ibeacon, manufacturer_data.get(APPLE)), (decode_ruuvi, manufacturer_data.get(RUUVI)),
                (decode_eddystone, service_data.get(EDDYSTONE_UUID))]
    for decoder, data in decoders:
        if data is None:
            continue
        try:
            frames.append(decoder(bytes(data)))
        except Unsupported:
            pass
        except FrameError as exc:
            errors.append(exc)
    return frames, errors
