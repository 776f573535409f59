"""The delivery worker (SPEC §5) on a real buffer file, with a transport that
records what it is given: alerts before the backlog, per-sensor order in
batches, transient failures retried without loss, rejections as dead letters."""

import asyncio
import json
import time

import pytest

from gateway.buffer import Buffer
from gateway.delivery import Delivery
from gateway.sdk.reading import Reading, Value
from gateway.uplinks.base import TransientError, Transport


class Recorder(Transport):
    def __init__(self, batch=1, window=1, fail_sends=(), reject=()):
        self.name, self.batch, self.window = "u", batch, window
        self.sent: list[list[str]] = []  # ids per send, in order
        self.fail_sends, self.reject = set(fail_sends), set(reject)

    def group_key(self, row):
        return row.sensor

    def send(self, rows):
        fut = asyncio.get_running_loop().create_future()
        n = len(self.sent)
        self.sent.append([json.loads(r.body)["id"] for r in rows])
        if n in self.fail_sends:
            fut.set_exception(TransientError("HTTP 503", retry_after=0.01))
        else:
            fut.set_result([f"HTTP 400: bad {json.loads(r.body)['id']}" if json.loads(r.body)["id"] in self.reject
                            else None for r in rows])
        return fut


def reading(sensor: str, i: int, alert: bool = False) -> Reading:
    return Reading(sensor=sensor, kind="river_level", values={"water_level": Value(i / 100, "m")},
                   observed_at=1_763_780_000 + i, id=f"gw.{sensor}.{1_763_780_000_000 + i}.000000", gateway="gw",
                   alert=alert)


def deliver(buf: Buffer, transport: Recorder) -> None:
    async def main():
        d = Delivery(buf, transport, backoff_cap=0.05)
        task = asyncio.create_task(d.run())
        while buf.acked["u"] < buf.last_seq:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_alert_level_change_goes_before_the_backlog(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(200):
        buf.append(reading("river-1", i))
    buf.append(reading("river-1", 200, alert=True))
    buf.commit()
    t = Recorder()
    deliver(buf, t)
    assert t.sent[0] == ["gw.river-1.1763780000200.000000"], "the stage change first"
    assert [ids[0] for ids in t.sent[1:]] == [f"gw.river-1.{1_763_780_000_000 + i}.000000" for i in range(200)], \
        "then the backlog in order, the alert not sent twice"


def test_batches_keep_per_sensor_order_and_one_sensor_per_batch(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(90):
        buf.append(reading(f"s-{i % 3}", i))
    buf.commit()
    t = Recorder(batch=10, window=4)
    deliver(buf, t)
    assert all(len(ids) <= 10 and len({i.split(".")[1] for i in ids}) == 1 for ids in t.sent)
    for s in ("s-0", "s-1", "s-2"):
        mine = [i for ids in t.sent for i in ids if f".{s}." in i]
        assert mine == sorted(mine) and len(mine) == 30


def test_a_transient_failure_is_retried_and_nothing_is_lost(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(50):
        buf.append(reading("river-1", i))
    buf.commit()
    t = Recorder(batch=5, window=2, fail_sends={3})
    deliver(buf, t)
    delivered = {i for n, ids in enumerate(t.sent) if n != 3 for i in ids}
    assert len(delivered) == 50, "every reading accepted once the far end recovers"
    assert buf.acked["u"] == buf.last_seq


def test_a_rejected_reading_becomes_a_dead_letter_and_the_others_go_on(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(10):
        buf.append(reading("river-1", i))
    buf.commit()
    bad = "gw.river-1.1763780000004.000000"
    deliver(buf, Recorder(batch=3, reject={bad}))
    buf.commit()
    dead = buf.conn.execute("SELECT body, reason FROM dead").fetchall()
    assert [(json.loads(b)["id"], r) for b, r in dead] == [(bad, f"HTTP 400: bad {bad}")]
    assert buf.acked["u"] == buf.last_seq


class PerDeviceTopics(Recorder):
    """Like MQTT: one topic per sensor and device, order kept per sensor."""

    def group_key(self, row):
        return (row.sensor, row.device)

    def stream_key(self, row):
        return row.sensor


@pytest.mark.parametrize("batch", [1, 2, 10, 100])
def test_per_sensor_order_across_its_devices_for_every_batch_size(tmp_path, batch):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(300):  # a beacon sensor: three devices in turn, now and then two in a row
        device = f"d{(i // 2) % 3}" if i % 7 else f"d{i % 3}"
        buf.append(Reading(sensor="beacons-1", kind="beacon", values={"rssi": Value(-60, "dBm")},
                           observed_at=1_763_780_000 + i, id=f"gw.beacons-1.{1_763_780_000_000 + i}.000000",
                           gateway="gw", device=device))
        buf.append(reading("river-1", i))
    buf.commit()
    t = PerDeviceTopics(batch=batch, window=8)
    deliver(buf, t)
    for sensor in ("beacons-1", "river-1"):
        mine = [i for ids in t.sent for i in ids if f".{sensor}." in i]
        assert mine == sorted(mine) and len(mine) == 300, f"{sensor}: in order across its devices"
    assert max(len(ids) for ids in t.sent) == batch, "batches still fill where a thing's readings run"


def test_drain_rate_paces_the_backlog_and_alerts_go_first_unpaced(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(600):
        buf.append(reading("river-1", i))
    buf.append(reading("river-1", 600, alert=True))
    buf.commit()
    t = Recorder(batch=10, window=4)
    t.drain_rate = 400.0
    stamps: list[tuple[float, int]] = []
    send = t.send
    t.send = lambda rows: (stamps.append((time.monotonic(), len(rows))), send(rows))[1]
    deliver(buf, t)
    assert t.sent[0] == ["gw.river-1.1763780000600.000000"], "the alert first"
    elapsed = stamps[-1][0] - stamps[1][0]
    assert elapsed >= (600 - 400) / 400 * 0.9, f"600 readings at 400/s after a one-second burst took {elapsed:.2f}s"
    start, sent = stamps[1][0], 0
    for at, n in stamps[1:]:
        sent += n
        assert sent <= 400 + 400 * (at - start) + 10, "a one-second burst, then never faster than the rate"


class Flaky(Recorder):
    """A transport whose connection comes and goes (like MQTT's)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.up = asyncio.Event()

    @property
    def connected(self):
        return self.up.is_set()

    @property
    def can_send(self):  # like MQTT: a connection that ready() waits for
        return self.connected

    async def ready(self):
        await self.up.wait()


def test_nothing_new_is_handed_to_a_transport_that_is_down(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    for i in range(50):
        buf.append(reading("river-1", i))
    buf.commit()

    async def main():
        t = Flaky(batch=5, window=4)
        t.drain_rate = 1000.0
        d = Delivery(buf, t, backoff_cap=0.05)
        task = asyncio.create_task(d.run())
        await asyncio.sleep(0.3)
        assert t.sent == [], "no send while the transport is down"
        t.up.set()
        while buf.acked["u"] < buf.last_seq:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return t

    t = asyncio.run(asyncio.wait_for(main(), 30))
    assert [i for ids in t.sent for i in ids] == [f"gw.river-1.{1_763_780_000_000 + i}.000000" for i in range(50)]
