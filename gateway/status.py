"""`gateway status`: what the running daemon is doing, over a local Unix socket.

The daemon answers every connection with one JSON document (the snapshot below)
and closes it; `gateway status` prints it as a table or, with --json, as is.
The socket lives beside the buffer unless `service.status_socket` says
otherwise, so the command finds it from the same config file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)


def socket_path(config) -> Path:
    configured = getattr(getattr(config, "service", None), "status_socket", None)
    return Path(configured) if configured else config.storage.path.with_suffix(".sock")


def socket_path_lenient(config_file: str) -> Path:
    """The socket path from a config that may not validate (a typo after which
    the reload was rejected must not hide the running daemon's status)."""
    import yaml
    from gateway.config import StorageSection
    try:
        doc = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        doc = {}
    service = doc.get("service") if isinstance(doc, dict) else None
    storage = doc.get("storage") if isinstance(doc, dict) else None
    if isinstance(service, dict) and isinstance(service.get("status_socket"), str):
        return Path(service["status_socket"])
    if isinstance(storage, dict) and isinstance(storage.get("path"), str):
        return Path(storage["path"]).with_suffix(".sock")
    return StorageSection().path.with_suffix(".sock")


def _age(since_ms: int | None, now_ms: float) -> float | None:
    return None if since_ms is None else round(max(0.0, now_ms - since_ms) / 1000, 1)


def snapshot(gw: "Gateway") -> dict:
    """Per sensor, per uplink and buffer state, read on the event loop's thread."""
    now_ms = time.time() * 1000
    mono = time.monotonic()
    buf = gw.buffer
    sensors = {}
    for sid, r in gw.runners.items():
        last = r.last_reading
        sensors[sid] = {
            "driver": r.driver.name,
            "state": r.state,
            "detail": r.detail,
            "failures": r.failures,
            "reads": r.reads,
            "read_errors": r.read_errors + gw.error_readings.get(sid, 0),
            "last_reading": None if last is None else last.as_json(),
            "age_s": None if last is None else round(mono - last.monotonic, 1),
        }
    uplinks = {}
    for d in gw.deliveries:
        acked = buf.acked.get(d.name, buf.last_seq)
        retries = buf.conn.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 1", (d.name,)).fetchone()[0]
        dead = buf.conn.execute("SELECT count(*) FROM dead WHERE uplink = ? AND retry = 0", (d.name,)).fetchone()[0]
        oldest = buf.conn.execute("SELECT observed_ms FROM readings WHERE seq > ? ORDER BY seq LIMIT 1",
                                  (acked,)).fetchone()
        pending = buf.last_seq - acked + retries
        uplinks[d.name] = {
            "type": gw.uplink_types.get(d.name),
            "connected": bool(d.t.connected),
            "pending": pending,
            "oldest_pending_age_s": _age(oldest[0], now_ms) if oldest and pending else None,
            "dead_letters": dead,
            "sent": d.sent_total,
            "last_latency_s": None if d.last_latency is None else round(d.last_latency, 4),
            "last_error": getattr(d.t, "last_error", None),
        }
    return {
        "gateway": gw.config.gateway.id,
        "pid": os.getpid(),
        "uptime_s": round(mono - gw.started_monotonic, 1),
        "clock": {"synced": gw.clock_synced},
        "healthy": not gw.health_problems(),
        "problems": gw.health_problems(),
        "sensors": sensors,
        "uplinks": uplinks,
        "buffer": {"path": str(buf.path), "readings": buf.count, "evictions": buf.evictions,
                   "last_seq": buf.last_seq},
    }


class StatusServer:
    def __init__(self, gw: "Gateway", path: Path):
        self.gw = gw
        self.path = path
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            if self.path.is_socket():
                self.path.unlink()  # left by a killed daemon
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.server = await asyncio.start_unix_server(self._answer, path=str(self.path))
            os.chmod(self.path, 0o660)  # the gateway's group (technicians) may ask
        except OSError as exc:  # no status is no reason to stop reading sensors
            log.error("status socket %s cannot be opened (%s); `gateway status` will not work", self.path, exc)
            self.server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot(self.gw), ensure_ascii=False).encode() + b"\n")
            await writer.drain()
        except Exception as exc:
            log.warning("status request failed: %s", exc)
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            try:
                self.path.unlink()
            except OSError:
                pass


class StatusUnavailable(Exception):
    pass


def query(path: Path, timeout: float = 5.0) -> dict:
    """Ask the running daemon (blocking; used by the command line)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise StatusUnavailable(f"no status socket at {path}: is the gateway running with this config?") from None
        except PermissionError:
            raise StatusUnavailable(f"no permission for {path}: run as root or as a member of the gateway's group") from None
        except OSError as exc:
            raise StatusUnavailable(f"the gateway does not answer on {path}: {exc.strerror or exc}") from None
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def _fmt_age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.1f}s"
    if age < 7200:
        return f"{age / 60:.1f}m"
    return f"{age / 3600:.1f}h"


def _short_values(reading: dict | None) -> str:
    if not reading:
        return "-"
    parts = [f"{k}={v['value']}{v.get('unit') or ''}" for k, v in reading.get("values", {}).items()]
    text = " ".join(parts[:3])
    if reading.get("quality") != "ok":
        text += f" [{reading.get('quality')}{': ' + reading['error'] if reading.get('error') else ''}]"
    return text


def print_table(data: dict, out=sys.stdout) -> None:
    health = "healthy" if data["healthy"] else "UNHEALTHY: " + "; ".join(data["problems"])
    clock = "clock synced" if data["clock"]["synced"] else "CLOCK NOT SYNCED (readings flagged, corrected later)"
    print(f"gateway {data['gateway']} (pid {data['pid']}), up {_fmt_age(data['uptime_s'])}, {health}, {clock}", file=out)
    print(f"\n{'sensor':<18} {'state':<8} {'age':>7} {'errors':>6}  last reading", file=out)
    for sid, s in data["sensors"].items():
        last = _short_values(s["last_reading"])
        if s["state"] != "ok" and s["detail"]:
            last = f"{last}  ({s['detail']})"
        print(f"{sid:<18} {s['state']:<8} {_fmt_age(s['age_s']):>7} {s['read_errors']:>6}  {last}", file=out)
    print(f"\n{'uplink':<18} {'connected':<9} {'pending':>8} {'oldest':>8} {'dead':>5}", file=out)
    for name, u in data["uplinks"].items():
        conn = "yes" if u["connected"] else "NO"
        print(f"{name:<18} {conn:<9} {u['pending']:>8} {_fmt_age(u['oldest_pending_age_s']):>8} {u['dead_letters']:>5}",
              file=out)
        if u.get("last_error"):
            print(f"  {name}: {u['last_error']}", file=out)
    b = data["buffer"]
    print(f"\nbuffer {b['path']}: {b['readings']} readings, {b['evictions']} evicted", file=out)
