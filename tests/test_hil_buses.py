"""`python -m hil.buses`: the real bme280, i2cxl and hcsr04 drivers as a `gateway run` process, their
seams filled with simulators driven by the physical models, to the console uplink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gateway_run_process_with_simulated_i2c_and_gpio(tmp_path):
    config = yaml.safe_load(open(os.path.join(ROOT, "config", "hil-gpio-i2c.yaml")))
    console = tmp_path / "console.jsonl"
    config["storage"]["path"] = str(tmp_path / "buffer.db")
    config["uplinks"][0]["path"] = str(console)
    for sensor in config["sensors"]:
        sensor["interval"] = "300ms"
        if "fast_interval" in sensor:
            sensor["fast_interval"] = "100ms"
    path = tmp_path / "hil.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hil.buses", "-c", str(path), "--time-scale", "60"],
                            stdout=log, stderr=log, cwd=ROOT)

    def readings():
        if not console.exists():
            return []
        return [json.loads(line) for line in console.read_text().splitlines() if line.strip()]

    def corrected(sensor):
        return [r for r in readings() if r["sensor"] == sensor and "air_temperature" in r["values"]]

    try:
        wait_for(lambda: corrected("river-i2c") and corrected("snow-gpio") or proc.poll() is not None, 30,
                 what="corrected readings from both distance sensors")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        log.close()
    assert rc == 0, (tmp_path / "gateway.log").read_text()
    env = [r for r in readings() if r["sensor"] == "air-1"]
    assert env and env[0]["kind"] == "environment" and env[0]["quality"] == "ok"
    river, snow = corrected("river-i2c")[-1], corrected("snow-gpio")[-1]
    assert river["values"]["water_level"]["value"] == pytest.approx(0.8, abs=0.05)  # the hydrograph's base flow
    assert 0.0 <= snow["values"]["snow_depth"]["value"] <= 2.0
    assert {"snowfall_1h", "snowfall_24h", "alert_level"} <= set(snow["values"])

