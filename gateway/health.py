"""The daemon's state, read-only, in one place: `gateway status --json`,
metrics, /healthz, the watchdog and systemd's STATUS= all read this view, so
they can never disagree.

The view owns no state. The composition root (service.py) hands it callables
that report what the supervisors own (`Sources`); anything that wants the
daemon's state takes `snapshot` (and `on_change`) injected, never the Gateway.
`changed()` is what the supervisors call on a sensor or task state change;
`watch()` (a supervised task) also calls it every second, which catches
what transports change on their own (connected, last_error). The callbacks run
only when the state really differs from the last one they were told about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from gateway.sdk.reading import format_time

log = logging.getLogger(__name__)

Facts = Callable[[], dict[str, dict]]


@dataclass
class Sources:
    gateway_id: str
    sensors: Facts  # sensor id -> SensorRunner.facts() plus "error_readings"
    uplinks: Facts  # uplink name -> {type, connected, sent, last_latency, last_error}
    tasks: Facts  # task name -> TaskSupervisor.facts()
    task_problems: Callable[[], list[str]]
    buffer: Any  # gateway.buffer.Buffer: read through its public methods only
    clock_synced: Callable[[], bool]
    reload: Callable[[], dict | None]  # the last reload's outcome
    commit_age: Callable[[], float]  # seconds since the last buffer commit
    commit_interval: float
    stopping: Callable[[], bool]


def _age(since_ms: int | None, now_ms: float) -> float | None:
    return None if since_ms is None else round(max(0.0, now_ms - since_ms) / 1000, 1)


class HealthView:
    def __init__(self, sources: Sources):
        self.s = sources
        self.started = time.monotonic()
        self._callbacks: list[Callable[[], None]] = []
        self._told: tuple | None = None  # the state the callbacks last heard of

    # --- change notification ---------------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` after any sensor, uplink or task state change."""
        self._callbacks.append(callback)

    def _state(self) -> tuple:
        sensors = tuple((sid, f["state"], f["detail"]) for sid, f in self.s.sensors().items())
        uplinks = tuple((n, bool(f["connected"]), f["last_error"]) for n, f in self.s.uplinks().items())
        tasks = tuple((n, f["state"]) for n, f in self.s.tasks().items())
        return sensors, uplinks, tasks

    def changed(self) -> None:
        state = self._state()
        if state == self._told:
            return
        self._told = state
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a listener's bug must not break the supervisor that reported
                log.exception("health change listener failed")

    async def watch(self, every: float = 1.0) -> None:
        while True:
            self.changed()
            await asyncio.sleep(every)

    # --- the views -------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the daemon is not making progress; empty when it is. An uplink that
        is down or a failing sensor is not a problem here (a restart fixes
        neither); a dead worker task or a stalled commit loop is."""
        problems = []
        stalled = self.s.commit_age()
        if stalled > max(5 * self.s.commit_interval, 10.0):
            problems.append(f"buffer commits stalled for {stalled:.0f}s")
        if self.s.stopping():
            return problems
        for sid, facts in self.s.sensors().items():
            if facts["quiet_s"] > facts["stall_limit"]:
                problems.append(f"sensor {sid}: scheduler has not tried a read for {facts['quiet_s']:.0f}s")
        return problems + self.s.task_problems()

    def snapshot(self) -> dict:
        """The JSON of `gateway status --json` (read on the event loop's thread)."""
        problems = self.problems()
        return {
            "gateway": self.s.gateway_id,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "clock": {"synced": self.s.clock_synced()},
            "healthy": not problems,
            "problems": problems,
            "sensors": self._sensors(),
            "uplinks": self._uplinks(),
            "buffer": self._buffer(),
            "tasks": self.s.tasks(),
            "reload": self.s.reload(),
        }

    def _sensors(self) -> dict:
        mono = time.monotonic()
        out = {}
        for sid, f in self.s.sensors().items():
            last = f["last_reading"]
            out[sid] = {
                "driver": f["driver"],
                "state": f["state"],
                "detail": f["detail"],
                "failures": f["failures"],
                "reads": f["reads"],
                "read_errors": f["read_errors"] + f["error_readings"],
                "last_reading": None if last is None else last.as_json(),
                "last_reading_at": None if f["last_reading_at"] is None else format_time(f["last_reading_at"]),
                "age_s": None if last is None else round(mono - last.monotonic, 1),
                "state_for_s": round(f["state_for_s"], 1),  # how long in this state (/healthz: failing too long)
            }
        return out

    def _uplinks(self) -> dict:
        now_ms = time.time() * 1000
        out = {}
        for name, f in self.s.uplinks().items():
            b = self.s.buffer.backlog(name)
            out[name] = {
                "type": f["type"],
                "connected": bool(f["connected"]),
                "pending": b["pending"],
                "oldest_pending_age_s": _age(b["oldest_ms"], now_ms) if b["pending"] else None,
                "dead_letters": b["dead_letters"],
                "sent": f["sent"],
                "last_latency_s": None if f["last_latency"] is None else round(f["last_latency"], 4),
                "last_error": f["last_error"],
            }
        return out

    def _buffer(self) -> dict:
        buf = self.s.buffer
        return {"path": str(buf.path), "readings": buf.count, "evictions": buf.evictions, "last_seq": buf.last_seq}

    def status_line(self) -> str:
        """One line for systemd's STATUS= (`systemctl status`)."""
        sensors = self.s.sensors()
        ok = sum(1 for f in sensors.values() if f["state"] == "ok")
        parts = [f"{len(sensors)} sensors ({ok} reading)"]
        for name, f in self.s.uplinks().items():
            pending = self.s.buffer.backlog(name)["pending"]
            parts.append(f"{name} {'up' if f['connected'] else 'DOWN'}, {pending} pending")
        if not self.s.clock_synced():
            parts.append("clock NOT synced")
        reload = self.s.reload()
        if reload and reload["result"] == "refused":
            parts.append("last reload REFUSED")
        return "; ".join(parts)
