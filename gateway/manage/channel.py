"""The management channel: its own paho client to the managing uplink's broker
(same URL, credentials and TLS; client id `<uplink client id>-manage`), so a
command never waits behind a backlog of readings. It subscribes to the city's
topics under the prefix, hands each message to the event loop, and publishes
health, states and results at QoS 1.

A persistent session: a config pushed while the unit is offline waits at the
broker (the envelope's seq and issued_at keep an old one from acting late).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.config import MqttUplinkConfig
from gateway.mqtt_session import ReconnectSchedule, authenticate, brokers_of
from gateway.tls import TlsError

log = logging.getLogger(__name__)


def topics(uplink: MqttUplinkConfig, gateway: str) -> str:
    return uplink.manage.prefix.format(gateway=gateway)


class Channel:
    def __init__(self, uplink: MqttUplinkConfig, gateway: str, on_message: Callable[[str, bytes], None]):
        self.uplink = uplink
        self.prefix = topics(uplink, gateway)
        first = brokers_of(uplink)[0]  # the uplink itself fails over; this channel keeps to the first
        self.host, self.port = first.host, first.port
        self.client_id = (uplink.client_id or f"{gateway}-{uplink.name}") + "-manage"
        self.on_message = on_message
        self.connected = asyncio.Event()
        self.connections = 0  # how many times connected: health is sent again after each reconnect
        self._lost = asyncio.Event()
        self._client: mqtt.Client | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        # The uplink's schedule: after a broker's restart a fleet's channels come back spread over the window.
        self.schedule = ReconnectSchedule(uplink.reconnect_max)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._connect_loop(), name="manage-channel")

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             reconnect_on_failure=False)
        client.enable_logger(logging.getLogger("paho.mqtt"))
        authenticate(client, self.uplink)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    async def _connect_loop(self) -> None:
        schedule = self.schedule
        while not self._stopping:
            self._lost.clear()
            try:
                client = self._new_client()  # the password file and TLS material are read at each connection
                await asyncio.to_thread(client.connect, self.host, self.port, int(self.uplink.keepalive))
            except (OSError, ssl.SSLError, ValueError, TlsError) as exc:
                delay = schedule.failed()
                log.warning("management: cannot connect to %s:%s (%s); retrying in %.1fs",
                            self.host, self.port, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._client = client
            client.loop_start()
            await self._lost.wait()
            await asyncio.to_thread(client.loop_stop)
            delay = schedule.lost() if self.connected.is_set() else schedule.failed()  # a refusal: not connected
            self.connected.clear()
            if not self._stopping:
                await asyncio.sleep(delay)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("management: broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        client.subscribe([(f"{self.prefix}/config/set", 1), (f"{self.prefix}/cmd/+", 1)])
        log.info("management: listening on %s/config/set and %s/cmd/+", self.prefix, self.prefix)
        self.loop.call_soon_threadsafe(self._up)

    def _up(self) -> None:
        self.connections += 1
        self.schedule.connected()
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._stopping:
            log.warning("management: disconnected from %s:%s (%s)", self.host, self.port, reason_code)
        self.loop.call_soon_threadsafe(self._lost.set)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.retain:
            return  # a retained command is someone's mistake, not a fresh request
        self.loop.call_soon_threadsafe(self.on_message, msg.topic.removeprefix(self.prefix + "/"), msg.payload)

    def publish(self, suffix: str, payload: str, retain: bool = False) -> bool:
        """Queue a QoS 1 publish; False while disconnected (health is resent on reconnect)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        info = client.publish(f"{self.prefix}/{suffix}", payload, qos=1, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and self.connected.is_set():
            client.disconnect()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if client is not None:
            await asyncio.to_thread(client.loop_stop)
        self.connected.clear()
