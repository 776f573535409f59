"""Typed config fields shared by the gateway and the drivers: durations, ids,
locations, secret files. Each checks its value at load with a message a
technician can act on."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: object) -> float:
    """'500ms', '10s', '1.5m', '1h' -> seconds. Bare numbers are refused: a unit
    must be written, so '10' cannot silently mean ten hours or ten milliseconds."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"a duration is a number with ms, s, m or h, e.g. 10s (got {text!r})")
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"a duration is a positive number with ms, s, m or h and no space, e.g. 500ms, 10s, 1.5m (got {text!r})")
    seconds = float(match.group(1)) * _SCALE[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive (got {text!r})")
    return seconds


def _check_location(value: tuple[float, float]) -> tuple[float, float]:
    lat, lon = value
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude {lat} is outside -90..90 (write [lat, lon])")
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude {lon} is outside -180..180 (write [lat, lon])")
    return value


def _readable_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file {path} is not readable by this user")
    return path


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
Location = Annotated[tuple[float, float], AfterValidator(_check_location)]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


def read_secret(path: Path) -> str:
    """Secrets come only from files; the value is never logged."""
    return path.read_text().strip()


class Strict(BaseModel):
    """Every config section: unknown keys are errors, typos must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
