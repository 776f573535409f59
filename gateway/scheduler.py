"""Runs each sensor on its own schedule, isolated from the others.

- The n-th read of a polled sensor is due at start + n·interval (no drift);
  slots missed while a read was slow are skipped, not burst.
- Each read has a timeout and runs in the sensor's own thread, so a hung
  device never stalls the event loop or another sensor. While a hung read has
  not returned, no new read is started for that sensor.
- A failing sensor is closed, backed off exponentially and reopened; its state
  is logged on every change and recorded for `gateway buffer stats`.
- The device has one thread: a close after a hung read queues behind it, so the
  device is never reopened before the stuck call returned and the close ran.
- A reading the sink cannot take (pipeline or buffer) is logged and counted by
  the sink; the sensor reads on whatever the sink raises.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from gateway.sdk.driver import Driver
from gateway.backoff import Backoff
from gateway.sdk.reading import Reading

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str, str | None, int], None]


class SensorRunner:
    def __init__(self, driver: Driver, sink: Callable[[Reading], None], on_state: StateCallback):
        self.driver = driver
        self.options = driver.options
        self.id = driver.options.id
        self.sink = sink
        self.on_state = on_state
        self.state = "starting"
        self.state_since = time.monotonic()  # how long a failing sensor has failed (/healthz)
        self.detail: str | None = None
        self.failures = 0
        self.read_errors = 0  # failed reads in all (status, metrics)
        self.reads = 0
        self.last_attempt = time.monotonic()  # the watchdog's sign that this scheduler still tries
        self.last_reading: Reading | None = None
        self.interval_override: float | None = None  # e.g. a river's fast interval while in alert
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sensor-{self.id}")
        self._busy: asyncio.Future | None = None
        self._closing: asyncio.Future | None = None
        self._opened = False
        self._backoff = Backoff(max(self.options.interval, 1.0), max(self.options.interval, 300.0))

    @property
    def interval(self) -> float:
        return self.interval_override or self.options.interval

    @property
    def stall_limit(self) -> float:
        """Longest quiet time that is still normal: an interval, a timed-out
        open and read, and the longest failure backoff, with a margin."""
        return self.interval + 2 * self.options.read_timeout + self._backoff.cap + 30.0

    def _set_state(self, state: str, detail: str | None = None) -> None:
        if (state, detail) == (self.state, self.detail):
            return
        if state == "ok":
            log.info("sensor %s (%s): reading", self.id, self.driver.name)
        else:
            log.warning("sensor %s (%s): %s%s", self.id, self.driver.name, state, f": {detail}" if detail else "")
        if state != self.state:
            self.state_since = time.monotonic()
        self.state, self.detail = state, detail
        self.on_state(self.id, state, detail, self.failures)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start, interval, n = loop.time(), self.interval, 0
        try:
            while True:
                if not self.driver.event_driven:
                    if self.interval != interval:  # re-anchor the grid on an interval change
                        start, interval, n = loop.time(), self.interval, 0
                    await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
                delay = await self.read_once()
                if delay:
                    await asyncio.sleep(delay)
                if not self.driver.event_driven:
                    n = max(n + 1, math.ceil((loop.time() - start) / interval))
        finally:  # the device thread stays: a restarted run() uses it again, after this close
            if self._opened or self._stuck:
                await asyncio.shield(self._close_driver())

    async def read_once(self) -> float:
        """One read; returns a backoff delay after a failure, else 0."""
        self.last_attempt = time.monotonic()
        loop = asyncio.get_running_loop()
        if self._stuck:
            self._set_state("hung", f"a read has not returned for more than {self.options.read_timeout:g}s")
            return 0.0
        timeout = self.options.read_timeout
        try:
            if not self._opened:
                self._busy = loop.run_in_executor(self._executor, self.driver.open)
                async with asyncio.timeout(timeout):  # not wait_for: see gateway/delivery.py _sleep
                    await asyncio.shield(self._busy)
                self._opened = True
            wait = self.interval if self.driver.event_driven else timeout
            self._busy = loop.run_in_executor(self._executor, self.driver.read, wait)
            async with asyncio.timeout(wait + timeout):
                readings = await asyncio.shield(self._busy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any device failure: isolate, back off, reopen
            self.failures += 1
            self.read_errors += 1
            detail = "read timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            delay = self._backoff.next()
            self._set_state("failing", f"{detail} (retry in {delay:.0f}s)")
            await self._close_driver()
            return delay
        self.failures = 0
        self._backoff.reset()
        for reading in readings:
            self.reads += 1
            self.last_reading = reading
            try:
                self.sink(reading)
            except Exception:  # the sink logs and counts what it refuses; this sensor reads on
                log.exception("sensor %s: a reading was lost in the sink", self.id)
        self._set_state("ok")
        return 0.0

    async def _close_driver(self) -> None:
        """Close the device. One device thread: behind a hung call the close waits
        its turn, and the next open waits for the close (see `read_once`'s busy check)."""
        self._opened = False
        if self._closing is not None and not self._closing.done():
            return  # a close is already queued behind the stuck call
        stuck = self._stuck
        self._busy = self._closing = asyncio.get_running_loop().run_in_executor(self._executor, self._close_quietly)
        if not stuck:
            await asyncio.shield(self._busy)

    def _close_quietly(self) -> None:
        try:
            self.driver.close()
        except Exception as exc:
            log.debug("sensor %s: close failed: %s", self.id, exc)

    def facts(self) -> dict:
        """What the health view shows of this sensor."""
        return {"driver": self.driver.name, "state": self.state, "detail": self.detail, "failures": self.failures,
                "reads": self.reads, "read_errors": self.read_errors, "quiet_s": time.monotonic() - self.last_attempt,
                "state_for_s": time.monotonic() - self.state_since,
                "stall_limit": self.stall_limit}

    async def close(self) -> None:
        """At the end of the runner's life: close the device, then let its thread go
        (a close queued behind a hung read still runs when the read returns)."""
        if self._opened or self._stuck:
            await asyncio.shield(self._close_driver())
        self._executor.shutdown(wait=False)

    @property
    def _stuck(self) -> bool:
        return self._busy is not None and not self._busy.done()

    def device_released(self) -> asyncio.Future | None:
        """After close(): the pending close behind a stuck call, or None if the device is free."""
        return self._busy if self._stuck else None

    def open_after(self, released: asyncio.Future | None) -> None:
        """A successor on the same device (a reload) opens it only once `released`
        is done: until then it reports "hung", like a stuck call of its own."""
        if released is not None and not released.done():
            self._busy = released
