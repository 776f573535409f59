"""The on-site page (`service.web`, off unless configured): a technician's
phone on the Pi's network sees each sensor's last readings and 24 h plot,
sensor and uplink states with reasons, buffer, clock, recent log lines, and
can paste a config to have it checked.

A few lines of HTTP/1.1 on the event loop (the standard library's asyncio),
one request per connection, bounded in size and time: enough for one
technician, nothing to build or download. What it shows comes from injected
callables (the health snapshot, the log ring, the sensors' options), never
from the daemon's objects.

Access: on 127.0.0.1 or ::1 without a token_file, anyone on the Pi itself
(ssh -L from a laptop) and nobody else; the Host header must then name the
loopback too, so a web site cannot reach the page through DNS rebinding. Any
other listen address, 127.0.0.2 included, needs token_file (`check` says so):
every request carries the token as `Authorization: Bearer`, or opens
`/?token=...` once and keeps it in a same-site cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from gateway import webpage
from gateway.sdk.fields import read_secret
from gateway.history import RecentHistory

log = logging.getLogger(__name__)

MAX_HEAD = 16_384      # request line and headers, bytes
MAX_BODY = 262_144     # a pasted config, bytes
REQUEST_TIMEOUT = 10.0
MAX_CONCURRENT = 8     # requests at once: one technician, a few tabs
COOKIE = "gateway_token"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


class BadRequest(Exception):
    pass


def reference_lines(options) -> list[tuple[str, float]]:
    """The horizontal lines of a sensor's plot: a river's stages, the snow-removal amount."""
    levels = getattr(options, "alert_levels", None)
    if levels is not None:
        return [(name, getattr(levels, name)) for name in ("standby", "caution", "evacuation", "danger")]
    removal = getattr(options, "removal_threshold", None)
    return [("removal", removal)] if removal is not None else []


def check_text(text: str) -> tuple[list[str], list[str]]:
    """`gateway check` on pasted text: (problems, warnings), each as `config:LINE: key.path: message`."""
    from gateway.config import ConfigError, parse_config
    try:
        config = parse_config(text, "config")
    except ConfigError as exc:
        return [str(p) for p in exc.problems], []
    return [], config.warnings


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise BadRequest("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("not an HTTP/1.x request line")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest("malformed header")
            headers[name.strip().lower()] = value.strip()
    target = urlsplit(parts[1])
    body = b""
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        body = await reader.readexactly(length)
    return Request(parts[0], target.path, parse_qs(target.query), headers, body)


class WebServer:
    def __init__(self, listen: str, token: str | None, *, snapshot: Callable[[], dict],
                 history: RecentHistory | None = None, log_lines: Callable[[], list[dict]] = list,
                 sensor_options: Callable[[str], object | None] = lambda sid: None,
                 check: Callable[[str], tuple[list[str], list[str]]] = check_text, flush_every: float = 60.0):
        self.host, self.port = split_listen(listen)
        self.token = token
        self.snapshot, self.history, self.log_lines = snapshot, history, log_lines
        self.sensor_options, self.check = sensor_options, check
        self.flush_every = flush_every
        self.server: asyncio.AbstractServer | None = None
        self._flusher: asyncio.Task | None = None
        self._busy = 0  # requests being answered: a flood of connections is turned away, not queued

    @classmethod
    def from_settings(cls, settings, **sources) -> "WebServer":
        token = read_secret(settings.token_file) if settings.token_file is not None else None
        return cls(settings.listen, token, **sources)

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._answer, self.host, self.port, limit=MAX_HEAD)
        except OSError as exc:  # no page is no reason to stop reading sensors
            log.error("on-site page on %s:%d cannot start (%s); continuing without it", self.host, self.port, exc)
            return
        if self.history is not None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="web-history")
        log.info("on-site page on http://%s:%d/%s", self.host if ":" not in self.host else f"[{self.host}]",
                 self.port, " (token required)" if self.token else "")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.history is not None:
            self.history.close()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                self.history.flush()
            except Exception as exc:  # a plot is never worth stopping for
                log.warning("recent history not saved: %s", exc)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= MAX_CONCURRENT:
            writer.close()
            return
        self._busy += 1
        try:
            try:
                request = await asyncio.wait_for(read_request(reader), REQUEST_TIMEOUT)
                response = await self.respond(request)
            except (BadRequest, asyncio.LimitOverrunError, ValueError) as exc:
                response = Response("400 Bad Request", f"bad request: {exc}\n", {"Content-Type": "text/plain"})
            writer.write(_encode(response))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            log.debug("on-site page request dropped: %s", exc)
        except Exception:
            log.exception("on-site page request failed")
        finally:
            self._busy -= 1
            writer.close()

    # --- routing ---------------------------------------------------------------------------------

    async def respond(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        if request.method == "GET" and request.path == "/":
            return Response("200 OK", self.status_html())
        if request.path == "/check" and request.method in ("GET", "POST"):
            if request.method == "GET":
                return Response("200 OK", webpage.check_page())
            form = parse_qs(request.body.decode("utf-8", "replace"))
            text = form.get("config", [""])[0]
            problems, warnings = await asyncio.to_thread(self.check, text)
            return Response("200 OK", webpage.check_page(text, problems, warnings))
        if request.path in ("/", "/check"):
            return Response("405 Method Not Allowed", "GET (or POST on /check) only\n", {"Content-Type": "text/plain"})
        return Response("404 Not Found", "not here: try / or /check\n", {"Content-Type": "text/plain"})

    def _denied(self, request: Request) -> Response | None:
        if self.token is None:
            host = request.headers.get("host", "")
            name = host.rsplit(":", 1)[0].strip("[]") if not host.endswith("]") else host.strip("[]")
            if name not in LOOPBACK_HOSTS and not name.startswith("127."):
                return Response("403 Forbidden", f"open this page as http://127.0.0.1:{self.port}/\n",
                                {"Content-Type": "text/plain"})
            return None
        given = request.query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            # Into a cookie and out of the address bar (and the browser's history).
            return Response("303 See Other", "", {"Location": request.path,
                                                  "Set-Cookie": f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; "
                                                                "Path=/"})
        auth = request.headers.get("authorization", "")
        candidates = [auth[7:].strip()] if auth.lower().startswith("bearer ") else []
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                candidates.append(value)
        if any(hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates):
            return None
        return Response("401 Unauthorized", "this page needs the gateway's web token: open /?token=... once "
                        "(the token is in service.web.token_file)\n",
                        {"Content-Type": "text/plain", "WWW-Authenticate": 'Bearer realm="gateway"'})

    def status_html(self) -> str:
        snap = self.snapshot()
        now = time.time()
        plots = {}
        for sid, s in snap.get("sensors", {}).items():
            options = self.sensor_options(sid)
            last = s.get("last_reading") or {}
            kind = getattr(options, "kind", None) or last.get("kind") or ""
            names = webpage.PLOTTED.get(kind)
            history = self.history.series(sid, names=names) if self.history is not None else {}
            span, step = (self.history.span, self.history.step) if self.history is not None else (86_400.0, 60.0)
            plots[sid] = webpage.sensor_plot(sid, kind, history, reference_lines(options), now, span, step)
        return webpage.status_page(snap, plots, self.log_lines()[-60:])


def _encode(response: Response) -> bytes:
    body = response.body.encode("utf-8")
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
               "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                          "frame-ancestors 'none'",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", **response.headers,
               "Content-Length": str(len(body)), "Connection": "close"}
    head = f"HTTP/1.1 {response.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body
