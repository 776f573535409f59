"""The daemon: wires drivers → pipeline → buffer → delivery workers → uplinks,
and stops cleanly on SIGTERM/SIGINT (SPEC §1): stop reading, commit, keep
delivering for up to `shutdown_timeout`, leave the rest in the buffer.

Around that core it lives with systemd and technicians: sd_notify READY/STATUS
and watchdog keep-alives only while its loops make progress (notify.py), a
status socket (status.py), optional metrics (metrics.py), readings flagged and
later corrected while the clock is untrusted (clock.py), and SIGHUP reloads of
sensors and uplinks without touching the buffer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

from gateway import registry
from gateway.buffer import Buffer
from gateway.clock import Clock, SystemClock, corrected
from gateway.config import Config, ConfigError, load_config
from gateway.delivery import Delivery
from gateway.ids import IdGenerator
from gateway.notify import Notifier
from gateway.pipeline import Pipeline
from gateway.sdk.devices import Devices
from gateway.sdk.reading import Reading, epoch_ms
from gateway.scheduler import SensorRunner
from gateway.uplinks import make_transport

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
                 devices: dict[str, Devices] | None = None):
        self.config = config
        self.devices = devices or {}  # device sets handed in (tests, the simulated rig) by the `devices` name
        self.clock = clock or SystemClock(config.service.clock_check)
        self.notifier = notifier or Notifier()
        self.clock_poll = 5.0  # seconds between clock checks while untrusted
        self.stopping = asyncio.Event()
        self.runners: dict[str, SensorRunner] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.latest: dict[str, Reading] = {}  # per sensor, as published: the pipeline's `temperature_from`
        self.deliveries: list[Delivery] = []
        self.sensor_tasks: dict[str, asyncio.Task] = {}
        self.delivery_tasks: dict[str, asyncio.Task] = {}
        self.transports: dict[str, object] = {}
        self.uplink_types: dict[str, str] = {}
        self.error_readings: dict[str, int] = {}
        self.readings_total = 0
        self.clock_synced = True
        self.started_monotonic = time.monotonic()
        self.last_commit = time.monotonic()
        self._core_tasks: list[asyncio.Task] = []
        self._reload_task: asyncio.Task | None = None
        self._started = False  # reloads wait until start-up is done

    # --- readings in ---------------------------------------------------------------------------

    def accept(self, reading: Reading) -> None:
        """A driver's reading: derive, stamp, and append to the buffer."""
        pipeline = self.pipelines[reading.sensor]
        reading = pipeline.process(reading)
        self.latest[reading.sensor] = reading
        runner = self.runners.get(reading.sensor)
        if runner is not None:  # a river in alert or rising fast is read more often
            runner.interval_override = pipeline.interval_override
        reading.gateway = self.config.gateway.id
        reading.id = self.ids.next(reading.sensor)
        if not self.clock_synced:
            reading.clock_synced = False  # corrected in the buffer once the clock is trusted
        if reading.quality == "error":
            self.error_readings[reading.sensor] = self.error_readings.get(reading.sensor, 0) + 1
        self.buffer.append(reading)
        self.readings_total += 1

    def _make_runner(self, options) -> SensorRunner:
        devices = self.devices.get(options.devices) or registry.devices(options.devices)
        driver = registry.load(options.driver)(options, devices)
        self.pipelines[options.id] = Pipeline(options, self.config.location_of(options), driver=type(driver),
                                              latest=self.latest.get)
        runner = SensorRunner(driver, self.accept, self.buffer.set_sensor_state)
        return runner

    # --- sensors and uplinks, started and stopped one by one (start and reload) ------------------

    def _start_sensor(self, options) -> None:
        runner = self._make_runner(options)
        self.runners[options.id] = runner
        self.sensor_tasks[options.id] = asyncio.create_task(runner.run(), name=f"sensor-{options.id}")

    async def _stop_sensor(self, sensor_id: str) -> None:
        task = self.sensor_tasks.pop(sensor_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.runners.pop(sensor_id, None)
        self.pipelines.pop(sensor_id, None)

    async def _start_uplink(self, u) -> None:
        transport = make_transport(u, self.config.gateway.id, self.config)
        await transport.start()
        delivery = Delivery(self.buffer, transport, getattr(u, "reconnect_max", 30.0))
        self.transports[u.name] = transport
        self.uplink_types[u.name] = u.type
        self.deliveries.append(delivery)
        self.delivery_tasks[u.name] = asyncio.create_task(self._deliver(delivery), name=f"deliver-{u.name}")

    async def _stop_uplink(self, name: str) -> None:
        task = self.delivery_tasks.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        delivery = next(d for d in self.deliveries if d.name == name)
        self.deliveries.remove(delivery)
        delivery.detach()
        await self.transports.pop(name).stop()

    async def _deliver(self, delivery: Delivery) -> None:
        await self._clock_gate()
        await delivery.run()

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        if os.environ.get("GATEWAY_DEBUG_HOOKS") == "1":
            loop.add_signal_handler(signal.SIGRTMIN, _freeze_event_loop)
        self.notifier.status("opening the buffer")
        self.buffer = Buffer(cfg.storage.path, [u.name for u in cfg.uplinks], gateway=cfg.gateway.id,
                             max_readings=cfg.storage.max_readings,
                             durability=cfg.storage.durability, commit_rows=cfg.storage.commit_rows)
        self.ids = IdGenerator(cfg.gateway.id, id_lease_file(cfg.storage.path))
        self._first_seq = self.buffer.last_seq + 1  # monotonic times are only comparable within this run
        self.clock_synced = self.clock.synced()
        self._clock_trusted = asyncio.Event()
        if self.clock_synced:
            self._clock_trusted.set()
        else:
            log.warning("the clock is not synchronised: readings are flagged \"clock\": \"unsynced\" and their "
                        "times corrected once it is; deliveries wait for it up to %gs", cfg.service.clock_hold)
        for u in cfg.uplinks:
            await self._start_uplink(u)
        for options in cfg.sensors:
            self._start_sensor(options)
        from gateway.status import StatusServer, socket_path
        self.status_server = StatusServer(self, socket_path(cfg))
        await self.status_server.start()
        self.metrics_server = None
        if cfg.service.metrics_port:
            from gateway.metrics import MetricsServer
            self.metrics_server = MetricsServer(self, cfg.service.metrics_port)
            await self.metrics_server.start()
        self._core_tasks = [asyncio.create_task(self._commit_loop(), name="commit"),
                            asyncio.create_task(self._watch_clock(), name="clock"),
                            asyncio.create_task(self._watchdog_loop(), name="watchdog")]
        log.info("gateway %s running: %d sensors, %d uplinks (%s), buffer %s", cfg.gateway.id, len(self.runners),
                 len(self.deliveries), ", ".join(f"{u.name}:{u.type}" for u in cfg.uplinks) or "none", cfg.storage.path)
        self._started = True
        self.notifier.ready(self.status_line())

        await self.stopping.wait()
        self.notifier.stopping(f"stopping: delivering for up to {self.config.gateway.shutdown_timeout:g}s")
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)
        sensor_tasks = list(self.sensor_tasks.values())
        for t in sensor_tasks:
            t.cancel()
        await asyncio.gather(*sensor_tasks, return_exceptions=True)
        self.buffer.commit()
        await self._drain(self.config.gateway.shutdown_timeout)
        for t in self._core_tasks:
            t.cancel()
        for t in self.delivery_tasks.values():
            t.cancel()
        await asyncio.gather(*self._core_tasks, *self.delivery_tasks.values(), return_exceptions=True)
        for t in self.transports.values():
            await t.stop()
        await self.status_server.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        left = {d.name: self.buffer.last_seq - self.buffer.acked[d.name] for d in self.deliveries}
        self.buffer.close()
        self.notifier.close()
        log.info("gateway stopped; readings left in the buffer for the next start: %s",
                 ", ".join(f"{k}: {v}" for k, v in left.items()) or "none (no uplinks)")
        return 0

    def request_stop(self, why: str = "request") -> None:
        if not self.stopping.is_set():
            log.info("stopping (%s): no new reads; delivering for up to %gs", why, self.config.gateway.shutdown_timeout)
        self.stopping.set()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.storage.commit_interval)
            self.buffer.commit()
            self.last_commit = time.monotonic()

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(d.caught_up for d in self.deliveries):
            await asyncio.sleep(0.05)
            self.buffer.commit()  # persist acks as they arrive

    # --- health, systemd notify and watchdog -----------------------------------------------------

    def health_problems(self) -> list[str]:
        """Why the daemon is not making progress; empty when it is. An uplink that
        is down or a failing sensor is not a problem here (a restart fixes
        neither); a dead worker task or a stalled commit loop is."""
        problems = []
        stalled = time.monotonic() - self.last_commit
        if stalled > max(5 * self.config.storage.commit_interval, 10.0):
            problems.append(f"buffer commits stalled for {stalled:.0f}s")
        if self.stopping.is_set():
            return problems
        for sid, runner in self.runners.items():
            quiet = time.monotonic() - runner.last_attempt
            if quiet > runner.stall_limit:
                problems.append(f"sensor {sid}: scheduler has not tried a read for {quiet:.0f}s")
        named = [(f"uplink {n}", t) for n, t in self.delivery_tasks.items()]
        named += [(f"sensor {n}", t) for n, t in self.sensor_tasks.items()]
        named += [(t.get_name(), t) for t in self._core_tasks]
        for what, task in named:
            if task.done():
                exc = None if task.cancelled() else task.exception()
                if exc is None and what == "clock":
                    continue  # its job is done once the clock is trusted
                problems.append(f"{what}: worker stopped ({exc!r})" if exc else f"{what}: worker stopped")
        return problems

    def status_line(self) -> str:
        ok = sum(1 for r in self.runners.values() if r.state == "ok")
        parts = [f"{len(self.runners)} sensors ({ok} reading)"]
        for d in self.deliveries:
            pending = self.buffer.last_seq - self.buffer.acked.get(d.name, self.buffer.last_seq)
            parts.append(f"{d.name} {'up' if d.t.connected else 'DOWN'}, {pending} pending")
        if not self.clock_synced:
            parts.append("clock NOT synced")
        return "; ".join(parts)

    async def _watchdog_loop(self) -> None:
        """Keep-alives only after a health check: a blocked event loop never gets
        here, a dead worker or stalled commit fails the check; either way the
        keep-alives stop and systemd restarts the service."""
        interval = self.notifier.watchdog_interval or STATUS_EVERY
        reported: tuple[str, ...] = ()
        next_status = 0.0
        while True:
            problems = tuple(self.health_problems())
            if not problems:
                self.notifier.keepalive()
            elif problems != reported:
                log.error("not healthy, withholding watchdog keep-alives: %s", "; ".join(problems))
            reported = problems
            if time.monotonic() >= next_status:
                self.notifier.status(self.status_line())
                next_status = time.monotonic() + min(interval, STATUS_EVERY)
            await asyncio.sleep(interval)

    # --- clock ---------------------------------------------------------------------------------

    async def _clock_gate(self) -> None:
        """Deliveries wait (at most clock_hold) for a trusted clock, so readings
        leave with corrected times; stopping ends the wait."""
        if self._clock_trusted.is_set():
            return
        waits = [asyncio.ensure_future(self._clock_trusted.wait()), asyncio.ensure_future(self.stopping.wait())]
        remaining = self.config.service.clock_hold - (time.monotonic() - self.started_monotonic)
        await asyncio.wait(waits, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not self._clock_trusted.is_set() and not self.stopping.is_set():
            log.warning("clock still not synchronised after %gs: delivering readings flagged \"unsynced\"",
                        self.config.service.clock_hold)

    async def _watch_clock(self) -> None:
        while not self.clock_synced:
            await asyncio.sleep(self.clock_poll)
            if self.clock.synced():
                self._clock_became_trusted()

    def _clock_became_trusted(self) -> None:
        offset = self.clock.wall() - time.monotonic()  # true wall time = monotonic + offset

        def fix(rest: str):
            fixed = corrected(json.loads(rest), offset)
            if fixed is None:
                return None
            doc, true_time = fixed
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":")), epoch_ms(true_time)

        self.clock_synced = True
        count = self.buffer.rewrite(fix, self._first_seq, '"clock":"unsynced"')
        log.info("clock synchronised: corrected the time of %d buffered readings", count)
        self._clock_trusted.set()

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
        else:
            try:
                await self.apply(new)
            except Exception:
                log.exception("reload of %s failed part-way; check `gateway status`", source)
        self.notifier.ready(self.status_line())

    async def apply(self, new: Config) -> None:
        """Switch to a new config: sensors and uplinks added, removed or changed.
        The buffer stays open; an uplink kept by name keeps its cursor, so its
        pending readings are sent by the new settings."""
        old = self.config
        if new.storage != old.storage or new.gateway.id != old.gateway.id or new.service != old.service:
            log.warning("storage, service and gateway.id changes take effect at the next restart")
            new = new.model_copy(update={"storage": old.storage, "service": old.service,
                                         "gateway": new.gateway.model_copy(update={"id": old.gateway.id})})
        old_u = {u.name: u for u in old.uplinks}
        new_u = {u.name: u for u in new.uplinks}
        old_s = {s.id: (s, old.location_of(s)) for s in old.sensors}
        new_s = {s.id: (s, new.location_of(s)) for s in new.sensors}
        self.config = new
        # An uplink that reads sensor options (NGSI-LD: alert levels) restarts when the sensors change.
        sensors_changed = old_s != new_s
        needs_sensors = {name for name, u in new_u.items() if u.type == "ngsi-ld" and sensors_changed}
        for name, u in old_u.items():
            if new_u.get(name) != u or name in needs_sensors:
                await self._stop_uplink(name)
                if name not in new_u:
                    self.buffer.remove_uplink(name)
                    log.info("uplink %s removed", name)
        for name, u in new_u.items():
            if old_u.get(name) != u or name in needs_sensors:
                self.buffer.add_uplink(name)
                await self._start_uplink(u)
                log.info("uplink %s %s", name, "changed" if name in old_u else "added")
        for sid, s in old_s.items():
            if new_s.get(sid) != s:
                await self._stop_sensor(sid)
                if sid not in new_s:
                    log.info("sensor %s removed", sid)
        for sid, (options, _) in new_s.items():
            if old_s.get(sid) != new_s[sid]:
                self._start_sensor(options)
                log.info("sensor %s %s", sid, "changed" if sid in old_s else "added")
        log.info("config reloaded: %d sensors, %d uplinks", len(self.runners), len(self.deliveries))


def _freeze_event_loop() -> None:
    """Debug hook (GATEWAY_DEBUG_HOOKS=1, then SIGRTMIN): block the event loop as a
    synchronous bug would, so tests can see the watchdog keep-alives stop."""
    log.warning("debug hook: freezing the event loop")
    time.sleep(3600)
