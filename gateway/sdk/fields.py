"""Typed config fields shared by the gateway and the drivers: durations, ids,
locations, secret files. Each checks its value at load with a message a
technician can act on (what is wrong, and what to write instead)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"^[a-z0-9-]{1,64}$")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(text: object) -> float:
    """'500ms', '10s', '1.5m', '1h' -> seconds. Bare numbers are refused: a unit
    must be written, so '10' cannot silently mean ten hours or ten milliseconds."""
    if _is_number(text):
        raise ValueError(f"a duration needs a unit: write {text}s (or ms, m, h)")
    if not isinstance(text, str):
        raise ValueError(f"a duration is a number with ms, s, m or h, e.g. 10s (got {text!r})")
    match = _DURATION.match(text)
    if not match:
        squeezed = text.replace(" ", "")
        if squeezed != text and _DURATION.match(squeezed):
            raise ValueError(f"no space inside a duration: write {squeezed} (got {text!r})")
        if text.strip().startswith("-"):
            raise ValueError(f"a duration must be positive (got {text!r})")
        raise ValueError(f"a duration is a positive number with ms, s, m or h and no space, e.g. 500ms, 10s, 1.5m (got {text!r})")
    seconds = float(match.group(1)) * _SCALE[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive (got {text!r})")
    return seconds


def _check_name(value: object) -> str:
    if _is_number(value):
        # YAML reads 0123 as octal and 1e3 as a float: a quoted id means what it says.
        raise ValueError(f"YAML reads {value!r} as a number; put the name in quotes")
    if not isinstance(value, str):
        raise ValueError(f"must be a name of 1 to 64 characters a-z, 0-9 and '-' (got {value!r})")
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name: use 1 to 64 characters a-z, 0-9 and '-' (lowercase, no spaces or '_')")
    return value


def _check_location(value: object) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)):
        raise ValueError(f"a location is two numbers [lat, lon] in degrees, e.g. [34.3428, 134.0466] (got {value!r})")
    lat, lon = float(value[0]), float(value[1])
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude {lat} is outside -90..90 (write [lat, lon])")
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude {lon} is outside -180..180 (write [lat, lon])")
    return lat, lon


def _check_readable(value: object) -> Path:
    # Open the file rather than ask os.access: that is the check the daemon will
    # meet, and it also catches directories.
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"must be a file path (got {value!r})")
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ValueError(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a file") from None
    except PermissionError:
        raise ValueError(f"file {path} is not readable by this user") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _check_secret(value: object) -> Path:
    path = _check_readable(value)
    if not path.read_bytes().strip():
        raise ValueError(f"secret file {path} is empty")
    return path


def parse_i2c_address(value: object) -> object:
    """An I2C address as written in YAML: 0x76 is already an int; "0x76" (quoted) is read as hex."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise ValueError(f"an I2C address is a number such as 0x76 (got {value!r})") from None
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, BeforeValidator(_check_name)]
Location = Annotated[tuple[float, float], BeforeValidator(_check_location)]
ReadableFile = Annotated[Path, BeforeValidator(_check_readable)]
SecretFile = Annotated[Path, BeforeValidator(_check_secret)]


def read_secret(path: Path) -> str:
    """Secrets come only from files; the value is never logged."""
    return path.read_text().strip()


class Strict(BaseModel):
    """Every config section: unknown keys are errors, typos must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
