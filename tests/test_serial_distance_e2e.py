"""End to end: `gateway run` (a real subprocess) reads the maxbotix, a02yyuw
and sr50a drivers from their pty simulators into the console uplink; a
simulated USB unplug and replug is survived without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hil.distance_devices import A02yyuwDevice, MaxbotixDevice, Sr50aDevice

GATEWAY = Path(sys.executable).with_name("gateway")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def readings(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def rig(tmp_path):
    devices = {
        "river-mb": MaxbotixDevice(tmp_path / "maxbotix"),
        "river-a02": A02yyuwDevice(tmp_path / "a02yyuw"),
        "snow-sr50a": Sr50aDevice(tmp_path / "sr50a"),
    }
    for dev, distance in zip(devices.values(), (2.0, 2.5, 1.5)):
        dev.distance = distance
        dev.start()
    devices["river-a02"].inject("garbage", 3)
    devices["river-a02"].inject("bad_checksum", 2)
    config = {
        "gateway": {"id": "hil-test"},
        "storage": {"path": str(tmp_path / "buffer.db")},
        "uplinks": [{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")}],
        "sensors": [
            {"id": "river-mb", "driver": "maxbotix", "interval": "1s", "port": str(tmp_path / "maxbotix"),
             "samples": 3, "mount_height": 4.5},
            {"id": "river-a02", "driver": "a02yyuw", "interval": "1s", "port": str(tmp_path / "a02yyuw"),
             "samples": 3, "mount_height": 4.5},
            {"id": "snow-sr50a", "driver": "sr50a", "interval": "1s", "port": str(tmp_path / "sr50a"),
             "samples": 3, "mount_height": 2.0},
        ],
    }
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "gateway.log", "w")
    proc = subprocess.Popen([str(GATEWAY), "run", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc, devices, tmp_path / "out.jsonl", tmp_path / "gateway.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    for dev in devices.values():
        dev.stop()


def test_gateway_run_reads_each_serial_simulator_and_survives_unplug(rig):
    proc, devices, out, logfile = rig

    def by_sensor():
        seen = {}
        for r in readings(out):
            seen.setdefault(r["sensor"], []).append(r)
        return seen if set(seen) == set(devices) else None

    seen = wait_for(by_sensor, 30, "a reading from every serial sensor in the console file")
    mb, a02, sr = seen["river-mb"][0], seen["river-a02"][0], seen["snow-sr50a"][0]
    assert mb["kind"] == "river_level" and mb["quality"] == "ok"
    assert mb["values"]["distance"] == {"value": 2.0, "unit": "m"}
    assert mb["values"]["water_level"]["value"] == pytest.approx(2.5)
    assert a02["values"]["distance"]["value"] == pytest.approx(2.5) and a02["quality"] == "ok"
    assert sr["kind"] == "snow_depth" and sr["values"]["distance"]["value"] == pytest.approx(1.5)
    assert sr["values"]["snow_depth"]["value"] == pytest.approx(0.5)
    assert sr["values"]["echo_quality"]["value"] == 194

    # Unplug the MaxBotix's USB adapter: the gateway notices, keeps running, and resumes after replug.
    devices["river-mb"].unplug()
    wait_for(lambda: "river-mb (maxbotix): failing" in logfile.read_text(), 20, "the unplug to be noticed")
    assert proc.poll() is None
    devices["river-mb"].distance = 3.0  # so a resumed reading is told apart from the old ones
    devices["river-mb"].start()
    wait_for(lambda: any(r["sensor"] == "river-mb" and r["values"].get("distance", {}).get("value") == 3.0
                         for r in readings(out)), 30, "readings from the replugged MaxBotix")
    assert proc.poll() is None
    # The other sensors went on meanwhile.
    assert len([r for r in readings(out) if r["sensor"] == "snow-sr50a"]) > len(seen["snow-sr50a"])

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
