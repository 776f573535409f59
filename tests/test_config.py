"""SPEC §1/§2: `gateway check -c FILE` prints every problem of a config as
`FILE:LINE: key.path: message` and exits 2; a valid config exits 0.

Each malformed config marks the line the problem must be reported at with a
`# <-` comment (for a duplicate, the later occurrence)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli
from gateway.config import ConfigError, load_config, parse_config
from tests.helpers import make_pki

REPO = Path(__file__).resolve().parent.parent
GATEWAY = Path(sys.executable).with_name("gateway")
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>\S+): (?P<message>.+)$")

GW = "gateway: {id: gw-1}\n"
MQTT = GW + "uplinks:\n  - name: city\n    type: mqtt\n"
SENSOR = GW + "sensors:\n  - id: river-1\n    driver: sim_river\n"
NGSI = "gateway: {id: gw-1, location: [34.3, 134.0]}\nuplinks:\n  - name: orion\n    type: ngsi-ld\n    url: https://127.0.0.1\n"

# name: (config text, key path, words the message must contain). {tmp} is a
# directory holding secret files: `secret` (readable), `empty` (empty), `twolines`, `dir/`.
MALFORMED = {
    "unknown top-level key": (GW + "sensor:   # <-\n  - id: a\n", "sensor", "unknown key; did you mean sensors"),
    "unknown gateway key": ("gateway:\n  id: gw-1\n  shutdown_timout: 5s  # <-\n",
                            "gateway.shutdown_timout", "did you mean shutdown_timeout"),
    "unknown storage key": (GW + "storage:\n  max_reading: 100  # <-\n", "storage.max_reading", "unknown key"),
    "unknown sensor key": (SENSOR + "    interval: 1s\n    intervall: 2s  # <-\n", "sensors[0].intervall",
                           "did you mean interval"),
    "unknown uplink key": (MQTT + "    url: mqtt://127.0.0.1\n    qso: 1  # <-\n", "uplinks[0].qso", "did you mean qos"),
    "unknown nested key": (SENSOR + "    interval: 1s\n    alert_levels:\n      standby: 1\n      cautoin: 2  # <-\n"
                           "      caution: 2\n      evacuation: 3\n      danger: 4\n",
                           "sensors[0].alert_levels.cautoin", "did you mean caution"),
    "duration without unit": (SENSOR + "    interval: 10  # <-\n", "sensors[0].interval", "needs a unit: write 10s"),
    "duration with a space": (SENSOR + "    interval: 10 s  # <-\n", "sensors[0].interval", "no space"),
    "negative duration": (SENSOR + "    interval: -5s  # <-\n", "sensors[0].interval", "must be positive"),
    "zero duration": (SENSOR + "    interval: 0s  # <-\n", "sensors[0].interval", "must be positive"),
    "unknown duration unit": (SENSOR + "    interval: 10sec  # <-\n", "sensors[0].interval", "ms, s, m or h"),
    "bad gateway duration": ("gateway:\n  id: gw-1\n  shutdown_timeout: soon  # <-\n", "gateway.shutdown_timeout",
                             "ms, s, m or h"),
    "duplicate sensor id": (SENSOR + "    interval: 1s\n  - id: river-1  # <-\n    driver: sim_snow\n    interval: 1s\n",
                            "sensors[1].id", "duplicate sensor id 'river-1' (first at line 3)"),
    "duplicate YAML key": ("gateway:\n  id: gw-1\n  location: [34.3, 134.0]\n  id: gw-2  # <-\n", "gateway.id",
                           "duplicate key"),
    "duplicate uplink name": (GW + "uplinks:\n  - {name: out, type: console}\n  - {name: out, type: console}  # <-\n",
                              "uplinks[1].name", "duplicate uplink name"),
    "unknown driver": (GW + "sensors:\n  - id: river-1\n    driver: maxbotics-xl  # <-\n    interval: 1s\n",
                       "sensors[0].driver", "unknown driver 'maxbotics-xl'; did you mean maxbotix?"),
    "misspelt driver": (GW + "sensors:\n  - id: river-1\n    driver: sim_rivr  # <-\n    interval: 1s\n",
                        "sensors[0].driver", "did you mean sim_river"),
    "missing driver": (GW + "sensors:\n  - id: river-1  # <-\n    interval: 1s\n", "sensors[0].driver",
                       "required key is missing"),
    "bad gateway id": ("gateway:\n  id: Takamatsu_River  # <-\n", "gateway.id", "a-z, 0-9 and '-'"),
    "bad sensor id": (GW + "sensors:\n  - id: river 1  # <-\n    driver: sim_river\n    interval: 1s\n",
                      "sensors[0].id", "'river 1' is not a valid name"),
    "unquoted numeric id": ("gateway:\n  id: 0123  # <-\n", "gateway.id", "put the name in quotes"),
    "mqtt URL with http scheme": (MQTT + "    url: http://127.0.0.1:1883  # <-\n", "uplinks[0].url",
                                  "mqtt:// or mqtts://"),
    "mqtt URL with bad port": (MQTT + "    url: mqtt://127.0.0.1:70000  # <-\n", "uplinks[0].url", "invalid port"),
    "mqtt URL with a password": (MQTT + "    url: mqtt://gw:hunter2@127.0.0.1  # <-\n", "uplinks[0].url",
                                 "secrets come only from files"),
    "mqtt URL list with a bad port": (MQTT + "    url: [mqtt://127.0.0.1:1883, mqtt://127.0.0.1:0]  # <-\n",
                                      "uplinks[0].url", "invalid port"),
    "mqtt URL list mixing TLS and plain": (MQTT + "    url:  # <-\n      - mqtts://a.example\n"
                                           "      - mqtt://b.example\n", "uplinks[0].url", "same scheme"),
    "mqtt URL list empty": (MQTT + "    url: []  # <-\n", "uplinks[0].url", "list of them"),
    "mqtt drain_rate zero": (MQTT + "    url: mqtt://127.0.0.1\n    drain_rate: 0  # <-\n",
                             "uplinks[0].drain_rate", "greater than 0"),
    "ngsi-ld URL with mqtt scheme": ("gateway: {id: gw-1, location: [34.3, 134.0]}\nuplinks:\n  - name: orion\n"
                                     "    type: ngsi-ld\n    url: mqtt://127.0.0.1  # <-\n", "uplinks[0].url",
                                     "http:// or https://"),
    "missing password file": (MQTT + "    url: mqtt://127.0.0.1\n    username: gw\n"
                              "    password_file: {tmp}/nope.secret  # <-\n", "uplinks[0].password_file", "does not exist"),
    "unreadable password file": (MQTT + "    url: mqtt://127.0.0.1\n    username: gw\n"
                                 "    password_file: {tmp}/dir  # <-\n", "uplinks[0].password_file", "is a directory"),
    "empty password file": (MQTT + "    url: mqtt://127.0.0.1\n    username: gw\n"
                            "    password_file: {tmp}/empty  # <-\n", "uplinks[0].password_file", "is empty"),
    "missing token file": ("gateway: {id: gw-1, location: [34.3, 134.0]}\nuplinks:\n  - name: orion\n"
                           "    type: ngsi-ld\n    url: http://127.0.0.1\n    token_file: {tmp}/none  # <-\n",
                           "uplinks[0].token_file", "does not exist"),
    "ngsi-ld token_url without client_id": (NGSI + "    token_url: https://idm.example/oauth2/token  # <-\n"
                                            "    client_secret_file: {tmp}/secret\n", "uplinks[0].token_url",
                                            "need token_url, client_id and client_secret_file (client_id missing)"),
    "ngsi-ld token_file and client credentials": (NGSI + "    token_file: {tmp}/secret  # <-\n"
                                                  "    token_url: https://idm.example/oauth2/token\n"
                                                  "    client_id: gw\n    client_secret_file: {tmp}/secret\n",
                                                  "uplinks[0].token_file", "either token_file or token_url"),
    "ngsi-ld token_url not a URL": (NGSI + "    token_url: idm.example/token  # <-\n    client_id: gw\n"
                                    "    client_secret_file: {tmp}/secret\n", "uplinks[0].token_url",
                                    "http:// or https://"),
    "ngsi-ld context not a URL": (NGSI + "    context: city-context.jsonld  # <-\n", "uplinks[0].context",
                                  "http:// or https://"),
    "ngsi-ld temporal not a choice": (NGSI + "    temporal: maybe  # <-\n", "uplinks[0].temporal",
                                      "must be 'auto', 'on' or 'off'"),
    "token file of two lines": (NGSI + "    token_file: {tmp}/twolines  # <-\n", "uplinks[0].token_file",
                                "more than one line"),
    "client secret file empty": (NGSI + "    token_url: https://idm.example/t\n    client_id: gw\n"
                                 "    client_secret_file: {tmp}/empty  # <-\n", "uplinks[0].client_secret_file",
                                 "is empty"),
    "mqtt status topic with a wildcard": (MQTT + "    url: mqtt://127.0.0.1\n    status_topic: city/#  # <-\n",
                                          "uplinks[0].status_topic", "no wildcards"),
    "mqtt status topic placeholder": (MQTT + "    url: mqtt://127.0.0.1\n    status_topic: s/{sensor}  # <-\n",
                                      "uplinks[0].status_topic", "only placeholder is {gateway}"),
    "password file without username": (MQTT + "    url: mqtt://127.0.0.1\n    password_file: {tmp}/secret  # <-\n",
                                       "uplinks[0].password_file", "needs a username"),
    "cert_file without key_file": (MQTT + "    url: mqtts://127.0.0.1\n    ca_file: {tmp}/secret\n"
                                   "    cert_file: {tmp}/secret  # <-\n", "uplinks[0].cert_file", "needs key_file"),
    "latitude out of range": ("gateway:\n  id: gw-1\n  location: [134.0466, 34.3428]  # <-\n", "gateway.location",
                              "latitude 134.0466 is outside -90..90"),
    "sensor longitude out of range": (SENSOR + "    interval: 1s\n    location: [34.3, 200]  # <-\n",
                                      "sensors[0].location", "longitude 200.0 is outside -180..180"),
    "location not a pair": ("gateway:\n  id: gw-1\n  location: 34.3428  # <-\n", "gateway.location",
                            "two numbers [lat, lon]"),
    "YAML syntax error": ("gateway:\n  id: gw-1\n  location: [34.3, 134.0\nstorage:  # <-\n  path: b.db\n", "(yaml)",
                          "not valid YAML: expected ',' or ']', but got ':' at column 8 "
                          "(while parsing a flow sequence from line 3)"),
    "unclosed quote": ("gateway:\n  id: \"gw-1\n  location: [34.3, 134.0]\n# <-\n", "(yaml)",
                       "while scanning a quoted scalar from line 2"),
    "tab indentation": ("gateway:\n\tid: gw-1  # <-\n", "(yaml)", "indent with spaces, not tabs"),
    "two YAML documents": ("gateway: {id: gw-1}\n---  # <-\ngateway: {id: gw-2}\n", "(yaml)", "single document"),
    "empty file": ("", "(top)", "the config is empty"),
    "only comments": ("# gateway: {id: gw-1}\n", "(top)", "the config is empty"),
    "a list at the top": ("- gateway: {id: gw-1}\n", "(top)", "must be a mapping"),
    "missing gateway section": ("storage:\n  path: buffer.db\n", "gateway", "required section is missing"),
    "empty gateway section": ("gateway:  # <-\nstorage: {path: b.db}\n", "gateway.id", "required key is missing"),
    "gateway section without id": ("gateway:  # <-\n  location: [34.3, 134.0]\n", "gateway.id", "required key is missing"),
    "qos 3": (MQTT + "    url: mqtt://127.0.0.1\n    qos: 3  # <-\n", "uplinks[0].qos", "must be 0, 1 or 2 (got 3)"),
    "mqtt protocol 4": (MQTT + "    url: mqtt://127.0.0.1\n    protocol: 4  # <-\n", "uplinks[0].protocol",
                        "must be '3.1.1' or '5'"),
    "bad topic placeholder": (MQTT + "    url: mqtt://127.0.0.1\n    topic: city/{site}/{sensor}  # <-\n",
                              "uplinks[0].topic", "placeholders are {gateway}"),
    "unknown uplink type": (GW + "uplinks:\n  - name: bus\n    type: kafka  # <-\n", "uplinks[0].type",
                            "unknown uplink type 'kafka'; one of: console, mqtt, ngsi-ld"),
    "uplink without type": (GW + "uplinks:\n  - name: bus  # <-\n", "uplinks[0].type", "required key is missing"),
    "interval missing": (SENSOR.replace("  - id: river-1\n", "  - id: river-1  # <-\n"), "sensors[0].interval",
                         "required key is missing"),
    "ngsi-ld uplink and a sensor without location": (
        GW + "uplinks:\n  - name: orion\n    type: ngsi-ld\n    url: http://127.0.0.1:1026\n"
        "sensors:\n  - id: river-1  # <-\n    driver: sim_river\n    interval: 1s\n",
        "sensors[0].location", "an ngsi-ld uplink needs a location"),
    "durability not a choice": (GW + "storage:\n  durability: fast  # <-\n", "storage.durability",
                                "must be 'normal' or 'full' (got 'fast')"),
    "max_readings not a number": (GW + "storage:\n  max_readings: lots  # <-\n", "storage.max_readings",
                                  "must be a whole number (got 'lots')"),
    "max_readings too small": (GW + "storage:\n  max_readings: 1  # <-\n", "storage.max_readings", "must be at least 10"),
    "storage path a directory": (GW + "storage:\n  path: {tmp}/dir  # <-\n", "storage.path", "is a directory"),
    "sensors not a list": (GW + "sensors:  # <-\n  id: river-1\n", "sensors", "must be a list"),
    "sensor not a mapping": (GW + "sensors:\n  - river-1  # <-\n", "sensors[0]", "must be a mapping"),
    "alert levels not rising": (SENSOR + "    interval: 1s\n    alert_levels:  # <-\n"
                                "      {standby: 3, caution: 2, evacuation: 3, danger: 4}\n",
                                "sensors[0].alert_levels", "alert levels must rise"),
    "mount height not positive": (SENSOR + "    interval: 1s\n    mount_height: -2  # <-\n", "sensors[0].mount_height",
                                  "must be greater than 0"),
}


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "twolines").write_text("Bearer abc\ndef\n")
    (tmp_path / "dir").mkdir()
    return tmp_path


def check(argv: list[str], capfd) -> tuple[int, list[str]]:
    """Runs the real command in this process; returns the exit code and stderr lines."""
    code = cli.main(argv)
    return code, capfd.readouterr().err.splitlines()


def problems(lines: list[str]) -> list[re.Match]:
    return [m for m in map(PROBLEM.match, lines) if m]


@pytest.mark.parametrize("name", list(MALFORMED))
def test_check_reports_malformed_config_at_its_line_and_key(name, secrets, capfd):
    text, path, words = MALFORMED[name]
    text = text.replace("{tmp}", str(secrets))
    marked = [n for n, line in enumerate(text.splitlines(), 1) if line.endswith("# <-")]
    expected_line = marked[0] if marked else 1
    file = secrets / "gateway.yaml"
    file.write_text(text)

    code, err = check(["check", "-c", str(file)], capfd)

    assert code == 2
    found = problems(err)
    assert len(found) == 1, err
    assert found[0]["file"] == str(file)
    assert (int(found[0]["line"]), found[0]["path"]) == (expected_line, path), err
    assert words in found[0]["message"]


def test_malformed_config_table_is_large_enough():
    assert len(MALFORMED) >= 12


def test_every_problem_is_printed_one_per_line_in_line_order(tmp_path, capfd):
    file = tmp_path / "three.yaml"
    file.write_text("gateway:\n  id: GW\n"                       # line 2: bad id
                    "storage:\n  durability: fast\n"             # line 4: not a choice
                    "uplinks:\n  - {name: out, type: console}\n"
                    "sensors:\n  - id: river-1\n    driver: sim_river\n    interval: 10\n"  # line 10: no unit
                    "  - id: snow-1\n    driver: sim_snow\n    interval: 1s\n    colour: red\n")  # line 14
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 2
    found = [(int(m["line"]), m["path"]) for m in problems(err)]
    assert found == [(2, "gateway.id"), (4, "storage.durability"), (10, "sensors[0].interval"),
                     (14, "sensors[1].colour")]


def test_demo_config_is_valid(capfd, monkeypatch):
    monkeypatch.chdir(REPO)
    code, err = check(["check", "-c", "config/demo.yaml"], capfd)
    assert code == 0, err
    assert not problems(err)
    assert "valid (3 sensors, 1 uplinks)" in err[-1]


def full_config(tmp: Path) -> str:
    """A config with every section of SPEC §2, secrets in files under `tmp`."""
    (tmp / "mqtt.secret").write_text("hunter2\n")
    (tmp / "orion.token").write_text("token\n")
    make_pki(tmp)  # ca.pem, client.pem, client.key: real material, `check` loads it as `run` will
    return f"""\
