"""One delivery worker per uplink: reads committed rows from the buffer after
the uplink's cursor, sends them through its transport, and moves the cursor
only over rows the far end acknowledged (or rejected into the dead letters).

- Up to `window` sends await an answer at once; everything else stays in SQLite.
- Rows queue per stream (the transport's `stream_key`; MQTT: the sensor), each
  stream in seq order; a send takes the stream's leading rows that share one
  `group_key` (MQTT: one topic), up to `batch`. So per-sensor order holds for
  every batch size, also for a sensor whose devices publish on topics of their
  own (its batches are then only as long as one device's run of readings).
- `drain_rate` (readings/s) paces the sends: a unit back from a long outage does
  not flatten the city's broker. Alerts go ahead of the backlog, unpaced; live
  readings keep their place behind their own sensor's backlog (SPEC §5 order).
- Alerts (alert-level changes) committed after the rows fetched so far are sent
  ahead of the backlog.
- On a lost connection or a transient failure the worker rewinds to the cursor
  and sends everything unacknowledged again (at least once: duplicates carry the
  same id, so the far end can drop them).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from gateway.backoff import Backoff
from gateway.buffer import Buffer, DeadRow, Row
from gateway.uplinks.base import TransientError, Transport, TransportLost

log = logging.getLogger(__name__)

RETRY_POLL = 5.0  # how often to look for dead letters moved back by `gateway buffer dead --retry`


class Pace:
    """A token bucket: at most `rate` readings a second, in bursts of up to one
    second's worth (at least one batch)."""

    def __init__(self, rate: float, batch: int):
        self.rate, self.burst = rate, max(rate, float(batch))
        self.tokens, self.at = self.burst, time.monotonic()

    def wait(self) -> float:
        """0 when a send may start now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate + 1e-3

    def take(self, n: int) -> None:
        self.tokens -= n


@dataclass(order=True)
class _Send:
    first_seq: int
    order: int
    rows: list = field(compare=False)
    done: bool = field(default=False, compare=False)
    started: float = field(default_factory=time.monotonic, compare=False)


class Delivery:
    def __init__(self, buffer: Buffer, transport: Transport, backoff_cap: float = 30.0):
        self.buffer = buffer
        self.t = transport
        self.name = transport.name
        self.wake = asyncio.Event()
        self.backoff = Backoff(1.0, backoff_cap)
        self.last_latency: float | None = None
        self.sent_total = 0
        self._order = itertools.count()
        self._gen = 0
        self._retrying = False  # dead letters moved back by `gateway buffer dead --retry` are being sent
        self.pace = Pace(transport.drain_rate, transport.batch) if transport.drain_rate else None
        buffer.on_commit(self._new_data)

    # --- state the service and status read -----------------------------------------------------

    @property
    def caught_up(self) -> bool:
        return self.buffer.acked[self.name] >= self.buffer.last_seq and not self._retrying

    def detach(self) -> None:
        """The uplink is gone (config reload): answers still in flight must not
        move its cursor, and new commits no longer wake this worker."""
        self._gen += 1
        self.buffer.off_commit(self._new_data)

    def _new_data(self) -> None:
        self._fresh = True
        self.wake.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.t.ready()
            try:
                await self._pump()
            except (TransportLost, TransientError) as exc:
                retry_after = getattr(exc, "retry_after", None)
                delay = retry_after if retry_after is not None else self.backoff.next()
                if isinstance(exc, TransientError):
                    log.warning("uplink %s: %s; retrying unacknowledged readings in %.1fs", self.name, exc, delay)
                    await asyncio.sleep(delay)
                else:
                    log.info("uplink %s: connection lost; unacknowledged readings will be sent again", self.name)

    def _reset(self) -> None:
        self._gen += 1
        self._fetched = self.buffer.acked[self.name]  # every seq up to here is queued or handled
        self._streams: dict[Hashable, deque[tuple[Hashable, Row]]] = {}  # stream -> (group key, row), in order
        self._heads: list[tuple[int, Hashable]] = []  # (seq of a stream's first row, stream key)
        self._unfinished: list[_Send] = []  # heap by first seq
        self._ahead: set[int] = set()  # alert seqs sent before the backlog reached them
        self._inflight = 0
        self._failure: BaseException | None = None
        self._fresh = True
        self._next_retry_poll = 0.0

    async def _pump(self) -> None:
        self._reset()
        batch, window = self.t.batch, self.t.window
        while True:
            self.wake.clear()
            if self._failure is not None:
                raise self._failure
            if not self.t.can_send:  # nothing new is handed to a transport that is down: the pace holds after it
                await self.t.ready()
                continue
            if self._inflight >= window:
                await self._sleep(1.0)
                continue
            if time.monotonic() >= self._next_retry_poll:
                self._next_retry_poll = time.monotonic() + RETRY_POLL
                self._send_retries()
            if self._fresh:
                self._fresh = False
                self._send_alerts_ahead()
            if not self._heads:
                self._fill(max(batch * window, 500))
            if not self._heads:
                await self._sleep(RETRY_POLL)
                continue
            paced = self.pace.wait() if self.pace else 0.0
            if paced:
                await self._sleep(paced)
                continue
            self._refill()

    async def _sleep(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        # that lands as the event fires, and the worker would never stop.
        try:
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        except TimeoutError:
            pass

    def _fill(self, limit: int) -> None:
        rows = self.buffer.fetch(self._fetched, limit)
        if not rows:
            return
        self._fetched = rows[-1].seq
        group_of, stream_of = self.t.group_key, self.t.stream_key
        for row in rows:
            if row.seq in self._ahead:
                self._ahead.discard(row.seq)
                continue
            key = stream_of(row)
            stream = self._streams.get(key)
            if stream is None:
                self._streams[key] = stream = deque()
                heapq.heappush(self._heads, (row.seq, key))
            stream.append((group_of(row), row))

    def _refill(self) -> None:
        """Start sends while the window has room. Also called from each
        acknowledgement, so a steady stream needs no wake-up of the pump task."""
        while self._heads and self._inflight < self.t.window and self._failure is None and self.t.can_send:
            if self.pace is not None and self.pace.wait():
                self.wake.set()  # the pump sleeps until the pace allows the next send
                return
            self._dispatch_one(self.t.batch)

    def _dispatch_one(self, batch: int) -> None:
        seq, key = heapq.heappop(self._heads)
        stream = self._streams[key]
        group = stream[0][0]
        rows = []
        while stream and len(rows) < batch and stream[0][0] == group:
            rows.append(stream.popleft()[1])
        if stream:
            heapq.heappush(self._heads, (stream[0][1].seq, key))
        else:
            del self._streams[key]
        if self.pace is not None:
            self.pace.take(len(rows))
        self._start(rows)

    def _start(self, rows: list[Row], dead: DeadRow | None = None) -> None:
        send = _Send(rows[0].seq, next(self._order), rows)
        gen = self._gen
        if dead is None:
            heapq.heappush(self._unfinished, send)
        self._inflight += 1
        try:
            fut = self.t.send(rows)
        except Exception as exc:  # a transport bug or refusal must not kill the worker
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc if isinstance(exc, (TransportLost, TransientError)) else TransientError(repr(exc)))
        fut.add_done_callback(lambda f: self._finished(gen, send, f, dead))

    def _finished(self, gen: int, send: _Send, fut: asyncio.Future, dead: DeadRow | None) -> None:
        if gen != self._gen:
            return  # from before a rewind: those rows are being sent again anyway
        self._inflight -= 1
        if fut.cancelled():
            self._failure = TransportLost("send cancelled")
            self.wake.set()
            return
        exc = fut.exception()
        if exc is not None:
            self._failure = exc if isinstance(exc, (TransportLost, TransientError)) else TransientError(repr(exc))
            self.wake.set()
            return
        self.backoff.reset()
        self.last_latency = time.monotonic() - send.started
        outcomes = fut.result()
        self.sent_total += len(send.rows)
        if dead is not None:
            if outcomes[0] is None:
                self.buffer.dead_retry_done(dead.id)
            else:
                self.buffer.dead_retry_rejected(dead.id, outcomes[0])
            self.wake.set()
            return
        for row, reason in zip(send.rows, outcomes):
            if reason is not None:
                self.buffer.dead_letter(self.name, row.seq, row.body, reason)
        send.done = True
        self._advance_cursor()
        self._refill()
        if not self._heads:
            self.wake.set()  # the queue ran dry: the pump fetches more

    def _advance_cursor(self) -> None:
        while self._unfinished and self._unfinished[0].done:
            heapq.heappop(self._unfinished)
        floor = self._fetched
        if self._unfinished:
            floor = min(floor, self._unfinished[0].first_seq - 1)
        if self._heads:
            floor = min(floor, self._heads[0][0] - 1)
        self.buffer.ack(self.name, floor)

    def _send_alerts_ahead(self) -> None:
        for row in self.buffer.fetch_alerts(self._fetched, 100):
            if row.seq not in self._ahead:
                self._ahead.add(row.seq)
                self._start([row])

    def _send_retries(self) -> None:
        rows = self.buffer.fetch_retries(self.name)
        self._retrying = bool(rows)
        for dead in rows:
            doc = json.loads(dead.body)
            row = Row(dead.seq, doc["sensor"], doc["kind"], doc.get("device"), dead.body, False)
            self._start([row], dead)
