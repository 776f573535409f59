"""Helpers for tests that run `gateway run` as a subprocess on simulated drivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import free_port, wait_for  # noqa: F401  (re-exported for the tests)


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def base_config(tmp_path: Path, sensors: list[dict], uplinks: list[dict], **service) -> dict:
    doc = {
        "gateway": {"id": "test-gw", "location": [34.34, 134.05], "shutdown_timeout": "2s"},
        "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "100ms"},
        "uplinks": uplinks,
        "sensors": sensors,
    }
    if service:
        doc["service"] = service
    return doc


class Daemon:
    """`gateway run` in a subprocess; stopped (by its own pid) when the test ends."""

    def __init__(self, config: Path, env: dict | None = None):
        self.config = config
        self.log = config.with_suffix(".log")
        full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM",
                                                                      "INVOCATION_ID")}
        full_env.update(env or {})
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=self._log_file, env=full_env)

    def logs(self) -> str:
        return self.log.read_text()

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        # A SIGTERM during the daemon's imports kills it outright (no handler yet): wait until it runs.
        deadline = time.monotonic() + 8  # a daemon that never gets there (waiting for disk space) is stopped anyway
        while self.proc.poll() is None and " running: " not in self.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def gateway_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout)


def status_json(config: Path) -> dict | None:
    """The running daemon's status, or None while it does not answer yet."""
    out = gateway_cli("status", "--json", "-c", str(config))
    if out.returncode not in (0, 1) or not out.stdout.strip():
        return None
    return json.loads(out.stdout)


def console_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
