"""`gateway status`: what the running daemon is doing, over a local Unix socket.

The daemon answers every connection with one JSON document (the health view's
snapshot, gateway/health.py) and closes it; `gateway status` prints it as a table or, with --json, as is.
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
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def socket_path(config) -> Path:
    configured = getattr(getattr(config, "service", None), "status_socket", None)
    return Path(configured) if configured else config.storage.path.with_suffix(".sock")


def socket_path_lenient(config_file: str) -> Path:
    """The socket path from a config that may not validate (a typo after which
    the reload was rejected must not hide the running daemon's status)."""
    from gateway import yamlsource
    from gateway.config import ConfigError, StorageSection, read_config_text
    try:  # the bounded loader: a YAML bomb in the config must not hang `gateway status`
        doc = yamlsource.load(read_config_text(config_file), config_file)[0] or {}
    except ConfigError:
        doc = {}
    service = doc.get("service") if isinstance(doc, dict) else None
    storage = doc.get("storage") if isinstance(doc, dict) else None
    if isinstance(service, dict) and isinstance(service.get("status_socket"), str):
        return Path(service["status_socket"])
    if isinstance(storage, dict) and isinstance(storage.get("path"), str):
        return Path(storage["path"]).with_suffix(".sock")
    return StorageSection().path.with_suffix(".sock")


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict], path: Path):
        self.snapshot = snapshot
        self.path = path
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            if self.path.is_socket() and _answers(self.path):
                log.error("status socket %s is in use by another running gateway: left to it; "
                          "`gateway status` with this config asks that one", self.path)
                return
            if self.path.is_socket():
                self.path.unlink()  # left by a killed daemon: nobody answers on it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.server = await asyncio.start_unix_server(self._answer, path=str(self.path))
            os.chmod(self.path, 0o660)  # the gateway's group (technicians) may ask
        except OSError as exc:  # no status is no reason to stop reading sensors
            log.error("status socket %s cannot be opened (%s); `gateway status` will not work", self.path, exc)
            self.server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(self.snapshot(), ensure_ascii=False, default=repr).encode() + b"\n")
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


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(str(path)) == 0


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
        why = f"  ({u['last_error']})" if u.get("last_error") else ""
        print(f"{name:<18} {conn:<9} {u['pending']:>8} {_fmt_age(u['oldest_pending_age_s']):>8} {u['dead_letters']:>5}"
              f"{why}", file=out)
    b = data["buffer"]
    print(f"\nbuffer {b['path']}: {b['readings']} readings, {b['evictions']} evicted", file=out)
    reload = data.get("reload")
    if reload and reload["result"] == "refused":
        print(f"\nlast reload REFUSED ({reload['at']}): {reload['reason']}; the running config stays", file=out)
        for problem in reload["errors"]:
            print(f"  {problem}", file=out)
