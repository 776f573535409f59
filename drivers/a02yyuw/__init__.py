"""DFRobot A02YYUW (SEN0311) and JSN-SR04T in UART mode: 4-byte frames
`FF H L SUM`, SUM = (0xFF + H + L) & 0xFF, distance H*256+L (README.md)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from drivers.serial_distance import Sample, SerialDistanceDriver, SerialDistanceOptions

HEADER = 0xFF
FRAME_LEN = 4
TRIGGER = b"\x55"  # JSN-SR04T mode 3 and v3 serial mode: one frame per 0x55
TRIGGER_RETRY = 0.3  # s without an answer before triggering again
LOWER_LIMIT_MM = 30  # DFRobot's sample and ESPHome treat <= 30 mm as "below the lower limit"
# Sentinels DFRobot documents for SEN0754, which uses the same frame; no real
# distance comes near them, so reading them as codes is safe for every model.
CODES = {0xFFFD: "no object (0xFFFD)", 0xFFFE: "co-channel interference (0xFFFE)"}


class ParseError(ValueError):
    """Not a valid frame: wrong length, no 0xFF header, or a checksum mismatch."""


def parse_frame(frame: bytes) -> int:
    """One 4-byte frame -> the raw 16-bit value, or ParseError."""
    if len(frame) != FRAME_LEN:
        raise ParseError(f"a frame is 4 bytes, got {len(frame)}")
    header, high, low, checksum = frame
    if header != HEADER:
        raise ParseError(f"frame must start with 0xFF, got 0x{header:02X}")
    if (HEADER + high + low) & 0xFF != checksum:
        raise ParseError(f"checksum 0x{checksum:02X} != 0x{(HEADER + high + low) & 0xFF:02X} in {frame.hex(' ')}")
    return high << 8 | low


def scan_frames(buffer: bytes) -> tuple[list[int], int, bytes]:
    """(values of the valid frames, frames discarded, unfinished tail).

    Hunts for 0xFF, takes 4 bytes and checks the sum; after a bad frame it
    resyncs on the next 0xFF after the failed header, because a data or sum
    byte may itself be 0xFF and the real header may sit inside the bad frame."""
    values, bad, i, resyncing = [], 0, 0, False
    while True:
        start = buffer.find(HEADER, i)
        if start < 0:
            if i < len(buffer) and not resyncing:
                bad += 1  # a run of garbage with no header at all
            return values, bad, b""
        if start > i and not resyncing:
            bad += 1  # garbage before the header
        if len(buffer) - start < FRAME_LEN:
            return values, bad, buffer[start:]
        try:
            values.append(parse_frame(buffer[start:start + FRAME_LEN]))
            i, resyncing = start + FRAME_LEN, False
        except ParseError:
            if not resyncing:
                bad += 1
            i, resyncing = start + 1, True


class A02yyuwOptions(SerialDistanceOptions):
    unit: Literal["mm", "cm"] = Field("mm", description="unit of the frame value: mm (A02YYUW, JSN-SR04T), cm (SEN0627)")
    max_range: float = Field(6.0, gt=0, le=10, json_schema_extra={"unit": "m"},
                             description="the model's range (A02YYUW 4.5, JSN-SR04T 6): a larger distance is "
                                         "suspect, a higher mount_height rejected")
    trigger: bool = Field(False, description="send 0x55 for each frame (JSN-SR04T mode 3 / v3 serial mode)")

    def range_limit(self) -> float:
        return self.max_range


class A02yyuw(SerialDistanceDriver):
    summary = "DFRobot A02YYUW / JSN-SR04T UART frames FF H L SUM, median of N"
    Options = A02yyuwOptions
    # Neither DFRobot's wiki nor the JSN-SR04T manual documents temperature
    # compensation; the JSN manual converts with 340 m/s. The pipeline corrects.
    temperature_compensated = False
    assumed_sound_speed = 340.0

    def __init__(self, options: A02yyuwOptions, devices=None):
        super().__init__(options, devices)
        self._next_trigger = 0.0

    def poll(self) -> None:
        # Triggered modes answer 0x55 with one frame; free-running modes need nothing.
        now = time.monotonic()
        if self.options.trigger and now >= self._next_trigger:
            self.link.write(TRIGGER)
            self._next_trigger = now + TRIGGER_RETRY

    def feed(self, data: bytes) -> list[Sample]:
        samples = super().feed(data)
        if samples:
            self._next_trigger = 0.0  # answered: trigger the next one now
        return samples

    def classify(self, raw: int) -> Sample:
        if raw in CODES:
            return Sample("code", note=CODES[raw])
        metres = raw / (1000 if self.options.unit == "mm" else 100)
        if metres * 1000 <= LOWER_LIMIT_MM:
            return Sample("code", note=f"below the lower limit ({raw} {self.options.unit})")
        if metres > self.options.max_range:
            return Sample("suspect", metres, note=f"beyond {self.options.max_range:g} m")
        return Sample("ok", metres)

    def decode(self, buffer: bytes) -> tuple[list[Sample], int, bytes]:
        values, bad, rest = scan_frames(buffer)
        return [self.classify(v) for v in values], bad, rest


__all__ = ["A02yyuw", "A02yyuwOptions", "ParseError", "parse_frame", "scan_frames"]
