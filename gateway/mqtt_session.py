"""How a paho client reaches an MQTT uplink's broker: host and port from the
URL, username and password (from its file), TLS, and when to try again. Shared
by the uplink and the management channel, which opens its own connection to
the same broker (and must not bring a fleet back in step either)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from tenacity import wait_random_exponential

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


class _Attempt:
    """What tenacity's wait strategies read of a retry: the attempt number."""

    def __init__(self, n: int):
        self.attempt_number = n


class ReconnectSchedule:
    """When to try again. Before the first connection: full jitter, each delay
    drawn from (0, ceiling], the ceiling doubling from 1 s up to `cap`.

    After a connection that worked is lost (a whole fleet loses its broker in
    the same second): the first delay is drawn from the whole window (0, cap],
    which spreads the fleet evenly over it; the retries after it are drawn from
    the window's upper half (cap/2, cap], so while the broker stays away the
    fleet keeps trying at about N / (0.75 cap) a second, and when it comes back
    at most that many a second connect (N / (cap/2) with full jitter at the cap:
    a third more)."""

    def __init__(self, cap: float):
        self.cap = cap
        self.wait = wait_random_exponential(multiplier=1.0, max=cap)
        self.attempts = 0
        self.was_connected = False

    def failed(self) -> float:
        self.attempts += 1
        if self.was_connected:
            return random.uniform(self.cap / 2, self.cap)
        return max(0.05, self.wait(_Attempt(self.attempts)))

    def lost(self) -> float:
        """The first delay after a connection that worked dropped."""
        self.attempts, self.was_connected = 0, True
        return max(0.05, random.uniform(0, self.cap))

    def connected(self) -> None:
        self.attempts = 0
