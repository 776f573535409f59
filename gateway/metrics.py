"""Prometheus metrics and /healthz on 127.0.0.1 (off unless
`service.metrics_port` is set).

The numbers are not instrumented into the core: a collector turns the status
snapshot into metric families at scrape time, so metrics and `gateway status`
can never disagree. The HTTP side is a few lines on the event loop (scrapes
read the buffer on the loop's own thread, no locking needed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

# Bounds of the local HTTP side: a scraper's request is a few hundred bytes.
MAX_LINE = 8192  # bytes per request or header line
MAX_HEADERS = 100
REQUEST_DEADLINE = 5.0  # s for the whole request and answer (a client dripping bytes is cut off)
MAX_CONNECTIONS = 32  # at once; more are closed at once


class GatewayCollector:
    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        s = self.snapshot()
        readings = CounterMetricFamily("gateway_readings", "readings taken, per sensor", labels=["sensor"])
        errors = CounterMetricFamily("gateway_read_errors", "failed reads and error readings, per sensor",
                                     labels=["sensor"])
        up = GaugeMetricFamily("gateway_sensor_ok", "1 while the sensor reads normally", labels=["sensor"])
        for sid, x in s["sensors"].items():
            readings.add_metric([sid], x["reads"])
            errors.add_metric([sid], x["read_errors"])
            up.add_metric([sid], 1 if x["state"] == "ok" else 0)
        yield from (readings, errors, up)
        pending = GaugeMetricFamily("gateway_uplink_pending", "readings not yet acknowledged", labels=["uplink"])
        oldest = GaugeMetricFamily("gateway_uplink_oldest_pending_age_seconds", "age of the oldest pending reading",
                                   labels=["uplink"])
        dead = GaugeMetricFamily("gateway_uplink_dead_letters", "readings the far end rejected", labels=["uplink"])
        connected = GaugeMetricFamily("gateway_uplink_connected", "1 while connected", labels=["uplink"])
        latency = GaugeMetricFamily("gateway_uplink_publish_latency_seconds",
                                    "send to acknowledgement, last batch", labels=["uplink"])
        sent = CounterMetricFamily("gateway_uplink_sent", "readings sent (including resends)", labels=["uplink"])
        failing = GaugeMetricFamily("gateway_uplink_failing", "1 while the last attempt failed (status: last_error)",
                                    labels=["uplink"])
        for name, u in s["uplinks"].items():
            pending.add_metric([name], u["pending"])
            oldest.add_metric([name], u["oldest_pending_age_s"] or 0.0)
            dead.add_metric([name], u["dead_letters"])
            connected.add_metric([name], 1 if u["connected"] else 0)
            if u["last_latency_s"] is not None:
                latency.add_metric([name], u["last_latency_s"])
            sent.add_metric([name], u["sent"])
            failing.add_metric([name], 1 if u.get("last_error") else 0)
        yield from (pending, oldest, dead, connected, latency, sent, failing)
        yield CounterMetricFamily("gateway_buffer_evictions", "readings evicted because the buffer was full",
                                  value=s["buffer"]["evictions"])
        yield GaugeMetricFamily("gateway_buffer_readings", "readings in the buffer", value=s["buffer"]["readings"])
        yield GaugeMetricFamily("gateway_clock_synced", "1 when the wall clock is trusted",
                                value=1 if s["clock"]["synced"] else 0)
        yield from self._tasks(s)

    @staticmethod
    def _tasks(s: dict):
        up = GaugeMetricFamily("gateway_task_up", "0 while a supervised task is dead, awaiting its restart",
                               labels=["task"])
        restarts = CounterMetricFamily("gateway_task_restarts", "restarts after the task died", labels=["task"])
        for name, t in s["tasks"].items():
            up.add_metric([name], 0 if t["state"] == "restarting" else 1)
            restarts.add_metric([name], t["restarts"])
        yield from (up, restarts)
        refused = bool(s["reload"]) and s["reload"]["result"] == "refused"
        yield GaugeMetricFamily("gateway_reload_refused", "1 when the last config reload was refused",
                                value=1 if refused else 0)


def failing_sensors(snap: dict, limit: float) -> list[str]:
    """Sensors not reading for longer than `limit` seconds, as /healthz problems."""
    return [f"sensor {sid}: {s['state']} for {s['state_for_s']:.0f}s ({s['detail'] or 'no detail'})"
            for sid, s in snap["sensors"].items()
            if s["state"] not in ("ok", "starting") and s.get("state_for_s", 0) > limit]


class MetricsServer:
    """`snapshot` and `problems` come from the health view (gateway/health.py)."""

    def __init__(self, snapshot: Callable[[], dict], problems: Callable[[], list[str]], port: int,
                 host: str = "127.0.0.1", unhealthy_after: float = 900.0):
        self.snapshot, self.problems = snapshot, problems
        self.unhealthy_after = unhealthy_after  # a sensor failing longer makes /healthz unhealthy
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(snapshot))
        self.server: asyncio.AbstractServer | None = None
        self.open_connections = 0

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._answer, self.host, self.port, limit=MAX_LINE)
        except OSError as exc:
            log.error("metrics on %s:%d cannot start (%s); continuing without metrics", self.host, self.port, exc)
            return
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= MAX_CONNECTIONS:  # held connections must not use up the daemon's descriptors
            writer.close()
            return
        self.open_connections += 1
        try:
            await asyncio.wait_for(self._respond(reader, writer), REQUEST_DEADLINE)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("metrics request dropped: %s", exc)
        finally:
            self.open_connections -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> str | None:
        """The request line, the headers skipped; None when a line or the headers are too long."""
        try:
            request = await reader.readline()
            for _ in range(MAX_HEADERS):
                if await reader.readline() in (b"\r\n", b"\n", b""):
                    return request.decode("latin-1")
        except ValueError:  # asyncio's LimitOverrunError (a line longer than MAX_LINE), as readline raises it
            pass
        return None

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await self._request(reader)
        if request is None:
            await self._reply(writer, "431 Request Header Fields Too Large", "text/plain",
                              f"request line or headers longer than {MAX_LINE} bytes\n".encode())
            # Read what is left (bounded) before closing: unread input would turn the close
            # into a reset, and the client would not see the answer.
            writer.write_eof()
            await asyncio.wait_for(reader.read(1 << 20), 1.0)
            return
        parts = request.split()
        path = parts[1].split("?")[0] if len(parts) >= 2 else ""
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/metrics":
            code, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        elif path == "/healthz":
            problems = self.problems() + failing_sensors(self.snapshot(), self.unhealthy_after)
            code = "503 Service Unavailable" if problems else "200 OK"
            ctype, body = "text/plain", ("\n".join(problems) if problems else "ok").encode() + b"\n"
        else:
            code, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
        await self._reply(writer, code, ctype, b"" if parts[:1] == ["HEAD"] else body, len(body))

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: str, ctype: str, body: bytes, length: int | None = None) -> None:
        head = (f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body) if length is None else length}"
                "\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
