"""Uplinks: where buffered readings go. One transport class per `type`."""

from __future__ import annotations

from typing import Any

from gateway.config import ConsoleUplinkConfig, MqttUplinkConfig, NgsiLdUplinkConfig, UplinkBase
from gateway.uplinks.base import Transport, check_transport_class


def make_transport(config: UplinkBase, gateway: str, app_config: Any = None) -> Transport:
    """`app_config` (the whole Config) is for uplinks that need sensor options (NGSI-LD: alert levels)."""
    if isinstance(config, ConsoleUplinkConfig):
        from gateway.uplinks.console import ConsoleTransport
        return check_transport_class(ConsoleTransport)(config)
    if isinstance(config, MqttUplinkConfig):
        from gateway.uplinks.mqtt import MqttTransport
        return check_transport_class(MqttTransport)(config, gateway)
    if isinstance(config, NgsiLdUplinkConfig):
        from gateway.uplinks.ngsi_ld import NgsiLdTransport
        return check_transport_class(NgsiLdTransport)(config, gateway, app_config)
    raise ValueError(f"uplink {config.name}: type {getattr(config, 'type', '?')} is not supported yet")
