"""Drivers are found through the entry-point group `city_edge_gateway.drivers`.
The built-in ones are registered the same way (pyproject.toml), so a plugin
package adds a driver without touching this repository."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from drivers.base import Driver

GROUP = "city_edge_gateway.drivers"
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
        raise DriverLoadError(f"driver {name!r} ({matches[0].value}) is not a drivers.base.Driver subclass")
    cls.name = name
    return cls
