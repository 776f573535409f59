"""Uplinks: where buffered readings go. One transport class per `type`."""

from __future__ import annotations

from gateway.catalogue import SensorCatalogue
from gateway.config import ConsoleUplinkConfig, MqttUplinkConfig, NgsiLdUplinkConfig, UplinkBase
from gateway.uplinks.base import Transport, check_transport_class


def make_transport(config: UplinkBase, gateway: str, catalogue: SensorCatalogue | None = None) -> Transport:
    """`catalogue` (kind, location, thresholds per sensor) is for uplinks that describe sensors (NGSI-LD)."""
    if isinstance(config, ConsoleUplinkConfig):
        from gateway.uplinks.console import ConsoleTransport
        return check_transport_class(ConsoleTransport)(config)
    if isinstance(config, MqttUplinkConfig):
        from gateway.uplinks.mqtt import MqttTransport
        return check_transport_class(MqttTransport)(config, gateway)
    if isinstance(config, NgsiLdUplinkConfig):
        from gateway.uplinks.ngsi_ld import NgsiLdTransport
        return check_transport_class(NgsiLdTransport)(config, gateway, catalogue)
    raise ValueError(f"uplink {config.name}: type {getattr(config, 'type', '?')} is not supported yet")
