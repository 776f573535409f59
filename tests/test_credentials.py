"""The documented credentials path (/run/credentials/city-edge-gateway.service/secret_<name>) outside the
service: `gateway check` on a laptop, in the installer and at the boot import (issue 11 point 3)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.sdk.fields import read_secret
from tests.helpers import gateway_cli

RUN = "/run/credentials/city-edge-gateway.service"
REPLAY = "hil/ble/sample.jsonl"


def _config(salt: str = f"{RUN}/secret_beacon.salt") -> str:
    return ("gateway: {id: park-07}\n"
            "uplinks:\n"
            f"  - {{name: city, type: mqtt, url: 'mqtts://127.0.0.1:8883', username: gw, password_file: {RUN}/secret_mqtt}}\n"
            "sensors:\n"
            f"  - {{id: park-1, driver: ble_beacon, interval: 10s, adapter: 'replay:{REPLAY}', salt_file: {salt}}}\n")


@pytest.fixture
def creds(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_CREDENTIALS_DIR", str(tmp_path))
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    return tmp_path


def test_the_documented_path_is_checked_at_its_source(creds):
    (creds / "mqtt").write_text("pw\n")
    (creds / "beacon.salt").write_text("q8ZrT2mW9xLk4PbN7vYc3HdJ6sFa0GuE\n")  # a salt the salt rules accept
    (creds / "beacon.salt").chmod(0o600)
    config = parse_config(_config(), "gw.yaml")
    assert config.warnings == []
    assert read_secret(config.uplinks[0].password_file) == "pw"  # `gateway probe` as root outside the service


def test_a_secret_not_there_yet_is_a_warning_with_where_to_put_it(creds):
    config = parse_config(_config(), "gw.yaml")
    assert len(config.warnings) == 2
    assert config.warnings[0].startswith(f"gw.yaml:3: uplinks[0].password_file: warning: {RUN}/secret_mqtt comes "
                                         f"from {creds}/mqtt, not there yet")
    assert "gateway-credentials/" in config.warnings[1]


def test_a_bad_secret_at_its_source_is_still_an_error(creds):
    (creds / "mqtt").write_text("\n")
    (creds / "beacon.salt").write_text("short\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(_config(), "gw.yaml")
    text = str(exc.value)
    assert f"gw.yaml:3: uplinks[0].password_file: secret file {creds}/mqtt is empty" in text
    assert "fewer than 16 bytes" in text


def test_gateway_check_prints_the_warnings_and_passes(creds, tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(_config())
    out = gateway_cli("check", "-c", str(path))
    assert "uplinks[0].password_file: warning:" in out.stderr and "2 warnings" in out.stderr
