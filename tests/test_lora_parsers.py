"""The pure parsers of the LoRa drivers: Cayenne LPP, each modem's receive
lines, payload decoding and the config keys. Fuzzed: random bytes and mutated
valid frames never raise anything but the parser's own error type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import cayenne_lpp
from drivers.cayenne_lpp import LppError, decode
from drivers.lora_common import FrameError, LoraOptions, Packet, Reply, decode_payload
from drivers.lora_e220 import parse_frame
from drivers.lora_es920lr import Es920Options
from drivers.lora_es920lr import parse_line as es920_line
from drivers.lora_rak3172 import RxData, RxHeader
from drivers.lora_rak3172 import parse_line as rak_line
from drivers.lora_rn2483 import RadioError
from drivers.lora_rn2483 import parse_line as rn_line

# --- Cayenne LPP -------------------------------------------------------------------------------

LPP_VECTORS = [  # tests/data/hw-vectors.json, Cayenne LPP (verbatim)
    ("03 67 01 10 05 67 00 FF", [(3, "temperature", "", 27.2), (5, "temperature", "", 25.5)]),
    ("01 67 FF D7", [(1, "temperature", "", -4.1)]),
    ("06 71 04 D2 FB 2E 00 00", [(6, "accelerometer", "x", 1.234), (6, "accelerometer", "y", -1.234),
                                 (6, "accelerometer", "z", 0)]),
    ("01 88 06 76 5F F2 96 0A 00 03 E8", [(1, "gps", "lat", 42.3519), (1, "gps", "lon", -87.9094),
                                          (1, "gps", "alt", 10.0)]),
]


@pytest.mark.parametrize("hexdata,expected", LPP_VECTORS)
def test_lpp_vectors(hexdata, expected):
    fields = decode(bytes.fromhex(hexdata))
    assert [(f.channel, f.type, f.part, f.value) for f in fields] == expected


TYPE_TABLE = [  # (data after channel and type, type name, value, unit): one row per myDevices type
    ("00 01", "digital_input", 1, None), ("01 00", "digital_output", 0, None),
    ("02 FF 38", "analog_input", -2.0, None), ("03 01 F4", "analog_output", 5.0, None),
    ("65 FF FF", "illuminance", 65535, "lx"), ("66 01", "presence", 1, None),
    ("67 80 00", "temperature", -3276.8, "°C"), ("68 A1", "humidity", 80.5, "%"),
    ("73 27 6F", "barometer", 1009.5, "hPa"), ("74 01 5E", "voltage", 3.5, "V"),
    ("78 64", "percentage", 100, "%"), ("82 00 00 04 D2", "distance", 1.234, "m"),
]


@pytest.mark.parametrize("data,name,value,unit", TYPE_TABLE)
def test_lpp_type_table(data, name, value, unit):
    (field,) = decode(bytes.fromhex("07" + data.replace(" ", "")))
    assert (field.channel, field.type, field.value, field.unit) == (7, name, value, unit)


def test_lpp_gyrometer_has_three_axes():
    fields = decode(bytes.fromhex("02 86 00 64 FF 9C 00 00"))
    assert [(f.default_name(), f.value, f.unit) for f in fields] == [
        ("gyrometer_2_x", 1.0, "°/s"), ("gyrometer_2_y", -1.0, "°/s"), ("gyrometer_2_z", 0, "°/s")]


def test_lpp_unknown_type_stops_and_keeps_what_came_before():
    with pytest.raises(LppError, match="unknown LPP type 0x42 on channel 9") as caught:
        decode(bytes.fromhex("0367011009420000"))
    assert [(f.channel, f.value) for f in caught.value.fields] == [(3, 27.2)]


@pytest.mark.parametrize("hexdata,message", [("", "empty"), ("03", "header"), ("0367", "needs 2 bytes"),
                                             ("018806765FF2", "needs 9 bytes")])
def test_lpp_truncated(hexdata, message):
    with pytest.raises(LppError, match=message):
        decode(bytes.fromhex(hexdata))


def _mutations(valid: list[bytes]):
    """Valid frames with a byte changed, cut, doubled or spliced with another."""
    return st.tuples(st.sampled_from(valid), st.integers(0, 63), st.integers(0, 255), st.sampled_from(range(4))).map(
        lambda t: (t[0][:t[1] % (len(t[0]) + 1)] + bytes([t[2]]) + t[0][t[1] % (len(t[0]) + 1) + 1:],
                   t[0][:t[1] % (len(t[0]) + 1)], t[0] + t[0], t[0] + bytes([t[2]]))[t[3]])


LPP_FRAMES = [bytes.fromhex(h.replace(" ", "")) for h, _ in LPP_VECTORS]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), _mutations(LPP_FRAMES)))
def test_lpp_fuzz_raises_only_lpp_error(data):
    try:
        fields = decode(data)
    except LppError as exc:
        assert all(isinstance(f, cayenne_lpp.LppField) for f in exc.fields)
    else:
        assert fields


# --- RAK3172 -----------------------------------------------------------------------------------

def test_rak_rui3_vector():
    assert rak_line(b"+EVT:RXP2P:-60:11:AABBCCDD") == Packet(bytes.fromhex("AABBCCDD"), -60, 11)


def test_rak_legacy_two_line_vector():
    assert rak_line(b"+EVT:RXP2P, RSSI -60, SNR 11") == RxHeader(-60, 11)
    assert rak_line(b"+EVT:AABBCCDD") == RxData(bytes.fromhex("AABBCCDD"))


@pytest.mark.parametrize("line,reply", [(b"OK", Reply("OK")), (b"AT_PARAM_ERROR", Reply("AT_PARAM_ERROR", False)),
                                        (b"AT_BUSY_ERROR", Reply("AT_BUSY_ERROR", False))])
def test_rak_replies(line, reply):
    assert rak_line(line) == reply


@pytest.mark.parametrize("line", [b"+EVT:RXP2P:-60:11:ABC", b"+EVT:RXP2P:-60:AABB", b"hello", b"\xff\x00", b"",
                                  b"+EVT:RXP2P:-60:11:GG"])
def test_rak_garbage(line):
    with pytest.raises(FrameError):
        rak_line(line)


# --- RN2483 ------------------------------------------------------------------------------------

def test_rn_radio_rx_vector_two_spaces():
    assert rn_line(b"radio_rx  48656C6C6F") == Packet(b"Hello")
    assert rn_line(b"radio_rx 48656C6C6F") == Packet(b"Hello")  # one space, as the manual prints


def test_rn_radio_err_and_first_replies():
    assert rn_line(b"radio_err") == RadioError()
    assert rn_line(b"ok") == Reply("ok")
    assert rn_line(b"busy") == Reply("busy", False)
    assert rn_line(b"invalid_param") == Reply("invalid_param", False)
    assert rn_line(b"-57") == Reply("-57")


@pytest.mark.parametrize("line", [b"radio_rx  4865F", b"radio_rx", b"radio_rx  48 65", b"noise", b"\x80"])
def test_rn_garbage(line):
    with pytest.raises(FrameError):
        rn_line(line)


# --- E220 and ES920LR --------------------------------------------------------------------------

def test_e220_vector():
    assert parse_frame(bytes.fromhex("48454C4C4FB5")) == Packet(b"HELLO", rssi=-75)


@pytest.mark.parametrize("frame", [b"", b"\xb5", bytes(202)])
def test_e220_bad_frames(frame):
    with pytest.raises(FrameError):
        parse_frame(frame)


def test_es920_vector():
    assert es920_line(b"FFB500010002HELLO") == Packet(b"HELLO", rssi=-75, node="0002")
    assert es920_line(b"OK") == Reply("OK")
    assert es920_line(b"NG 100") == Reply("NG 100", False)


# --- fuzz every modem parser ---------------------------------------------------------------------

MODEM_LINES = {
    rak_line: [b"+EVT:RXP2P:-60:11:AABBCCDD", b"+EVT:RXP2P, RSSI -60, SNR 11", b"+EVT:AABBCCDD", b"AT_BUSY_ERROR"],
    rn_line: [b"radio_rx  48656C6C6F", b"radio_err", b"busy", b"4294967245"],
    es920_line: [b"FFB500010002HELLO", b"FFB5000100020167FFD7", b"NG 100"],
    parse_frame: [bytes.fromhex("48454C4C4FB5"), bytes.fromhex("03670110056700FFB5")],
}


@pytest.mark.parametrize("parser", list(MODEM_LINES), ids=lambda p: p.__module__.split(".")[-1])
def test_modem_parser_fuzz(parser):
    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.binary(max_size=80), _mutations(MODEM_LINES[parser])))
    def run(line):
        try:
            parser(line)
        except FrameError:
            pass

    run()


# --- payload decoding --------------------------------------------------------------------------

def test_payload_hex_reports_bytes_as_hex():
    assert decode_payload(b"\x01\xab", "hex", {}).values["payload"].value == "01AB"


def test_payload_json_numbers_become_values():
    d = decode_payload(b'{"level": 1.5, "n": 2, "flag": true, "s": "x", "nested": {"a": 1}}', "json", {})
    assert {k: v.value for k, v in d.values.items()} == {"level": 1.5, "n": 2}
    assert d.quality == "ok"


@pytest.mark.parametrize("payload", [b"[1, 2]", b"{bad", b"\xff\xfe"])
def test_payload_json_invalid_flags(payload):
    d = decode_payload(payload, "json", {})
    assert d.quality == "error" and d.error and d.values == {}


def test_payload_lpp_channel_names():
    d = decode_payload(bytes.fromhex("067104D2FB2E0000"), "cayenne_lpp", {6: "tilt"})
    assert list(d.values) == ["tilt_x", "tilt_y", "tilt_z"]


# --- config keys -------------------------------------------------------------------------------

BASE = {"id": "lora-1", "driver": "lora_rak3172", "interval": "10s", "port": "/dev/ttyUSB0"}


def test_defaults_are_valid_in_japan():
    o = LoraOptions.model_validate(BASE)
    assert (o.frequency, o.spreading_factor, o.bandwidth, o.coding_rate, o.preamble, o.tx_power) == \
        (923_200_000, 10, 125, "4/5", 8, 13)


@pytest.mark.parametrize("key,value", [("frequency", 868_100_000), ("frequency", 923_250_000),
                                       ("spreading_factor", 6), ("spreading_factor", 13), ("bandwidth", 62),
                                       ("coding_rate", "4/9"), ("preamble", 2), ("tx_power", 20),
                                       ("payload", "cbor"), ("bogus", 1)])
def test_out_of_range_keys_are_refused(key, value):
    with pytest.raises(ValidationError):
        LoraOptions.model_validate({**BASE, key: value})


def test_nodes_keys_and_channel_names():
    o = LoraOptions.model_validate({**BASE, "nodes": {2: {"name": "weir-2", "channels": {3: "water_temperature"}}}})
    assert o.nodes["2"].channels == {3: "water_temperature"}
    for bad in ({"zz": {"name": "x"}}, {"01": {"name": "Bad Name"}}, {"01": {"name": "a", "channels": {300: "t"}}},
                {"01": {"name": "a"}, "1": {"name": "b"}}):
        with pytest.raises(ValidationError):
            LoraOptions.model_validate({**BASE, "nodes": bad})


def test_es920_channel_from_frequency():
    assert Es920Options.model_validate({**BASE, "driver": "lora_es920lr"}).channel == 14  # 923.2 MHz
    with pytest.raises(ValidationError, match="channel centre"):
        Es920Options.model_validate({**BASE, "driver": "lora_es920lr", "frequency": 923_300_000})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), _mutations(LPP_FRAMES + [b'{"level": 1.5}'])),
       st.sampled_from(["cayenne_lpp", "json", "hex"]))
def test_payload_decoding_never_raises(payload, fmt):
    d = decode_payload(payload, fmt, {1: "t"})
    assert d.quality in ("ok", "error") and (d.quality == "ok") == (d.error is None)


def test_gateway_check_names_the_bad_radio_key():
    from gateway.config import ConfigError, parse_config
    text = ("gateway: {id: gw}\nsensors:\n  - id: lora-1\n    driver: lora_rn2483\n    interval: 10s\n"
            "    port: /dev/ttyUSB0\n    tx_power: 20\n    frequency: 868100000\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml")
    problems = sorted(str(p) for p in caught.value.problems)
    assert problems[0].startswith("gw.yaml:7: sensors[0].tx_power:") and "13" in problems[0]
    assert problems[1].startswith("gw.yaml:8: sensors[0].frequency:") and "920600000" in problems[1]


@pytest.mark.parametrize("name", ["lora_rak3172", "lora_es920lr", "lora_e220"])
def test_driver_line_handling_fuzz(name, tmp_path):
    """A driver fed random and mutated lines never raises: each becomes a reading, a skip or a reply."""
    from drivers.lora_e220 import parse_frame as e220_frame
    from tests.lora_support import make_driver
    driver = make_driver(name, tmp_path / "unused", nodes={"2": {"name": "n2", "channels": {3: "t"}}})
    valid = {"lora_rak3172": MODEM_LINES[rak_line], "lora_es920lr": MODEM_LINES[es920_line],
             "lora_e220": MODEM_LINES[parse_frame]}[name]

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.binary(max_size=80), _mutations(valid)))
    def run(line):
        if name == "lora_e220":
            try:
                driver.on_packet(e220_frame(line))
            except FrameError:
                return
        else:
            driver.handle_line(line)
        for reading in driver._out:
            assert reading.quality in ("ok", "error") and reading.kind == "lora_node"
        driver._out.clear()

    run()  # the driver is never opened: handling a receive line touches no port
