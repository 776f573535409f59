"""The MQTT uplink (SPEC §4): paho-mqtt 2.x, QoS 1 by default, a reading
released only when its PUBACK arrives, a persistent session, a retained status
with a last will, TLS, and reconnects with jittered exponential backoff.

Each connection gets a fresh paho client: whatever was in flight when a
connection dropped is sent again from SQLite by the delivery worker, so no
message is kept only in paho's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.buffer import Row
from gateway.config import MqttUplinkConfig
from gateway.mqtt_session import authenticate, broker_address
from gateway.tls import TlsError
from gateway.uplinks.base import Transport, TransportLost

log = logging.getLogger(__name__)


def iota_device_id(gateway: str, row: Row) -> str:
    """The IoT Agent device id: the tail of the NGSI-LD entity id, so both uplinks name a thing alike."""
    return ".".join(p for p in (gateway, row.sensor, row.device) if p)


def iota_measures(body: str, attributes: dict[str, str]) -> dict:
    """FIWARE IoT Agent JSON measures: {short name: value, ..., TimeInstant: observed_at}."""
    doc = json.loads(body)
    out = {attributes.get(name, name): v["value"] for name, v in doc["values"].items()}
    out["TimeInstant"] = doc["observed_at"]  # the agent takes it as the measures' observedAt
    return out


def topic_for(template: str, gateway: str, row: Row) -> str:
    if row.device is None:
        template = template.replace("/{device}", "").replace("{device}", "")
    elif "{device}" not in template:
        template += "/{device}"
    return template.format(gateway=gateway, sensor=row.sensor, kind=row.kind, device=row.device)


class MqttTransport(Transport):
    def __init__(self, config: MqttUplinkConfig, gateway: str):
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self.batch = config.batch
        self.window = config.window
        self.host, self.port = broker_address(config)
        self.status_topic = config.status_topic.format(gateway=gateway)
        self.client_id = config.client_id or f"{gateway}-{config.name}"
        self._client: mqtt.Client | None = None
        self._pending: dict[int, tuple[asyncio.Future, int]] = {}
        self._topics: dict[tuple, str] = {}
        self._acks: deque[tuple[int, str | None]] = deque()  # from paho's thread to the event loop
        self._acks_scheduled = False
        self._ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    # --- connection ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def run(self) -> None:
        """Connect and reconnect, as the daemon's supervised task `uplink-<name>`."""
        self._task = asyncio.current_task()
        await self._connect_loop()

    async def ready(self) -> None:
        await self._ready.wait()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def _new_client(self) -> mqtt.Client:
        v5 = self.config.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,  # persistent session: in-flight state survives a reconnect
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # reconnects are ours, with jitter
        )
        client.max_inflight_messages_set(self.window)
        client.enable_logger(logging.getLogger("paho.mqtt"))  # callback errors reach our log
        authenticate(client, self.config)  # TLS read at each connection: a renewed certificate is picked up
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect_kwargs(self) -> dict:
        if self.config.protocol != "5":
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.config.session_expiry)
        return {"clean_start": False, "properties": props}

    async def _connect_loop(self) -> None:
        backoff = Backoff(1.0, self.config.reconnect_max)
        while not self._stopping:
            self._lost = asyncio.Event()
            try:
                client = self._new_client()
                await asyncio.to_thread(client.connect, self.host, self.port, int(self.config.keepalive),
                                        **self._connect_kwargs())
            except (OSError, ssl.SSLError, ValueError, TlsError) as exc:
                delay = backoff.next()
                self.last_error = f"cannot connect to {self.host}:{self.port}: {exc}"
                log.warning("uplink %s: cannot connect to %s:%s (%s); retrying in %.1fs",
                            self.name, self.host, self.port, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._client = client
            client.loop_start()
            waits = [asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._lost.wait())]
            done, _ = await asyncio.wait(waits, timeout=self.config.keepalive, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not done:
                log.warning("uplink %s: no CONNACK from %s:%s", self.name, self.host, self.port)
                client.disconnect()
            if self._ready.is_set():
                backoff.reset()
            await self._lost.wait()
            await asyncio.to_thread(client.loop_stop)
            if not self._stopping:
                delay = backoff.next()
                log.info("uplink %s: reconnecting in %.1fs", self.name, delay)
                await asyncio.sleep(delay)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("uplink %s: broker %s:%s refused the connection: %s", self.name, self.host, self.port, reason_code)
            self.last_error = f"broker refused the connection: {reason_code}"
            return  # paho disconnects; _on_disconnect follows
        self.last_error = None
        client.publish(self.status_topic, "online", qos=1, retain=True)
        log.info("uplink %s: connected to %s:%s (session present: %s)", self.name, self.host, self.port,
                 flags.session_present)
        self.loop.call_soon_threadsafe(self._ready.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.loop.call_soon_threadsafe(self._connection_lost, str(reason_code))

    def _connection_lost(self, reason: str) -> None:
        if self._ready.is_set() and not self._stopping:
            log.warning("uplink %s: disconnected from %s:%s (%s)", self.name, self.host, self.port, reason)
            self.last_error = f"disconnected: {reason}"
        elif not self._stopping:
            log.warning("uplink %s: %s:%s closed the connection before accepting it (%s); check the TLS "
                        "certificates, username and password", self.name, self.host, self.port, reason)
            self.last_error = self.last_error or f"closed before accepting the connection: {reason}"
        self._ready.clear()
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(TransportLost(reason))
        self._lost.set()

    # --- publishing ------------------------------------------------------------------------------

    def group_key(self, row: Row) -> str:
        key = (row.sensor, row.kind, row.device)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) > 10_000:  # many passing beacons: keep the cache bounded
                self._topics.clear()
            if self.config.format == "iota-json":
                topic = f"/json/{self.config.apikey}/{iota_device_id(self.gateway, row)}/attrs"
            else:
                topic = topic_for(self.config.topic, self.gateway, row)
            self._topics[key] = topic
        return topic

    def payload(self, rows: list[Row]) -> str:
        if self.config.format == "iota-json":
            measures = [iota_measures(r.body, self.config.attributes) for r in rows]
            # one reading is a bare object: the IoT Agent turns [{...}] into an attribute named "0"
            return json.dumps(measures[0] if len(measures) == 1 else measures, ensure_ascii=False, separators=(",", ":"))
        return rows[0].body if self.batch == 1 else "[" + ",".join(r.body for r in rows) + "]"

    def send(self, rows: list[Row]) -> asyncio.Future:
        fut = self.loop.create_future()
        client = self._client
        if client is None or not self._ready.is_set():
            fut.set_exception(TransportLost("not connected"))
            return fut
        payload = self.payload(rows)
        try:
            info = client.publish(self.group_key(rows[0]), payload, qos=self.config.qos)
        except ValueError as exc:  # e.g. larger than MQTT allows: no retry can fix it
            fut.set_result([f"publish refused: {exc}"] * len(rows))
            return fut
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_exception(TransportLost(mqtt.error_string(info.rc)))
            return fut
        self._pending[info.mid] = (fut, len(rows))
        return fut

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho's thread: queue the ack; wake the event loop only if no wake-up is pending
        # already, so a burst of PUBACKs costs one hand-over, not one each.
        self._acks.append((mid, str(reason_code) if reason_code.is_failure else None))
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self.loop.call_soon_threadsafe(self._take_acks)

    def _take_acks(self) -> None:
        self._acks_scheduled = False  # before draining: an ack queued from now on schedules anew
        while self._acks:
            mid, reason = self._acks.popleft()
            entry = self._pending.pop(mid, None)
            if entry is None:
                continue  # the status message, or an ack from before a reconnect
            fut, n = entry
            if not fut.done():
                fut.set_result([None if reason is None else f"broker rejected the publish: {reason}"] * n)

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and self._ready.is_set():
            info = client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            except (RuntimeError, ValueError):
                pass  # the will says "offline" anyway if this one is lost
            client.disconnect()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if client is not None:
            await asyncio.to_thread(client.loop_stop)
