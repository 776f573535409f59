"""Uplinks: where buffered readings go. One transport class per `type`."""

from __future__ import annotations

from gateway.config import ConsoleUplinkConfig, MqttUplinkConfig, UplinkBase
from gateway.uplinks.base import Transport


def make_transport(config: UplinkBase, gateway: str) -> Transport:
    if isinstance(config, ConsoleUplinkConfig):
        from gateway.uplinks.console import ConsoleTransport
        return ConsoleTransport(config)
    if isinstance(config, MqttUplinkConfig):
        from gateway.uplinks.mqtt import MqttTransport
        return MqttTransport(config, gateway)
    raise ValueError(f"uplink {config.name}: type {getattr(config, 'type', '?')} is not supported yet")
