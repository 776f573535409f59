"""The NGSI-LD uplink in one event loop for tests: a real buffer file, the real
delivery worker and transport, against tests/ngsi_broker.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Awaitable, Callable

from gateway.buffer import Buffer
from gateway.config import NgsiLdUplinkConfig
from gateway.delivery import Delivery
from gateway.sdk import Reading, Value
from gateway.uplinks.ngsi_ld import NgsiLdTransport

GW = "test-gw"
LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}
RIVER = f"urn:ngsi-ld:FloodMonitoring:{GW}.river-1"


def doc(kind: str, values: dict, sensor: str, device: str | None = None, at: float = 1_763_780_645.678) -> dict:
    r = Reading(sensor=sensor, kind=kind, values={k: Value(*v) for k, v in values.items()}, observed_at=at,
                device=device, id=f"{GW}.{sensor}.1", gateway=GW, location=(34.3428, 134.0466))
    return r.as_json()


class Harness:
    """Buffer (a real SQLite file) + Delivery + NgsiLdTransport in one event loop."""

    def __init__(self, tmp_path: Path, url: str, buffer: Buffer | None = None, **uplink):
        self.buffer = buffer or Buffer(tmp_path / "buffer.db", ["orion"], gateway=GW)
        self.config = NgsiLdUplinkConfig(name="orion", type="ngsi-ld", url=url, **uplink)
        self.transport = NgsiLdTransport(self.config, GW, buffer=self.buffer)
        self.n = 0

    def add(self, sensor: str, kind: str, values: dict, device: str | None = None, at: float | None = None,
            alert: bool = False) -> dict:
        self.n += 1
        at = at or 1_763_780_000 + self.n
        r = Reading.from_json(doc(kind, values, sensor, device, at))
        r.id = f"{GW}.{sensor}.{int(at * 1000)}.{self.n:06d}"
        r.alert = alert
        self.buffer.append(r)
        return r.as_json()

    def run(self, timeout: float = 30.0, during: Callable[[], Awaitable[None]] | None = None) -> None:
        """Deliver until caught up; `during` runs beside the worker (and must end first)."""
        async def go():
            await self.transport.start()
            self.buffer.commit()
            d = Delivery(self.buffer, self.transport, backoff_cap=self.config.reconnect_max)
            task = asyncio.create_task(d.run())
            if during is not None:
                await during()
            deadline = time.monotonic() + timeout
            while not d.caught_up:
                assert time.monotonic() < deadline, "delivery did not catch up"
                await asyncio.sleep(0.05)
            self.buffer.commit()
            task.cancel()
            await self.transport.stop()
        asyncio.run(go())

    def attempt(self, seconds: float) -> None:
        """Deliver for `seconds`, caught up or not (a broker that refuses the setup)."""
        async def go():
            await self.transport.start()
            self.buffer.commit()
            task = asyncio.create_task(Delivery(self.buffer, self.transport, self.config.reconnect_max).run())
            await asyncio.sleep(seconds)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.buffer.commit()
            await self.transport.stop()
        asyncio.run(go())

    def dead(self) -> list[tuple[str, str]]:
        return [(json.loads(body)["sensor"], reason) for body, reason in
                self.buffer.conn.execute("SELECT body, reason FROM dead ORDER BY seq")]


def river(h: Harness, level: float, sensor: str = "river-1", at: float | None = None, alert: bool = False) -> dict:
    values = {"water_level": (level, "m"), "distance": (6 - level, "m")}
    if alert:
        values["alert_level"] = ("danger",)
    return h.add(sensor, "river_level", values, at=at, alert=alert)


def upserts_move_forwards(upserted: list[tuple[str, dict]]) -> list[str]:
    """Entities whose upserted observedAt ever went backwards (empty: none)."""
    last: dict[str, str] = {}
    backwards = []
    for eid, e in upserted:
        at = max((a["observedAt"] for a in e.values() if isinstance(a, dict) and "observedAt" in a), default="")
        if at < last.get(eid, ""):
            backwards.append(f"{eid}: {at} after {last[eid]}")
        last[eid] = max(at, last.get(eid, ""))
    return backwards
