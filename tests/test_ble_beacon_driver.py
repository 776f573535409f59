"""ble_beacon driver: pseudonyms (raw ids never in the output), the allow list,
TLM joined by MAC, per-interval aggregation, replay in real time by t, and
the config rules (salt_file, adapter, allow)."""

import re
import json
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.sdk.driver import DeviceError
from drivers.ble_beacon import BleBeacon, BleBeaconOptions
from drivers.ble_beacon.advert import Advertisement
from drivers.ble_beacon.aggregate import Aggregator, summary_values
from drivers.ble_beacon.scanners import BleakAdvertScanner, ReplayScanner
from drivers.ble_beacon.scan import format_nearby, nearby, record
from gateway.sdk.pseudonym import pseudonym

SAMPLE = Path(__file__).resolve().parents[1] / "hil" / "ble" / "sample.jsonl"
SALT = "a-test-salt-of-32-bytes-00000000"
EDDY = "0000feaa-0000-1000-8000-00805f9b34fb"
UID = "00e3123456789012346789010000000000010000"
TLM = "20000b1813000000146700002ac4"
IBEACON = "02154142434445464748494041424344454600010002c5"
RUUVI = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"
UID_RAW = "eddystone:12345678901234678901:000000000001"
IBEACON_RAW = "ibeacon:41424344-4546-4748-4940-414243444546:1:2"


def line(t, address, rssi, mfr=None, svc=None) -> str:
    return json.dumps({"t": t, "address": address, "rssi": rssi, "manufacturer_data": mfr or {},
                       "service_data": svc or {}})


def adv(address, rssi, mfr=None, svc=None, t=0.0) -> Advertisement:
    return Advertisement(address, rssi, {int(k): bytes.fromhex(v) for k, v in (mfr or {}).items()},
                         {k: bytes.fromhex(v) for k, v in (svc or {}).items()}, t)


@pytest.fixture
def salt_file(tmp_path) -> Path:
    path = tmp_path / "beacon.salt"
    path.write_text(SALT + "\n")
    path.chmod(0o600)
    return path


def options(tmp_path, salt_file, lines=None, **extra) -> BleBeaconOptions:
    replay = tmp_path / "replay.jsonl"
    if lines is not None:
        replay.write_text("\n".join(lines) + "\n")
    doc = {"id": "beacons-1", "driver": "ble_beacon", "interval": "1s", "adapter": f"replay:{replay}",
           "salt_file": str(salt_file), **extra}
    return BleBeaconOptions.model_validate(doc)


def run_driver(opts: BleBeaconOptions, scanner_done_timeout: float = 10.0) -> tuple[BleBeacon, list]:
    """Open, wait until the whole replay has played, read once."""
    driver = BleBeacon(opts)
    driver.open()
    try:
        assert driver.scanner.finished.wait(scanner_done_timeout), "replay did not finish"
        return driver, driver.read(1.0)
    finally:
        driver.close()


# --- pseudonyms -------------------------------------------------------------------------------

def test_readings_carry_the_pseudonym_and_no_raw_id(tmp_path, salt_file):
    lines = [line(0, "C4:7C:8D:6A:11:02", -70, svc={EDDY: UID}), line(0, "C4:7C:8D:6A:11:02", -72, svc={EDDY: TLM}),
             line(0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}),
             line(0, "CB:B8:33:4C:88:4F", -65, mfr={"1177": RUUVI})]
    _, readings = run_driver(options(tmp_path, salt_file, lines))
    devices = {r.device for r in readings}
    assert devices == {pseudonym(SALT.encode(), raw) for raw in (UID_RAW, IBEACON_RAW, "mac:CB:B8:33:4C:88:4F")}
    assert all(len(d) == 24 for d in devices)
    text = "\n".join(r.to_json() for r in readings).lower()
    for secret in ("12345678901234678901", "41424344", "cb:b8:33", "c4:7c:8d", "e1:02:03", "cbb8334c884f"):
        assert secret not in text
    assert all(r.kind == "beacon" for r in readings)


def test_publish_raw_ids_publishes_them_and_needs_no_salt(tmp_path):
    replay = tmp_path / "r.jsonl"
    replay.write_text(line(0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}) + "\n")
    opts = BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s",
                                            "adapter": f"replay:{replay}", "publish_raw_ids": True})
    _, readings = run_driver(opts)
    assert [r.device for r in readings] == [IBEACON_RAW]


def test_salt_file_is_required_unless_raw_ids_are_published(tmp_path):
    with pytest.raises(ValidationError, match="salt_file is required"):
        BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s"})


