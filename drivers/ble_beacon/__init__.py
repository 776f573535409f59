"""BLE beacons (iBeacon, Eddystone UID/URL/TLM, RuuviTag RAWv2) through bleak,
or a replay file. A scanner runs in the background from open() to close();
each scheduled read() drains what was heard since the previous one and
returns one reading per beacon: median RSSI, count, the 1 m reference power,
a log-distance estimate and what the last frames measured.

Beacon identities never leave the gateway: `device` is a keyed pseudonym
(gateway.sdk.pseudonym) unless `publish_raw_ids: true`. See README.md."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from gateway.sdk.driver import DeviceError, Driver, SensorOptions
from drivers.ble_beacon.advert import Advertisement
from drivers.ble_beacon.aggregate import Aggregator, canonical_id, summary_values
from drivers.ble_beacon.scanners import REPLAY_PREFIX, Scanner, open_scanner
from gateway.sdk.fields import (FILE_MAX, CredentialFile, Strict, credential_source, not_there_yet,
                                read_regular)
from gateway.sdk.pseudonym import pseudonym
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

BeaconId = Annotated[str, AfterValidator(canonical_id)]
MIN_SALT_BYTES = 16
MIN_SALT_SYMBOLS = 8  # distinct byte values; 32 random bytes in base64 have about 25
SILENT_RESTART = 600.0  # s without any advertisement before a real adapter's scan is restarted
WARN_EVERY = 600.0  # s between two warnings about skipped input
INBOX_MAX = 100_000  # advertisements held between two reads; beyond, the oldest are dropped and counted


MAKE_SALT = "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE"


def _trivially_weak(salt: bytes) -> bool:
    """aaaa…, abcabc…, hunter2hunter2…, abcdef…, 0123…: few symbols, a period, or mostly one step."""
    if len(set(salt)) < MIN_SALT_SYMBOLS:
        return True
    if any(salt == (salt[:p] * (len(salt) // p + 1))[:len(salt)] for p in range(1, len(salt) // 2 + 1)):
        return True
    steps = Counter(b - a for a, b in zip(salt, salt[1:]))
    return steps.most_common(1)[0][1] > 0.75 * (len(salt) - 1)


def read_salt(path: Path) -> bytes:
    """The HMAC key: the file's bytes without surrounding whitespace (a text
    salt's newline), so a base64 text salt and a binary one both work. Never logged.

    The same rules at load and at every open: an emptied or weakened salt would
    turn the pseudonyms into HMACs anyone can reverse from a list of candidate
    MACs, so it is a ValueError, never a key."""
    salt = read_regular(credential_source(path), FILE_MAX, "salt_file").strip()
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt_file {path} holds fewer than {MIN_SALT_BYTES} bytes; make one with: {MAKE_SALT}")
    if _trivially_weak(salt):
        raise ValueError(f"salt_file {path} is trivially weak (a repeated or counting pattern); "
                         f"make one with: {MAKE_SALT}")
    if os.stat(credential_source(path)).st_mode & stat.S_IROTH:
        raise ValueError(f"salt_file {path} is readable by every user; chmod 600 it "
                         "(or 640 with the gateway's group)")
    return salt


class BatteryRange(Strict):
    """Battery voltage of an empty and of a full cell, for `battery_level` (%)."""

    empty: float = Field(gt=0, description="V at 0 %")
    full: float = Field(gt=0, description="V at 100 %")

    @model_validator(mode="after")
    def _order(self) -> "BatteryRange":
        if self.full <= self.empty:
            raise ValueError("battery.full must be above battery.empty")
        return self

    def level(self, volts: float) -> float:
        return round(min(100.0, max(0.0, 100 * (volts - self.empty) / (self.full - self.empty))), 1)


class BleBeaconOptions(SensorOptions):
    adapter: str = Field("hci0", description="a BlueZ adapter (hci0) or replay:FILE (a recorded replay)")
    allow: list[BeaconId] | None = Field(None, description="report only these beacons: raw ids or MACs")
    salt_file: CredentialFile | None = Field(
        None, description="HMAC key for the beacon pseudonyms (required unless publish_raw_ids)")
    publish_raw_ids: bool = Field(False, description="publish raw beacon ids instead of pseudonyms (not for people)")
    path_loss_exponent: float = Field(2.0, ge=1.0, le=6.0, description="n of the log-distance model (2 free space)")
    tx_power: int = Field(-59, ge=-100, le=20,
                          description="RSSI at 1 m (dBm) for frames without a calibrated one (RuuviTag, MAC only)")
    battery: BatteryRange | None = Field(None, description="{empty: V, full: V}: adds battery_level %")
    replay_loop: bool = Field(False, description="replay:FILE starts again at its end")

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        if v.startswith(REPLAY_PREFIX):
            path = Path(v[len(REPLAY_PREFIX):])
            if not path.is_file():
                raise ValueError(f"replay file {path} does not exist")
            return v
        if not (v.startswith("hci") and v[3:].isdigit()):
            raise ValueError(f"adapter is a BlueZ adapter like hci0, or replay:FILE (got {v!r})")
        return v

    @model_validator(mode="after")
    def _salt(self) -> "BleBeaconOptions":
        if self.salt_file is None:
            if not self.publish_raw_ids:
                raise ValueError("salt_file is required: beacon ids are published only as pseudonyms "
                                 "(or set publish_raw_ids: true for beacons that do not belong to people)")
        elif not not_there_yet(self.salt_file):  # the documented credentials path of a Pi not set up yet
            read_salt(self.salt_file)
        return self


class BleBeacon(Driver):
    summary = "BLE beacons (iBeacon, Eddystone UID/URL/TLM, RuuviTag RAWv2) via bleak or a replay file"
    Options = BleBeaconOptions
    kind = "beacon"
    options: BleBeaconOptions

    def __init__(self, options: BleBeaconOptions, devices=None):
        super().__init__(options, devices)
        self.aggregator = Aggregator(frozenset(options.allow) if options.allow is not None else None,
                                     with_url=options.publish_raw_ids)
        self.scanner: Scanner | None = None
        self._inbox: deque[Advertisement] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        self._bad_lines_before = 0  # of scanners already closed
        self._reported: dict[str, int] = {}
        self._warned_at = -WARN_EVERY

    def open(self) -> None:
        o = self.options
        # Read the salt at every open: a rotated salt file takes effect on reopen. One
        # that no longer passes the rules stops publishing (the sensor fails, loudly).
        try:
            self._salt = None if o.salt_file is None else read_salt(o.salt_file)
        except ValueError as exc:
            self._salt = None
            raise DeviceError(f"{exc}; no beacon is published until it is fixed") from None
        self._ended = False
        self._start_scanner()

    def _start_scanner(self) -> None:
        o = self.options
        scanner = open_scanner(o.adapter, loop=o.replay_loop)
        self._last_heard = time.monotonic()
        scanner.start(self._heard)
        self.scanner = scanner  # only a started scanner: a failed start leaves the driver closed

    def _restart_if_silent(self) -> None:
        """BlueZ discovery can stall, and a removed adapter does not always end
        bleak's scan: after SILENT_RESTART without a single advertisement (from
        anything: phones count), restart the scan; a gone adapter then fails
        open with a clear reason and the scheduler backs off."""
        if self.options.adapter.startswith(REPLAY_PREFIX):
            return
        if time.monotonic() - self._last_heard < SILENT_RESTART:
            return
        log.info("sensor %s: no advertisement heard for %.0fs; restarting the scan on %s",
                 self.options.id, SILENT_RESTART, self.options.adapter)
        self.close()
        self._start_scanner()

    def _heard(self, adv: Advertisement) -> None:
        # Called in the scanner's thread: only queue, decode in read().
        with self._lock:
            if len(self._inbox) >= INBOX_MAX:
                self._inbox.popleft()
                self.dropped += 1
            self._inbox.append(adv)
            self._last_heard = time.monotonic()

    def read(self, timeout: float) -> list[Reading]:
        if self.scanner is None:
            raise DeviceError("not open")
        if self.scanner.error is not None:
            raise DeviceError(f"BLE scanner {self.options.adapter} stopped: {self.scanner.error}")
        self._restart_if_silent()
        o = self.options
        finished = getattr(self.scanner, "finished", None)  # a replay that has played its last line
        if finished is not None and finished.is_set() and not self._ended:
            log.info("sensor %s: replay %s has ended; no more beacons will be heard", self.options.id, o.adapter)
            self._ended = True
        with self._lock:
            adverts, self._inbox = list(self._inbox), deque()
        readings, at = [], (time.time(), time.monotonic())  # one interval, one time for all its beacons
        for beacon in self.aggregator.window(adverts):
            values = summary_values(beacon, o.tx_power, o.path_loss_exponent)
            battery = values.get("battery")
            if o.battery is not None and battery is not None:
                values["battery_level"] = Value(o.battery.level(battery.value), "%")
            device = beacon.raw_id if o.publish_raw_ids else pseudonym(self._salt, beacon.raw_id)
            readings.append(self.reading(values, device=device, at=at))
        self._log_counts()
        return readings

    @property
    def counts(self) -> dict[str, int]:
        """Skipped input so far: bad_frames, bad_lines (replay), ignored, unjoined_tlm, not_allowed, dropped."""
        counts = dict(self.aggregator.counts)
        counts["bad_lines"] = self._bad_lines_before + (self.scanner.bad_lines if self.scanner is not None else 0)
        counts["dropped"] = self.dropped
        return counts

    def _log_counts(self) -> None:
        # One warning per WARN_EVERY at most (an SD card must not fill with a noisy street's
        # garbage), with what was skipped since the last one; never names a beacon.
        now = {k: v for k, v in self.counts.items() if k in ("bad_frames", "bad_lines", "dropped")}
        new = {k: v - self._reported.get(k, 0) for k, v in now.items() if v > self._reported.get(k, 0)}
        if new and time.monotonic() - self._warned_at >= WARN_EVERY:
            log.warning("sensor %s: skipped %s", self.options.id,
                        ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in new.items()))
            self._warned_at, self._reported = time.monotonic(), now

    def close(self) -> None:
        scanner, self.scanner = self.scanner, None
        if scanner is not None:
            scanner.stop()
            self._bad_lines_before += scanner.bad_lines


__all__ = ["BleBeacon", "BleBeaconOptions"]
