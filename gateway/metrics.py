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


class MetricsServer:
    """`snapshot` and `problems` come from the health view (gateway/health.py)."""

    def __init__(self, snapshot: Callable[[], dict], problems: Callable[[], list[str]], port: int,
                 host: str = "127.0.0.1"):
        self.problems = problems
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(snapshot))
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._answer, self.host, self.port)
        except OSError as exc:
            log.error("metrics on %s:%d cannot start (%s); continuing without metrics", self.host, self.port, exc)
            return
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing we need
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                code, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path == "/healthz":
                problems = self.problems()
                code = "503 Service Unavailable" if problems else "200 OK"
                ctype, body = "text/plain", ("\n".join(problems) if problems else "ok").encode() + b"\n"
            else:
                code, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
            head = f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + (b"" if parts and parts[0] == "HEAD" else body))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("metrics request dropped: %s", exc)
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