gateway:
  id: takamatsu-river-07
  location: [34.3428, 134.0466]
  shutdown_timeout: 10s
storage:
  path: {tmp}/buffer.db
  max_readings: 5000000
  durability: full
uplinks:
  - name: city-mqtt
    type: mqtt
    url: mqtts://broker.example:8883
    topic: "city/{{gateway}}/{{sensor}}"
    qos: 1
    username: gw07
    password_file: {tmp}/mqtt.secret
    ca_file: {tmp}/ca.pem
    cert_file: {tmp}/client.pem
    key_file: {tmp}/client.key
    batch: 1
    protocol: 5
    session_expiry: 1h
  - name: orion
    type: ngsi-ld
    url: https://orion.example
    tenant: takamatsu
    token_file: {tmp}/orion.token
  - name: console
    type: console
    path: "-"
sensors:
  - &river
    id: river-1
    driver: sim_river
    interval: 10s
    location: [34.3431, 134.0470]
    mount_height: 6.0
    alert_levels: {{standby: 1.5, caution: 2.0, evacuation: 2.5, danger: 3.0}}
  - <<: *river
    id: river-2
    interval: 1.5m
  - id: snow-1
    driver: sim_snow
    interval: 500ms
    timeout: 2s
  - id: beacons-1
    driver: sim_beacon
    interval: 1h
    seed: 7
