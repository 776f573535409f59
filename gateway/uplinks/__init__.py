"""Uplinks: where buffered readings go. One transport class per `type`."""

from __future__ import annotations

from gateway.buffer import Buffer
from gateway.catalogue import SensorCatalogue
from gateway.config import ConsoleUplinkConfig, MqttUplinkConfig, NgsiLdUplinkConfig, UplinkBase
from gateway.uplinks.base import Transport, check_transport_class


def make_transport(config: UplinkBase, gateway: str, catalogue: SensorCatalogue | None = None,
                   buffer: Buffer | None = None) -> Transport:
    """`catalogue` (kind, location, thresholds per sensor) is for uplinks that describe sensors (NGSI-LD);
    `buffer` for uplinks that keep state across restarts (NGSI-LD: the newest time upserted per entity)."""
    if isinstance(config, ConsoleUplinkConfig):
        from gateway.uplinks.console import ConsoleTransport
        return check_transport_class(ConsoleTransport)(config)
    if isinstance(config, MqttUplinkConfig):
        from gateway.uplinks.mqtt import MqttTransport
        return check_transport_class(MqttTransport)(config, gateway)
    if isinstance(config, NgsiLdUplinkConfig):
        from gateway.uplinks.ngsi_ld import NgsiLdTransport
        return check_transport_class(NgsiLdTransport)(config, gateway, catalogue, buffer)
    raise ValueError(f"uplink {config.name}: type {getattr(config, 'type', '?')} is not supported yet")
