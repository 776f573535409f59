"""systemd's notify protocol (sd_notify): READY, STATUS, RELOADING, STOPPING and
watchdog keep-alives, as datagrams to $NOTIFY_SOCKET. Without systemd (no
NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same anywhere.

The watchdog only helps if a keep-alive means "still working": the service
sends one only after checking that its loops make progress (see
Gateway.health), so a hung loop stops the keep-alives and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET") or None
        if path and path.startswith("@"):
            path = "\0" + path[1:]  # an abstract socket
        self.address = path
        self.watchdog_interval = self._watchdog_interval(env)
        self._sock: socket.socket | None = None

    @staticmethod
    def _watchdog_interval(env) -> float | None:
        """Seconds between keep-alives: half of WatchdogSec, as sd_watchdog_enabled advises."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(int(usec) / 1e6 / 2, 0.01)
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:  # systemd gone or a wrong path: the daemon keeps working
            log.debug("sd_notify to %r failed: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading the config")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        """Still starting (e.g. waiting for disk space): systemd's start timeout must not kill us."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def keepalive(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