def test_a_short_or_missing_salt_is_refused_at_load(tmp_path):
    short = tmp_path / "short.salt"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(ValidationError, match="fewer than 16 bytes"):
        BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s", "salt_file": str(short)})
    with pytest.raises(ValidationError, match="does not exist"):
        BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s",
                                         "salt_file": str(tmp_path / "nope")})


@pytest.mark.parametrize("adapter, message", [("bluetooth0", "like hci0"), ("replay:/no/such/file.jsonl", "does not exist")])
def test_adapter_is_checked_at_load(salt_file, adapter, message):
    with pytest.raises(ValidationError, match=message):
        BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s", "adapter": adapter,
                                         "salt_file": str(salt_file)})


# --- allow list -------------------------------------------------------------------------------

def test_allow_lists_raw_ids_and_macs(tmp_path, salt_file):
    lines = [line(0, "C4:7C:8D:6A:11:02", -70, svc={EDDY: UID}), line(0, "C4:7C:8D:6A:11:02", -72, svc={EDDY: TLM}),
             line(0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}),
             line(0, "CB:B8:33:4C:88:4F", -65, mfr={"1177": RUUVI}),
             line(0, "5A:11:22:33:44:55", -50, mfr={"76": "1005031c0e4a2b"})]
    # An Eddystone id (upper case is normalised), the sender MAC of the iBeacon, and a plain device by MAC.
    allow = [UID_RAW.upper().replace("EDDYSTONE", "eddystone"), "e1-02-03-04-05-06", "mac:5a:11:22:33:44:55"]
    driver, readings = run_driver(options(tmp_path, salt_file, lines, allow=allow))
    by_device = {r.device: r for r in readings}
    expected = {pseudonym(SALT.encode(), raw) for raw in (UID_RAW, IBEACON_RAW, "mac:5A:11:22:33:44:55")}
    assert set(by_device) == expected
    assert driver.counts["not_allowed"] == 1  # the Ruuvi tag
    eddystone = by_device[pseudonym(SALT.encode(), UID_RAW)]
    assert eddystone.value("battery") == 2.84  # its TLM joined by MAC, although TLM names no id


def test_a_bad_allow_entry_is_a_config_error(salt_file):
    with pytest.raises(ValidationError, match="is not a beacon id"):
        BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s",
                                         "salt_file": str(salt_file), "allow": ["my-tag"]})


# --- TLM join and aggregation -----------------------------------------------------------------

def test_tlm_is_joined_to_the_uid_sent_from_the_same_address_in_a_later_interval():
    agg = Aggregator()
    first = agg.window([adv("C4:7C:8D:6A:11:02", -70, svc={EDDY: UID})], now=1)
    assert [b.raw_id for b in first] == [UID_RAW] and "battery" not in first[0].values
    later = agg.window([adv("C4:7C:8D:6A:11:02", -71, svc={EDDY: TLM}),
                        adv("D0:00:00:00:00:01", -60, svc={EDDY: TLM})], now=5)
    assert [b.raw_id for b in later] == [UID_RAW]
    assert later[0].values["battery"].value == 2.84 and later[0].values["temperature"].value == 19.0
    assert agg.counts["unjoined_tlm"] == 1


def test_tlm_join_is_forgotten_after_the_memory_window():
    agg = Aggregator()
    agg.window([adv("C4:7C:8D:6A:11:02", -70, svc={EDDY: UID})], now=0)
    assert agg.window([adv("C4:7C:8D:6A:11:02", -70, svc={EDDY: TLM})], now=Aggregator.MEMORY_S - 1) != []
    assert agg.window([adv("C4:7C:8D:6A:11:02", -70, svc={EDDY: TLM})], now=2 * Aggregator.MEMORY_S) == []
    assert agg.counts["unjoined_tlm"] == 1


def test_remembered_addresses_are_bounded():
    agg = Aggregator()
    agg.window([adv(f"C4:7C:8D:6A:{i // 256:02X}:{i % 256:02X}", -70, svc={EDDY: UID}) for i in range(5000)])
    assert len(agg.eddystone_of) == Aggregator.MEMORY_MAX


def test_one_reading_per_beacon_with_median_rssi_and_count():
    agg = Aggregator()
    rssis = [-70, -90, -60, -75]
    [beacon] = agg.window([adv("E1:02:03:04:05:06", r, mfr={"76": IBEACON}) for r in rssis])
    values = summary_values(beacon, -59, 2.0)
    assert values["rssi"].value == -72.5 and values["count"].value == 4
    assert values["tx_power"].value == -59  # the iBeacon's measured power (0xc5)
    assert values["distance"].value == round(10 ** ((-59 + 72.5) / 20), 2)


