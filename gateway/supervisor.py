"""Every long-running task of the daemon runs under this supervisor.

A task that ends by an exception, or is cancelled by anyone but its owner, is
logged once with its cause, shown (state, restarts, last error) to status,
metrics and the watchdog through `facts()`/`problems()`, and started again
after a jittered exponential backoff. A task that returns has finished its job
(the clock watcher, once the clock is trusted) and is not restarted.

While a task is down the watchdog keep-alives stop (see `problems`): a single
crash costs a few seconds of withheld keep-alives, a crash loop whose backoff
outgrows WatchdogSec lets systemd restart the whole daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from gateway.backoff import Backoff

log = logging.getLogger(__name__)

RESTART_FIRST = 2.0  # s before the first restart of a dead task
RESTART_CAP = 60.0
HEALTHY_RUN = 60.0  # a task that ran this long before dying starts its backoff afresh


@dataclass
class _Entry:
    name: str  # the asyncio task name (dump_tasks, logs)
    label: str  # how problems name it: "uplink city", "sensor river-1", "commit"
    factory: Callable[[], Awaitable[None]]
    restart: bool
    backoff: Backoff
    task: asyncio.Task | None = None
    state: str = "running"  # running | restarting | done | stopped
    restarts: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)
    retry: asyncio.TimerHandle | None = None


class TaskSupervisor:
    def __init__(self, on_change: Callable[[], None] | None = None, *, restart_first: float = RESTART_FIRST,
                 restart_cap: float = RESTART_CAP):
        self._entries: dict[str, _Entry] = {}
        self._on_change = on_change or (lambda: None)
        self._restart = (restart_first, restart_cap)

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, label: str | None = None,
              restart: bool = True) -> None:
        """Run `factory()` as task `name`; restarted after a death unless `restart` is False."""
        if name in self._entries:
            raise RuntimeError(f"task {name} is already supervised")
        entry = _Entry(name, label or name, factory, restart, Backoff(*self._restart))
        self._entries[name] = entry
        self._start(entry)

    def _start(self, entry: _Entry) -> None:
        entry.retry = None
        entry.state, entry.started = "running", time.monotonic()
        entry.task = asyncio.create_task(entry.factory(), name=entry.name)
        entry.task.add_done_callback(lambda task: self._ended(entry, task))

    def _ended(self, entry: _Entry, task: asyncio.Task) -> None:
        if entry.state == "stopped" or self._entries.get(entry.name) is not entry:
            return  # stopped by its owner
        if not task.cancelled() and task.exception() is None:
            entry.state = "done"
            self._on_change()
            return
        exc = None if task.cancelled() else task.exception()
        entry.last_error = "cancelled" if exc is None else f"{type(exc).__name__}: {exc}"
        if time.monotonic() - entry.started >= HEALTHY_RUN:
            entry.backoff.reset()
        if not entry.restart:
            entry.state = "done"
            log.error("%s: worker stopped (%s)", entry.label, entry.last_error, exc_info=exc)
            self._on_change()
            return
        delay = entry.backoff.next()
        entry.state = "restarting"
        log.error("%s: worker stopped (%s); restarting in %.0fs", entry.label, entry.last_error, delay, exc_info=exc)
        entry.retry = asyncio.get_running_loop().call_later(delay, self._restart_now, entry)
        self._on_change()

    def _restart_now(self, entry: _Entry) -> None:
        if self._entries.get(entry.name) is entry and entry.state == "restarting":
            entry.restarts += 1
            log.info("%s: worker restarted (restart %d)", entry.label, entry.restarts)
            self._start(entry)
            self._on_change()

    async def stop(self, name: str) -> None:
        """Cancel a task on purpose (reload, shutdown) and wait for it to end."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        entry.state = "stopped"
        if entry.retry is not None:
            entry.retry.cancel()
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)

    async def stop_all(self, names: list[str] | None = None) -> None:
        await asyncio.gather(*(self.stop(n) for n in (list(self._entries) if names is None else names)))

    def task(self, name: str) -> asyncio.Task | None:
        """The asyncio task now running under `name` (for diagnostics and tests)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.task

    def facts(self) -> dict[str, dict]:
        return {e.name: {"state": e.state, "restarts": e.restarts, "last_error": e.last_error}
                for e in self._entries.values()}

    def problems(self) -> list[str]:
        """A task that is down, waiting for its restart (or that died and is not restarted)."""
        out = []
        for e in self._entries.values():
            down = e.state == "restarting" or (e.state == "done" and e.last_error is not None)
            if down:
                out.append(f"{e.label}: worker stopped" if e.last_error == "cancelled"
                           else f"{e.label}: worker stopped ({e.last_error})")
        return out
