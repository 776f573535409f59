"""The one runner of every driver's testcases (drivers/<name>/testcases/<case>/), one format for all:

- case.yaml: `description`, `source` (the datasheet, manual or decoder, by name), `provenance` (verbatim |
  derived), `options` (the sensor's config keys), and for a LoRa modem `modem` (its last rssi/snr);
- the device's input, as it arrives at the driver's seam: input.bin (serial bytes), input.txt (modem lines),
  registers.txt (an I2C chip's register map), reads.hex (I2C answers), echo_us.txt (GPIO echo times),
  ad.hex / manufacturer_1177.hex / adverts.jsonl / distance.json (BLE advertising data);
- expected.json: `readings` (as SPEC §3 writes them, after the pipeline), or `raises` {error, match}; `counts`
  (the driver's skip counters); `decoded` (decoder-level results of a vector: frames, ids, a distance);
  `vectors` (the published vectors the case holds).

`run(case)` feeds the input through the real driver at its seam and returns what came out, so that
tests/test_driver_testcases.py can compare it with expected.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ROOT / "drivers"


@dataclass
class Case:
    folder: Path
    driver: str
    meta: dict
    expected: dict

    def input(self, name: str) -> Path:
        return self.folder / name


@dataclass
class Outcome:
    readings: list = field(default_factory=list)  # SPEC §3 JSON of each reading
    counts: dict = field(default_factory=dict)
    decoded: dict = field(default_factory=dict)


def folders() -> list[Path]:
    return sorted(p.parent for p in DRIVERS.glob("*/testcases/*/case.yaml"))


def params() -> list:
    return [pytest.param(f, id=f"{f.parts[-3]}/{f.name}") for f in folders()]


def load(folder: Path) -> Case:
    return Case(folder, folder.parts[-3], yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8")),
                json.loads((folder / "expected.json").read_text(encoding="utf-8")))


def run(case: Case, tmp_path: Path) -> Outcome:
    """Feed the case's input to the real driver at its seam. A driver error propagates (for `raises`)."""
    if case.driver in ("maxbotix", "a02yyuw", "sr50a"):
        return _serial_distance(case)
    if case.driver.startswith("lora_"):
        return _lora(case, tmp_path)
    if case.driver in ("bme280", "i2cxl", "hcsr04"):
        return _bus(case)
    if case.driver == "ble_beacon":
        return _ble(case)
    raise AssertionError(f"no feeder for driver {case.driver}: add one to tests/driver_cases.py")


def options(cls, case: Case, **base):
    from gateway.config import sensor_model  # the driver's keys and, for a distance sensor, the pipeline's
    return sensor_model(cls).model_validate({"id": "case", "driver": case.driver, "interval": "1s", **base,
                                             **case.meta.get("options", {})})


def _json(readings) -> list[dict]:
    return [r.as_json() for r in readings]


def _serial_distance(case: Case) -> Outcome:
    from gateway import registry
    cls = registry.load(case.driver)
    driver = cls(options(cls, case, port="/dev/null"))
    samples = driver.feed(case.input("input.bin").read_bytes())
    return Outcome(_json([driver.to_reading(samples)] if samples else []), {"bad_frames": driver.bad_frames})


def _bus(case: Case) -> Outcome:
    from gateway import registry
    from hil import gpio
    from hil.buses import FixedDevices
    from hil.i2c import Bme280Device, I2cxlDevice, SimBus
    from tests import hw_cases
    cls = registry.load(case.driver)
    reads = max(1, len(case.expected.get("readings", [])))
    if case.driver == "hcsr04":
        from gpiozero.pins.mock import MockFactory
        pins = MockFactory()
        text = case.input("echo_us.txt").read_text()
        gpio.hcsr04(pins, 23, 24, gpio.scripted([w if not w[0].isdigit() else float(w) for w in text.split()]))
        try:
            return Outcome(_json(hw_cases.run(cls, options(cls, case, trigger_pin=23, echo_pin=24), reads,
                                              FixedDevices(pins=pins))))
        finally:
            pins.reset()
    bus = SimBus()
    if case.driver == "i2cxl":
        answers = [bytes.fromhex(x) for x in case.input("reads.hex").read_text().splitlines() if x.strip()]
        bus.devices[0x70] = I2cxlDevice(answers=answers)
    else:
        regs, chip, data = _registers(case.input("registers.txt").read_text())
        from drivers.bme280 import parse_adc
        bus.devices[0x76] = Bme280Device(regs, adc=lambda: parse_adc(data), chip_id=chip)
    try:
        return Outcome(_json(hw_cases.run(cls, options(cls, case), reads, FixedDevices(bus))))
    finally:
        if "raises" in case.expected:
            assert bus.closed, "a refused chip must leave the bus closed"


