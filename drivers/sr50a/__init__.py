"""Campbell Scientific SR50A / SR50AT over RS-232: polled with `pAA<CR>`,
answering `<STX>aa;D;QQQ;[TT.TT;]VVVVV;CC<CR><LF><ETX>` (README.md)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from drivers.serial_distance import Sample, SerialDistanceDriver, SerialDistanceOptions

STX, ETX = b"\x02", b"\x03"
TRAILER = b"\r\n\x03"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
ADDRESS = re.compile(r"[0-9A-Za-z]{1,2}")
UNIT_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "ft": 0.3048, "in": 0.0254}
RANGE_M = (0.5, 10.0)  # SR50A measuring range
POLL_TIMEOUT = 3.0  # s; one measurement takes about 1 s


class ParseError(ValueError):
    """Not a valid SR50A packet: framing, field count, number format or checksum."""


@dataclass(frozen=True, slots=True)
class Packet:
    address: str
    distance: float  # as printed, in the sensor's output units
    quality: int  # 152..600, 600 worst; 0 = no reading
    temperature: float | None  # °C, SR50AT only (None when absent or -999)
    diagnostics: str


def checksum(packet: bytes, cc: bytes) -> int:
    """Two's complement of the low byte of the sum of every byte but the CC digits."""
    return -(sum(packet) - sum(cc)) & 0xFF


def parse_packet(data: bytes) -> Packet:
    """One packet from STX to ETX inclusive -> Packet, or ParseError."""
    if not (data.startswith(STX) and data.endswith(TRAILER)):
        raise ParseError(f"a packet is STX … CR LF ETX: {data[:40]!r}")
    try:
        fields = data[1:-len(TRAILER)].decode("ascii").split(";")
    except UnicodeDecodeError:
        raise ParseError(f"non-ASCII bytes in packet {data[:40]!r}") from None
    if len(fields) not in (5, 6):
        raise ParseError(f"expected 5 or 6 fields, got {len(fields)}: {data[:40]!r}")
    address, distance, quality, *temperature, diagnostics, cc = fields
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", cc):
        raise ParseError(f"checksum field {cc!r} is not two hex digits")
    if int(cc, 16) != checksum(data, cc.encode()):
        raise ParseError(f"checksum {cc} != {checksum(data, cc.encode()):02X}")
    if not ADDRESS.fullmatch(address):
        raise ParseError(f"bad address {address!r}")
    if not NUMBER.fullmatch(distance):
        raise ParseError(f"bad distance {distance!r}")
    if not (quality.isdigit() and len(quality) <= 3):
        raise ParseError(f"bad quality number {quality!r}")
    if temperature and not NUMBER.fullmatch(temperature[0]):
        raise ParseError(f"bad temperature {temperature[0]!r}")
    temp = float(temperature[0]) if temperature else None
    return Packet(address, float(distance), int(quality), None if temp == -999 else temp, diagnostics)


def split_packets(buffer: bytes) -> tuple[list[bytes], int, bytes]:
    """(candidate packets from their last STX to ETX, chunks that held no STX, unfinished tail)."""
    *chunks, rest = buffer.split(ETX)
    packets, junk = [], 0
    for chunk in chunks:
        start = chunk.rfind(STX)
        if start < 0:
            junk += 1
            continue
        if chunk[:start].strip():  # a cut-off packet or noise before this one
            junk += 1
        packets.append(chunk[start:] + ETX)
    return packets, junk, rest


def _quoted(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads 33 as a number and 07 as 7: the address must keep its digits.
        raise ValueError(f'write the address in quotes, e.g. "33" (got the number {value})')
    return value


Address = Annotated[str, BeforeValidator(_quoted), Field(pattern=r"^[0-9A-Za-z]{1,2}$")]


class Sr50aOptions(SerialDistanceOptions):
    kind: Literal["river_level", "snow_depth"] = "snow_depth"
    address: Address = Field("33", description="the sensor's RS-232 address, a string")
    units: Literal["m", "cm", "mm", "ft", "in"] = Field("mm", description="the sensor's Output Units setting")
    samples: int = Field(11, ge=1, le=100, description="polls per reading; the reading is their median (manual: 11)")
    max_quality: int = Field(300, ge=152, le=600, description="quality numbers above this are suspect (600 worst)")
    measuring_range = 10.0  # 0.5 to 10 m (SR50A manual, specifications)


class Sr50a(SerialDistanceDriver):
    summary = "Campbell SR50A RS-232 (pAA poll), checksum and quality number, median of N"
    Options = Sr50aOptions
    # The SR50A has no temperature sensor and converts with 331.4 m/s at 0 °C
    # (manual, Formula 1); the pipeline corrects with the air temperature.
    temperature_compensated = False
    assumed_sound_speed = 331.4

    def __init__(self, options: Sr50aOptions, devices=None):
        super().__init__(options, devices)
        self._next_poll = 0.0

    def classify(self, p: Packet) -> Sample:
        extra = (("echo_quality", p.quality),)
        if p.quality == 0 or p.distance in (0, -999) or (self.options.units == "mm" and p.distance == 9999):
            return Sample("code", note=f"no valid reading (distance {p.distance:g}, quality {p.quality})")
        metres = p.distance * UNIT_M[self.options.units]
        if not RANGE_M[0] <= metres <= RANGE_M[1]:
            return Sample("suspect", metres, note=f"outside {RANGE_M[0]:g}-{RANGE_M[1]:g} m", extra=extra)
        if p.quality > self.options.max_quality:
            return Sample("suspect", metres, note=f"quality {p.quality} > {self.options.max_quality}", extra=extra)
        return Sample("ok", metres, extra=extra)

    def decode(self, buffer: bytes) -> tuple[list[Sample], int, bytes]:
        packets, bad, rest = split_packets(buffer)
        samples = []
        for raw in packets:
            try:
                packet = parse_packet(raw)
            except ParseError:
                bad += 1
                continue
            if packet.address == self.options.address:  # others share an RS-485 bus: not ours, not bad
                samples.append(self.classify(packet))
        if STX not in rest and len(rest) > 64:  # noise with no packet start: drop it now
            rest, bad = b"", bad + 1
        return samples, bad, rest

    def open(self) -> None:
        super().open()
        self._next_poll = 0.0

    def feed(self, data: bytes) -> list[Sample]:
        if ETX in data:  # a packet ended (good or bad): the sensor is free, ask for the next one now
            self._next_poll = 0.0
        return super().feed(data)

    def poll(self) -> None:
        now = time.monotonic()
        if now >= self._next_poll:
            self.link.write(f"p{self.options.address}\r".encode())
            self._next_poll = now + POLL_TIMEOUT


__all__ = ["Sr50a", "Sr50aOptions", "Packet", "ParseError", "parse_packet", "split_packets", "checksum"]
