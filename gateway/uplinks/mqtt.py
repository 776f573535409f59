"""The MQTT uplink (SPEC §4): paho-mqtt 2.x, QoS 1 by default, a reading
released only when its PUBACK arrives, a persistent session, a retained status
with a last will, TLS, failover across a list of brokers, and reconnects with
full-jitter backoff (the connection itself: gateway/uplinks/mqtt_link.py).

What is in flight when a connection drops stays in paho's session state and is
resent on the next connection (same packet ids); sends asked for while no
connection is up wait here and go out after those resends, so each sensor's
readings keep their order. Whatever never got its PUBACK before a stop or a
crash is still in SQLite and is sent again on the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.buffer import Row
from gateway.config import MqttUplinkConfig
from gateway.sdk.fields import read_secret
from gateway.uplinks.base import Transport, TransportLost
from gateway.uplinks.mqtt_link import MqttLink

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
        self.drain_rate = config.drain_rate
        self.status_topic = config.status_topic.format(gateway=gateway)
        password = read_secret(config.password_file) if config.password_file else None
        self.link = MqttLink(config, config.client_id or f"{gateway}-{config.name}", self.status_topic, password,
                             on_publish=self._on_publish, on_ready=self._release_waiting)
        self._pending: dict[int, tuple[asyncio.Future, int]] = {}  # packet id -> (send, readings)
        self._waiting: list[tuple[list[Row], asyncio.Future]] = []  # asked for while no connection was up
        self._status_acks: dict[int, asyncio.Future] = {}
        self._topics: dict[tuple, str] = {}
        self._task: asyncio.Task | None = None

    # --- connection ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to prepare: the connection is `run`'s (TLS material is loaded at each attempt)."""

    async def run(self) -> None:
        """Connect and reconnect, as the daemon's supervised task `uplink-<name>`."""
        self._task = asyncio.current_task()
        await self.link.run()

    async def ready(self) -> None:
        await self.link.ready.wait()

    @property
    def connected(self) -> bool:
        return self.link.ready.is_set()

    @property
    def can_send(self) -> bool:
        return self.connected

    @property
    def last_error(self) -> str | None:
        return self.link.last_error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        self.link.last_error = value  # the uplink supervisor says why start failed

    @property
    def broker(self) -> str:
        return str(self.link.broker)

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

    def stream_key(self, row: Row) -> str:
        return row.sensor  # order is kept per sensor, across its devices' topics

    def payload(self, rows: list[Row]) -> str:
        if self.config.format == "iota-json":
            measures = [iota_measures(r.body, self.config.attributes) for r in rows]
            # one reading is a bare object: the IoT Agent turns [{...}] into an attribute named "0"
            return json.dumps(measures[0] if len(measures) == 1 else measures, ensure_ascii=False, separators=(",", ":"))
        return rows[0].body if self.batch == 1 else "[" + ",".join(r.body for r in rows) + "]"

    def send(self, rows: list[Row]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if not self.link.ready.is_set():
            if self.config.qos == 0:
                fut.set_exception(TransportLost("not connected"))  # QoS 0 keeps no session state
            else:
                self._waiting.append((rows, fut))
            return fut
        self._publish(rows, fut)
        return fut

    def _publish(self, rows: list[Row], fut: asyncio.Future) -> None:
        try:
            info = self.link.client.publish(self.group_key(rows[0]), self.payload(rows), qos=self.config.qos)
        except ValueError as exc:  # e.g. larger than MQTT allows: no retry can fix it
            fut.set_result([f"publish refused: {exc}"] * len(rows))
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.config.qos > 0:
            pass  # paho keeps it in the session and sends it on the next connection
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_exception(TransportLost(mqtt.error_string(info.rc)))
            return
        self._pending[info.mid] = (fut, len(rows))

    def _release_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for rows, fut in waiting:
            if not fut.done():
                self._publish(rows, fut)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        status = self._status_acks.pop(mid, None)
        if status is not None and not status.done():
            status.set_result(None)
        entry = self._pending.pop(mid, None)
        if entry is None:
            return  # the status message
        fut, n = entry
        if not fut.done():
            reason = f"broker rejected the publish: {reason_code}" if reason_code.is_failure else None
            fut.set_result([reason] * n)

    async def stop(self) -> None:
        self.link.stopping = True
        client = self.link.client
        if client is not None and self.link.ready.is_set():
            info = client.publish(self.status_topic, "offline", qos=1, retain=True)
            acked = self._status_acks[info.mid] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(2.0):
                    await acked
            except TimeoutError:
                pass  # the will says "offline" anyway if this one is lost
        await self.link.close()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
