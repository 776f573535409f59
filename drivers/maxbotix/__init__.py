"""MaxBotix HRXL-MaxSonar-WR (MB736x/MB738x) and HRUSB-MaxSonar-EZ (MB1403):
free-running ASCII lines `R####<CR>`, range in mm, 9600 8N1 (README.md)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from drivers.serial_distance import Sample, SerialDistanceDriver, SerialDistanceOptions

LINE = re.compile(rb"R(\d{3,4})\s*")  # HRUSB puts a space before the CR
MIN_MM = 300  # "Large targets closer than 30-cm will typically range as 300-mm"
NO_TARGET_MM = {5: 5000, 10: 9999}  # "A range value of 5000 or 9999 corresponds to no target"


class ParseError(ValueError):
    """A line that is not `R` + 3 or 4 digits."""


def parse_line(line: bytes) -> int:
    """One line without its CR -> the range value in mm, or ParseError."""
    match = LINE.fullmatch(line)
    if match is None:
        raise ParseError(f"not a MaxBotix range line: {line[:40]!r}")
    return int(match.group(1))


def classify(mm: int, range_m: int) -> Sample:
    """The datasheet's meaning of a range value for a 5 m or 10 m model."""
    no_target = NO_TARGET_MM[range_m]
    if mm == no_target:
        return Sample("code", note=f"no target (R{mm:04d})")
    if mm < MIN_MM or mm > no_target:  # nothing this model can report
        return Sample("suspect", mm / 1000, note=f"out of range (R{mm:04d})")
    if mm == MIN_MM:  # clamped: the target may be closer than 300 mm
        return Sample("suspect", mm / 1000, note="at minimum range (R0300)")
    return Sample("ok", mm / 1000)


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete CR-terminated lines and the unfinished tail."""
    *lines, rest = buffer.split(b"\r")
    return lines, rest


class MaxbotixOptions(SerialDistanceOptions):
    range_m: Literal[5, 10] = Field(5, json_schema_extra={"unit": "m"},
                                    description="model range (MB7369 5, MB7389 10); sets the no-target code "
                                                "5000 or 9999 and the highest mount_height")
    measuring_range = 10.0  # the 10 m models (HRXL datasheet)

    def range_limit(self) -> float:
        return float(self.range_m)


class Maxbotix(SerialDistanceDriver):
    summary = "MaxBotix HRXL/HRUSB serial R#### lines (mm), median of N"
    Options = MaxbotixOptions
    temperature_compensated = True  # internal temperature sensor (HRXL datasheet, "Temperature Compensation")
    assumed_sound_speed = 343.0  # not used while the device compensates itself

    def decode(self, buffer: bytes) -> tuple[list[Sample], int, bytes]:
        lines, rest = split_lines(buffer)
        samples, bad = [], 0
        for line in lines:
            if not line.strip():  # a stray LF or an empty line is not a frame
                continue
            try:
                samples.append(classify(parse_line(line.strip(b"\n")), self.options.range_m))
            except ParseError:
                bad += 1
        return samples, bad, rest


__all__ = ["Maxbotix", "MaxbotixOptions", "ParseError", "parse_line", "classify"]
