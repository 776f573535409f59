"""`gateway update` (issue 10) with the installer's --root mode: two wheels of
this project built here, 0.2.0 (good) and 0.3.0 (broken on purpose: its daemon
exits at start, though its `gateway check` passes). The service manager is a
stand-in script for `systemctl restart` (no systemd in a test); everything
else is real: venvs, pip, the link switch, the daemon, Mosquitto, a serial
sensor behind a pseudo-terminal. A second broker is down during each update, so
readings are pending in the buffer across every switch; all of them arrive."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hil.distance_devices import MaxbotixDevice
from tests.daemon_helpers import console_lines
from tests.helpers import Mosquitto, Subscriber, wait_for
from tests.manage_helpers import Operator, fleet_keys

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"

RESTART = """#!/bin/sh
# Stand-in for `systemctl restart`: stop the running daemon (SIGTERM, as systemd does), start the link's.
pid=$(cat "{pidfile}" 2>/dev/null)
if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
"{opt}/venv/bin/gateway" run -c "{config}" >> "{log}" 2>&1 &
echo $! > "{pidfile}"
"""


def build_wheel(tmp: Path, version: str, broken: bool = False) -> Path:
    src = tmp / f"src-{version}"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith(("tests/", "hil/", "bench/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    for name, pattern in (("pyproject.toml", r'^version = "[^"]+"'), ("gateway/__init__.py", r'^__version__ = "[^"]+"')):
        text = (src / name).read_text()
        key = pattern.split(" ")[0].lstrip("^")
        (src / name).write_text(re.sub(pattern, f'{key} = "{version}"', text, count=1, flags=re.M))
    if broken:
        cli = src / "gateway/cli.py"
        cli.write_text(cli.read_text().replace("def cmd_run(args) -> int:\n",
                                               "def cmd_run(args) -> int:\n    raise SystemExit('broken on purpose')\n"))
    out = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob(f"city_edge_gateway-{version}-*.whl"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def installed(tmp_path, broker):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    out = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--source", str(REPO)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    opt = root / "opt/city-edge-gateway"
    assert os.readlink(opt / "venv") == "venvs/installed"
    key_file, pub = fleet_keys(tmp_path / "city")
    archive = Archive(tmp_path)
    device = MaxbotixDevice(tmp_path / "maxbotix")
    device.distance = 2.0
    device.start()
    state = root / "var/lib/city-edge-gateway"
    config = root / "etc/city-edge-gateway/gateway.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": {"id": "test-gw", "shutdown_timeout": "2s"},
        "storage": {"path": str(state / "buffer.db"), "commit_interval": "100ms"},
        "uplinks": [
            {"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")},
            {"name": "city", "type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}", "reconnect_max": "2s",
             "manage": {"public_key_file": str(pub)}},
            {"name": "archive", "type": "mqtt", "url": f"mqtt://127.0.0.1:{archive.port}", "reconnect_max": "1s",
             "client_id": "test-gw-archive"},
        ],
        "sensors": [{"id": "river-mb", "driver": "maxbotix", "port": str(tmp_path / "maxbotix"),
                     "mount_height": 4.5, "interval": "300ms", "samples": 1}],
    }, sort_keys=False))
    pidfile = tmp_path / "gateway.pid"
    restart = tmp_path / "restart-service"
    restart.write_text(RESTART.format(pidfile=pidfile, opt=opt, config=config, log=tmp_path / "gateway.log"))
    restart.chmod(0o755)
    subprocess.run([str(restart)], check=True)
    city = Operator(broker.port, key_file)
    wait_for(lambda: city.health(), 120, what="the installed gateway's health")
    yield opt, config, restart, city, archive, tmp_path
    pid = pidfile.read_text().strip()
    if pid and Path(f"/proc/{pid}").exists():
        os.kill(int(pid), signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                 30, what="the daemon to stop")
    city.stop()
    archive.broker.stop()
    device.stop()


def run_update(opt: Path, config: Path, restart: Path, wheel: Path, digest: str) -> tuple[int, dict, str]:
    out = subprocess.run([str(opt / "venv/bin/gateway"), "update", str(wheel), "--sha256", digest, "--opt", str(opt),
                          "-c", str(config), "--restart", str(restart), "--deadline", "60s"],
                         capture_output=True, text=True, timeout=900)
    assert out.stdout.strip(), f"gateway update printed no result (exit {out.returncode}):\n{out.stderr[-4000:]}"
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


class Archive:
    """The second uplink's broker, down while updating, and a subscriber with a
    persistent session there, so what the gateway sends before the subscriber is
    back waits for it at the broker."""

    def __init__(self, tmp: Path):
        self.broker = Mosquitto(tmp / "archive")
        self.port = self.broker.port
        self.received: set[str] = set()
        self.broker.start()
        Subscriber(self.port, "city/#", client_id="archive").stop()  # the session exists from now on
        self.broker.stop()

    def everything_arrives(self, taken: set[str], what: str) -> None:
        self.broker.start()
        sub = Subscriber(self.port, "city/#", client_id="archive")
        try:
            try:
                wait_for(lambda: taken <= self.received | {r["id"] for r in sub.readings()}, 90,
                         what=f"every reading at the archive ({what})")
            except AssertionError:
                missing = sorted(taken - self.received - {r["id"] for r in sub.readings()})
                raise AssertionError(f"{len(missing)} of {len(taken)} readings missing at the archive ({what}), "
                                     f"e.g. {missing[:3]}") from None
        finally:
            sub.stop()  # after it, nothing more arrives for this subscriber object: all it got is counted
            self.received |= {r["id"] for r in sub.readings()}
            self.broker.stop()


def test_update_to_a_good_wheel_runs_it_and_a_broken_one_is_rolled_back(installed):
    opt, config, restart, city, archive, tmp = installed
    good, broken = build_wheel(tmp, "0.2.0"), build_wheel(tmp, "0.3.0", broken=True)

    refused = run_update(opt, config, restart, good, "0" * 64)
    assert refused[0] == 2 and "sha256" in refused[1]["error"] and os.readlink(opt / "venv") == "venvs/installed"

    rc, result, err = run_update(opt, config, restart, good, sha256(good))
    assert rc == 0 and result["result"] == "updated", err
    assert os.readlink(opt / "venv") == f"venvs/{result['venv']}" and result["venv"].startswith("0.2.0-")
    wait_for(lambda: city.health()[-1]["version"] == "0.2.0", 30, what="health from 0.2.0")
    archive.everything_arrives({r["id"] for r in console_lines(tmp / "out.jsonl")}, "after the good update")

    seen = len(city.health())  # 0.2.0 already said so: only what comes after the rollback counts below
    rc, result, err = run_update(opt, config, restart, broken, sha256(broken))
    assert rc == 1 and result["result"] == "rolled_back" and result["old_version_back"] is True, err
    assert result["venv"].startswith("0.2.0-") and os.readlink(opt / "venv") == f"venvs/{result['venv']}"
    assert "broken on purpose" in (tmp / "gateway.log").read_text()
    wait_for(lambda: (new := city.health()[seen:]) and all(h["version"] == "0.2.0" for h in new), 30,
             what="health from 0.2.0 again, after the rollback")
    archive.everything_arrives({r["id"] for r in console_lines(tmp / "out.jsonl")}, "after the rollback")
    # The way back (installed) and the failed venv (for a look) stay until the next good update prunes.
    assert {p.name for p in (opt / "venvs").iterdir()} == {"installed", f"0.2.0-{sha256(good)[:12]}",
                                                          f"0.3.0-{sha256(broken)[:12]}"}
