"""The systemd unit (issue 5): `systemd-analyze verify` is clean and
`systemd-analyze security` rates its exposure at most 2.0. systemd need not be
PID 1: both run offline. scripts/test installs Debian's systemd package when
systemd-analyze is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "city-edge-gateway.service"
BOOT_UNIT = REPO / "systemd" / "city-edge-gateway-boot-config.service"
UPDATE_UNIT = REPO / "systemd" / "city-edge-gateway-update.service"  # the signed update command's root side
UPDATE_PATH = REPO / "systemd" / "city-edge-gateway-update.path"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _image_root(tmp_path: Path) -> Path:
    """A root directory shaped like the installed Pi: systemd's own units, our
    units, and executables where the units expect them (the gateway's is a
    stand-in script: verify only checks that it is executable)."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (UNIT, BOOT_UNIT, UPDATE_UNIT, UPDATE_PATH):
        shutil.copy(unit, units)
    for exe in ("opt/city-edge-gateway/venv/bin/gateway", "opt/city-edge-gateway/import-boot-config", "bin/kill"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def test_systemd_analyze_verify_is_clean(tmp_path):
    root = _image_root(tmp_path)
    out = subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no",
                          "city-edge-gateway.service", "city-edge-gateway-boot-config.service",
                          "city-edge-gateway-update.service", "city-edge-gateway-update.path"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    root = _image_root(tmp_path)
    unit = root / "etc/systemd/system/city-edge-gateway.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=60s", "WatchdogSecs=60s"))
    out = subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no", "city-edge-gateway.service"],
                         capture_output=True, text=True, timeout=60)
    assert "Unknown key 'WatchdogSecs'" in out.stderr


ALL_UNITS = sorted((REPO / "systemd").glob("*.service"))


def test_every_unit_is_one_the_tests_know():
    assert set(ALL_UNITS) == {UNIT, BOOT_UNIT, UPDATE_UNIT}


@pytest.mark.parametrize("unit", ALL_UNITS, ids=lambda p: p.name)
def test_security_exposure_is_at_most_2(unit):
    # The boot import parses files anyone with the SD card can write, as root: it is held to the same bar.
    out = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    level = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout).group(1))
    assert level <= 2.0, out.stdout


def test_the_boot_import_keeps_only_what_it_needs():
    lines = BOOT_UNIT.read_text().splitlines()
    for line in ("CapabilityBoundingSet=CAP_CHOWN", "PrivateNetwork=yes", "ProtectSystem=strict",
                 "ReadWritePaths=-/etc/city-edge-gateway -/boot/firmware", "NoNewPrivileges=yes"):
        assert line in lines, line


def test_unit_promises():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=60s", "Restart=on-failure", "StartLimitBurst=5",
                 "StateDirectory=city-edge-gateway", "ConfigurationDirectory=city-edge-gateway",
                 "User=city-edge-gateway", "LoadCredential=secret:/etc/city-edge-gateway/credentials",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text.splitlines(), line
