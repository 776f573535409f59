"""What `gateway check` warns about in a valid config: things that may hold on
the Pi but not where the check runs (a laptop, the installer, the boot import),
so they cannot be errors, yet a technician should hear of them before the start.

- a serial port that does not exist here (an adapter not plugged in, a typo in
  /dev/serial/by-id/...): `gateway scan serial` lists what there is;
- a secret at the documented credentials path whose file is not (yet) in the
  credentials directory, or that this user may not look at;
- a secret (password, token, client secret) sent over a plain mqtt:// or http://
  URL to another machine: allowed (a closed network, a test rig), but said.
"""

from __future__ import annotations


import ipaddress
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from pydantic import BaseModel

from gateway.sdk.fields import CREDENTIALS_RUN, credential_source, credentials_dir

LineOf = Callable[[tuple], int]


def _serial_port(value: object) -> str | None:
    """A port that should exist (a device path); None when this one does."""
    if not isinstance(value, str) or not value.startswith("/dev/"):
        return None
    try:
        return None if Path(value).exists() else value
    except OSError:
        return value


def _credential(value: object) -> str | None:
    if not isinstance(value, Path) or value.parent != CREDENTIALS_RUN:
        return None
    source = credential_source(value)
    try:
        if source == value or source.exists():
            return None
    except PermissionError:
        return (f"{value} comes from {source}, which only root may read: `sudo gateway check` checks it")
    return (f"{value} comes from {source}, not there yet: copy the file into {credentials_dir()}/ "
            "(root only), or onto the boot partition's gateway-credentials/ folder, before the start")


def _plain_secrets(uplink) -> list[tuple[str, str]]:
    """(the key of a secret, the plain URL it travels over) for one uplink."""
    carried: list[tuple[str, str]] = []
    if getattr(uplink, "password_file", None) is not None:  # an MQTT uplink: every broker of its list
        carried += [("password_file", url) for url in uplink.url]
    if getattr(uplink, "token_file", None) is not None:
        carried.append(("token_file", uplink.url))
    if getattr(uplink, "client_secret_file", None) is not None and getattr(uplink, "token_url", None):
        carried += [("client_secret_file", uplink.token_url), ("token_url", uplink.url)]  # the secret, then the token
    return [(key, url) for key, url in carried if url.startswith(("mqtt://", "http://")) and not _loopback(url)]


def _loopback(url: str) -> bool:
    """A broker on this machine (127.0.0.0/8, ::1, localhost): the secret never crosses a network."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fields(model: BaseModel, path: tuple):
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _fields(value, path + (name,))
        else:
            yield path + (name,), name, value


def config_warnings(config, file: str, line_of: LineOf) -> list[str]:
    """Every warning as `FILE:LINE: key.path: warning: message`, in file order."""
    from gateway.yamlsource import format_path
    found: list[tuple[int, str]] = []

    def warn(path: tuple, message: str) -> None:
        found.append((line_of(path), f"{file}:{line_of(path)}: {format_path(path)}: warning: {message}"))

    for i, u in enumerate(config.uplinks):
        for key, url in _plain_secrets(u):
            warn(("uplinks", i, key), f"a secret travels unencrypted to {url}; use mqtts:// or https://")
    parts = [(("uplinks", i), u) for i, u in enumerate(config.uplinks)]
    parts += [(("sensors", i), s) for i, s in enumerate(config.sensors)]
    parts.append((("service",), config.service))
    for prefix, model in parts:
        for path, name, value in _fields(model, prefix):
            if name == "port" and (port := _serial_port(value)):
                warn(path, f"serial port {port} does not exist on this machine; `gateway scan serial` lists "
                           "the ports there are (an adapter unplugged? a by-id name mistyped?)")
            elif (problem := _credential(value)) is not None:
                warn(path, problem)
    return [text for _, text in sorted(found, key=lambda f: f[0])]
