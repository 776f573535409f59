"""The sensor supervisor: one SensorRunner and one Pipeline per sensor, each
runner a supervised task, and `accept`, where a driver's reading is derived,
stamped and appended to the buffer.

A reading the pipeline or the buffer cannot take (a plugin's value JSON cannot
hold, a pipeline bug) never stops its sensor: it is logged, counted, and stored
as an error reading that says why, so the gap is visible downstream.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from gateway import registry
from gateway.buffer import Buffer
from gateway.ids import IdStamper
from gateway.pipeline import Pipeline
from gateway.clock import boot_id
from gateway.sdk.devices import Devices
from gateway.sdk.reading import Reading
from gateway.scheduler import SensorRunner
from gateway.supervisor import TaskSupervisor

log = logging.getLogger(__name__)


@dataclass
class SensorUnit:
    """A sensor built from its options, not yet running (a reload builds all new ones first)."""

    options: object
    runner: SensorRunner
    pipeline: Pipeline


def task_name(sensor_id: str) -> str:
    return f"sensor-{sensor_id}"


class SensorSupervisor:
    def __init__(self, gateway_id: str, buffer: Buffer, stamp: IdStamper, tasks: TaskSupervisor, *,
                 devices: dict[str, Devices], clock_synced: Callable[[], bool], on_change: Callable[[], None]):
        self.gateway_id = gateway_id
        self.devices = devices  # device sets handed in by name; others come from the registry
        self.buffer = buffer
        self.stamp = stamp  # gives each reading its id and appends it (held while no id can be issued)
        self.tasks = tasks
        self.clock_synced = clock_synced
        self.on_change = on_change
        self._units: dict[str, SensorUnit] = {}
        self._latest: dict[str, Reading] = {}  # per sensor, the last reading the buffer took
        self._error_readings: dict[str, int] = {}
        self._releasing: dict[str, object] = {}  # sensor id -> its removed runner's pending close (reload)
        self.readings_total = 0
        self.refused_total = 0
        self.on_reading: Callable[[Reading], None] | None = None  # each reading as appended (the on-site page)
        self._boot = boot_id()  # the pipelines' saved windows: same boot, or moved by the wall clock

    # --- building, starting, stopping ------------------------------------------------------------

    def build(self, options, location) -> SensorUnit:
        """Driver, pipeline and runner for one sensor; raises if the driver cannot be made."""
        devices = self.devices.get(options.devices) or registry.devices(options.devices)
        driver = registry.load(options.driver)(options, devices)
        pipeline = Pipeline(options, location, latest=self._latest.get, recall=self.buffer.recall,
                            remember=self.buffer.remember, boot=self._boot)
        runner = SensorRunner(driver, self.accept, self._state_changed)
        return SensorUnit(options, runner, pipeline)

    def add(self, unit: SensorUnit) -> None:
        sid = unit.options.id
        unit.runner.open_after(self._releasing.pop(sid, None))  # a changed sensor: same device, one at a time
        self._units[sid] = unit
        self.tasks.spawn(task_name(sid), unit.runner.run, label=f"sensor {sid}")

    async def remove(self, sensor_id: str, *, forget: bool = False) -> None:
        """Stop a sensor; `forget` (it is gone from the config) also drops its pipeline's saved state, which a
        changed sensor's new pipeline takes over instead."""
        await self.tasks.stop(task_name(sensor_id))
        unit = self._units.pop(sensor_id, None)
        if unit is not None:
            if forget:
                unit.pipeline.forget()
            await unit.runner.close()
            released = unit.runner.device_released()
            if released is not None:
                self._releasing[sensor_id] = released

    @staticmethod
    async def discard(unit: SensorUnit) -> None:
        """A built unit that will not run (its reload was refused): let its device thread go."""
        await unit.runner.close()

    async def stop_all(self) -> None:
        for sid in list(self._units):
            await self.remove(sid)

    def _state_changed(self, sensor: str, state: str, detail: str | None, failures: int) -> None:
        self.buffer.set_sensor_state(sensor, state, detail, failures)
        self.on_change()

    # --- readings in -----------------------------------------------------------------------------

    def accept(self, reading: Reading) -> None:
        """A driver's reading: derive, stamp, and append to the buffer."""
        try:
            self._take(reading)
        except Exception as exc:
            self._refused(reading, exc)

    def _take(self, reading: Reading) -> None:
        unit = self._units.get(reading.sensor)
        if unit is None:
            return  # from a sensor stopped by a reload while its read was under way
        reading = unit.pipeline.process(reading)
        unit.runner.interval_override = unit.pipeline.interval_override  # a river in alert is read more often
        reading.gateway = self.gateway_id
        if not self.clock_synced():
            reading.clock_synced = False  # corrected in the buffer once the clock is trusted
        self.stamp(reading)  # its id, then the buffer
        self._latest[reading.sensor] = reading  # as published: status, and the pipelines' `temperature_from`
        if reading.quality == "error":
            self._error_readings[reading.sensor] = self._error_readings.get(reading.sensor, 0) + 1
        self.readings_total += 1
        if self.on_reading is not None:
            self.on_reading(reading)

    def _refused(self, reading: Reading, exc: Exception) -> None:
        self.refused_total += 1
        why = f"reading refused by the gateway ({type(exc).__name__}: {exc})"
        log.error("sensor %s: %s; stored as an error reading", reading.sensor, why, exc_info=exc)
        observed = reading.observed_at if isinstance(reading.observed_at, (int, float)) else time.time()
        error = Reading(sensor=reading.sensor, kind=reading.kind, values={}, observed_at=observed,
                        quality="error", error=why[:500], device=reading.device)
        try:
            self._take(error)
        except Exception:
            log.exception("sensor %s: not even the error reading could be stored", reading.sensor)

    # --- what the health view reads --------------------------------------------------------------

    def facts(self) -> dict[str, dict]:
        out = {}
        for sid, u in self._units.items():
            last = self._latest.get(sid)
            out[sid] = {**u.runner.facts(), "error_readings": self._error_readings.get(sid, 0), "last_reading": last,
                        "last_reading_at": None if last is None else last.observed_at}
        return out

    def runner(self, sensor_id: str) -> SensorRunner | None:
        """A sensor's runner (diagnostics and tests)."""
        unit = self._units.get(sensor_id)
        return None if unit is None else unit.runner
