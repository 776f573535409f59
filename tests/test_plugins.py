"""Issue 2 §1: a separate package adds a driver through the entry-point group
`city_edge_gateway.drivers`, without touching this repository. The commands run
as subprocesses, so each sees the installed plugin (the registry caches its
entry-point scan per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_package import installed_plugin

GATEWAY = Path(sys.executable).with_name("gateway")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    with installed_plugin(tmp_path_factory.mktemp("plugin")):
        yield


def gateway(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GATEWAY), *args], capture_output=True, text=True, timeout=60)


def config(tmp_path: Path, sensor: str) -> Path:
    file = tmp_path / "gateway.yaml"
    file.write_text(f"gateway: {{id: plugin-gw}}\nstorage: {{path: {tmp_path}/buffer.db}}\nsensors:\n{sensor}")
    return file


def test_drivers_lists_plugin_with_its_keys_and_a_broken_one_as_broken(plugin):
    result = gateway("drivers")
    assert result.returncode == 0, result.stderr
    blocks = {block.split()[0]: block for block in result.stdout.split("\n\n")}
    counter = blocks["demo_counter"]
    assert counter.splitlines()[0] == "demo_counter  counts up by step on every read (plugin demo)"
    keys = {line.split()[0]: line for line in counter.splitlines()[1:]}
    assert set(keys) == {"start", "step"}
    assert keys["step"].split() == ["step", "number", ">", "0", "default", "1.0", "added", "on", "every", "read"]
    assert "default 0" in keys["start"] and "the first count" in keys["start"]
    assert blocks["demo_broken"].startswith("demo_broken  BROKEN, cannot be used (ceg_demo_plugin_gone:Driver): "
                                            "ModuleNotFoundError")
    # The broken plugin takes nothing else down: built-ins and the other plugins are listed in full.
    assert {"sim_river", "sim_snow", "sim_beacon", "demo_unplugged", "demo_flaky"} <= set(blocks)
    assert "storm_at" in blocks["sim_river"]


def test_config_using_the_plugin_passes_check(plugin, tmp_path):
    file = config(tmp_path, "  - {id: count-1, driver: demo_counter, interval: 10ms, step: 2.5}\n")
    result = gateway("check", "-c", str(file))
    assert result.returncode == 0, result.stderr
    assert "valid (1 sensors, 0 uplinks)" in result.stderr


def test_plugin_options_are_validated_like_built_in_ones(plugin, tmp_path):
    file = config(tmp_path, "  - id: count-1\n    driver: demo_counter\n    interval: 1s\n    stpe: 2\n"
                            "  - id: count-2\n    driver: demo_counter\n    interval: 1s\n    step: 0\n")
    result = gateway("check", "-c", str(file))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        f"{file}:7: sensors[0].stpe: unknown key; did you mean step?",
        f"{file}:11: sensors[1].step: must be greater than 0 (got 0)",
    ]


def test_config_using_a_broken_plugin_gets_a_clear_error(plugin, tmp_path):
    file = config(tmp_path, "  - id: broken-1\n    driver: demo_broken\n    interval: 1s\n")
    result = gateway("check", "-c", str(file))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{file}:5: sensors[0].driver: driver 'demo_broken' is installed but broken (ceg_demo_plugin_gone:Driver: "
        "ModuleNotFoundError: No module named 'ceg_demo_plugin_gone'); reinstall or remove its package")


def test_probe_reads_the_plugin_driver(plugin, tmp_path):
    file = config(tmp_path, "  - {id: count-1, driver: demo_counter, interval: 10ms, start: 5, step: 2.5}\n")
    result = gateway("probe", "-c", str(file), "count-1", "--count", "3")
    assert result.returncode == 0, result.stderr
    readings = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["values"]["count"] for r in readings] == [{"value": 5.0, "unit": "m"}, {"value": 7.5, "unit": "m"},
                                                         {"value": 10.0, "unit": "m"}]
    assert {(r["gateway"], r["sensor"], r["kind"], r["quality"]) for r in readings} == {
        ("plugin-gw", "count-1", "counter", "ok")}


def test_probe_of_a_device_that_does_not_answer_exits_1(plugin, tmp_path):
    file = config(tmp_path, "  - {id: tty-1, driver: demo_unplugged, interval: 10ms}\n")
    result = gateway("probe", "-c", str(file), "tty-1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "sensor tty-1 (demo_unplugged): DeviceError: no answer on /dev/ttyDEMO0" in result.stderr


def test_probe_stops_at_the_first_device_error_with_exit_1(plugin, tmp_path):
    file = config(tmp_path, "  - {id: flaky-1, driver: demo_flaky, interval: 10ms}\n")
    result = gateway("probe", "-c", str(file), "flaky-1", "--count", "3")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1  # the one good reading, then the error
    assert "sensor flaky-1 (demo_flaky): DeviceError: checksum mismatch in frame" in result.stderr


def test_a_plugin_without_read_is_refused_at_load_with_its_name(plugin, tmp_path):
    file = config(tmp_path, "  - id: noread-1\n    driver: demo_noread\n    interval: 1s\n")
    result = gateway("check", "-c", str(file))
    assert result.returncode == 2
    line = result.stderr.splitlines()[0]
    assert line.startswith(f"{file}:5: sensors[0].driver: ")
    assert "demo_noread" in line and "does not implement read()" in line


def test_a_reading_the_buffer_cannot_take_becomes_an_error_reading_and_the_sensor_reads_on(plugin, tmp_path):
    """Issue 9, defect 7: the sink runs inside the sensor's error handling."""
    from tests.daemon_helpers import Daemon, base_config, console_lines, status_json, wait_for, write_config

    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[{"id": "raw-1", "driver": "demo_raw", "interval": "50ms"}],
        uplinks=[{"name": "console", "type": "console", "path": str(out)}]))
    d = Daemon(cfg)
    try:
        wait_for(lambda: sum(r["quality"] == "ok" for r in console_lines(out)) >= 6, what="reading on")
        refused = [r for r in console_lines(out) if r["quality"] == "error"]
        assert len(refused) >= 2
        assert all(r["error"].startswith("reading refused by the gateway (TypeError:") and "bytes" in r["error"]
                   for r in refused), refused[0]
        s = status_json(cfg)
        assert s["healthy"] and s["sensors"]["raw-1"]["state"] == "ok"
        assert s["sensors"]["raw-1"]["read_errors"] >= len(refused)
        assert s["tasks"]["sensor-raw-1"] == {"state": "running", "restarts": 0, "last_error": None}
        assert d.stop() == 0
        assert "sensor raw-1: reading refused by the gateway" in d.logs()
    finally:
        d.kill()
