"""Typed config fields shared by the gateway and the drivers: durations, ids,
locations, secret files. Each checks its value at load with a message a
technician can act on (what is wrong, and what to write instead)."""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$", re.ASCII)  # not full-width digits
# 1 ms is the finest step the scheduler and the buffer keep; 2^32-1 s (136 years)
# is the longest any field needs (MQTT 5's session expiry).
DURATION_MIN, DURATION_MAX = 0.001, 4_294_967_295.0
FILE_MAX = 1024 * 1024  # certificates, keys, salts: a CA bundle is a few hundred KiB
SECRET_MAX = 64 * 1024  # a password or a bearer token
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
    if seconds < DURATION_MIN:
        raise ValueError(f"a duration is at least 1ms, the finest step the gateway keeps (got {text!r})")
    if not math.isfinite(seconds) or seconds > DURATION_MAX:
        raise ValueError(f"a duration is at most {DURATION_MAX:.0f}s (got {text[:40]!r})")
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


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or ValueError saying
    what is wrong. Anything else is refused before it is read: a FIFO blocks the
    reader for ever and /dev/zero or /dev/urandom never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            kind = "a directory" if path.is_dir() else "a device, FIFO or socket"
            raise ValueError(f"{what} {path} is {kind}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise ValueError(f"{what} {path} is not readable by this user") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        # Checked again on the open file: the path may have been swapped meanwhile.
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{what} {path} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit // 1024} KiB, the most it may be")
    return data


def _path_value(value: object) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"must be a file path (got {value!r})")
    if "\0" in str(value):
        raise ValueError("a file path cannot contain a NUL character")
    return Path(value)


def _check_readable(value: object) -> Path:
    # Read the file rather than ask os.access: that is the check the daemon will
    # meet, and it also catches directories, devices and FIFOs.
    path = _path_value(value)
    read_regular(path, FILE_MAX)
    return path


# systemd's LoadCredential= (systemd/city-edge-gateway.service) shows each file of the credentials directory
# as /run/credentials/city-edge-gateway.service/secret_<file name>, but only while the service runs.
CREDENTIALS_RUN = Path("/run/credentials/city-edge-gateway.service")
CREDENTIALS_PREFIX = "secret_"


def credentials_dir() -> Path:
    return Path(os.environ.get("GATEWAY_CREDENTIALS_DIR", "/etc/city-edge-gateway/credentials"))


def credential_source(path: Path) -> Path:
    """Where a secret really is: the path itself, or for the documented credentials path outside the
    service (`gateway check` at boot, in the installer, by hand) the file systemd loads it from."""
    if path.parent == CREDENTIALS_RUN and path.name.startswith(CREDENTIALS_PREFIX) and not path.exists():
        return credentials_dir() / path.name.removeprefix(CREDENTIALS_PREFIX)
    return path


def not_there_yet(path: Path) -> bool:
    """True for the documented credentials path of a Pi not set up yet: the secret comes with the config
    (boot partition, gateway-credentials/) or is put there later; `check` passes, the start will tell."""
    source = credential_source(path)
    if source == path:
        return False
    try:
        return not source.exists()
    except PermissionError:  # the credentials directory is root's: only root can look inside
        return True


def _check_credential(value: object) -> Path:
    """A file that may live in the credentials directory (a salt: any bytes, not only a line of text)."""
    path = _path_value(value)
    if not not_there_yet(path):
        read_regular(credential_source(path), FILE_MAX)
    return path


def _secret_text(path: Path) -> str:
    """A secret file's one line (its final newline dropped). A second line or a
    control character would end up in a header or a packet, and be logged."""
    source = credential_source(path)
    data = read_regular(source, SECRET_MAX, "secret file")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"secret file {source} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"secret file {source} is empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"secret file {source} holds more than one line; a secret is one line")
    if not text.isprintable():
        raise ValueError(f"secret file {source} holds control characters")
    return text


def _check_secret(value: object) -> Path:
    path = _path_value(value)
    if not not_there_yet(path):
        _secret_text(path)
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
CredentialFile = Annotated[Path, BeforeValidator(_check_credential)]


def read_secret(path: Path) -> str:
    """Secrets come only from files, checked as at load (the file may have
    changed since); the value is never logged."""
    return _secret_text(path)


class Strict(BaseModel):
    """Every config section: unknown keys are errors, typos must not pass silently."""

    # allow_inf_nan: 1e309 and .nan are no measure of anything, and would reach the drivers as inf.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def key_error(key: str, message: str) -> PydanticCustomError:
    """A model-level error that belongs to one key (`a.b` for a nested one): the
    config loader appends `key` to its path, so the line and the path name that
    key, not the whole section. Raise it from a model validator."""
    return PydanticCustomError("key_error", message, {"key": key})
