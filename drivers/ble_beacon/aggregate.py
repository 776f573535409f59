"""From the advertisements heard in one interval to one summary per beacon:
identity (raw id), RSSI samples, the 1 m reference power and the measured
values of the last frame that carried them. Raw ids stay in here and in the
driver; what is published is decided in the driver (pseudonym or raw id).

Identities (issue 3): `ibeacon:<uuid>:<major>:<minor>`, `eddystone:<namespace>:<instance>`,
or `mac:<MAC>` for the others (RuuviTag: the MAC in its payload, Eddystone-URL:
the sender's address). Eddystone-TLM carries no id: it is joined to the
UID/URL beacon that was last heard from the same address.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid as uuidlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from drivers.ble_beacon.advert import Advertisement, normalise_mac
from drivers.ble_beacon.frames import EddystoneTLM, EddystoneUID, EddystoneURL, Frame, IBeacon, RuuviV5, decode
from gateway.sdk.reading import Value

G = 9.80665  # m/s² per g
EDDYSTONE_1M_LOSS = 41  # dB between Eddystone's 0 m power and the RSSI at 1 m (eddystone-uid/README.md)
_EDDYSTONE_ID = re.compile(r"^eddystone:([0-9a-f]{20}):([0-9a-f]{12})$")
_IBEACON_ID = re.compile(r"^ibeacon:([0-9a-f-]{32,36}):(\d{1,5}):(\d{1,5})$")


def canonical_id(text: str) -> str:
    """An `allow` entry in the form raw ids take: a bare MAC becomes `mac:<MAC>`."""
    entry = text.strip()
    low = entry.lower()
    if low.startswith("mac:"):
        return "mac:" + normalise_mac(entry[4:])
    if m := _IBEACON_ID.match(low):
        try:
            uuid = str(uuidlib.UUID(m.group(1)))
        except ValueError:
            raise ValueError(f"bad iBeacon UUID in {text!r}") from None
        major, minor = int(m.group(2)), int(m.group(3))
        if major > 0xFFFF or minor > 0xFFFF:
            raise ValueError(f"iBeacon major and minor are 0..65535 in {text!r}")
        return f"ibeacon:{uuid}:{major}:{minor}"
    if _EDDYSTONE_ID.match(low):
        return low
    try:
        return "mac:" + normalise_mac(entry)
    except ValueError:
        raise ValueError(f"{text!r} is not a beacon id: write ibeacon:<uuid>:<major>:<minor>, "
                         "eddystone:<namespace 20 hex>:<instance 12 hex>, mac:<MAC> or a MAC") from None


def log_distance(reference_1m: float, rssi: float, exponent: float) -> float:
    """Log-distance path loss: RSSI = P1m − 10·n·log10(d), solved for d in m."""
    return 10 ** ((reference_1m - rssi) / (10 * exponent))


@dataclass
class Beacon:
    """One beacon's interval: what the driver turns into one reading."""

    raw_id: str
    rssi: list[int] = field(default_factory=list)
    reference_1m: int | None = None  # calibrated RSSI at 1 m from the frame, dBm
    values: dict[str, Value] = field(default_factory=dict)
    frames: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)


def frame_values(frame: Frame, with_url: bool) -> dict[str, Value]:
    """What a frame measures, in the units of SPEC §3."""
    if isinstance(frame, EddystoneTLM):
        out = {}
        if frame.battery_mv is not None:
            out["battery"] = Value(frame.battery_mv / 1000, "V")
        if frame.temperature is not None:
            out["temperature"] = Value(round(frame.temperature, 2), "°C")
        out["uptime"] = Value(frame.uptime_s, "s")
        return out
    if isinstance(frame, RuuviV5):
        fields = {
            "temperature": (frame.temperature, "°C"),
            "relative_humidity": (frame.humidity, "%"),
            "air_pressure": (None if frame.pressure is None else frame.pressure / 100, "hPa"),
            "battery": (frame.battery, "V"),
            "acceleration_x": (None if frame.acc_x is None else round(frame.acc_x * G, 3), "m/s²"),
            "acceleration_y": (None if frame.acc_y is None else round(frame.acc_y * G, 3), "m/s²"),
            "acceleration_z": (None if frame.acc_z is None else round(frame.acc_z * G, 3), "m/s²"),
            "movement_counter": (frame.movement_counter, None),
        }
        return {k: Value(v, unit) for k, (v, unit) in fields.items() if v is not None}
    if isinstance(frame, EddystoneURL) and with_url:
        return {"url": Value(frame.url)}
    return {}


