"""Is the wall clock trustworthy? A Raspberry Pi has no RTC: until NTP (or GPS)
has set it, time.time() continues from the last shutdown (fake-hwclock) or from
1970. Readings taken then are flagged `"clock": "unsynced"` with their
monotonic time, and once the clock is trusted their observed_at is rebuilt from
the monotonic offset (SPEC §3).

Two signs of an untrusted clock:
- the kernel's time status (adjtimex): TIME_ERROR / STA_UNSYNC until a sync
  daemon (systemd-timesyncd, chrony) has disciplined the clock;
- a time before this package was built, which cannot be true.

The kernel status only means something where a sync daemon runs on the same
host, i.e. on the Pi under systemd. Elsewhere (a laptop, a CI container whose
host keeps time by other means) it often reads "unsynced" while the clock is
fine, so `auto` uses it only under systemd. Tests inject their own clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex return value: clock not synchronised
STA_UNSYNC = 0x0040


class Clock(Protocol):
    def synced(self) -> bool: ...
    def wall(self) -> float: ...


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): we only read `status`, but the kernel writes the whole struct.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


def kernel_synced() -> bool | None:
    """The kernel's view (adjtimex with modes=0 only reads), None if unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def timesyncd_synced(run: Path = Path("/run/systemd/timesync")) -> bool | None:
    """systemd-timesyncd's flag file; the service's seccomp filter (ProtectClock,
    ~@privileged) blocks adjtimex even for reading, so this is the fallback."""
    if not run.is_dir():
        return None  # timesyncd does not run here: no opinion
    return (run / "synchronized").exists()


def build_time() -> float:
    """When this package was built (installed): no true time can lie before it."""
    return Path(__file__).stat().st_mtime


class SystemClock:
    """The real clock. `check`: auto | kernel | build-time | off (trust always)."""

    def __init__(self, check: str = "auto", env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        if check == "auto":
            check = "kernel" if env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM") else "build-time"
        self.check = check
        self._built = build_time() if check != "off" else 0.0

    def wall(self) -> float:
        return time.time()

    def synced(self) -> bool:
        if self.check == "off":
            return True
        if self.wall() < self._built:
            return False
        if self.check == "kernel":
            synced = kernel_synced()
            if synced is None:
                synced = timesyncd_synced()
            return synced is not False
        return True


class ManualClock:
    """A clock a test sets: `synced` flips when told, `wall` is real time plus `offset`."""

    def __init__(self, synced: bool = False, offset: float = 0.0):
        self.is_synced = synced
        self.offset = offset

    def wall(self) -> float:
        return time.time() + self.offset

    def synced(self) -> bool:
        return self.is_synced


def corrected(doc: dict, offset: float) -> tuple[dict, float] | None:
    """A reading's JSON (or the part the buffer keeps beside its columns) without
    the unsynced flag, and its true time rebuilt from its monotonic time; None
    if it needs no correction. `offset` = true wall time − monotonic time."""
    if doc.get("clock") != "unsynced" or "monotonic" not in doc:
        return None
    fixed = {k: v for k, v in doc.items() if k not in ("clock", "monotonic")}
    return fixed, doc["monotonic"] + offset


def boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str | None:
    """This boot's id (Linux), or None where the system does not tell: state saved
    with a boot's monotonic times is only trusted within the same boot."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
