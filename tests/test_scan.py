"""`gateway scan serial|i2c|ble` and `gateway probe` for technicians (issue 5)."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

from tests.daemon_helpers import base_config, gateway_cli, write_config
from gateway.scan import scan_i2c
from hil.pty_device import PtyDevice

REPO = Path(__file__).resolve().parents[1]


def test_scan_serial_lists_a_pseudo_terminal_given_to_it(tmp_path):
    with PtyDevice(tmp_path / "ttyUSB-river") as dev:
        out = gateway_cli("scan", "serial", "--json", str(dev.link))
        assert out.returncode == 0, out.stderr
        ports = {p["path"]: p for p in json.loads(out.stdout)}
        port = ports[str(dev.link)]
        assert port["device"].startswith("/dev/pts/")
        assert port["access"] == "ok"
        assert port["description"] == "pseudo-terminal"
        table = gateway_cli("scan", "serial", str(dev.link)).stdout
        assert str(dev.link) in table and "pseudo-terminal" in table
    gone = json.loads(gateway_cli("scan", "serial", "--json", str(dev.link)).stdout)
    assert {p["path"]: p["access"] for p in gone}[str(dev.link)] == "does not exist"


class RegisterMapBus:
    """An SMBus stand-in: devices are register maps; an absent address NAKs as the kernel reports it."""

    def __init__(self, devices: dict[int, dict[int, int]]):
        self.devices = devices

    def _device(self, address):
        if address not in self.devices:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return self.devices[address]

    def read_byte(self, address):
        return self._device(address).get(None, 0)

    def read_byte_data(self, address, register):
        return self._device(address)[register]


def test_scan_i2c_names_known_chips():
    bus = RegisterMapBus({0x76: {0xD0: 0x60}, 0x77: {0xD0: 0x58}, 0x70: {}, 0x48: {}})
    found = dict(scan_i2c(bus))
    assert sorted(found) == [0x48, 0x70, 0x76, 0x77]
    assert found[0x76] == "BME280"
    assert found[0x77] == "BMP280"
    assert found[0x70].startswith("MaxBotix I2CXL")
    assert found[0x48] is None


def test_scan_i2c_without_a_bus_gives_a_clear_error():
    out = gateway_cli("scan", "i2c", "--bus", "97")
    assert out.returncode == 1
    assert "/dev/i2c-97" in out.stderr


def test_probe_shows_a_live_reading_within_seconds(tmp_path):
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "1h"}], uplinks=[]))
    started = time.monotonic()
    out = gateway_cli("probe", "-c", str(cfg), "river-1")
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    reading = json.loads(out.stdout)
    assert reading["sensor"] == "river-1" and "water_level" in reading["values"]
    assert took < 10  # an hourly sensor still answers at once


def test_scan_ble_lists_beacons_decoded(tmp_path):
    # Recorded advertisements (the ble_beacon driver's replay adapter) stand in for the radio.
    replay = REPO / "drivers/ble_beacon/testcases/interval-tlm-joined-by-mac-raw-ids-hidden/adverts.jsonl"
    out = gateway_cli("scan", "ble", "--seconds", "1", "--adapter", f"replay:{replay}")
    assert out.returncode == 0, out.stderr
    assert "EddystoneTLM,EddystoneUID" in out.stdout and "IBeacon" in out.stdout and "RuuviV5" in out.stdout


def test_scan_ble_fails_clearly_without_an_adapter(tmp_path):
    out = gateway_cli("scan", "ble", "--seconds", "0.1", "--adapter", f"replay:{tmp_path / 'none.jsonl'}")
    assert out.returncode == 1
    assert "gateway scan ble:" in out.stderr and "Traceback" not in out.stderr
