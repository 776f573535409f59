"""Plausibility where a technician's slip becomes a false alarm (issue 11,
point 2): `gateway check` rejects a mount height beyond the sensor's range
(4500: mm written for m), stages out of order, stages or a removal threshold
at or above the mount height; every distance, height and threshold key states
its unit and range, in `gateway drivers` and in its error message."""

from __future__ import annotations

import re

import pytest

from gateway import cli
from gateway.config import ConfigError, parse_config

LEVELS = "{standby: 1.5, caution: 2.0, evacuation: 2.5, danger: 3.0}"


def sensor(driver: str, keys: str) -> str:
    port = "" if driver in ("i2cxl", "hcsr04", "sim_river") else "\n    port: /dev/ttyUSB0"
    pins = "\n    trigger_pin: 23\n    echo_pin: 24" if driver == "hcsr04" else ""
    return (f"gateway: {{id: gw}}\nstorage: {{path: /tmp/gw.db}}\nsensors:\n  - id: s-1\n    driver: {driver}\n"
            f"    interval: 10s{port}{pins}\n{keys}")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    return [str(p) for p in exc.value.problems]


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def test_check_rejects_a_mount_height_in_mm(tmp_path, capfd):
    text = sensor("maxbotix", "    mount_height: 4500\n    alert_levels: " + LEVELS + "\n")
    config = tmp_path / "gw.yaml"
    config.write_text(text)
    assert cli.main(["check", "-c", str(config)]) == 2
    err = capfd.readouterr().err
    assert (f"{config}:{line_of(text, 'mount_height')}: sensors[0].mount_height: must be at most 10 (got 4500); "
            "mount_height: number > 0 <= 10 m; 4500 looks like mm (4.5 m): write metres") in err


@pytest.mark.parametrize("driver, keys, limit", [
    ("maxbotix", "    mount_height: 5.5\n", 5),                         # a 5 m model (range_m default)
    ("maxbotix", "    range_m: 10\n    mount_height: 10.5\n", 10),
    ("a02yyuw", "    max_range: 4.5\n    mount_height: 5.0\n", 4.5),   # A02YYUW
    ("a02yyuw", "    mount_height: 6.5\n", 6),                         # JSN-SR04T, the default
    ("sr50a", "    mount_height: 10.5\n", 10),
    ("hcsr04", "    mount_height: 4.5\n", 4),                          # HC-SR04, the default
    ("i2cxl", "    mount_height: 7.7\n", 7.65),
])
def test_check_rejects_a_mount_height_beyond_the_sensors_range(driver, keys, limit):
    text = sensor(driver, keys)
    (p,) = problems(text)
    assert p.startswith(f"gw.yaml:{line_of(text, 'mount_height')}: sensors[0].mount_height: ")
    assert f"({limit:g} m)" in p or f"must be at most {limit:g}" in p, p


@pytest.mark.parametrize("driver, keys", [
    ("maxbotix", "    mount_height: 4.9\n"),
    ("maxbotix", "    range_m: 10\n    mount_height: 9.5\n"),
    ("a02yyuw", "    mount_height: 5.5\n"),
    ("hcsr04", "    max_range: 6\n    mount_height: 5.5\n"),  # a JSN-SR04T in mode 1
    ("i2cxl", "    mount_height: 7.6\n"),
    ("sr50a", "    mount_height: 9.5\n"),
])
def test_a_mount_height_within_the_range_passes(driver, keys):
    assert parse_config(sensor(driver, keys), "gw.yaml").sensors[0].mount_height > 4


def test_check_rejects_stages_out_of_order():
    text = sensor("maxbotix", "    mount_height: 4.5\n    alert_levels:\n      standby: 1.5\n      caution: 1.2\n"
                              "      evacuation: 2.5\n      danger: 3.0\n")
    (p,) = problems(text)
    assert p == (f"gw.yaml:{line_of(text, 'alert_levels')}: sensors[0].alert_levels: alert levels must rise: "
                 "standby < caution < evacuation < danger (caution 1.2 m is not above standby 1.5 m)")


def test_equal_stages_are_out_of_order_too():
    (p,) = problems(sensor("maxbotix", "    mount_height: 4.5\n    alert_levels: "
                                       "{standby: 1.5, caution: 2.0, evacuation: 2.0, danger: 3.0}\n"))
    assert "evacuation 2 m is not above caution 2 m" in p


