"""SPEC §1: the `gateway` command's probe, drivers and option handling."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import cli
from gateway.sdk.reading import parse_time

REPO = Path(__file__).resolve().parent.parent
GATEWAY = Path(sys.executable).with_name("gateway")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
READING_KEYS = {"id", "gateway", "sensor", "kind", "device", "observed_at", "clock", "monotonic", "values", "quality",
                "error", "location"}


def test_probe_prints_readings_in_the_shape_of_spec_3():
    started = time.time()
    result = subprocess.run([str(GATEWAY), "probe", "-c", "config/demo.yaml", "river-1", "--count", "3"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    finished = time.time()
    assert result.returncode == 0, result.stderr
    readings = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(readings) == 3
    for r in readings:
        assert set(r) <= READING_KEYS
        assert (r["gateway"], r["sensor"], r["kind"]) == ("demo-gateway", "river-1", "river_level")
        match = re.fullmatch(r"demo-gateway\.river-1\.(\d{13})\.(\d{6})", r["id"])
        assert match, r["id"]
        assert STAMP.match(r["observed_at"]), r["observed_at"]
        observed = parse_time(r["observed_at"])
        assert int(match[1]) == round(observed * 1000)
        assert started - 0.001 <= observed <= finished
        assert r["quality"] in ("ok", "suspect")
        level, distance = r["values"]["water_level"], r["values"]["distance"]
        assert level["unit"] == distance["unit"] == "m"
        assert level["value"] + distance["value"] == pytest.approx(6.0, abs=0.002)  # mount_height in demo.yaml
        assert r["location"] == [34.3428, 134.0466]  # gateway.location: river-1 has none of its own
    assert len({r["id"] for r in readings}) == 3
    stamps = [r["observed_at"] for r in readings]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_probe_of_an_unknown_sensor_exits_1_naming_the_known_ones(capfd, monkeypatch):
    monkeypatch.chdir(REPO)
    code = cli.main(["probe", "-c", "config/demo.yaml", "river-9"])
    out, err = capfd.readouterr()
    assert code == 1
    assert out == ""
    assert "no sensor 'river-9' in config/demo.yaml (sensors: river-1, snow-1, beacons-1)" in err


def test_probe_of_an_invalid_config_exits_2(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: gw-1}\nsensors:\n  - {id: s-1, driver: sim_snow, interval: 5}\n")
    code = cli.main(["probe", "-c", str(bad), "s-1"])
    out, err = capfd.readouterr()
    assert code == 2
    assert out == ""
    assert f"{bad}:3: sensors[0].interval: a duration needs a unit: write 5s (or ms, m, h)" in err


def test_probe_count_must_be_positive(capfd):
    with pytest.raises(SystemExit) as exc:
        cli.main(["probe", "-c", "config/demo.yaml", "river-1", "--count", "0"])
    assert exc.value.code == 2
    assert "--count" in capfd.readouterr().err


# A device that fails (DeviceError) makes probe exit 1: tests/test_plugins.py
# covers it with plugin drivers whose device does not answer or fails mid-way.


def test_drivers_lists_built_in_drivers_with_keys(capfd):
    assert cli.main(["drivers"]) == 0
    out = capfd.readouterr().out
    blocks = {block.split()[0]: block.splitlines() for block in out.split("\n\n")}
    assert blocks["Keys"][0] == "Keys every sensor takes:"
    assert [line.split()[:3] for line in blocks["Keys"][1:4]] == [
        ["id", "name", "required"], ["driver", "text", "required"], ["interval", "duration", "required"]]
    river = {line.split()[0]: line for line in blocks["sim_river"][1:]}
    assert blocks["sim_river"][0].startswith("sim_river  simulated river")
    assert river["storm_at"].split() == ["storm_at", "duration", "default", "600s"]
    assert "simulated seconds per real second" in river["time_scale"]
    assert "id" not in river  # the common keys are listed once, above
    assert {"sim_snow", "sim_beacon"} <= set(blocks)


def test_config_defaults_to_the_system_path_without_gateway_config(tmp_path, capfd, monkeypatch):
    system = tmp_path / "etc" / "gateway.yaml"  # stands in for /etc/city-edge-gateway/gateway.yaml
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", system)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    assert cli.main(["check"]) == 2
    assert capfd.readouterr().err.startswith(f"{system}:0: (file): cannot read config: file {system} does not exist")
    system.parent.mkdir()
    system.write_text("gateway: {id: gw-1}\n")
    assert cli.main(["check"]) == 0
    assert f"{system}: valid" in capfd.readouterr().err


def test_common_options_work_before_and_after_the_command(tmp_path, capfd):
    file = tmp_path / "g.yaml"
    file.write_text("gateway: {id: gw-1}\n")
    assert cli.main(["-c", str(file), "--log-level", "warning", "check"]) == 0
    assert capfd.readouterr().err == ""  # the verdict is an info record, hidden at warning
    assert cli.main(["check", "-c", str(file), "--log-format", "json"]) == 0
    assert json.loads(capfd.readouterr().err)["level"] == "info"


def test_drivers_lists_uplink_and_service_keys_too(capfd):
    assert cli.main(["drivers"]) == 0
    out = capfd.readouterr().out
    uplinks = out[out.index("Uplinks"):]
    for needle in ("\nmqtt", "password_file   secret file", "\nngsi-ld", "token_file", "\nconsole", "service:",
                   "unhealthy_after", "web:", "listen"):
        assert needle in uplinks, needle
