"""The scheduler (issue 2 item 4): no drift, a hung or failing sensor isolated
from the others and backed off, its state reported."""

import asyncio
import threading
import time

from gateway.sdk.driver import DeviceError, Driver, SensorOptions
from gateway.sdk.reading import Value
from gateway.scheduler import SensorRunner


class Recorder(Driver):
    def __init__(self, options, read_takes: float = 0.0):
        super().__init__(options)
        self.read_takes = read_takes
        self.times: list[float] = []

    def read(self, timeout):
        self.times.append(time.monotonic())
        time.sleep(self.read_takes)  # a slow device: must not push later reads back
        return [self.reading({"distance": Value(1.0, "m")}, kind="river_level")]


class Hung(Driver):
    def __init__(self, options):
        super().__init__(options)
        self.release = threading.Event()

    def read(self, timeout):
        self.release.wait(30)
        return []


class Flaky(Driver):
    def __init__(self, options, failures: int):
        super().__init__(options)
        self.failures, self.opens, self.attempts = failures, 0, []

    def open(self):
        self.opens += 1

    def read(self, timeout):
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise DeviceError("no answer on /dev/ttyUSB0")
        return [self.reading({"distance": Value(1.0, "m")}, kind="river_level")]


def opts(sensor_id: str, interval: float, timeout: float | None = None) -> SensorOptions:
    return SensorOptions(id=sensor_id, driver="test", interval=f"{int(interval * 1000)}ms",
                         **({"timeout": f"{int(timeout * 1000)}ms"} if timeout else {}))


async def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_reads_are_due_at_start_plus_n_intervals_without_drift():
    driver = Recorder(opts("steady", 0.2), read_takes=0.1)
    runner = SensorRunner(driver, lambda r: None, lambda *a: None)

    async def main():
        task = asyncio.create_task(runner.run())
        await until(lambda: len(driver.times) >= 11)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    # On the grid, 10 intervals take 2.0 s; sleeping a whole interval after each 100 ms read would take 3.0 s.
    # The margin between the two (0.5 s either way) is what a loaded machine may add to a read's start.
    elapsed = driver.times[10] - driver.times[0]
    assert 1.5 < elapsed < 2.5, f"10 intervals took {elapsed:.3f}s"


def test_a_hung_sensor_does_not_stall_the_others_and_is_reported():
    states = []
    good = Recorder(opts("good", 0.02))
    hung = Hung(opts("hung", 0.02, timeout=0.1))
    readings = []
    runners = [SensorRunner(good, readings.append, lambda *a: states.append(a)),
               SensorRunner(hung, readings.append, lambda *a: states.append(a))]

    async def main():
        tasks = [asyncio.create_task(r.run()) for r in runners]
        await until(lambda: any(s[0] == "hung" and s[1] == "hung" for s in states))
        count = len(good.times)
        await until(lambda: len(good.times) >= count + 20)  # still reading while the other hangs
        hung.release.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert runners[0].state == "ok"
    assert any(s[0] == "hung" and s[1] == "failing" and "timed out" in s[2] for s in states)


def test_a_failing_sensor_backs_off_exponentially_reopens_and_recovers():
    states = []
    flaky = Flaky(opts("flaky", 0.01), failures=4)
    runner = SensorRunner(flaky, lambda r: None, lambda *a: states.append(a))
    runner._backoff.first, runner._backoff.cap = 0.02, 1.0  # keep the test short; the shape is what counts

    async def main():
        task = asyncio.create_task(runner.run())
        await until(lambda: runner.reads >= 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    gaps = [b - a for a, b in zip(flaky.attempts, flaky.attempts[1:5])]
    assert gaps[3] > gaps[0] * 2, f"delays grow: {gaps}"
    assert flaky.opens == 5, "the device is closed and reopened after each failure"
    failing = [s for s in states if s[1] == "failing"]
    assert failing and "no answer on /dev/ttyUSB0" in failing[0][2]
    assert states[-1][1] == "ok" and runner.failures == 0


class HungOnce(Driver):
    """The first read hangs past its timeout; opens, closes and the hung read's return are recorded in order."""

    def __init__(self, options):
        super().__init__(options)
        self.events: list[str] = []
        self.release = threading.Event()
        self.calls = 0

    def open(self):
        self.events.append("open")

    def close(self):
        self.events.append("close")

    def read(self, timeout):
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)
            self.events.append("returned")
            return []
        return [self.reading({"distance": Value(1.0, "m")}, kind="river_level")]


