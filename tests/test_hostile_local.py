"""Local interfaces and the beacon salt under hostile use (issue 13, points 8
and 10): the metrics port with an oversized request and many held connections,
`gateway status` by a user outside the group, a BLE replay line far in the
future, and a salt that is emptied, weakened or readable by everyone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.sdk import DeviceError
from drivers.ble_beacon import BleBeacon, BleBeaconOptions
from drivers.ble_beacon import scan as ble_scan
from drivers.ble_beacon.scanners import ReplayScanner
from gateway.metrics import MAX_CONNECTIONS
from tests.daemon_helpers import Daemon, base_config, free_port, status_json, wait_for, write_config

NOBODY = 65534
SALT = "Zq3kP9xW2mLr8vTb5nYc1hFd7gJs4eAo"
IBEACON = "02154142434445464748494041424344454600010002c5"
SAMPLE = Path(__file__).resolve().parents[1] / "hil" / "ble" / "sample.jsonl"


def _line(t, address="E1:02:03:04:05:06") -> str:
    return json.dumps({"t": t, "address": address, "rssi": -60, "manufacturer_data": {"76": IBEACON}})


# --- metrics port (point 8) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("metrics")
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "200ms"}],
        uplinks=[{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")}], metrics_port=port))
    d = Daemon(cfg)
    try:
        wait_for(lambda: status_json(cfg), timeout=30, what="the daemon")
        yield d, port
    finally:
        assert d.stop() == 0


def _get(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_100_kb_request_line_gets_a_clean_4xx_and_no_traceback(metrics):
    d, port = metrics
    answer = _get(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    answer = _get(port, b"GET /metrics HTTP/1.1\r\n" + b"X-Long: " + b"b" * 100_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert _get(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    assert "Traceback" not in d.logs() and "exception" not in d.logs().lower()


def test_held_connections_are_bounded_and_scrapes_go_on(metrics):
    d, port = metrics
    fds_before = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    held = []
    try:
        for _ in range(MAX_CONNECTIONS * 10):  # each sends half a request and waits
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.5)  # let the daemon accept what it will
        fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        assert fds - fds_before <= MAX_CONNECTIONS + 5, (fds_before, fds)
    finally:
        for s in held:
            s.close()
    wait_for(lambda: _get(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK"), timeout=20,
             what="a scrape answered once the held connections are gone")
    assert d.proc.poll() is None and "Traceback" not in d.logs()


def test_a_client_dripping_bytes_is_cut_off(metrics):
    _, port = metrics
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        start = time.monotonic()
        try:
            while time.monotonic() - start < 20:
                s.sendall(b"X")
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - start < 15, "the server held a dripping request for ever"


# --- gateway status outside the group (point 8) ---------------------------------------------------

@pytest.fixture
def shared_dir():
    """A directory every user can enter (pytest's own tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="gw-status-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _status_as_outsider(config: Path) -> subprocess.CompletedProcess:
    # As root, the command runs as nobody; otherwise this user is shut out by the modes alone.
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []
    result = subprocess.run([*as_nobody, sys.executable, "-m", "gateway", "status", "-c", str(config)],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.parametrize("what", ["config", "state directory"])
def test_gateway_status_outside_the_group_says_no_permission(what, shared_dir):
    private = shared_dir / "private"  # the daemon's state directory: 0750 root:gateway on a Pi
    private.mkdir(mode=0o000 if what == "state directory" and os.geteuid() != 0 else 0o700)
    config = shared_dir / "gw.yaml"
    config.write_text(f"gateway: {{id: g1}}\nstorage: {{path: {private / 'buffer.db'}}}\n"
                      f"uplinks:\n  - {{name: c, type: console, path: {private / 'out.jsonl'}}}\n")
    config.chmod(0o000 if what == "config" else 0o644)  # 0640 root:gateway, seen from outside the group
    err = _status_as_outsider(config).stderr
    assert "no permission" in err and "member of the gateway's group" in err, err


# --- BLE replay (point 8) -------------------------------------------------------------------------

def test_a_replay_line_far_in_the_future_is_skipped_not_waited_for(tmp_path):
    path = tmp_path / "replay.jsonl"
    path.write_text("\n".join([_line(0.0), _line(1e300), _line(int("1" + "0" * 400)), _line(float("nan")),
                               _line(0.2)]) + "\n")
    heard = []
    scanner = ReplayScanner(path)
    scanner.start(heard.append)
    try:
        assert scanner.finished.wait(10), "the replay never ends"
    finally:
        scanner.stop()
    assert scanner.error is None
    assert [a.t for a in heard] == [0.0, 0.2] and scanner.bad_lines == 3


# --- the beacon salt (point 10) -------------------------------------------------------------------

def _salt(tmp_path, text: str | bytes = SALT, mode: int = 0o600) -> Path:
    path = tmp_path / "beacon.salt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def _options(tmp_path, salt: Path) -> BleBeaconOptions:
    replay = tmp_path / "replay.jsonl"
    replay.write_text(_line(0.0) + "\n")
    return BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s",
                                            "adapter": f"replay:{replay}", "salt_file": str(salt)})


@pytest.mark.parametrize("text, says", [
    ("", "fewer than 16 bytes"),
    ("\n\n", "fewer than 16 bytes"),
    ("short-salt", "fewer than 16 bytes"),
    ("a" * 32, "trivially weak"),
    ("abababababababababababab", "trivially weak"),
    ("0123456789abcdef0123456789abcdef", "trivially weak"),
    ("abcdefghijklmnopqrstuvwxyz", "trivially weak"),
    (bytes(range(32)), "trivially weak"),
])
def test_an_emptied_or_weakened_salt_stops_beacon_publishing(tmp_path, text, says):
    salt = _salt(tmp_path)
    driver = BleBeacon(_options(tmp_path, salt))
    driver.open()
    driver.close()
    salt.write_bytes(text.encode() if isinstance(text, str) else text)  # emptied or weakened on site
    with pytest.raises(DeviceError, match=says) as err:
        driver.open()
    assert "no beacon is published" in str(err.value) and driver._salt is None
    with pytest.raises(DeviceError):  # and nothing is read with it
        driver.read(1.0)
    with pytest.raises(ValidationError, match=says):  # `gateway check` says the same
        _options(tmp_path, salt)


def test_a_world_readable_salt_is_refused(tmp_path):
    salt = _salt(tmp_path, mode=0o644)
    with pytest.raises(ValidationError, match="readable by every user"):
        _options(tmp_path, salt)
    salt.chmod(0o640)  # the gateway's group may read it
    _options(tmp_path, salt)


def test_a_salt_that_is_a_device_or_fifo_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/urandom"), Path("/dev/zero")):
        with pytest.raises(ValidationError, match="not a regular file"):
            _options(tmp_path, path)


def test_scan_ble_record_writes_its_file_0600(tmp_path):
    out = tmp_path / "rec.jsonl"
    out.write_text("an older recording\n")
    out.chmod(0o644)
    old = os.umask(0o022)
    try:
        assert ble_scan.main(0.3, f"replay:{SAMPLE}", record_to=out) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text().count("\n") >= 1 and "older" not in out.read_text()

