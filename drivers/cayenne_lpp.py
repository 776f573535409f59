"""Cayenne Low Power Payload (LPP) decoding: `[channel u8][type u8][data]…`, all
MSB first, type = IPSO object id − 3200 (myDevices Cayenne docs, "Cayenne Low
Power Payload").

`decode` is a pure function. A frame whose type is unknown, or whose data is cut
short, raises LppError carrying the fields decoded before the fault: an unknown
type has an unknown length, so nothing after it can be trusted and nothing is
guessed.
"""

from __future__ import annotations

from dataclasses import dataclass


class LppError(ValueError):
    """The payload is not valid Cayenne LPP. `fields` holds what came before the fault."""

    def __init__(self, message: str, fields: list["LppField"] | None = None):
        super().__init__(message)
        self.fields = fields or []


@dataclass(frozen=True)
class LppType:
    name: str
    size: int                 # bytes of data after channel and type
    parts: tuple[str, ...]    # one name per value ("" for a single value)
    widths: tuple[int, ...]   # bytes per part
    scale: float              # value = raw * scale
    signed: bool
    unit: str | None


def _single(name, size, scale, signed, unit):
    return LppType(name, size, ("",), (size,), scale, signed, unit)


def _triple(name, width, scale, unit):
    return LppType(name, 3 * width, ("x", "y", "z"), (width,) * 3, scale, True, unit)


# The myDevices table, then the extended types of the
# widely used CayenneLPP Arduino library (ElectronicCats), which later decoders
# (pycayennelpp, cayenne_lpp on docs.rs) also read.
TYPES: dict[int, LppType] = {
    0x00: _single("digital_input", 1, 1, False, None),
    0x01: _single("digital_output", 1, 1, False, None),
    0x02: _single("analog_input", 2, 0.01, True, None),
    0x03: _single("analog_output", 2, 0.01, True, None),
    0x65: _single("illuminance", 2, 1, False, "lx"),
    0x66: _single("presence", 1, 1, False, None),
    0x67: _single("temperature", 2, 0.1, True, "°C"),
    0x68: _single("humidity", 1, 0.5, False, "%"),
    0x71: _triple("accelerometer", 2, 0.001, "g"),
    0x73: _single("barometer", 2, 0.1, False, "hPa"),
    0x86: _triple("gyrometer", 2, 0.01, "°/s"),
    # GPS: latitude and longitude int24 × 0.0001°, altitude int24 × 0.01 m (units differ per part: see _UNITS).
    0x88: LppType("gps", 9, ("lat", "lon", "alt"), (3, 3, 3), 0, True, None),
    # Extended types.
    0x64: _single("generic", 4, 1, False, None),
    0x74: _single("voltage", 2, 0.01, False, "V"),
    0x75: _single("current", 2, 0.001, False, "A"),
    0x76: _single("frequency", 4, 1, False, "Hz"),
    0x78: _single("percentage", 1, 1, False, "%"),
    0x79: _single("altitude", 2, 1, True, "m"),
    0x7D: _single("concentration", 2, 1, False, "ppm"),
    0x80: _single("power", 2, 1, False, "W"),
    0x82: _single("distance", 4, 0.001, False, "m"),
    0x83: _single("energy", 4, 0.001, False, "kWh"),
    0x84: _single("direction", 2, 1, False, "°"),
    0x85: _single("unixtime", 4, 1, False, "s"),
    0x87: LppType("colour", 3, ("r", "g", "b"), (1, 1, 1), 1, False, None),
    0x8E: _single("switch", 1, 1, False, None),
}

_GPS = {"lat": (0.0001, "°"), "lon": (0.0001, "°"), "alt": (0.01, "m")}


@dataclass(frozen=True)
class LppField:
    channel: int
    type: str
    part: str           # "" for single-valued types, else x/y/z, lat/lon/alt, r/g/b
    value: float | int
    unit: str | None

    def default_name(self) -> str:
        """`temperature_3`, `accelerometer_6_x`: the name when no channel name is configured."""
        return f"{self.type}_{self.channel}" + (f"_{self.part}" if self.part else "")


def _number(raw: int, scale: float) -> float | int:
    if scale == 1:
        return raw
    # Round to the resolution so 272 × 0.1 reads 27.2, not 27.200000000000003.
    digits = max(0, len(f"{scale:.6f}".rstrip("0").split(".")[1]))
    return round(raw * scale, digits)


def decode(data: bytes) -> list[LppField]:
    """Every field of an LPP payload, in order. Raises LppError on an unknown
    type or a truncated field."""
    fields: list[LppField] = []
    i = 0
    if not data:
        raise LppError("empty LPP payload")
    while i < len(data):
        if i + 2 > len(data):
            raise LppError(f"LPP payload ends inside a field header at byte {i}", fields)
        channel, code = data[i], data[i + 1]
        kind = TYPES.get(code)
        if kind is None:
            raise LppError(f"unknown LPP type 0x{code:02X} on channel {channel} at byte {i}", fields)
        start = i + 2
        if start + kind.size > len(data):
            raise LppError(f"LPP {kind.name} on channel {channel} needs {kind.size} bytes, "
                           f"{len(data) - start} left", fields)
        offset = start
        for part, width in zip(kind.parts, kind.widths):
            raw = int.from_bytes(data[offset:offset + width], "big", signed=kind.signed)
            offset += width
            scale, unit = _GPS[part] if kind.name == "gps" else (kind.scale, kind.unit)
            fields.append(LppField(channel, kind.name, part, _number(raw, scale), unit))
        i = start + kind.size
    return fields
