"""ble_beacon end to end: `gateway run` (a subprocess, a temp config, the console
uplink to a file) with `adapter: replay:FILE` on the committed sample replay;
`gateway check` and `gateway probe` on the same config."""

import json
import re
import subprocess
import sys
from pathlib import Path

from drivers.ble_beacon.advert import from_json
from drivers.ble_beacon.aggregate import Aggregator
from gateway.sdk.pseudonym import pseudonym
from tests.helpers import GatewayProcess, wait_for

SAMPLE = Path(__file__).resolve().parents[1] / "hil" / "ble" / "sample.jsonl"
SALT = "e2e-salt-0123456789abcdef"


def sample_raw_ids() -> set[str]:
    adverts = [from_json(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    return {b.raw_id for b in Aggregator().window(adverts)}


def write_config(tmp_path: Path, sensor_extra: str = "") -> Path:
    salt = tmp_path / "beacon.salt"
    salt.write_text(SALT + "\n")
    salt.chmod(0o600)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
gateway:
  id: test-gw
  shutdown_timeout: 2s
storage:
  path: {tmp_path / 'buffer.db'}
uplinks:
  - name: console
    type: console
    path: {tmp_path / 'out.jsonl'}
sensors:
  - id: beacons-1
    driver: ble_beacon
    interval: 1s
    adapter: replay:{SAMPLE}
    salt_file: {salt}
    battery: {{empty: 2.2, full: 3.0}}
{sensor_extra}""")
    return config


def gateway(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, **kw)


def test_gateway_run_publishes_pseudonymous_beacon_readings(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "out.jsonl"

    def published() -> list[dict]:
        text = out.read_text() if out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    gw = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        # Six intervals: past the sample's first cut-short frame (t = 4.5 s).
        wait_for(lambda: len({r["observed_at"] for r in published()}) >= 6, 30, what="six intervals of readings")
    finally:
        assert gw.terminate() == 0, gw.log_text()
    readings, stderr = published(), gw.log_text()
    raw_ids = sample_raw_ids()
    allowed_devices = {pseudonym(SALT.encode(), raw) for raw in raw_ids}
    for r in readings:
        assert r["kind"] == "beacon" and r["sensor"] == "beacons-1" and r["quality"] == "ok"
        assert re.fullmatch(r"[0-9a-f]{24}", r["device"]) and r["device"] in allowed_devices
        v = r["values"]
        assert v["rssi"]["unit"] == "dBm" and v["count"]["value"] >= 1 and v["distance"]["unit"] == "m"
        assert v["tx_power"]["unit"] == "dBm"
    assert any("battery_level" in r["values"] and "temperature" in r["values"] for r in readings)
    # Per interval one reading per beacon (the readings of one interval share their time).
    per_interval = {}
    for r in readings:
        per_interval.setdefault(r["observed_at"], []).append(r["device"])
    assert all(len(devices) == len(set(devices)) for devices in per_interval.values())
    assert max(map(len, per_interval.values())) > 1, "one interval's beacons are stamped with one time"
    text = out.read_text().lower()
    for raw in raw_ids:
        for part in raw.lower().split(":")[1:]:
            if len(part) >= 6:  # uuids, namespaces, instances; MACs as a whole
                assert part not in text
        if raw.startswith("mac:"):
            assert raw[4:].lower() not in text
    assert "skipped" in stderr  # the sample's cut-short frames are counted and logged, and reading went on


def test_gateway_check_and_probe(tmp_path):
    config = write_config(tmp_path)
    check = gateway("check", "-c", str(config))
    assert check.returncode == 0, check.stderr
    probe = gateway("probe", "-c", str(config), "beacons-1", "--count", "2")
    assert probe.returncode == 0, probe.stderr
    lines = [json.loads(line) for line in probe.stdout.splitlines()]
    assert len(lines) == 2 and all(re.fullmatch(r"[0-9a-f]{24}", r["device"]) for r in lines)


def test_gateway_check_names_a_bad_allow_entry_with_its_line(tmp_path):
    config = write_config(tmp_path, "    allow:\n      - mac:C4:7C:8D:6A:11:02\n      - my-tag\n")
    check = gateway("check", "-c", str(config))
    assert check.returncode == 2
    assert re.search(rf"^{re.escape(str(config))}:19: sensors\[0\]\.allow\[1\]: '?my-tag'? is not a beacon id",
                     check.stderr, re.M), check.stderr


def test_gateway_check_says_the_salt_file_is_required(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(f"    salt_file: {tmp_path / 'beacon.salt'}\n", ""))
    check = gateway("check", "-c", str(config))
    assert check.returncode == 2
    assert re.search(rf"^{re.escape(str(config))}:\d+: sensors\[0\]: salt_file is required", check.stderr, re.M), \
        check.stderr
