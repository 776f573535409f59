"""The daemon: wires drivers → pipeline → buffer → delivery workers → uplinks,
and stops cleanly on SIGTERM/SIGINT (SPEC §1): stop reading, commit, keep
delivering for up to `shutdown_timeout`, leave the rest in the buffer."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from gateway import registry
from gateway.buffer import Buffer
from gateway.config import Config
from gateway.delivery import Delivery
from gateway.ids import IdGenerator
from gateway.pipeline import Pipeline
from gateway.reading import Reading
from gateway.scheduler import SensorRunner
from gateway.uplinks import make_transport

log = logging.getLogger(__name__)


def id_lease_file(buffer_path: Path) -> Path:
    # Beside the buffer, not inside it: a replaced buffer file must not restart the ids.
    return buffer_path.with_name(buffer_path.name + ".ids")


def dump_tasks() -> None:
    """`kill -USR2 <pid>`: log where every asyncio task waits (SIGUSR1 gives thread stacks)."""
    for task in asyncio.all_tasks():
        log.warning("task %s: %s", task.get_name(), "".join(
            f"\n  {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in task.get_stack()))


class Gateway:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = asyncio.Event()
        self.runners: dict[str, SensorRunner] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.latest: dict[str, Reading] = {}  # per sensor, as published: the pipeline's `temperature_from`
        self.deliveries: list[Delivery] = []
        self.readings_total = 0

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
        self.buffer.append(reading)
        self.readings_total += 1

    def _make_runner(self, options) -> SensorRunner:
        driver = registry.load(options.driver)(options)
        self.pipelines[options.id] = Pipeline(options, self.config.location_of(options), driver=type(driver),
                                              latest=self.latest.get)
        return SensorRunner(driver, self.accept, self.buffer.set_sensor_state)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        self.buffer = Buffer(cfg.storage.path, [u.name for u in cfg.uplinks], gateway=cfg.gateway.id,
                             max_readings=cfg.storage.max_readings,
                             durability=cfg.storage.durability, commit_rows=cfg.storage.commit_rows)
        self.ids = IdGenerator(cfg.gateway.id, id_lease_file(cfg.storage.path))
        transports = [make_transport(u, cfg.gateway.id, cfg) for u in cfg.uplinks]
        for t in transports:
            await t.start()
        caps = {u.name: getattr(u, "reconnect_max", 30.0) for u in cfg.uplinks}
        self.deliveries = [Delivery(self.buffer, t, caps[t.name]) for t in transports]
        tasks = [asyncio.create_task(d.run(), name=f"deliver-{d.name}") for d in self.deliveries]
        for options in cfg.sensors:
            self.runners[options.id] = self._make_runner(options)
        sensor_tasks = [asyncio.create_task(r.run(), name=f"sensor-{r.id}") for r in self.runners.values()]
        committer = asyncio.create_task(self._commit_loop(), name="commit")
        log.info("gateway %s running: %d sensors, %d uplinks (%s), buffer %s", cfg.gateway.id, len(self.runners),
                 len(transports), ", ".join(f"{u.name}:{u.type}" for u in cfg.uplinks) or "none", cfg.storage.path)

        await self.stopping.wait()
        for t in sensor_tasks:
            t.cancel()
        await asyncio.gather(*sensor_tasks, return_exceptions=True)
        self.buffer.commit()
        await self._drain(cfg.gateway.shutdown_timeout)
        committer.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(committer, *tasks, return_exceptions=True)
        for t in transports:
            await t.stop()
        left = {d.name: self.buffer.last_seq - self.buffer.acked[d.name] for d in self.deliveries}
        self.buffer.close()
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

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(d.caught_up for d in self.deliveries):
            await asyncio.sleep(0.05)
            self.buffer.commit()  # persist acks as they arrive
