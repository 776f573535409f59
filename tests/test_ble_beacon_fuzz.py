"""Every ble_beacon parser, fuzzed: random bytes and mutated valid frames never
raise anything but the parser's own error type."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble_beacon.advert import AdvertError, Advertisement, from_json, parse_ad
from drivers.ble_beacon.aggregate import Aggregator, summary_values
from drivers.ble_beacon.frames import EDDYSTONE_UUID, FrameError, decode, decode_eddystone, decode_ibeacon, decode_ruuvi

VALID = {
    decode_ibeacon: bytes.fromhex("02154142434445464748494041424344454600010002f8"),
    decode_eddystone: bytes.fromhex("20000b1813000000146700002ac4"),
    decode_ruuvi: bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"),
}
URL = bytes.fromhex("10f8036769746875620063697472757a")
UID = bytes.fromhex("00e3123456789012346789010000000000010000")


@st.composite
def mutated(draw, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        else:
            data.insert(i, draw(st.integers(0, 255)))
    return bytes(data)


def _only_frame_errors(decoder, data: bytes) -> None:
    try:
        decoder(data)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes(data):
    for decoder in VALID:
        _only_frame_errors(decoder, data)
        _only_frame_errors(decoder, bytes([0x05]) + data)  # past the format byte
    _only_frame_errors(decode_ibeacon, b"\x02\x15" + data)
    for kind in (0x00, 0x10, 0x20):
        _only_frame_errors(decode_eddystone, bytes([kind]) + data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(VALID.items()) + [(decode_eddystone, URL), (decode_eddystone, UID)]).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), mutated(pair[1]))))
def test_mutated_valid_frames(pair):
    decoder, data = pair
    _only_frame_errors(decoder, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parse_ad_never_raises(data):
    manufacturer, service = parse_ad(data)
    decode(manufacturer, service)  # collects errors, never raises


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4)).map(json.dumps)))
def test_replay_lines_only_raise_advert_error(line):
    try:
        from_json(line)
    except AdvertError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(
    Advertisement,
    address=st.sampled_from(["C4:7C:8D:6A:11:02", "CB:B8:33:4C:88:4F", "D0:00:00:00:00:01"]),
    rssi=st.integers(-127, 20),
    manufacturer_data=st.dictionaries(st.sampled_from([0x004C, 0x0499, 0x0059]),
                                      st.one_of(st.binary(max_size=30), mutated(VALID[decode_ruuvi])), max_size=2),
    service_data=st.dictionaries(st.just(EDDYSTONE_UUID), st.one_of(st.binary(max_size=24), mutated(UID)), max_size=1),
    t=st.floats(0, 10_000),
), max_size=20))
def test_aggregation_of_garbage_never_raises(adverts):
    aggregator = Aggregator()
    for beacon in aggregator.window(adverts):
        values = summary_values(beacon, -59, 2.0)
        assert values["count"].value >= 1
