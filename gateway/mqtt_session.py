"""How a paho client reaches an MQTT uplink's broker: host and port from the
URL, username and password (from its file), TLS. Shared by the uplink and the
management channel, which opens its own connection to the same broker."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from gateway.config import MqttUplinkConfig
from gateway.sdk.fields import read_secret
from gateway.tls import client_context


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def brokers_of(config: MqttUplinkConfig) -> list[Broker]:
    """The uplink's brokers, in its list's order (the uplink fails over across them;
    the management channel and the fleet tool use the first)."""
    default = 8883 if config.tls else 1883
    return [Broker(p.hostname, p.port or default) for p in map(urlsplit, config.url)]


def authenticate(client: mqtt.Client, config: MqttUplinkConfig) -> None:
    """Credentials and TLS as the uplink's config says; the password is read
    from its file here and handed only to paho, never logged."""
    if config.username:
        client.username_pw_set(config.username, read_secret(config.password_file) if config.password_file else None)
    if config.tls:  # raises gateway.tls.TlsError for material that cannot be used
        client.tls_set_context(client_context(config.ca_file, config.cert_file, config.key_file))
