"""systemd notify protocol and watchdog (issue 5): READY after the buffer is
open, STATUS lines, WATCHDOG keep-alives while the loops make progress, and
none once the event loop is frozen."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.daemon_helpers import Daemon, base_config, wait_for, write_config
from gateway.notify import Notifier

WATCHDOG_USEC = 400_000  # keep-alives every 0.2s


class NotifySocket:
    """The socket systemd would own: collects every datagram the daemon sends."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        try:
            while True:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
        except (TimeoutError, BlockingIOError):
            pass
        return self.messages

    def count(self, field: str) -> int:
        return sum(1 for m in self.poll() if m == field)


@pytest.fixture
def daemon(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path,
        sensors=[{"id": "river-1", "driver": "sim_river", "interval": "200ms"}],
        uplinks=[{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")}]))
    d = Daemon(cfg, {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": str(WATCHDOG_USEC),
                     "GATEWAY_DEBUG_HOOKS": "1"})
    yield d, notify, tmp_path
    d.kill()
    notify.sock.close()


def test_ready_status_and_watchdog_keepalives(daemon):
    d, notify, tmp_path = daemon
    wait_for(lambda: "READY=1" in notify.poll(), what="READY=1")
    # READY comes after the buffer is open.
    assert (tmp_path / "buffer.db").exists()
    wait_for(lambda: notify.count("WATCHDOG=1") >= 5, what="five keep-alives")
    statuses = [m for m in notify.poll() if m.startswith("STATUS=")]
    assert any("1 sensors" in s and "console up" in s for s in statuses), statuses
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert "STOPPING=1" in notify.poll()


def test_frozen_event_loop_stops_the_keepalives(daemon):
    d, notify, _ = daemon
    wait_for(lambda: notify.count("WATCHDOG=1") >= 3, what="keep-alives before the freeze")
    d.signal(signal.SIGRTMIN)  # debug hook: blocks the event loop as a synchronous bug would
    wait_for(lambda: "freezing the event loop" in d.logs(), what="the freeze")
    notify.poll()  # whatever was sent before the freeze
    before = notify.count("WATCHDOG=1")
    # Ten keep-alive intervals (20 socket timeouts of 0.1s): systemd would have restarted it by now.
    counts = [notify.count("WATCHDOG=1") for _ in range(20)]
    assert counts[-1] == before
    assert d.proc.poll() is None  # alive but silent: exactly the case the watchdog is for


def test_watchdog_interval_is_half_of_watchdog_usec():
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "60000000"})
    assert n.watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert not Notifier({}).enabled
    Notifier({}).ready("no systemd: a no-op")  # must not raise


class RecordingNotifier(Notifier):
    def __init__(self):
        super().__init__({"NOTIFY_SOCKET": "/unused", "WATCHDOG_USEC": "100000"})
        self.sent: list[str] = []

    def send(self, *fields: str) -> None:
        self.sent.extend(fields)


def test_a_dead_worker_or_a_stuck_scheduler_stops_the_keepalives(tmp_path):
    import asyncio
    import time

    import yaml

    from gateway.config import parse_config
    from gateway.service import Gateway
    from tests.daemon_helpers import base_config

    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}],
                      uplinks=[{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")}])
    notifier = RecordingNotifier()

    async def until(predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def scenario():
        gw = Gateway(parse_config(yaml.safe_dump(doc)), notifier=notifier)
        task = asyncio.create_task(gw.run())
        await until(lambda: notifier.sent.count("WATCHDOG=1") >= 3)
        assert gw.health_problems() == []
        # A scheduler that stopped trying (its last attempt long ago) is not healthy …
        gw.sensors.runner("river-1").last_attempt -= 10_000
        assert gw.health_problems()[0].startswith("sensor river-1: scheduler has not tried a read for")
        gw.sensors.runner("river-1").last_attempt = time.monotonic()
        # … nor is an uplink whose worker died (until its supervisor has restarted it).
        gw.tasks.task("deliver-console").cancel()
        await until(lambda: gw.health_problems() == ["uplink console: worker stopped"])
        count = notifier.sent.count("WATCHDOG=1")
        await asyncio.sleep(0.5)  # five keep-alive intervals
        assert notifier.sent.count("WATCHDOG=1") == count
        gw.request_stop("test")
        await task

    asyncio.run(scenario())
