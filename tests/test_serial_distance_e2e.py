"""End to end: `gateway run` (a real subprocess) reads the maxbotix, a02yyuw
and sr50a drivers from their pty simulators into the console uplink; a
simulated USB unplug and replug is survived without a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.a02yyuw import A02yyuw
from drivers.maxbotix import Maxbotix
from drivers.sr50a import Sr50a
from hil.distance_devices import A02yyuwDevice, MaxbotixDevice, Sr50aDevice
from tests.helpers import GatewayProcess, wait_for, write_config


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
    common = {"interval": "1s", "samples": 3}
    config = write_config(tmp_path / "gateway.yaml", {
        "gateway": {"id": "hil-test", "shutdown_timeout": "5s"},
        "storage": {"path": str(tmp_path / "buffer.db")},
        "uplinks": [{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")}],
        "sensors": [
            {"id": "river-mb", "driver": "maxbotix", "port": str(tmp_path / "maxbotix"), "mount_height": 4.5, **common},
            {"id": "river-a02", "driver": "a02yyuw", "port": str(tmp_path / "a02yyuw"), "mount_height": 4.5, **common},
            {"id": "snow-sr50a", "driver": "sr50a", "port": str(tmp_path / "sr50a"), "mount_height": 2.0, **common},
        ],
    })
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    yield gateway, devices, tmp_path / "out.jsonl"
    if gateway.proc.poll() is None:
        gateway.kill()
    for dev in devices.values():
        dev.stop()


def test_gateway_run_reads_each_serial_simulator_and_survives_unplug(rig):
    gateway, devices, out = rig

    def by_sensor():
        seen: dict[str, list[dict]] = {}
        for r in readings(out):
            seen.setdefault(r["sensor"], []).append(r)
        return seen if set(seen) == set(devices) else None

    seen = wait_for(by_sensor, 30, what="a reading from every serial sensor in the console file")
    mb, a02, sr = seen["river-mb"][0], seen["river-a02"][0], seen["snow-sr50a"][0]
    assert mb["kind"] == "river_level" and mb["quality"] == "ok"
    assert mb["values"]["distance"] == {"value": 2.0, "unit": "m"}
    assert mb["values"]["water_level"]["value"] == pytest.approx(2.5)
    assert a02["quality"] == "ok" and a02["values"]["distance"]["value"] == pytest.approx(2.5)  # despite the garbage
    assert sr["kind"] == "snow_depth" and sr["values"]["distance"]["value"] == pytest.approx(1.5)
    assert sr["values"]["snow_depth"]["value"] == pytest.approx(0.5)
    assert sr["values"]["echo_quality"]["value"] == 194

    # Pull the MaxBotix's USB adapter: the gateway notices, keeps running, and resumes after replug.
    devices["river-mb"].unplug()
    wait_for(lambda: "river-mb (maxbotix): failing" in gateway.log_text(), 20, what="the unplug to be noticed")
    assert gateway.proc.poll() is None
    devices["river-mb"].distance = 3.0  # so a resumed reading is told apart from the old ones
    devices["river-mb"].start()
    wait_for(lambda: any(r["sensor"] == "river-mb" and r["values"].get("distance", {}).get("value") == 3.0
                         for r in readings(out)), 30, what="readings from the replugged MaxBotix")
    assert gateway.proc.poll() is None
    # The other sensors went on meanwhile.
    assert len([r for r in readings(out) if r["sensor"] == "snow-sr50a"]) > len(seen["snow-sr50a"])
    assert gateway.terminate(15) == 0


def test_run_serial_sims_serves_every_driver(tmp_path):
    """hil/run_serial_sims.py, as a config/hil.yaml would use it: links appear, drivers read them, SIGTERM stops it."""
    links = {name: tmp_path / "dev" / name for name in ("maxbotix", "a02yyuw", "sr50a")}
    proc = subprocess.Popen([sys.executable, "-m", "hil.run_serial_sims", "--sr50a-delay", "0.05", "--time-scale", "60",
                             *[arg for name, link in links.items() for arg in (f"--{name}", str(link))]],
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(link.is_symlink() for link in links.values()), 20, what="the simulators' links")
        for name, cls in (("maxbotix", Maxbotix), ("a02yyuw", A02yyuw), ("sr50a", Sr50a)):
            driver = cls(cls.Options(id=name, driver=name, interval="1s", port=str(links[name]), samples=3))
            driver.open()
            try:
                [r] = driver.read(5.0)
            finally:
                driver.close()
            assert r.quality == "ok" and 0.5 < r.value("distance") < 4.5, (name, r)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.count(" at ") == 3
    assert not any(link.exists() for link in links.values())  # unplugged on the way out