"""


def test_full_config_is_valid_and_typed(tmp_path, capfd):
    file = tmp_path / "gateway.yaml"
    file.write_text(full_config(tmp_path))
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 0, err
    config = load_config(file)
    mqtt = config.uplinks[0]
    assert (mqtt.tls, mqtt.protocol, mqtt.session_expiry) == (True, "5", 3600.0)
    assert [s.id for s in config.sensors] == ["river-1", "river-2", "snow-1", "beacons-1"]
    assert [s.interval for s in config.sensors] == [10.0, 90.0, 0.5, 3600.0]
    assert config.sensors[1].alert_levels.danger == 3.0  # merged from the anchor
    assert config.location_of(config.sensors[2]) == (34.3428, 134.0466)


def test_a_config_without_uplinks_is_valid(tmp_path, capfd):
    file = tmp_path / "gateway.yaml"
    file.write_text("gateway: {id: gw-1}\nsensors:\n  - {id: s-1, driver: sim_snow, interval: 1s}\n")
    assert check(["check", "-c", str(file)], capfd)[0] == 0


def test_config_defaults_to_gateway_config_variable(tmp_path, capfd, monkeypatch):
    file = tmp_path / "from-env.yaml"
    file.write_text("gateway:\n  id: Bad\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(file))
    code, err = check(["check"], capfd)
    assert code == 2
    assert [m["file"] for m in problems(err)] == [str(file)]


def test_missing_config_file_is_an_error(tmp_path, capfd):
    file = tmp_path / "absent.yaml"
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 2
    assert f"{file}:0: (file): cannot read config: file {file} does not exist" in err


def test_log_format_json_keeps_problem_lines_and_logs_json(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  id: gw-1\n  colour: red\n")
    code, err = check(["--log-format", "json", "check", "-c", str(bad)], capfd)
    assert code == 2
    assert [(m["line"], m["path"]) for m in problems(err)] == [("3", "gateway.colour")]
    verdict = json.loads(err[-1])
    assert (verdict["level"], verdict["message"]) == ("error", f"{bad}: 1 problem")

    good = tmp_path / "good.yaml"
    good.write_text("gateway: {id: gw-1}\n")
    code, err = check(["check", "--log-format", "json", "-c", str(good)], capfd)
    assert code == 0
    assert json.loads(err[-1])["message"] == f"{good}: valid (0 sensors, 0 uplinks)"


def test_installed_command_exits_2_with_the_problem_lines(tmp_path):
    """The real `gateway` executable, as a technician or systemd runs it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(GW + "sensors:\n  - id: river-1\n    driver: sim_river\n    interval: 10 s\n")
    env = {**os.environ, "GATEWAY_CONFIG": str(bad)}
    result = subprocess.run([str(GATEWAY), "check"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad}:5: sensors[0].interval: no space inside a duration: write 10s (got '10 s')" in result.stderr


def test_run_refuses_an_invalid_config_with_exit_2(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  id: gw-1\nuplinks:\n  - {name: m, type: mqtt, url: 'mqtt://127.0.0.1:0'}\n")
    code, err = check(["run", "-c", str(bad)], capfd)
    assert code == 2
    assert [m["path"] for m in problems(err)] == ["uplinks[0].url"]
    assert f"`gateway check -c {bad}`" in err[-1]


def test_an_mqtt_url_list_is_a_failover_list_in_order(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(MQTT + "    url:\n      - mqtt://10.0.0.1:1883\n      - mqtt://10.0.0.2\n    drain_rate: 500\n")
    up = load_config(path).uplinks[0]
    assert up.url == ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2"] and up.drain_rate == 500
    path.write_text(MQTT + "    url: mqtts://10.0.0.1\n")
    assert load_config(path).uplinks[0].url == ["mqtts://10.0.0.1"], "one URL is a list of one"


@pytest.mark.parametrize("uplink, key", [
    ("    type: mqtt\n    url: mqtt://broker.example\n    username: gw\n    password_file: {tmp}/secret  # <-\n",
     "password_file"),
    ("    type: ngsi-ld\n    url: http://orion.example\n    token_file: {tmp}/secret  # <-\n", "token_file"),
    ("    type: ngsi-ld\n    url: https://orion.example\n    token_url: http://idm.example/t\n    client_id: gw\n"
     "    client_secret_file: {tmp}/secret  # <-\n", "client_secret_file"),
])
def test_check_warns_about_a_secret_sent_over_a_plain_url(secrets, capfd, uplink, key):
    text = ("gateway: {id: gw-1, location: [34.3, 134.0]}\nuplinks:\n  - name: up\n" + uplink).replace("{tmp}", str(secrets))
    file = secrets / "gateway.yaml"
    file.write_text(text)
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 0, "a warning, not an error: closed networks and test rigs exist"
    [warning] = [m for m in problems(err) if m["message"].startswith("warning:")]
    marked = next(n for n, line in enumerate(text.splitlines(), 1) if line.endswith("# <-"))
    assert (int(warning["line"]), warning["path"]) == (marked, f"uplinks[0].{key}")
    assert "unencrypted" in warning["message"] and "s3cret" not in "\n".join(err)


@pytest.mark.parametrize("url", ["https://orion.example", "http://127.0.0.1:1026", "http://[::1]:1026"])
def test_no_warning_when_secrets_travel_over_tls_or_stay_on_the_pi(secrets, capfd, url):
    file = secrets / "gateway.yaml"
    file.write_text(f"gateway: {{id: gw-1, location: [34.3, 134.0]}}\nuplinks:\n  - name: up\n    type: ngsi-ld\n"
                    f"    url: {url}\n    token_file: {secrets}/secret\n")
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 0 and not problems(err)


# --- YAML indentation mistakes, in plain words with the line (issue 11 point 5) ------------------

@pytest.mark.parametrize("text, line, words", [
    ("gateway:\n    id: x\n  location: [1, 2]\n", 3,
     "line 3 is indented to column 3, which lines up with no section above it (line 2 starts at column 5)"),
    ("gateway:\n  id: x\nsensors:\n  - id: a\n    driver: sim_river\n   interval: 1s\n", 6,
     "line 6 is indented to column 4"),
    ("gateway:\n  id: x\n   location: [1, 2]\n", 3,
     "line 3 is indented deeper than line 2, which already has a value"),
    ("gateway:\n  id x\n  location: [1, 2]\n", 2, "line 2 has no ':' after its key: write key: value"),
    ("gateway:\n  id: x: y\n", 2, "a value with ': ' in it must be in quotes"),
])
def test_indentation_mistakes_are_told_in_plain_words(text, line, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    (problem,) = exc.value.problems
    assert (problem.file, problem.line, problem.path) == ("gw.yaml", line, "(yaml)")
    assert words in problem.message
    assert "block end" not in problem.message and "not allowed here" not in problem.message


def test_a_secret_to_a_broker_on_this_machine_is_no_warning(secrets, capfd):
    """127.0.0.1, ::1, localhost: nothing crosses a network, so plain mqtt:// is fine (a broker beside the gateway)."""
    file = secrets / "gateway.yaml"
    file.write_text("gateway: {id: gw-1}\nuplinks:\n  - {name: up, type: mqtt, url: 'mqtt://127.0.0.1:1883', "
                    f"username: gw, password_file: {secrets}/secret}}\n")
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 0 and not [m for m in problems(err) if m["message"].startswith("warning:")], err
