"""The daemon's composition root: wires drivers → pipeline → buffer → delivery
workers → uplinks, and stops cleanly on SIGTERM/SIGINT (SPEC §1): stop
reading, commit, keep delivering for up to `shutdown_timeout`, leave the rest
in the buffer.

The work is done by its parts, each owning its own state:
- sensor_supervisor.py: runners, pipelines, `accept`;
- uplink_supervisor.py: transports and delivery workers;
- supervisor.py: every task, restarted with backoff when it dies;
- clock_corrector.py: clock trust and the rewrite of flagged readings;
- reload.py: SIGHUP reloads, all-or-nothing;
- health.py: the read-only view that status, metrics, the watchdog and
  systemd's STATUS= read.
This module only builds them, hands each the callables it needs, and runs the
lifecycle: signals, the commit loop, the watchdog, the stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from gateway import catalogue
from gateway.buffer import Buffer
from gateway.bufferfile import open_when_possible
from gateway.clock import Clock, SystemClock
from gateway.clock_corrector import ClockCorrector
from gateway.config import Config, ConfigError, load_config
from gateway.health import HealthView, Sources
from gateway.ids import IdGenerator, IdStamper
from gateway.instance import AlreadyRunning, InstanceLock
from gateway.metrics import MetricsServer
from gateway.manage.health import Host, health_document
from gateway.notify import Notifier
from gateway.pipeline import forget_other_sensors
from gateway.sdk.devices import Devices
from gateway.reload import ReloadPlan, ReloadRefused, outcome
from gateway.sensor_supervisor import SensorSupervisor
from gateway.status import StatusServer, socket_path
from gateway.supervisor import TaskSupervisor
from gateway.uplink_supervisor import UplinkSupervisor

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds between STATUS= updates when no watchdog asks for more


def id_lease_file(buffer_path: Path) -> Path:
    # Beside the buffer, not inside it: a replaced buffer file must not restart the ids.
    return buffer_path.with_name(buffer_path.name + ".ids")


def dump_tasks() -> None:
    """`kill -USR2 <pid>`: log where every asyncio task waits (SIGUSR1 gives thread stacks)."""
    for task in asyncio.all_tasks():
        log.warning("task %s: %s", task.get_name(), "".join(
            f"\n  {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in task.get_stack()))


class Gateway:
    def __init__(self, config: Config, *, clock: Clock | None = None, notifier: Notifier | None = None,
                 devices: dict[str, Devices] | None = None, clock_poll: float = 5.0):
        self.config = config  # the config in effect: replaced only by a reload that fully applied
        self._devices = devices or {}  # device sets handed in (tests, the simulated rig) by the `devices` name
        self._clock = clock or SystemClock(config.service.clock_check)
        self._clock_poll = clock_poll  # seconds between clock checks while untrusted
        self.notifier = notifier or Notifier()
        self.stopping = asyncio.Event()
        self.tasks = TaskSupervisor(on_change=self._changed)
        self.last_reload: dict | None = None
        self._last_commit = time.monotonic()
        self._reload_task: asyncio.Task | None = None
        self._started = False  # reloads wait until start-up is done
        self.health: HealthView | None = None  # the parts exist once run() opened the buffer
        self.sensors: SensorSupervisor | None = None
        self.uplinks: UplinkSupervisor | None = None
        self.web_server = None  # the on-site page (gateway/web.py), when service.web is set
        self.manager = None  # remote management (gateway/manage, SPEC §7), when an uplink has a manage section

    def _changed(self) -> None:
        if self.health is not None:
            self.health.changed()

    # --- building the parts --------------------------------------------------------------------

    async def _open_storage(self) -> int | None:
        """The instance lock (before the buffer and the status socket: a second daemon
        touches neither), the buffer (waiting while it cannot open), the ids. An exit
        code if the daemon must not go on."""
        storage = self.config.storage
        self.notifier.status("opening the buffer")
        try:
            self.instance = InstanceLock(storage.path).acquire()
        except (AlreadyRunning, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        self.buffer = await open_when_possible(lambda: Buffer(
            storage.path, [u.name for u in self.config.uplinks], gateway=self.config.gateway.id,
            max_readings=storage.max_readings, durability=storage.durability, commit_rows=storage.commit_rows),
            storage.path, self.notifier, self.stopping)
        if self.buffer is None:
            log.info("stopped before the buffer opened: nothing was read")
            self.instance.release()
            return 0
        self.stamp = IdStamper(IdGenerator(self.config.gateway.id, id_lease_file(storage.path)), self.buffer.append)
        return None

    def _build(self) -> None:
        cfg = self.config
        self.corrector = ClockCorrector(self._clock, self.buffer, hold=cfg.service.clock_hold, stopping=self.stopping,
                                    poll=self._clock_poll)
        self.sensors = SensorSupervisor(cfg.gateway.id, self.buffer, self.stamp, self.tasks, devices=self._devices,
                                        clock_synced=self.corrector.is_synced, on_change=self._changed)
        forget_other_sensors(self.buffer.recall, self.buffer.remember, [s.id for s in cfg.sensors])
        self.uplinks = UplinkSupervisor(self.buffer, cfg.gateway.id, self.tasks, catalogue.from_config(cfg),
                                        clock_gate=self.corrector.gate, on_change=self._changed)
        self.health = HealthView(Sources(
            gateway_id=cfg.gateway.id, sensors=self.sensors.facts, uplinks=self.uplinks.facts,
            tasks=self.tasks.facts, task_problems=self.tasks.problems, buffer=self.buffer,
            clock_synced=self.corrector.is_synced, reload=lambda: self.last_reload,
            commit_age=lambda: time.monotonic() - self._last_commit, commit_interval=cfg.storage.commit_interval,
            stopping=self.stopping.is_set))
        self._host = Host(vcgencmd=None)  # sysfs only: no subprocess on the event loop
        self.uplinks.catalogue.health = self._health_document

    def _health_document(self) -> dict:
        """The `health` message's facts, for the gateway's own NGSI-LD Device entity."""
        return health_document(self.health.snapshot(), self._host.facts(self.corrector.is_synced()), None)

    def _start_parts(self) -> None:
        cfg = self.config
        # One part that cannot be set up (a secret file gone since the check) must not stop the others:
        # said once, loudly; an uplink's readings stay buffered for it.
        for u in cfg.uplinks:
            try:
                unit = self.uplinks.build(u)
            except Exception as exc:
                log.error("uplink %s cannot be set up (%s: %s); its readings stay buffered", u.name,
                          type(exc).__name__, exc)
                continue
            self.uplinks.add(unit)  # its task starts the transport, retrying on failure
        for options in cfg.sensors:
            try:
                unit = self.sensors.build(options, cfg.location_of(options))
            except Exception as exc:
                log.error("sensor %s cannot be set up (%s: %s)", options.id, type(exc).__name__, exc)
                continue
            self.sensors.add(unit)
        self.tasks.spawn("commit", self._commit_loop)
        self.tasks.spawn("clock", self.corrector.watch)
        self.tasks.spawn("watchdog", self._watchdog_loop)
        self.tasks.spawn("health", self.health.watch)

    def health_problems(self) -> list[str]:
        return self.health.problems()

    # --- lifecycle -----------------------------------------------------------------------------

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        if os.environ.get("GATEWAY_DEBUG_HOOKS") == "1":
            loop.add_signal_handler(signal.SIGRTMIN, _freeze_event_loop)

    async def run(self) -> int:
        cfg = self.config
        _say_warnings(cfg)
        self._signals()
        opened = await self._open_storage()
        if opened is not None:
            return opened
        self._build()
        self._start_parts()
        self.status_server = StatusServer(self.health.snapshot, socket_path(cfg))
        await self.status_server.start()
        self.metrics_server = None
        if cfg.service.metrics_port:
            self.metrics_server = MetricsServer(self.health.snapshot, self.health.problems, cfg.service.metrics_port,
                                                unhealthy_after=cfg.service.unhealthy_after)
            await self.metrics_server.start()
        if cfg.service.web is not None:
            await self._start_web(cfg.service.web)
        from gateway.manage.wiring import start_manager
        self.manager = await start_manager(self)  # SPEC §7; None without a manage section
        log.info("gateway %s running: %d sensors, %d uplinks (%s), buffer %s", cfg.gateway.id, len(cfg.sensors),
                 len(cfg.uplinks), ", ".join(f"{u.name}:{u.type}" for u in cfg.uplinks) or "none", cfg.storage.path)
        self._started = True
        self.notifier.ready(self.health.status_line())
        await self.stopping.wait()
        return await self._shutdown()

    async def _shutdown(self) -> int:
        self.notifier.stopping(f"stopping: delivering for up to {self.config.gateway.shutdown_timeout:g}s")
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)
        await self.sensors.stop_all()
        self.stamp.flush()
        self.buffer.commit()
        await self.uplinks.drain(self.config.gateway.shutdown_timeout)
        await self.tasks.stop_all(["commit", "clock", "watchdog", "health"])
        await self.uplinks.stop_all()
        if self.manager is not None:
            await self.manager.stop()
        await self.status_server.stop()
        if self.web_server is not None:
            await self.web_server.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        self.stamp.flush()
        closed = self.buffer.close()
        self.instance.release()
        self.notifier.close()
        log_stop(closed, len(self.stamp.held) + self.stamp.lost)
        return 0

    async def _start_web(self, settings) -> None:
        from gateway import logring
        from gateway.history import RecentHistory, history_path
        from gateway.web import WebServer
        ring = logring.shared()
        history = RecentHistory(history_path(self.config.storage.path))
        self.sensors.on_reading = history.add  # the plots' own table, never the delivery buffer
        self.web_server = WebServer.from_settings(
            settings, snapshot=self.health.snapshot, history=history, log_lines=ring.lines,
            sensor_options=lambda sid: next((s for s in self.config.sensors if s.id == sid), None))
        await self.web_server.start()

    def request_stop(self, why: str = "request") -> None:
        if not self.stopping.is_set():
            log.info("stopping (%s): no new reads; delivering for up to %gs", why, self.config.gateway.shutdown_timeout)
        self.stopping.set()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.storage.commit_interval)
            self.stamp.flush()
            self.buffer.commit()
            self._last_commit = time.monotonic()

    async def _watchdog_loop(self) -> None:
        """Keep-alives only after a health check: a blocked event loop never gets
        here, a dead worker or stalled commit fails the check; either way the
        keep-alives stop and systemd restarts the service."""
        interval = self.notifier.watchdog_interval or STATUS_EVERY
        reported: tuple[str, ...] = ()
        next_status = 0.0
        while True:
            problems = tuple(self.health.problems())
            if not problems:
                self.notifier.keepalive()
            elif problems != reported:
                log.error("not healthy, withholding watchdog keep-alives: %s", "; ".join(problems))
            reported = problems
            if time.monotonic() >= next_status:
                self.notifier.status(self.health.status_line())
                next_status = time.monotonic() + min(interval, STATUS_EVERY)
            await asyncio.sleep(interval)

    # --- reload (SIGHUP) -------------------------------------------------------------------------

    def request_reload(self) -> None:
        if self.stopping.is_set():
            return
        if not self._started:
            log.info("SIGHUP during start-up: the config just read is already the current one")
            return
        if self._reload_task is not None and not self._reload_task.done():
            log.info("SIGHUP: a reload is already running")
            return
        self._reload_task = asyncio.create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        source = self.config.source
        log.info("SIGHUP: reloading %s", source)
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, source)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("reload rejected: %s has %d problem(s); the running config stays in effect",
                      source, len(exc.problems))
            self.last_reload = outcome("refused", source, f"{len(exc.problems)} problem(s) in the config",
                                       [str(p) for p in exc.problems])
        else:
            await self.apply(new)
        self._changed()
        self.notifier.ready(self.health.status_line())

    async def apply(self, new: Config) -> bool:
        """Put `new` into effect, all or nothing (SIGHUP; config/set). True if it
        applied; if not, the running set is untouched and `last_reload` says why."""
        plan = ReloadPlan(self.config, new)
        try:
            await plan.apply(self.sensors, self.uplinks)
        except ReloadRefused as exc:
            log.error("reload refused: %s; the running config stays in effect", exc)
            self.last_reload = outcome("refused", new.source, str(exc))
            return False
        self.config = plan.new
        self.last_reload = outcome("applied", new.source)
        log.info("config reloaded: %d sensors, %d uplinks", len(plan.new.sensors), len(plan.new.uplinks))
        _say_warnings(plan.new)
        return True


def _say_warnings(config: Config) -> None:
    """What `gateway check` warns of, in the journal too, for every config that comes into effect."""
    for warning in config.warnings:
        log.warning("%s", warning)


def log_stop(closed, without_id: int) -> None:
    """What the stop leaves: only readings on disk count as kept; the rest is said to be lost."""
    left = ", ".join(f"{k}: {v}" for k, v in closed.left.items()) or "none (no uplinks)"
    lost = closed.lost + without_id
    if not lost:
        log.info("gateway stopped; on disk for the next start to send: %s; nothing lost", left)
        return
    log.error("gateway stopped; on disk for the next start to send: %s; LOST: %d readings of this run never "
              "reached the disk (%d held in memory at the stop, %d evicted from memory while writes failed, "
              "%d without an id)", left, lost, closed.unwritten, closed.lost - closed.unwritten, without_id)


def _freeze_event_loop() -> None:
    """Debug hook (GATEWAY_DEBUG_HOOKS=1, then SIGRTMIN): block the event loop as a
    synchronous bug would, so tests can see the watchdog keep-alives stop."""
    log.warning("debug hook: freezing the event loop")
    time.sleep(3600)
