"""Drivers are found through the entry-point group `city_edge_gateway.drivers`.
The built-in ones are registered the same way (pyproject.toml), so a plugin
package adds a driver without touching this repository."""

from __future__ import annotations

import inspect
import logging
from functools import cache
from importlib.metadata import entry_points

from gateway.sdk import Driver
from gateway.sdk.devices import HARDWARE, Devices

GROUP = "city_edge_gateway.drivers"
DEVICES_GROUP = "city_edge_gateway.devices"  # simulated device sets (gateway/sdk/devices.py)
SCAN_GROUP = "city_edge_gateway.scan_tools"  # `gateway scan NAME` tools that a driver package brings
log = logging.getLogger(__name__)


class DriverLoadError(Exception):
    pass


@cache
def available() -> dict[str, str]:
    """Driver name -> 'module:object' for every installed driver."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


@cache
def load(name: str) -> type[Driver]:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise DriverLoadError(f"unknown driver {name!r}; installed: {', '.join(sorted(available())) or 'none'}")
    try:
        cls = matches[0].load()
    except Exception as exc:  # a broken plugin must not take the whole gateway down
        raise DriverLoadError(f"driver {name!r} ({matches[0].value}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverLoadError(f"driver {name!r} ({matches[0].value}) is not a gateway.sdk.Driver subclass")
    if inspect.isabstract(cls):
        missing = ", ".join(f"{m}()" for m in sorted(cls.__abstractmethods__))
        raise DriverLoadError(f"driver {name!r} ({matches[0].value}) does not implement {missing}")
    cls.name = name
    return cls


def scan_tool(name: str):
    """The on-site tool a driver package registers for `gateway scan NAME`, or None."""
    matches = [ep for ep in entry_points(group=SCAN_GROUP) if ep.name == name]
    return matches[0].load() if matches else None


def device_sets() -> list[str]:
    return ["hardware", *sorted(ep.name for ep in entry_points(group=DEVICES_GROUP))]


@cache
def devices(name: str) -> Devices:
    """The device set a sensor's `devices` key names: one instance per process, shared by its sensors."""
    if name == "hardware":
        return HARDWARE
    matches = [ep for ep in entry_points(group=DEVICES_GROUP) if ep.name == name]
    if not matches:
        raise DriverLoadError(f"unknown device set {name!r}; installed: {', '.join(device_sets())}")
    try:
        return matches[0].load()()
    except Exception as exc:
        raise DriverLoadError(f"device set {name!r} ({matches[0].value}) failed to load: {exc}") from exc
