"""Every drivers/lora_*/testcases/<case>/: the captured modem output (input.txt)
played by the modem's simulator into the real driver gives the expected
readings (expected.json) and skip counters."""

from __future__ import annotations

import json

import pytest

from tests.lora_support import DRIVERS, ROOT, as_expected, make_driver, read_readings, wait_for

CASES = sorted(ROOT.glob("drivers/lora_*/testcases/*/expected.json"))


def _unescape(line: str) -> bytes:
    return line.encode("latin-1").decode("unicode_escape").encode("latin-1")


def test_every_driver_has_testcases():
    assert {p.parents[2].name for p in CASES} == set(DRIVERS)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_testcase(path, tmp_path):
    name = path.parents[2].name
    doc = json.loads(path.read_text(encoding="utf-8"))
    lines = (path.parent / "input.txt").read_text(encoding="utf-8").splitlines()
    sim = DRIVERS[name][1](tmp_path / "modem").start()
    driver = make_driver(name, tmp_path / "modem", **doc.get("sensor", {}))
    try:
        modem = doc.get("modem", {})
        sim.last_rssi, sim.last_snr = modem.get("rssi", -128), modem.get("snr", -128)
        driver.open()
        wait_for(lambda: sim.listening, what="the modem to listen")
        readings = []
        for line in lines:
            if name == "lora_e220":
                # Packets are told apart by the idle gap: let the driver take each one before the next.
                seen = driver.counts["frames"] + driver.counts["garbage"]
                sim.send(bytes.fromhex(line))
                deadline_reads = 0
                while driver.counts["frames"] + driver.counts["garbage"] == seen:
                    readings.extend(driver.read(0.2))
                    deadline_reads += 1
                    assert deadline_reads < 25, f"driver never took frame {line}"
            else:
                raw = _unescape(line)
                if raw.startswith(b"radio_"):
                    # An RN2483 prints a receive line only while `radio rx 0` is in force.
                    wait_for(lambda: sim.listening, what="radio rx 0")
                sim.inject(raw + b"\r\n")
                if raw.startswith(b"radio_"):
                    readings.extend(driver.read(0.2))
        expected = doc["readings"]
        readings += read_readings(driver, len(expected) - len(readings))
        got = [as_expected(r) for r in readings]
        for g, e in zip(got, expected, strict=True):
            if "error" in e:
                assert e["error"] in g.get("error", ""), g
                g["error"] = e["error"]
            assert g == e
        assert {k: driver.counts[k] for k in doc.get("counts", {})} == doc.get("counts", {})
        assert all(r.kind == "lora_node" and r.sensor == "lora-1" for r in readings)
    finally:
        driver.close()
        sim.stop()


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_sample_config_is_valid(name):
    from gateway.config import load_config
    config = load_config(ROOT / "drivers" / name / "sample.yaml")
    (sensor,) = config.sensors
    assert sensor.driver == name and sensor.nodes
