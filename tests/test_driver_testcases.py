"""Every driver's testcases, through the one runner (tests/driver_cases.py): the captured device input fed at
the driver's seam gives the expected readings, counters or error. Also: every case has the one format, every
driver has cases, and every published vector of our devices is held by a case."""

from __future__ import annotations

import importlib
import json
import tomllib

import pytest

from tests import driver_cases
from tests.driver_cases import ROOT

INPUTS = {"input.bin", "input.txt", "registers.txt", "reads.hex", "echo_us.txt", "ad.hex", "manufacturer_1177.hex",
          "adverts.jsonl", "distance.json"}
# The published vectors (datasheets, manuals and public decoders), as collected for this project.
VECTORS = json.loads((ROOT / "tests" / "data" / "hw-vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("folder", driver_cases.params())
def test_testcase(folder, tmp_path):
    case = driver_cases.load(folder)
    want = case.expected
    if "raises" in want:
        module = importlib.import_module(f"drivers.{case.driver}")
        with pytest.raises(getattr(module, want["raises"]["error"]), match=want["raises"]["match"]):
            driver_cases.run(case, tmp_path)
        return
    got = driver_cases.run(case, tmp_path)
    assert len(got.readings) == len(want.get("readings", [])), got.readings
    for g, e in zip(got.readings, want.get("readings", [])):
        assert list(g["values"]) == list(e["values"]), (g, e)
        for name, value in e["values"].items():
            assert g["values"][name].get("unit") == value.get("unit"), name
            assert g["values"][name]["value"] == pytest.approx(value["value"], abs=1e-4), name
        for key in ("quality", "device"):
            if key in e:
                assert g.get(key) == e[key], key
        if "error" in e or "error" in g:
            assert e.get("error") and e["error"] in g.get("error", ""), (g, e)
    assert {k: got.counts.get(k) for k in want.get("counts", {})} == want.get("counts", {})
    for key, value in want.get("decoded", {}).items():
        assert got.decoded[key] == (pytest.approx(value, abs=5e-4) if isinstance(value, float) else value), key


@pytest.mark.parametrize("folder", driver_cases.params())
def test_every_case_has_the_one_format(folder):
    case = driver_cases.load(folder)
    assert set(case.meta) <= {"description", "source", "provenance", "options", "modem"}
    assert case.meta["description"] and case.meta["source"] and case.meta["provenance"]
    assert isinstance(case.meta.get("options", {}), dict)
    inputs = {p.name for p in folder.iterdir()} - {"case.yaml", "expected.json"}
    assert len(inputs) == 1 and inputs <= INPUTS, inputs
    assert set(case.expected) <= {"readings", "raises", "counts", "decoded", "vectors"}
    assert ("raises" in case.expected) != ("readings" in case.expected or "decoded" in case.expected)


def test_every_built_in_driver_has_testcases():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    drivers = {v.split(":")[0].split(".")[1] for v in project["entry-points"]["city_edge_gateway.drivers"].values()}
    with_cases = {f.parts[-3] for f in driver_cases.folders()}
    assert drivers <= with_cases, drivers - with_cases


def _held_vectors() -> list[dict]:
    return [v for f in driver_cases.folders() for v in driver_cases.load(f).expected.get("vectors", [])]


@pytest.mark.parametrize("family, prefixes, minimum", [
    ("serial distance", ("MaxBotix HRXL", "MaxBotix HRUSB", "DFRobot", "JSN-SR04T (v2/v3) UART", "Campbell"), 14),
    ("I2C and GPIO", ("HC-SR04", "MaxBotix I2CXL", "Bosch BME280"), 10),
    ("BLE", ("Apple iBeacon", "Eddystone", "RuuviTag", "BLE RSSI"), 11),
])
def test_every_published_vector_of_our_devices_is_a_testcase(family, prefixes, minimum):
    # The pipeline's vectors (temperature correction, snow depth from distance) are tested in test_pipeline.py.
    skip = ("temperature correction", "snow depth = distance-to-ground")
    wanted = [v for v in VECTORS if v["sensor"].startswith(prefixes) and not v["format"].startswith(skip)]
    held = {(v["sensor"], v["source"], v["provenance"]) for v in _held_vectors()}
    missing = [v["input_hex_or_line"] for v in wanted if (v["sensor"], v["source"], v["provenance"]) not in held]
    assert not missing, f"{family}: vectors not held by any testcase: {missing}"
    assert len(wanted) >= minimum