def test_ruuvi_distance_uses_the_configured_1m_power_and_exponent():
    agg = Aggregator()
    [beacon] = agg.window([adv("CB:B8:33:4C:88:4F", -80, mfr={"1177": RUUVI})])
    values = summary_values(beacon, -59, 3.0)
    assert values["tx_power"].value == -59 and values["distance"].value == 5.01  # the log-distance model: -59/-80, n=3
    assert values["battery"].value == 2.977 and values["air_pressure"].value == 1000.44


def test_battery_level_from_the_configured_range(tmp_path, salt_file):
    lines = [line(0, "CB:B8:33:4C:88:4F", -65, mfr={"1177": RUUVI})]
    _, [reading] = run_driver(options(tmp_path, salt_file, lines, battery={"empty": 2.5, "full": 3.0}))
    assert reading.values["battery_level"].value == 95.4 and reading.values["battery_level"].unit == "%"


def test_bad_frames_and_lines_are_skipped_and_counted(tmp_path, salt_file):
    lines = ["{broken", line(0, "CB:B8:33:4C:88:4F", -65, mfr={"1177": "0512fc"}),
             line(0, "CB:B8:33:4C:88:4F", -66, mfr={"1177": RUUVI})]
    driver, readings = run_driver(options(tmp_path, salt_file, lines))
    assert len(readings) == 1 and readings[0].value("count") == 1
    assert driver.counts["bad_frames"] == 1 and driver.counts["bad_lines"] == 1


def test_each_read_covers_the_interval_since_the_previous_read(tmp_path, salt_file):
    lines = [line(0.0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}),
             line(0.0, "E1:02:03:04:05:06", -62, mfr={"76": IBEACON}),
             line(0.6, "E1:02:03:04:05:06", -80, mfr={"76": IBEACON})]
    driver = BleBeacon(options(tmp_path, salt_file, lines))
    driver.open()
    try:
        deadline = time.monotonic() + 5
        while driver.scanner.played < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = driver.read(1.0)
        assert driver.scanner.finished.wait(5)
        second = driver.read(1.0)
        third = driver.read(1.0)
    finally:
        driver.close()
    assert [(r.value("count"), r.value("rssi")) for r in first] == [(2, -61.0)]
    assert [(r.value("count"), r.value("rssi")) for r in second] == [(1, -80.0)]
    assert third == []


# --- replay in real time ----------------------------------------------------------------------

def test_replay_plays_in_real_time_by_t(tmp_path):
    path = tmp_path / "timed.jsonl"
    times = [0.0, 0.3, 0.6, 0.9]
    path.write_text("".join(line(t, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}) + "\n" for t in times))
    arrivals = []
    scanner = ReplayScanner(path)
    start = time.monotonic()
    scanner.start(lambda a: arrivals.append((a.t, time.monotonic() - start)))
    try:
        assert scanner.finished.wait(10)
    finally:
        scanner.stop()
    assert [t for t, _ in arrivals] == times
    for t, at in arrivals:
        assert at >= t - 0.005, f"line t={t} delivered early at {at:.3f}s"
        assert at < t + 1.0, f"line t={t} delivered {at - t:.3f}s late"


def test_replay_loop_starts_again(tmp_path):
    path = tmp_path / "loop.jsonl"
    path.write_text(line(0.0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}) + "\n")
    seen = threading.Semaphore(0)
    scanner = ReplayScanner(path, loop=True)
    scanner.LOOP_GAP = 0.05
    scanner.start(lambda a: seen.release())
    try:
        assert all(seen.acquire(timeout=5) for _ in range(3))
    finally:
        scanner.stop()
    assert scanner.error is None and scanner.played >= 3


def test_a_vanished_replay_file_is_a_device_error(tmp_path, salt_file):
    opts = options(tmp_path, salt_file, [line(0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON})])
    (tmp_path / "replay.jsonl").unlink()
    with pytest.raises(DeviceError, match="cannot open replay file"):
        BleBeacon(opts).open()


def test_an_unavailable_adapter_is_a_device_error_not_a_crash():
    # No BlueZ on the test machine: bleak cannot start and open() says so.
    scanner = BleakAdvertScanner("hci7")
    scanner.START_TIMEOUT = 20
    with pytest.raises(DeviceError, match="hci7"):
        scanner.start(lambda a: None)
    scanner.stop()


# --- on-site tools ----------------------------------------------------------------------------

def test_record_writes_a_replay_that_plays_back_the_same(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_text(line(0.0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}) + "\n"
                   + line(0.1, "C4:7C:8D:6A:11:02", -70, svc={EDDY: UID}) + "\n")
    out = tmp_path / "recorded.jsonl"
    with out.open("w") as f:
        assert record(f"replay:{src}", f, 0.5) == 2
    recorded = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["address"] for r in recorded] == ["E1:02:03:04:05:06", "C4:7C:8D:6A:11:02"]
    assert recorded[1]["service_data"] == {EDDY: UID}