@pytest.mark.parametrize("mount, stage, level", [(2.8, "danger", 3.0), (2.0, "caution", 2.0), (1.0, "standby", 1.5)])
def test_check_rejects_stages_above_the_mount_height(mount, stage, level):
    text = sensor("maxbotix", f"    mount_height: {mount}\n    alert_levels:\n      standby: 1.5\n      caution: 2.0\n"
                              "      evacuation: 2.5\n      danger: 3.0\n")
    (p,) = problems(text)
    # The lowest stage the water could never reach, at its own line.
    assert p.startswith(f"gw.yaml:{line_of(text, stage + ':')}: sensors[0].alert_levels.{stage}: "
                        f"{stage} {level:g} m is not below mount_height ({mount:g} m)")


def test_check_rejects_a_removal_threshold_above_the_mount_height():
    text = sensor("sr50a", "    mount_height: 1.0\n    removal_threshold: 1.2\n")
    (p,) = problems(text)
    assert p.startswith(f"gw.yaml:{line_of(text, 'removal_threshold')}: sensors[0].removal_threshold: 1.2 m of "
                        "snowfall is not below mount_height (1 m)")


def test_a_sensor_without_a_datasheet_range_is_still_bounded():
    (p,) = problems(sensor("sim_river", "    mount_height: 450\n"))
    assert "450 m is higher than any distance sensor is mounted (100 m)" in p
    assert "450 looks like mm (0.45 m) or cm (4.5 m): write metres" in p


@pytest.mark.parametrize("keys, message", [
    ("    hysteresis: -0.1\n", "must be at least 0 (got -0.1); hysteresis: number >= 0 <= 1 m"),
    ("    max_jump: 20\n", "must be at most 10 (got 20); max_jump: number > 0 <= 10 m"),
    ("    snowfall_deadband: 1\n", "must be at most 0.5 (got 1); snowfall_deadband: number >= 0 <= 0.5 m"),
    ("    mount_height: 2.0\n    alert_levels: {standby: -1, caution: 0.5, evacuation: 1, danger: 1.5}\n",
     "must be at least 0 (got -1); standby: number >= 0 <= 100 m"),
    ("    air_temperature: 90\n", "must be at most 70 (got 90); air_temperature: number >= -60 <= 70 °C"),
    ("    fast_interval: 1s\n    rise_rate: 20\n", "must be at most 10 (got 20); rise_rate: number > 0 <= 10 m/h"),
    ("    mount_height: high\n", "must be a number (got 'high'); mount_height: number > 0 <= 10 m"),
    ("    range_m: 7\n", "must be 5 or 10 (got 7); range_m: 5 | 10 m"),
])
def test_errors_of_length_and_threshold_keys_state_unit_and_range(keys, message):
    assert any(message in p for p in problems(sensor("maxbotix", keys))), problems(sensor("maxbotix", keys))


def test_snow_removal_threshold_states_its_unit():
    assert any("must be at most 5 (got 8); removal_threshold: number > 0 <= 5 m" in p
               for p in problems(sensor("sr50a", "    mount_height: 2.0\n    removal_threshold: 8\n")))


UNIT_KEYS = {"mount_height": "m", "max_jump": "m", "hysteresis": "m", "snowfall_deadband": "m",
             "removal_threshold": "m", "rise_rate": "m/h", "air_temperature": "°C"}


@pytest.mark.parametrize("driver, own", [("maxbotix", {"range_m": "m"}), ("a02yyuw", {"max_range": "m"}),
                                         ("hcsr04", {"max_range": "m"}), ("sr50a", {}), ("i2cxl", {})])
def test_gateway_drivers_lists_every_key_with_unit_and_range(driver, own, capfd):
    assert cli.main(["drivers"]) == 0
    block = next(b for b in capfd.readouterr().out.split("\n\n") if b.startswith(driver + "  "))
    rows = {line.split()[0]: line for line in block.splitlines()[1:]}
    for key, unit in {**UNIT_KEYS, **own}.items():
        assert re.search(rf"(<=|\|) [\d.]+ {re.escape(unit)}\s", rows[key]), rows[key]  # range, then unit
    assert {"alert_levels", "fast_interval", "rise_window", "median_window", "temperature_from"} <= set(rows)
    assert "port" in rows or driver in ("hcsr04", "i2cxl")  # the driver's own keys too, listed first
    assert list(rows).index("kind") < list(rows).index("mount_height")