def _registers(text: str) -> tuple[dict, int, bytes]:
    """registers.txt: `0xRR: hex bytes` lines; 0xD0 is the chip id, 0xF7 the next measurement's data."""
    regs, chip, data = {}, 0x60, b""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        addr, hexbytes = line.split(":")
        addr, raw = int(addr, 16), bytes.fromhex(hexbytes)
        if addr == 0xD0:
            chip = raw[0]
        elif addr == 0xF7:
            data = raw
        else:
            regs[addr] = raw
    return regs, chip, data


def _lora(case: Case, tmp_path: Path) -> Outcome:
    from tests.lora_support import DRIVERS as MODEMS, make_driver, read_readings, wait_for
    lines = case.input("input.txt").read_text(encoding="utf-8").splitlines()
    sim = MODEMS[case.driver][1](tmp_path / "modem").start()
    driver = make_driver(case.driver, tmp_path / "modem", **case.meta.get("options", {}))
    try:
        modem = case.meta.get("modem", {})
        sim.last_rssi, sim.last_snr = modem.get("rssi", -128), modem.get("snr", -128)
        driver.open()
        wait_for(lambda: sim.listening, what="the modem to listen")
        readings = []
        for line in lines:
            readings += _lora_line(case.driver, sim, driver, line)
        readings += read_readings(driver, len(case.expected.get("readings", [])) - len(readings))
        return Outcome(_json(readings), dict(driver.counts))
    finally:
        driver.close()
        sim.stop()


def _lora_line(name: str, sim, driver, line: str) -> list:
    from tests.lora_support import wait_for
    if name == "lora_e220":
        # Packets are told apart by the idle gap: let the driver take each one before the next.
        seen, taken = driver.counts["frames"] + driver.counts["garbage"], []
        sim.send(bytes.fromhex(line))
        for _ in range(25):
            if driver.counts["frames"] + driver.counts["garbage"] != seen:
                return taken
            taken += driver.read(0.2)
        raise AssertionError(f"driver never took frame {line}")
    raw = line.encode("latin-1").decode("unicode_escape").encode("latin-1")
    if raw.startswith(b"radio_"):
        # An RN2483 prints a receive line only while `radio rx 0` is in force.
        wait_for(lambda: sim.listening, what="radio rx 0")
    sim.inject(raw + b"\r\n")
    return driver.read(0.2) if raw.startswith(b"radio_") else []


def _ble(case: Case) -> Outcome:
    from drivers.ble_beacon.advert import from_json, parse_ad
    from drivers.ble_beacon.aggregate import EDDYSTONE_1M_LOSS, Aggregator, log_distance, summary_values
    from drivers.ble_beacon.frames import decode
    from gateway.sdk.pseudonym import pseudonym
    o = case.meta.get("options", {})
    if case.input("distance.json").exists():
        given = json.loads(case.input("distance.json").read_text())
        reference = given.get("reference_1m")
        decoded = {}
        if reference is None:
            reference = decoded["reference_1m"] = given["eddystone_0m"] - EDDYSTONE_1M_LOSS
        decoded["distance_m"] = round(log_distance(reference, given["rssi"], given["exponent"]), 3)
        return Outcome(decoded=decoded)
    if case.input("adverts.jsonl").exists():
        adverts = [from_json(x) for x in case.input("adverts.jsonl").read_text().splitlines() if x.strip()]
        aggregator = Aggregator()
        beacons = aggregator.window(adverts)
        readings = [{"device": pseudonym(o["salt"].encode(), b.raw_id), "values": {
            k: v.as_json() for k, v in summary_values(b, o["tx_power"], o["path_loss_exponent"]).items()}}
            for b in beacons]
        return Outcome(readings, dict(aggregator.counts), {"raw_ids": [b.raw_id for b in beacons]})
    if case.input("ad.hex").exists():
        manufacturer, service = parse_ad(bytes.fromhex(case.input("ad.hex").read_text().strip()))
    else:
        manufacturer, service = {0x0499: bytes.fromhex(case.input("manufacturer_1177.hex").read_text().strip())}, {}
    frames, errors = decode(manufacturer, service)
    assert errors == []
    decoded = {"frames": [{"type": type(f).__name__, **dataclasses.asdict(f)} for f in frames]}
    if "raw_id" in case.expected.get("decoded", {}):
        decoded["raw_id"] = frames[0].raw_id
    return Outcome(decoded=decoded)
