"""ble_beacon decoding: the rules of the specifications around the testcases (those run in
test_driver_testcases.py)."""


import pytest

from drivers.ble_beacon.advert import AdvertError, from_json, parse_ad
from drivers.ble_beacon.frames import (EDDYSTONE_UUID, EddystoneTLM, EddystoneUID, FrameError, IBeacon, Unsupported,
                                       decode, decode_eddystone, decode_ibeacon, decode_ruuvi)

def test_tlm_uptime_follows_the_spec_not_beacontools():
    tlm = decode_eddystone(bytes.fromhex("20000b1813000000146700002ac4"))
    assert isinstance(tlm, EddystoneTLM)
    assert tlm.uptime_s == 1094.8  # SEC_CNT 10948 × 0.1 s; beacontools says 10948 s


def test_tlm_without_battery_or_temperature_sensor():
    tlm = decode_eddystone(bytes.fromhex("2000" "0000" "8000" "00000001" "00000002"))
    assert (tlm.battery_mv, tlm.temperature, tlm.adv_count, tlm.uptime_s) == (None, None, 1, 0.2)


def test_negative_tlm_temperature_is_signed_8_8():
    assert decode_eddystone(bytes.fromhex("2000" "0b18" "fe80" "00000000" "00000000")).temperature == -1.5


def test_legacy_uid_without_rfu_bytes():
    uid = decode_eddystone(bytes.fromhex("00e3123456789012346789010000000000010000")[:18])
    assert isinstance(uid, EddystoneUID) and uid.instance == "000000000001"


@pytest.mark.parametrize("data, message", [
    ("00e31234", "18 or 20"),
    ("10f80a6769746875", "scheme"),
    ("10f8036769740e", "reserved"),
    ("2002" + "00" * 12, "version"),
    ("2000" + "00" * 11, "14 bytes"),
    ("50", "unknown"),
])
def test_bad_eddystone_frames_are_frame_errors(data, message):
    with pytest.raises(FrameError, match=message):
        decode_eddystone(bytes.fromhex(data))


def test_frames_this_driver_does_not_read_are_unsupported_not_bad():
    with pytest.raises(Unsupported):
        decode_ibeacon(bytes.fromhex("1005031c0e4a2b"))  # an iPhone's continuity message
    with pytest.raises(Unsupported):
        decode_ruuvi(bytes.fromhex("03291a1ece1efc18f94202ca0b5300000000"))  # RAWv1
    with pytest.raises(Unsupported):
        decode_eddystone(bytes.fromhex("2001" + "00" * 16))  # encrypted TLM
    frames, errors = decode({0x004C: bytes.fromhex("1005031c0e4a2b")}, {EDDYSTONE_UUID: bytes.fromhex("30f8" + "00" * 8)})
    assert (frames, errors) == ([], [])


def test_cut_short_frames_are_frame_errors():
    with pytest.raises(FrameError, match="24 bytes"):
        decode_ruuvi(bytes.fromhex("0512fc5394c3"))
    with pytest.raises(FrameError, match="21 bytes"):
        decode_ibeacon(bytes.fromhex("0215414243"))


def test_one_advertisement_can_carry_several_frames():
    frames, errors = decode({0x004C: bytes.fromhex("02154142434445464748494041424344454600010002f8"),
                             0x0499: bytes.fromhex("0512")},
                            {EDDYSTONE_UUID: bytes.fromhex("00e3123456789012346789010000000000010000")})
    assert [type(f) for f in frames] == [IBeacon, EddystoneUID]
    assert len(errors) == 1


def test_parse_ad_walks_lengths_and_stops_at_padding():
    manufacturer, service = parse_ad(bytes.fromhex("020106" "05ff99040512" "00" "05ff4c000215"))
    assert manufacturer == {0x0499: bytes.fromhex("0512")}
    assert service == {}


@pytest.mark.parametrize("line, message", [
    ("not json", "JSON"),
    ("[1, 2]", "object"),
    ('{"t": -1, "address": "C4:7C:8D:6A:11:02", "rssi": -70}', "t must"),
    ('{"t": 1, "address": "C4:7C:8D:6A:11", "rssi": -70}', "MAC"),
    ('{"t": 1, "address": "C4:7C:8D:6A:11:02", "rssi": "loud"}', "rssi"),
    ('{"t": 1, "address": "C4:7C:8D:6A:11:02", "rssi": -70, "manufacturer_data": {"apple": "00"}}', "company"),
    ('{"t": 1, "address": "C4:7C:8D:6A:11:02", "rssi": -70, "service_data": {"feaa": "zz"}}', "hex"),
])
def test_bad_replay_lines_are_advert_errors(line, message):
    with pytest.raises(AdvertError, match=message):
        from_json(line)


def test_replay_line_round_trip():
    line = ('{"t": 0.25, "address": "c4:7c:8d:6a:11:02", "rssi": -71, "manufacturer_data": {"1177": "0512FC53"}, '
            '"service_data": {"0000FEAA-0000-1000-8000-00805f9b34fb": "2000"}}')
    adv = from_json(line)
    assert adv.address == "C4:7C:8D:6A:11:02"
    assert adv.manufacturer_data == {1177: bytes.fromhex("0512fc53")}
    assert adv.service_data == {EDDYSTONE_UUID: b"\x20\x00"}
    assert from_json(adv.to_json()) == adv
