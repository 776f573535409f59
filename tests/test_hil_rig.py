"""The one-command simulated rig (config/hil.yaml through hil/rig.py): every
real driver, against its simulator, gives good readings to the console."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_every_driver_of_the_hil_config_reports_through_the_rig(tmp_path):
    config = yaml.safe_load((ROOT / "config/hil.yaml").read_text())
    config["storage"]["path"] = str(tmp_path / "buffer.db")
    out = tmp_path / "console.jsonl"
    config["uplinks"][0]["path"] = str(out)
    for sensor in config["sensors"]:
        if "port" in sensor:
            sensor["port"] = str(tmp_path / "dev" / Path(sensor["port"]).name)
    (tmp_path / "hil.yaml").write_text(yaml.safe_dump(config))
    sensors = {s["id"] for s in config["sensors"]}
    proc = subprocess.Popen([sys.executable, "-m", "hil.rig", "-c", str(tmp_path / "hil.yaml"), "--every", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "rig.log", "w"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def good() -> set[str]:
            if not out.exists():
                return set()
            return {r["sensor"] for r in map(json.loads, out.read_text().splitlines()) if r["quality"] == "ok"}

        wait_for(lambda: good() >= sensors, 90, what=f"ok readings from all of {sorted(sensors)}")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "rig.log").read_text()[-3000:]
    readings = [json.loads(line) for line in out.read_text().splitlines()]
    river = [r for r in readings if r["sensor"] == "river-a02yyuw" and r["quality"] == "ok"]
    assert all("water_level" in r["values"] and "air_temperature" in r["values"] for r in river), \
        "temperature-corrected from the BME280"
    assert all(len(r["device"]) == 24 for r in readings if r["sensor"] == "beacons-1"), "pseudonyms only"
