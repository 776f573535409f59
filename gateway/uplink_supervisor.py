"""The uplink supervisor: per uplink a transport, its Delivery worker and two
supervised tasks (`deliver-<name>`: start the transport, wait for a trusted
clock, deliver; `uplink-<name>`: the transport's own connect loop).

A transport that cannot start (TLS material that no longer loads, a secret
file gone) does not take the daemon or its uplink down silently: the reason is
its `last_error` in status, and the start is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from gateway.backoff import Backoff
from gateway.buffer import Buffer
from gateway.delivery import Delivery
from gateway.supervisor import TaskSupervisor
from gateway.catalogue import SensorCatalogue
from gateway.uplinks import make_transport
from gateway.uplinks.base import Transport

log = logging.getLogger(__name__)


@dataclass
class UplinkUnit:
    """An uplink built from its config; `started` once its transport started."""

    config: Any
    transport: Transport
    started: bool = False
    delivery: Delivery | None = None

    @property
    def name(self) -> str:
        return self.config.name


class UplinkSupervisor:
    def __init__(self, buffer: Buffer, gateway_id: str, tasks: TaskSupervisor, catalogue: SensorCatalogue, *,
                 clock_gate: Callable[[], Awaitable[None]], on_change: Callable[[], None]):
        self.buffer = buffer
        self.catalogue = catalogue  # what uplinks know of the sensors, one object replaced in place on reload
        self.gateway_id = gateway_id
        self.tasks = tasks
        self.clock_gate = clock_gate
        self.on_change = on_change
        self._units: dict[str, UplinkUnit] = {}

    # --- building, starting, stopping ------------------------------------------------------------

    def build(self, config) -> UplinkUnit:
        """The transport for one uplink, not started; raises if it cannot be made."""
        return UplinkUnit(config, make_transport(config, self.gateway_id, self.catalogue, self.buffer))

    @staticmethod
    async def start(unit: UplinkUnit) -> None:
        """Start the transport now (a reload: a failure refuses the reload)."""
        await unit.transport.start()
        unit.started = True

    @staticmethod
    async def discard(unit: UplinkUnit) -> None:
        """A built unit that will not be used (its reload was refused)."""
        if unit.started:
            await unit.transport.stop()

    def add(self, unit: UplinkUnit) -> None:
        name = unit.name
        self.buffer.add_uplink(name)
        unit.delivery = Delivery(self.buffer, unit.transport, getattr(unit.config, "reconnect_max", 30.0))
        self._units[name] = unit
        self.tasks.spawn(f"deliver-{name}", lambda: self._deliver(unit), label=f"uplink {name}")

    async def _deliver(self, unit: UplinkUnit) -> None:
        await self._start_with_retries(unit)
        if self.tasks.task(f"uplink-{unit.name}") is None:
            self.tasks.spawn(f"uplink-{unit.name}", unit.transport.run, label=f"uplink {unit.name} connection")
        await self.clock_gate()
        await unit.delivery.run()

    async def _start_with_retries(self, unit: UplinkUnit) -> None:
        backoff = Backoff(1.0, getattr(unit.config, "reconnect_max", 30.0))
        while not unit.started:
            try:
                await self.start(unit)
            except Exception as exc:
                delay = backoff.next()
                unit.transport.last_error = f"cannot start: {type(exc).__name__}: {exc}"
                log.error("uplink %s: %s; retrying in %.0fs", unit.name, unit.transport.last_error, delay)
                self.on_change()
                await asyncio.sleep(delay)
        if unit.transport.last_error and unit.transport.last_error.startswith("cannot start"):
            unit.transport.last_error = None

    async def remove(self, name: str, *, forget: bool) -> None:
        """Stop an uplink; `forget` also drops its cursor (it left the config)."""
        await self.tasks.stop(f"deliver-{name}")
        await self.tasks.stop(f"uplink-{name}")
        unit = self._units.pop(name, None)
        if unit is not None:
            unit.delivery.detach()
            await self.discard(unit)
        if forget:
            self.buffer.remove_uplink(name)

    async def stop_all(self) -> None:
        for name in list(self._units):
            await self.remove(name, forget=False)

    async def drain(self, timeout: float) -> None:
        """Keep delivering until every uplink caught up, or `timeout` (seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(u.delivery.caught_up for u in self._units.values()):
            await asyncio.sleep(0.05)
            self.buffer.commit()  # persist acks as they arrive

    # --- what the health view reads --------------------------------------------------------------

    def facts(self) -> dict[str, dict]:
        tasks = self.tasks.facts()
        out = {}
        for name, u in self._units.items():
            dead = [tasks[t]["last_error"] for t in (f"deliver-{name}", f"uplink-{name}")
                    if t in tasks and tasks[t]["state"] != "running" and tasks[t]["last_error"]]
            out[name] = {"type": u.config.type, "connected": u.started and u.transport.connected,
                         "sent": u.delivery.sent_total, "last_latency": u.delivery.last_latency,
                         "last_error": u.transport.last_error or (dead[0] if dead else None)}
        return out

    def names(self) -> list[str]:
        return list(self._units)
