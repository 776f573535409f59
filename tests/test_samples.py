"""Every example config a technician may copy passes `gateway check`, and says
nothing spurious: no warning from the check, none when its sensors' pipelines
are built (issue 11 point 5)."""

import logging
import re
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(ROOT.glob("drivers/*/sample.yaml")) + sorted(ROOT.glob("config/*.yaml"))
RUN = "/run/credentials/city-edge-gateway.service/secret_"


@pytest.mark.parametrize("path", SAMPLES, ids=[str(p.relative_to(ROOT)) for p in SAMPLES])
def test_example_config_is_valid_without_spurious_warnings(path, monkeypatch, tmp_path, caplog):
    monkeypatch.chdir(ROOT)  # relative paths (replay files, salts) are relative to the checkout
    text = path.read_text()
    # Secrets live on the device (/etc/city-edge-gateway/..., the credentials directory) and serial ports are
    # the Pi's: stand in a file for each, so what remains to warn about is the sample's own doing.
    monkeypatch.setenv("GATEWAY_CREDENTIALS_DIR", str(tmp_path))
    for name in set(re.findall(r"/run/credentials/city-edge-gateway\.service/secret_([\w.-]+)", text)):
        (tmp_path / name).write_bytes(b"Zq3kP9xW2mLr8vTb5nYc1hFd7gJs4eAo")  # passes as a password or a salt
        (tmp_path / name).chmod(0o600)
    for name in set(re.findall(r"/etc/city-edge-gateway/[\w.-]+|/dev/[\w/.:-]+", text)):
        stand_in = tmp_path / Path(name).name
        stand_in.write_bytes(b"Zq3kP9xW2mLr8vTb5nYc1hFd7gJs4eAo")  # passes as a token, a password or a salt
        stand_in.chmod(0o600)
        text = text.replace(name, str(stand_in))
    copy = tmp_path / path.name
    copy.write_text(text)
    with caplog.at_level(logging.WARNING):
        config = load_config(copy)
        for options in config.sensors:
            Pipeline(options, config.location_of(options))
    assert config.sensors, "an example shows at least one sensor"
    assert config.warnings == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_ble_sample_passes_check_as_shipped():
    """Its salt is at the documented credentials path: on a machine without it, a warning, not an error."""
    config = load_config(ROOT / "drivers/ble_beacon/sample.yaml")
    assert str(config.sensors[0].salt_file).startswith(RUN)
