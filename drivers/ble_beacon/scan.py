"""On-site tools behind `gateway scan ble`: record a replay file from a real
adapter, and list the beacons nearby, decoded. Both show raw ids on the
technician's own terminal or disk (needed to write `allow`); nothing is sent.
A replay file holds raw ids and MACs: treat it as personal data.

    record(adapter, out, duration) -> int
    nearby(adapter, duration, tx_power=-59, path_loss_exponent=2.0, salt=None) -> list[NearbyBeacon]
    format_nearby(beacons) -> str
    main(seconds=10.0, adapter="hci0", record_to=None) -> int   (the command: table or recording, exit code)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.sdk.driver import DeviceError
from drivers.ble_beacon.advert import Advertisement
from drivers.ble_beacon.aggregate import Aggregator, summary_values
from drivers.ble_beacon.scanners import open_scanner
from gateway.sdk.pseudonym import pseudonym
from gateway.sdk.reading import Value


def _listen(adapter: str, duration: float, on_advert) -> None:
    scanner = open_scanner(adapter)
    scanner.start(on_advert)
    try:
        time.sleep(duration)
    finally:
        scanner.stop()


def record(adapter: str, out: TextIO, duration: float) -> int:
    """Scan `adapter` (hci0, or replay:FILE) for `duration` seconds and write
    every advertisement heard as a replay line to `out`, t from the start.
    Returns the number of lines written."""
    lock = threading.Lock()
    written = 0

    def write(adv: Advertisement) -> None:
        nonlocal written
        with lock:
            out.write(adv.to_json() + "\n")
            written += 1

    _listen(adapter, duration, write)
    out.flush()
    return written


@dataclass
class NearbyBeacon:
    raw_id: str
    frames: list[str]  # frame kinds heard: IBeacon, EddystoneUID, EddystoneTLM, RuuviV5 ...
    addresses: list[str]
    values: dict[str, Value]  # rssi, count, tx_power, distance, battery ...
    pseudonym: str | None  # what the gateway would publish, when a salt is given


def nearby(adapter: str, duration: float, tx_power: int = -59, path_loss_exponent: float = 2.0,
           salt: bytes | None = None) -> list[NearbyBeacon]:
    """Listen for `duration` seconds and return the beacons heard, decoded,
    loudest first."""
    heard: list[Advertisement] = []
    lock = threading.Lock()

    def keep(adv: Advertisement) -> None:
        with lock:
            heard.append(adv)

    _listen(adapter, duration, keep)
    with lock:
        adverts = list(heard)
    out = [NearbyBeacon(b.raw_id, sorted(b.frames), sorted(b.addresses),
                        summary_values(b, tx_power, path_loss_exponent),
                        None if salt is None else pseudonym(salt, b.raw_id))
           for b in Aggregator(with_url=True).window(adverts)]
    out.sort(key=lambda b: -b.values["rssi"].value)
    return out


def format_nearby(beacons: list[NearbyBeacon]) -> str:
    """A table for the terminal: one beacon a line."""
    if not beacons:
        return "no beacons heard\n"
    lines = [f"{'rssi':>6} {'count':>5} {'dist m':>7}  {'frames':<28} raw id / values"]
    for b in beacons:
        v = b.values
        extra = ", ".join(f"{k}={x.value}{x.unit or ''}" for k, x in v.items()
                          if k not in ("rssi", "count", "tx_power", "distance"))
        lines.append(f"{v['rssi'].value:>6} {v['count'].value:>5} {v['distance'].value:>7}  "
                     f"{','.join(b.frames):<28} {b.raw_id}" + (f"  [{extra}]" if extra else "")
                     + (f"  -> {b.pseudonym}" if b.pseudonym else ""))
    return "\n".join(lines) + "\n"


def main(seconds: float = 10.0, adapter: str = "hci0", record_to: str | Path | None = None) -> int:
    """`gateway scan ble`: listen `seconds` on `adapter` and print the beacons
    heard (stdout), or with `record_to` write a replay file. 0 ok, 1 when the
    adapter cannot scan (the reason on stderr)."""
    try:
        if record_to is not None:
            # Raw ids and MACs are personal data: the file is the owner's alone (0600),
            # also when it replaces an older recording with wider permissions.
            fd = os.open(record_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                n = record(adapter, out, seconds)
            print(f"recorded {n} advertisements in {seconds:g}s to {record_to} "
                  "(raw ids and MACs: handle as personal data)", file=sys.stderr)
            return 0
        sys.stdout.write(format_nearby(nearby(adapter, seconds)))
        return 0
    except (DeviceError, OSError) as exc:
        print(f"gateway scan ble: {exc}", file=sys.stderr)
        return 1
