"""The `health` message of SPEC §7, from the daemon's health view plus what
the host itself can tell: CPU temperature from the thermal zone, undervoltage
and throttling from the firmware (`get_throttled`), free disk beside the
buffer. Whatever the machine cannot tell is null, never a guess."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.manage.envelope import utc_stamp

# get_throttled bits (Raspberry Pi firmware): what is true now.
UNDERVOLTAGE_NOW = 1 << 0
THROTTLED_NOW = (1 << 1) | (1 << 2) | (1 << 3)  # frequency capped, throttled, soft temperature limit

SENSOR_STATES = {"ok": "ok", "starting": "ok", "failing": "failing", "hung": "stalled", "stalled": "stalled",
                 "stopped": "stopped"}


class Host:
    """Where the host facts come from; a test points these at files it writes."""

    def __init__(self, sys_root: Path = Path("/sys"), vcgencmd: str | None = "vcgencmd"):
        """`vcgencmd=None`: sysfs only (no subprocess, for callers on the event loop)."""
        self.sys_root = sys_root
        self.vcgencmd = vcgencmd

    def cpu_temperature_c(self) -> float | None:
        try:
            return round(int((self.sys_root / "class/thermal/thermal_zone0/temp").read_text().strip()) / 1000, 1)
        except (OSError, ValueError):
            return None

    def throttled_bits(self) -> int | None:
        # The kernel's copy first (no device access needed), then the firmware tool.
        try:
            text = (self.sys_root / "devices/platform/soc/soc:firmware/get_throttled").read_text().strip()
            return int(text, 16)
        except (OSError, ValueError):
            pass
        exe = shutil.which(self.vcgencmd) if self.vcgencmd else None
        if exe is None:
            return None
        try:
            out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=3).stdout
            return int(out.strip().partition("=")[2], 16)  # "throttled=0x50005"
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def facts(self, clock_synced: bool | None) -> dict[str, Any]:
        bits = self.throttled_bits()
        return {"cpu_temperature_c": self.cpu_temperature_c(),
                "undervoltage": None if bits is None else bool(bits & UNDERVOLTAGE_NOW),
                "throttled": None if bits is None else bool(bits & THROTTLED_NOW),
                "clock": None if clock_synced is None else ("synced" if clock_synced else "unsynced")}


def _file_bytes(path: Path) -> int | None:
    sizes = [os.stat(p).st_size for p in (path, Path(f"{path}-wal")) if p.exists()]
    return sum(sizes) if sizes else None


def _disk_free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


def _last_reading_at(s: dict) -> str | None:
    if s.get("last_reading_at"):
        return s["last_reading_at"]
    last = s.get("last_reading")
    return last.get("observed_at") if isinstance(last, dict) else None


def health_document(snap: dict, host: dict, config_hash: str | None) -> dict[str, Any]:
    """SPEC §7 `health` from a health-view snapshot (`gateway status --json`) and host facts."""
    sensors = {sid: {"state": SENSOR_STATES.get(s.get("state"), "failing"),
                     "detail": s.get("detail") or (None if s.get("state") != "starting" else "starting"),
                     "last_reading_at": _last_reading_at(s)} for sid, s in snap.get("sensors", {}).items()}
    uplinks = {name: {"connected": bool(u.get("connected")), "pending": u.get("pending"),
                      "oldest_pending_age_s": u.get("oldest_pending_age_s"), "dead_letters": u.get("dead_letters"),
                      "last_error": u.get("last_error")} for name, u in snap.get("uplinks", {}).items()}
    buf = snap.get("buffer", {})
    path = Path(buf["path"]) if buf.get("path") else None
    buffer = {"readings": buf.get("readings"), "evictions": buf.get("evictions"),
              "file_bytes": buf.get("file_bytes", _file_bytes(path) if path else None),
              "disk_free_bytes": buf.get("disk_free_bytes", _disk_free(path) if path else None)}
    return {"at": utc_stamp(), "version": __version__, "config_hash": config_hash, "uptime_s": snap.get("uptime_s"),
            "sensors": sensors, "uplinks": uplinks, "buffer": buffer, "host": host}


def state_signature(snap: dict) -> tuple:
    """What, when it changes, makes a health message go out at once."""
    return (tuple((sid, s.get("state")) for sid, s in sorted(snap.get("sensors", {}).items())),
            tuple((n, bool(u.get("connected"))) for n, u in sorted(snap.get("uplinks", {}).items())))
