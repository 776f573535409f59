"""Pipeline state outlives a real daemon's kill -9, its restart and a SIGHUP
reload (issue 9, defect 6): `gateway run` reads an SR50A snow sensor and a
MaxBotix river sensor from their pty simulators; after the restart the snow
`removal` call stands and the river stage keeps its hysteresis."""

from __future__ import annotations

import signal
import sqlite3

import pytest

from hil.distance_devices import MaxbotixDevice, Sr50aDevice
from tests.daemon_helpers import Daemon, base_config, console_lines, wait_for, write_config

LEVELS = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}
MOUNT = 4.5


@pytest.fixture
def rig(tmp_path):
    snow, river = Sr50aDevice(tmp_path / "sr50a"), MaxbotixDevice(tmp_path / "maxbotix")
    snow.distance, river.distance = 1.6, MOUNT - 1.0  # 0.4 m of snow; the river at 1.0 m
    snow.start()
    river.start()
    out = tmp_path / "out.jsonl"
    doc = base_config(tmp_path, uplinks=[{"name": "console", "type": "console", "path": str(out)}], sensors=[
        {"id": "snow-1", "driver": "sr50a", "port": str(tmp_path / "sr50a"), "interval": "500ms", "samples": 3,
         "mount_height": 2.0, "removal_threshold": 0.1},
        {"id": "river-1", "driver": "maxbotix", "port": str(tmp_path / "maxbotix"), "interval": "500ms",
         "samples": 3, "mount_height": MOUNT, "alert_levels": LEVELS},
    ])
    config = write_config(tmp_path / "gw.yaml", doc)
    daemons: list[Daemon] = []
    yield snow, river, config, doc, out, daemons
    for d in daemons:
        d.kill()
    snow.stop()
    river.stop()


def latest(out, sensor: str, after: int = 0) -> dict | None:
    lines = [r for r in console_lines(out)[after:] if r["sensor"] == sensor]
    return lines[-1] if lines else None


def stage_of(out, sensor: str, after: int = 0) -> str | None:
    r = latest(out, sensor, after)
    return r["values"].get("alert_level", {}).get("value") if r else None


def test_removal_and_river_stage_outlive_kill_restart_and_reload(rig):
    snow, river, config, doc, out, daemons = rig
    daemons.append(d := Daemon(config))
    wait_for(lambda: stage_of(out, "snow-1") == "normal" and stage_of(out, "river-1") == "normal", 60,
             what="first readings")
    snow.distance, river.distance = 1.45, MOUNT - 2.1  # 0.15 m of new snow; the river up to caution
    wait_for(lambda: stage_of(out, "snow-1") == "removal" and stage_of(out, "river-1") == "caution", 60,
             what="the removal call and the caution stage")
    d.kill()  # kill -9: only what was committed counts, and the state rode in the readings' commits
    river.distance = MOUNT - 1.97  # within the 0.05 m hysteresis below caution

    with sqlite3.connect(config.parent / "buffer.db") as db:  # a sensor removed while the daemon was down
        db.execute("INSERT INTO memo VALUES ('pipeline:gone', '{}')")
    seen = len(console_lines(out))
    daemons.append(d := Daemon(config))
    first_snow = wait_for(lambda: latest(out, "snow-1", seen), 60, what="a snow reading after the restart")
    first_river = wait_for(lambda: (r := latest(out, "river-1", seen)) and
                           r["values"]["water_level"]["value"] == pytest.approx(1.97) and r, 60,
                           what="a river reading at 1.97 m after the restart")
    assert first_snow["values"]["alert_level"]["value"] == "removal"  # not a silent drop to normal
    assert first_snow["values"]["snowfall_24h"]["value"] == pytest.approx(0.15)
    assert first_river["values"]["alert_level"]["value"] == "caution"  # the hysteresis still holds

    # A reload that changes only driver keys keeps the state (the sensors restart with it).
    for s in doc["sensors"]:
        s["samples"] = 2
    write_config(config, doc)
    seen = len(console_lines(out))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.logs(), 30, what="the reload")
    seen = len(console_lines(out))
    wait_for(lambda: latest(out, "snow-1", seen) and latest(out, "river-1", seen), 60, what="readings after reload")
    assert stage_of(out, "snow-1", seen) == "removal"
    assert stage_of(out, "river-1", seen) == "caution"
    assert d.stop() == 0
    with sqlite3.connect(config.parent / "buffer.db") as db:
        keys = {k for (k,) in db.execute("SELECT key FROM memo WHERE key LIKE 'pipeline:%'")}
    assert keys == {"pipeline:snow-1", "pipeline:river-1"}  # the gone sensor's state was dropped at start