class Aggregator:
    """Groups one interval's advertisements by beacon. Keeps, across
    intervals, only which Eddystone id each address last sent (for TLM)."""

    MEMORY_S = 900.0  # forget an address's Eddystone id after 15 min unheard
    MEMORY_MAX = 4096  # addresses remembered at most (a crowded street must not grow memory)

    def __init__(self, allow: frozenset[str] | None = None, with_url: bool = False):
        self.allow = allow
        self.with_url = with_url
        self.eddystone_of: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.counts: Counter[str] = Counter()  # bad_frames, ignored, unjoined_tlm, not_allowed

    def allowed(self, b: Beacon) -> bool:
        """`allow` names the beacon's raw id or the address it sends from."""
        return (self.allow is None or b.raw_id in self.allow
                or any(f"mac:{address}" in self.allow for address in b.addresses))

    def _remember(self, address: str, raw_id: str, t: float) -> None:
        self.eddystone_of[address] = (raw_id, t)
        self.eddystone_of.move_to_end(address)
        while len(self.eddystone_of) > self.MEMORY_MAX:
            self.eddystone_of.popitem(last=False)

    def _eddystone_id(self, address: str, t: float) -> str | None:
        known = self.eddystone_of.get(address)
        if known is None or t - known[1] > self.MEMORY_S:
            return None
        return known[0]

    def window(self, adverts: list[Advertisement], now: float | None = None) -> list[Beacon]:
        """The beacons heard in `adverts` (one interval). `now` (monotonic s)
        ages the Eddystone ids remembered from earlier intervals."""
        now = time.monotonic() if now is None else now
        beacons: dict[str, Beacon] = {}
        telemetry: list[tuple[Advertisement, EddystoneTLM]] = []

        def add(raw_id: str, adv: Advertisement, frame: Frame | None) -> None:
            b = beacons.setdefault(raw_id, Beacon(raw_id))
            b.rssi.append(adv.rssi)
            b.addresses.add(adv.address)
            if frame is None:
                return
            b.frames.add(type(frame).__name__)
            if isinstance(frame, IBeacon):
                b.reference_1m = frame.tx_power
            elif isinstance(frame, (EddystoneUID, EddystoneURL)):
                b.reference_1m = frame.tx_power_0m - EDDYSTONE_1M_LOSS
            b.values.update(frame_values(frame, self.with_url))

        for adv in adverts:
            frames, errors = decode(adv.manufacturer_data, adv.service_data)
            self.counts["bad_frames"] += len(errors)
            for frame in frames:
                if isinstance(frame, EddystoneTLM):
                    telemetry.append((adv, frame))
                    continue
                if isinstance(frame, (IBeacon, EddystoneUID)):
                    raw_id = frame.raw_id
                elif isinstance(frame, RuuviV5):
                    raw_id = f"mac:{frame.mac or adv.address}"
                else:
                    raw_id = f"mac:{adv.address}"
                if isinstance(frame, (EddystoneUID, EddystoneURL)):
                    self._remember(adv.address, raw_id, now)
                add(raw_id, adv, frame)
            if not frames and not errors:
                # No beacon frame: reported only when its MAC is explicitly allowed.
                if self.allow is not None and f"mac:{adv.address}" in self.allow:
                    add(f"mac:{adv.address}", adv, None)
                else:
                    self.counts["ignored"] += 1

        # TLM last, so a UID heard later in the same interval still claims it.
        for adv, tlm in telemetry:
            raw_id = self._eddystone_id(adv.address, now)
            if raw_id is None:
                self.counts["unjoined_tlm"] += 1
                continue
            add(raw_id, adv, tlm)

        out = []
        for b in beacons.values():
            if self.allowed(b):
                out.append(b)
            else:
                self.counts["not_allowed"] += 1
        return out


def summary_values(b: Beacon, default_1m: int, exponent: float) -> dict[str, Value]:
    """rssi (median), count, tx_power (the 1 m reference used), distance, then the frame's values."""
    median = statistics.median(b.rssi)
    reference = b.reference_1m if b.reference_1m is not None else default_1m
    values = {
        "rssi": Value(float(median), "dBm"),
        "count": Value(len(b.rssi)),
        "tx_power": Value(reference, "dBm"),
        "distance": Value(round(log_distance(reference, median, exponent), 2), "m"),
    }
    values.update(b.values)
    return values
