"""The MQTT uplink's connection: one paho client for the uplink's whole life,
driven by the asyncio loop (no network thread), a list of brokers to fail over
across, and reconnects on our own full-jitter schedule.

Why one client: paho keeps the session's in-flight messages and its packet ids.
A reconnect (to the same broker or the next one in the list) resends what was
not acknowledged, with the same packet ids, so a broker holding our persistent
session never sees a packet id reused for another message (QoS 2), and no
PUBACK is waited for on a message the client forgot.

The connection task never dies unwatched: any failure (a refused socket, a TLS
handshake, a client key that does not match its certificate) becomes
`last_error`, is logged once, and the next attempt follows the schedule.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import MqttUplinkConfig
from gateway.mqtt_session import Broker, ReconnectSchedule, brokers_of
from gateway.tls import TlsError, client_context

log = logging.getLogger("gateway.uplinks.mqtt")

MISC_INTERVAL = 1.0  # how often paho checks keepalive (PINGREQ, a silent broker)


class MqttLink:
    """`ready` is set while a connection is accepted. `on_ready` runs (in the
    loop) after each CONNACK, once paho has resent what was in flight."""

    def __init__(self, config: MqttUplinkConfig, client_id: str, status_topic: str, password: str | None,
                 on_publish: Callable, on_ready: Callable[[], None]):
        self.config, self.name = config, config.name
        self.client_id, self.status_topic, self.password = client_id, status_topic, password
        self.brokers = brokers_of(config)
        self.broker = self.brokers[0]
        self._on_publish, self._on_ready = on_publish, on_ready
        self.client: mqtt.Client | None = None
        self.ready = asyncio.Event()
        self.last_error: str | None = None
        self.stopping = False
        self.schedule = ReconnectSchedule(config.reconnect_max)
        self._index = 0
        self._fd: int | None = None  # the socket the loop watches
        self._open = False  # a socket is up; the first on_disconnect for it closes it, a second is ignored
        self._refused = False  # the broker answered CONNACK with a refusal (already logged)
        self._lost = asyncio.Event()
        self.attempts_total = 0  # connection attempts, and the ones a broker accepted (metrics, bench/fleet.py)
        self.connects_total = 0

    # --- the supervised connection loop --------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while not self.stopping:
            try:
                delay = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it is, retry; never die unwatched
                self._next_broker()
                delay = self.schedule.failed()
                self._failed(f"{exc.key}: {exc}" if isinstance(exc, TlsError) else f"{type(exc).__name__}: {exc}",
                             delay)
            if not self.stopping:
                await asyncio.sleep(delay)

    async def _attempt(self) -> float:
        self.attempts_total += 1
        if self.client is None:
            self.client = self._new_client()
        if self.config.tls:
            self._load_tls()  # at each attempt: a renewed certificate is picked up; a bad key raises, is retried
        self.broker = broker = self.brokers[self._index]
        self._lost = asyncio.Event()
        self._refused = False
        try:
            await asyncio.to_thread(self._connect_socket, broker)
        except OSError as exc:  # refused, unreachable, a TLS handshake (ssl.SSLError is an OSError)
            self._next_broker()
            delay = self.schedule.failed()
            self._failed(f"cannot connect to {broker} ({exc})", delay)
            return delay
        misc = asyncio.create_task(self._keepalive(), name=f"mqtt-{self.name}-keepalive")
        try:
            if await self._await_connack():
                self.schedule.connected()
                await self._lost.wait()
                return self.schedule.lost()
        finally:
            misc.cancel()
        self._next_broker()
        delay = self.schedule.failed()
        if not self._refused:  # a refusal was logged with the broker's own reason
            self._failed(f"{broker} closed the connection before accepting it; check the TLS certificates, "
                         "username and password", delay)
        return delay

    def _connect_socket(self, broker: Broker) -> None:
        """In a worker thread: the TCP connect and TLS handshake block. The
        socket callbacks hand the new socket to the loop."""
        self.client.connect(broker.host, broker.port, int(self.config.keepalive), **self._connect_kwargs())

    async def _await_connack(self) -> bool:
        waits = [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self._lost.wait())]
        done, _ = await asyncio.wait(waits, timeout=self.config.keepalive, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not done:
            log.warning("uplink %s: no CONNACK from %s within %.0fs", self.name, self.broker, self.config.keepalive)
            self.client.disconnect()
            await self._wait_lost(2.0)
        return self.ready.is_set()

    async def _wait_lost(self, timeout: float) -> None:
        """Wait for the socket to close; one that will not is given up (the
        next connect closes it in paho)."""
        try:
            async with asyncio.timeout(timeout):
                await self._lost.wait()
        except TimeoutError:
            self._drop()

    def _drop(self) -> None:
        """Give up on the current socket without paho's help (paho closes it on the next connect)."""
        if self._fd is not None:
            self._unwatch(self._fd)
        self._open = False
        self.ready.clear()
        self._lost.set()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL)
            self.client.loop_misc()

    def _next_broker(self) -> None:
        self._index = (self._index + 1) % len(self.brokers)

    def _failed(self, message: str, delay: float) -> None:
        """One line for one failed attempt; `last_error` says it until a connection works."""
        log.warning("uplink %s: %s; retrying in %.1fs", self.name, message, delay)
        self.last_error = message

    # --- the paho client -------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        v5 = self.config.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,  # persistent session: in-flight state survives a reconnect
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # reconnects are ours, with jitter
        )
        client.max_inflight_messages_set(self.config.window)
        client.enable_logger(logging.getLogger("paho.mqtt"))  # callback errors reach our log
        if self.config.username:
            client.username_pw_set(self.config.username, self.password)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _load_tls(self) -> None:
        context = client_context(self.config.ca_file, self.config.cert_file, self.config.key_file)
        if self.client._ssl_context is None:
            self.client.tls_set_context(context)
        else:
            # paho has no public way to swap the context of a configured client; it reads this at each connect.
            self.client._ssl_context = context

    def _connect_kwargs(self) -> dict:
        if self.config.protocol != "5":
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.config.session_expiry)
        return {"clean_start": False, "properties": props}

    # --- socket wiring: paho calls these from the connect thread or from the loop ----------------

    def _in_loop(self, fn: Callable, *args) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client, userdata, sock: socket.socket) -> None:
        self._in_loop(self._watch, sock.fileno())

    def _watch(self, fd: int) -> None:
        self._fd, self._open = fd, True
        self.loop.add_reader(fd, self._guarded, self._readable)

    def _on_socket_close(self, client, userdata, sock) -> None:
        self._in_loop(self._unwatch, sock.fileno())

    def _unwatch(self, fd: int) -> None:
        if fd == self._fd:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            self._fd = None

    def _on_register_write(self, client, userdata, sock) -> None:
        self._in_loop(self._want_write, sock.fileno())

    def _want_write(self, fd: int) -> None:
        if fd == self._fd:
            self.loop.add_writer(fd, self._guarded, self.client.loop_write)

    def _on_unregister_write(self, client, userdata, sock) -> None:
        self._in_loop(self._no_write, sock.fileno())

    def _no_write(self, fd: int) -> None:
        if fd == self._fd:
            self.loop.remove_writer(fd)

    def _guarded(self, io: Callable[[], object]) -> None:
        """A reader or writer callback that raises would be called again at once, for ever."""
        try:
            io()
        except Exception as exc:  # noqa: BLE001 - paho reports socket errors as return codes; this is a bug there
            log.warning("uplink %s: connection to %s failed (%s: %s)", self.name, self.broker, type(exc).__name__, exc)
            self._drop()

    def _readable(self) -> None:
        client = self.client
        client.loop_read()
        sock = client.socket()
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:  # TLS: bytes already decrypted
            client.loop_read()
            sock = client.socket()

    # --- protocol callbacks (in the loop) --------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True
            self.last_error = f"broker {self.broker} refused the connection: {reason_code}"
            log.error("uplink %s: %s", self.name, self.last_error)
            return  # paho disconnects; _on_disconnect follows
        if self.stopping:  # a connect that was under way when the uplink stopped (a reload)
            client.disconnect()
            return
        client.publish(self.status_topic, "online", qos=1, retain=True)
        log.info("uplink %s: connected to %s (session present: %s)", self.name, self.broker, flags.session_present)
        self.last_error = None
        self.connects_total += 1
        self.ready.set()
        self.loop.call_soon(self._on_ready)  # after paho's resends of what was in flight

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._open:
            return  # paho reports one keepalive timeout twice: the socket is already handled
        self._open = False
        was_ready = self.ready.is_set()
        self.ready.clear()
        if was_ready and not self.stopping:
            self.last_error = f"disconnected from {self.broker} ({reason_code})"
            log.warning("uplink %s: disconnected from %s (%s)", self.name, self.broker, reason_code)
        self._lost.set()

    async def close(self) -> None:
        """Clean stop: DISCONNECT (the will is not sent), then forget the socket."""
        self.stopping = True
        if self.client is not None and self._open:
            self.client.disconnect()
            await self._wait_lost(2.0)
        if self._fd is not None:
            self._unwatch(self._fd)
