"""Every example config a technician may copy passes `gateway check`."""

import re
from pathlib import Path

import pytest

from gateway.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(ROOT.glob("drivers/*/sample.yaml")) + sorted(ROOT.glob("config/*.yaml"))


@pytest.mark.parametrize("path", SAMPLES, ids=[str(p.relative_to(ROOT)) for p in SAMPLES])
def test_example_config_is_valid(path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # relative paths (replay files, salts) are relative to the checkout
    text = path.read_text()
    # Secrets live on the device (/etc/city-edge-gateway/...): stand in a file for each.
    for name in set(re.findall(r"/etc/city-edge-gateway/[\w.-]+", text)):
        stand_in = tmp_path / Path(name).name
        stand_in.write_bytes(b"Zq3kP9xW2mLr8vTb5nYc1hFd7gJs4eAo")  # passes as a token, a password or a salt
        stand_in.chmod(0o600)
        text = text.replace(name, str(stand_in))
    copy = tmp_path / path.name
    copy.write_text(text)
    config = load_config(copy)
    assert config.sensors, "an example shows at least one sensor"