def test_a_hung_read_is_followed_by_close_before_the_device_is_opened_again():
    """Issue 9, defect 5: no leaked serial descriptor, no "pin in use"."""
    driver = HungOnce(opts("stuck", 0.02, timeout=0.1))
    runner = SensorRunner(driver, lambda r: None, lambda *a: None)

    async def main():
        task = asyncio.create_task(runner.run())
        await until(lambda: runner.state == "hung")
        hung_events = list(driver.events)
        driver.release.set()
        await until(lambda: runner.reads >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.close()
        return hung_events

    hung_events = asyncio.run(main())
    assert hung_events == ["open"], "nothing is opened or closed while the read is stuck"
    assert driver.events[:4] == ["open", "returned", "close", "open"]
    opened = 0
    for event in driver.events:
        opened += {"open": 1, "close": -1}.get(event, 0)
        assert opened in (0, 1), f"opened twice without a close: {driver.events}"


def test_a_reading_the_sink_cannot_take_does_not_stop_the_sensor():
    """Issue 9, defect 7 (the daemon's side: tests/test_plugins.py)."""
    driver = Recorder(opts("odd", 0.01))
    taken = []

    def sink(reading):
        if len(taken) % 2 == 0:
            taken.append(None)
            raise TypeError("Object of type bytes is not JSON serializable")
        taken.append(reading)

    runner = SensorRunner(driver, sink, lambda *a: None)

    async def main():
        task = asyncio.create_task(runner.run())
        await until(lambda: len(taken) >= 10)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert runner.state == "ok" and runner.reads >= 10


def test_a_sensor_changed_by_a_reload_opens_its_device_only_after_the_stuck_predecessor_closed(tmp_path):
    """Issue 9, defects 4 and 5 together: the successor of a runner stuck in a read waits for its close."""
    from gateway.buffer import Buffer
    from gateway.ids import IdGenerator, IdStamper
    from gateway.pipeline import Pipeline
    from gateway.sensor_supervisor import SensorSupervisor, SensorUnit
    from gateway.supervisor import TaskSupervisor

    events: list[str] = []

    class Shared(HungOnce):  # both runners' drivers stand for the same serial port
        def __init__(self, options, tag):
            super().__init__(options)
            self.events, self.tag = events, tag

        def open(self):
            events.append(f"open {self.tag}")

        def close(self):
            events.append(f"close {self.tag}")

    buffer = Buffer(tmp_path / "buffer.db", [], gateway="gw")

    def unit(driver, sup):
        return SensorUnit(driver.options, SensorRunner(driver, sup.accept, lambda *a: None),
                          Pipeline(driver.options, None))

    async def main():
        tasks = TaskSupervisor()
        sup = SensorSupervisor("gw", buffer, IdStamper(IdGenerator("gw", tmp_path / "ids"), buffer.append), tasks,
                               devices={}, clock_synced=lambda: True, on_change=lambda: None)
        old = Shared(opts("river-1", 0.02, timeout=0.1), "old")
        sup.add(unit(old, sup))
        await until(lambda: sup.facts()["river-1"]["state"] == "hung")
        await sup.remove("river-1")  # the reload's swap: the old read is still stuck
        new = Shared(opts("river-1", 0.02, timeout=0.1), "new")
        new.calls = 1  # its reads answer
        sup.add(unit(new, sup))
        await until(lambda: sup.facts()["river-1"]["state"] == "hung")
        assert events == ["open old"], "the successor waits while the device is still held"
        old.release.set()
        await until(lambda: sup.facts()["river-1"]["reads"] >= 2)
        await sup.stop_all()

    asyncio.run(main())
    assert events[:4] == ["open old", "returned", "close old", "open new"], events
    buffer.close()
