"""Simulated BLE beacons as a replay file for `adapter: replay:FILE`.

The crowd (hil.models.BeaconCrowd: arrivals, departures, RSSI noise around the
log-distance model) decides who is heard and how loud; each beacon sends the
real advertisement bytes of its kind, encoded here from the specifications:
iBeacon, Eddystone UID with interleaved TLM, RuuviTag RAWv2. A phone's Apple
continuity message and, with `bad_every`, a cut-short Ruuvi frame are mixed
in, as a real street has them.

    python -m hil.ble_replay --seed 3 --duration 30 --out hil/ble/sample.jsonl
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import sys
import uuid as uuidlib

from hil.models import BeaconCrowd

APPLE, RUUVI = 0x004C, 0x0499
EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"


def ibeacon(uuid: str, major: int, minor: int, power_1m: int) -> bytes:
    return bytes([0x02, 0x15]) + uuidlib.UUID(uuid).bytes + struct.pack(">HHb", major, minor, power_1m)


def eddystone_uid(power_0m: int, namespace: bytes, instance: bytes) -> bytes:
    return struct.pack(">Bb", 0x00, power_0m) + namespace + instance + b"\x00\x00"


def eddystone_tlm(battery_mv: int, temperature: float, adv_count: int, uptime_s: float) -> bytes:
    # TEMP is signed 8.8 fixed point; SEC_CNT counts tenths of a second.
    return struct.pack(">BBHhII", 0x20, 0x00, battery_mv, round(temperature * 256), adv_count, round(uptime_s * 10))


def ruuvi_v5(temperature: float, humidity: float, pressure_pa: int, acc_mg: tuple[int, int, int],
             battery_v: float, tx_dbm: int, movement: int, sequence: int, mac: str) -> bytes:
    power = (round(battery_v * 1000) - 1600) << 5 | (tx_dbm + 40) // 2
    return struct.pack(">BhHHhhhHBH", 5, round(temperature / 0.005), round(humidity / 0.0025), pressure_pa - 50_000,
                       *acc_mg, power, movement, sequence) + bytes.fromhex(mac.replace(":", ""))


def _line(t: float, address: str, rssi: int, manufacturer: dict[int, bytes] | None = None,
          service: dict[str, bytes] | None = None) -> dict:
    return {"t": round(t, 3), "address": address, "rssi": rssi,
            "manufacturer_data": {str(k): v.hex() for k, v in (manufacturer or {}).items()},
            "service_data": {k: v.hex() for k, v in (service or {}).items()}}


class BeaconStreet:
    """A BeaconCrowd whose members are real beacon kinds, in turn iBeacon,
    Eddystone UID+TLM and RuuviTag, each on its own random static address."""

    KINDS = ("ibeacon", "eddystone", "ruuvi")

    def __init__(self, seed: int = 0, population: int = 6, tick: float = 1.0, bad_every: int = 0):
        self.crowd = BeaconCrowd(seed=seed, population=population, present=0.8)
        self.rng = random.Random(seed + 1)
        self.tick, self.bad_every = tick, bad_every
        self.members = []
        for i, b in enumerate(self.crowd.beacons):
            address = ":".join(f"{x:02X}" for x in [0xC0 | self.rng.getrandbits(6)] + list(self.rng.randbytes(5)))
            _, uuid, major, minor = b["raw"].split(":")
            self.members.append({"kind": self.KINDS[i % 3], "address": address, "uuid": str(uuidlib.UUID(uuid)),
                                 "major": int(major), "minor": int(minor), "sent": 0, "battery": b["battery"]})
        self.phone = ":".join(f"{x:02X}" for x in [0x40 | self.rng.getrandbits(6)] + list(self.rng.randbytes(5)))

    def frames(self, m: dict, t: float) -> list[tuple[dict[int, bytes], dict[str, bytes]]]:
        """The advertisement(s) member m sends at t: (manufacturer data, service data)."""
        m["sent"] += 1
        temp = 20.0 + 2.0 * math.sin(2 * math.pi * t / 600)
        if m["kind"] == "ibeacon":
            return [({APPLE: ibeacon(m["uuid"], m["major"], m["minor"], -59)}, {})]
        if m["kind"] == "eddystone":
            raw = uuidlib.UUID(m["uuid"]).bytes
            if m["sent"] % 4 == 0:  # every fourth advertisement is telemetry, as beacons interleave them
                tlm = eddystone_tlm(round(m["battery"] * 1000), round(temp, 2), m["sent"], 3600 + t)
                return [({}, {EDDYSTONE: tlm})]
            return [({}, {EDDYSTONE: eddystone_uid(-59 + 41, raw[:10], raw[10:])})]
        payload = ruuvi_v5(round(temp, 2), 45.0, 100_800, (4, -4, 1000), m["battery"], 4, m["sent"] % 255,
                           m["sent"] % 65535, m["address"])
        return [({RUUVI: payload}, {})]

    def lines(self, duration: float) -> list[dict]:
        out = []
        ticks = int(duration / self.tick)
        for n in range(ticks):
            start = n * self.tick
            heard = {b["raw"]: b["rssi"] for b in self.crowd.tick()}
            for b, m in zip(self.crowd.beacons, self.members):
                for rssi in heard.get(b["raw"], []):
                    t = start + self.rng.uniform(0, self.tick * 0.999)
                    for manufacturer, service in self.frames(m, t):
                        out.append(_line(t, m["address"], max(-127, min(20, rssi)), manufacturer, service))
            # A passing phone: Apple continuity data, not a beacon.
            out.append(_line(start + self.rng.uniform(0, self.tick * 0.999), self.phone, -80,
                             {APPLE: bytes.fromhex("1005031c0e4a2b")}))
            if self.bad_every and n % self.bad_every == self.bad_every - 1:
                m = self.members[2 % len(self.members)]
                out.append(_line(start + self.tick * 0.5, m["address"], -70, {RUUVI: bytes.fromhex("0512fc5394c3")}))
        out.sort(key=lambda line: line["t"])
        return out


def main(argv: list[str] | None = None) -> int:
    import json
    p = argparse.ArgumentParser(description="write a BLE advertisement replay file from simulated beacons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--population", type=int, default=6)
    p.add_argument("--duration", type=float, default=30.0, help="seconds")
    p.add_argument("--tick", type=float, default=1.0, help="seconds per crowd step")
    p.add_argument("--bad-every", type=int, default=5, help="a cut-short frame every N ticks (0: none)")
    p.add_argument("--out", default="-")
    args = p.parse_args(argv)
    lines = BeaconStreet(args.seed, args.population, args.tick, args.bad_every).lines(args.duration)
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