def test_nearby_lists_decoded_beacons_loudest_first():
    beacons = nearby(f"replay:{SAMPLE}", 1.5, salt=SALT.encode())
    assert beacons, "the sample replay has beacons in its first second"
    rssis = [b.values["rssi"].value for b in beacons]
    assert rssis == sorted(rssis, reverse=True)
    assert all(b.pseudonym == pseudonym(SALT.encode(), b.raw_id) for b in beacons)
    table = format_nearby(beacons)
    assert beacons[0].raw_id in table and len(table.splitlines()) == len(beacons) + 1


def test_the_sample_config_is_valid(salt_file):
    import yaml
    sample = Path(__file__).resolve().parents[1] / "drivers" / "ble_beacon" / "sample.yaml"
    [sensor] = yaml.safe_load(sample.read_text())["sensors"]
    opts = BleBeaconOptions.model_validate({**sensor, "salt_file": str(salt_file)})
    assert opts.allow[2] == "mac:C9:53:CF:10:17:11" and opts.battery.level(2.6) == 50.0


def test_scan_main_prints_a_table_or_records_and_fails_cleanly(tmp_path, capsys):
    from drivers.ble_beacon import scan
    assert scan.main(1.2, f"replay:{SAMPLE}") == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["rssi", "count", "dist"] and len(table.splitlines()) >= 2
    assert scan.main(0.3, f"replay:{SAMPLE}", record_to=tmp_path / "rec.jsonl") == 0
    assert (tmp_path / "rec.jsonl").read_text().count("\n") >= 1
    assert scan.main(0.1, "replay:/no/such/file.jsonl") == 1
    assert "cannot open replay file" in capsys.readouterr().err


def test_skipped_input_is_warned_about_at_most_once_per_ten_minutes(tmp_path, salt_file, caplog):
    lines = [line(0.0, "CB:B8:33:4C:88:4F", -65, mfr={"1177": "0512fc"}),
             line(0.3, "CB:B8:33:4C:88:4F", -65, mfr={"1177": "0512fc"})]
    driver = BleBeacon(options(tmp_path, salt_file, lines))
    driver.open()
    try:
        deadline = time.monotonic() + 5
        while driver.scanner.played < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.read(1.0)
        assert driver.scanner.finished.wait(5)
        driver.read(1.0)
    finally:
        driver.close()
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    # One warning however the replay's two lines fall across the reads (1 + 1, or 2 + 0).
    assert len(warnings) == 1 and re.fullmatch(r"sensor beacons-1: skipped [12] bad frames", warnings[0].getMessage())
    assert driver.counts["bad_frames"] == 2


def test_a_silent_real_adapter_is_restarted_and_a_gone_one_fails_clearly(salt_file, monkeypatch):
    # The seam filled by a scanner that hears nothing (bleak with a stalled or removed adapter).
    import drivers.ble_beacon as ble

    starts = []

    class SilentScanner:
        error = None
        bad_lines = 0

        def start(self, callback):
            starts.append(callback)
            if len(starts) > 1:
                raise DeviceError("BLE adapter hci0: cannot scan (adapter gone)")

        def stop(self):
            pass

    monkeypatch.setattr(ble, "open_scanner", lambda adapter, loop=False: SilentScanner())
    monkeypatch.setattr(ble, "SILENT_RESTART", 0.2)
    driver = BleBeacon(BleBeaconOptions.model_validate(
        {"id": "b", "driver": "ble_beacon", "interval": "1s", "adapter": "hci0", "salt_file": str(salt_file)}))
    driver.open()
    assert driver.read(1.0) == [] and len(starts) == 1  # quiet, but not yet for long
    time.sleep(0.25)
    with pytest.raises(DeviceError, match="adapter gone"):
        driver.read(1.0)
    assert len(starts) == 2
    with pytest.raises(DeviceError, match="not open"):
        driver.read(1.0)


def test_a_binary_salt_file_works_and_is_the_key_as_stored(tmp_path):
    salt = bytes.fromhex("e5f763c171a3940418a14ec97c722e6c672efb2b33fbeef786e772c0b9beb47d")  # no whitespace at its ends
    path = tmp_path / "binary.salt"
    path.write_bytes(salt)
    path.chmod(0o600)
    replay = tmp_path / "r.jsonl"
    replay.write_text(line(0, "E1:02:03:04:05:06", -60, mfr={"76": IBEACON}) + "\n")
    opts = BleBeaconOptions.model_validate({"id": "b", "driver": "ble_beacon", "interval": "1s",
                                            "adapter": f"replay:{replay}", "salt_file": str(path)})
    _, [reading] = run_driver(opts)
    assert reading.device == pseudonym(salt, IBEACON_RAW)
