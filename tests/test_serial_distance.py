"""The serial distance drivers (maxbotix, a02yyuw, sr50a): every testcase in
drivers/<name>/testcases, fuzzed parsers, and each driver against its
pseudo-terminal simulator (faults, error codes, unplug and replug)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import a02yyuw, maxbotix, sr50a
from gateway.config import sensor_model
from gateway.sdk.driver import DeviceError
from hil.distance_devices import A02yyuwDevice, MaxbotixDevice, Scene, Sr50aDevice, sr50a_packet
from hil.models import speed_of_sound
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = {"maxbotix": maxbotix.Maxbotix, "a02yyuw": a02yyuw.A02yyuw, "sr50a": sr50a.Sr50a}
def make(name: str, port: str = "/dev/null", **options):
    cls = DRIVERS[name]
    return cls(sensor_model(cls)(id=f"t-{name}", driver=name, interval="1s", port=port, **options))


def test_sr50a_median_vector_is_the_snow_depth_of_the_manual():
    from gateway.pipeline import snow_depth
    assert snow_depth(2.17, 2.5) == pytest.approx(0.33)


# --- fuzz: parsers raise only their own error ----------------------------------------------------------

@st.composite
def mutated(draw, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANUAL_PACKET = sr50a_packet("33", "1838", 194, "11011")


def only_raises(fn, data, error):
    try:
        fn(data)
    except error:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=16), mutated(b"R2257"), mutated(b"R0480 ")))
def test_fuzz_maxbotix_parse_line(data):
    only_raises(maxbotix.parse_line, data, maxbotix.ParseError)


@FUZZ
@given(st.one_of(st.binary(max_size=8), mutated(bytes.fromhex("FF07A1A7"))))
def test_fuzz_a02yyuw_parse_frame(data):
    only_raises(a02yyuw.parse_frame, data, a02yyuw.ParseError)


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(MANUAL_PACKET), mutated(sr50a_packet("33", "1.838", 194, temperature="-5.20"))))
def test_fuzz_sr50a_parse_packet(data):
    only_raises(sr50a.parse_packet, data, sr50a.ParseError)


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(bytes.fromhex("FF07A1A7") * 5), mutated(b"R2257\r" * 5),
                 mutated(MANUAL_PACKET * 3)))
def test_fuzz_drivers_decode_any_stream(data):
    """Every driver's decoding of any byte stream: no exception, a bounded tail, finite distances."""
    scan_values, _, tail = a02yyuw.scan_frames(data)
    assert len(tail) < 4 and all(0 <= v <= 0xFFFF for v in scan_values)
    for name, options in (("maxbotix", {}), ("maxbotix", {"range_m": 10}), ("a02yyuw", {"unit": "cm"}),
                          ("sr50a", {}), ("sr50a", {"units": "m"})):
        driver = make(name, **options)
        half = len(data) // 2
        samples = driver.feed(data[:half]) + driver.feed(data[half:])  # split anywhere: same decoder state
        for s in samples:
            assert s.status in ("ok", "suspect", "code")
            assert s.distance is None or math.isfinite(s.distance)
        if samples:
            driver.to_reading(samples)


# --- drivers against their pty simulators ---------------------------------------------------------------

@pytest.fixture
def sim(tmp_path):
    started = []

    def start(device_cls, name, **kw):
        dev = device_cls(tmp_path / name, **kw).start()
        started.append(dev)
        return dev
    yield start
    for dev in started:
        dev.stop()


@pytest.fixture
def opened():
    drivers = []

    def open_(name, port, **options):
        driver = make(name, str(port), **options)
        driver.open()
        drivers.append(driver)
        return driver
    yield open_
    for d in drivers:
        d.close()


@pytest.mark.parametrize("name,device_cls", [("maxbotix", MaxbotixDevice), ("a02yyuw", A02yyuwDevice),
                                             ("sr50a", Sr50aDevice)])
def test_driver_reads_what_its_simulator_sends(sim, opened, name, device_cls):
    dev = sim(device_cls, name)
    dev.distance = 2.345
    driver = opened(name, dev.link, samples=3)
    [r] = driver.read(5.0)
    assert r.quality == "ok" and r.value("distance") == pytest.approx(2.345)
    assert driver.bad_frames == 0


@pytest.mark.parametrize("name,device_cls", [("maxbotix", MaxbotixDevice), ("a02yyuw", A02yyuwDevice),
                                             ("sr50a", Sr50aDevice)])
def test_bad_frames_are_counted_and_reading_goes_on(sim, opened, name, device_cls):
    dev = sim(device_cls, name)
    dev.distance = 2.0
    driver = opened(name, dev.link, samples=3)
    for fault in ("garbage", "bad_checksum", "partial", "garbage"):
        dev.inject(fault)
    [r] = driver.read(10.0)
    assert r.quality == "ok" and r.value("distance") == pytest.approx(2.0)
    assert driver.bad_frames >= 2


@pytest.mark.parametrize("name,device_cls,error", [
    ("maxbotix", MaxbotixDevice, "no target (R5000)"),
    ("a02yyuw", A02yyuwDevice, "below the lower limit (30 mm)"),
    ("sr50a", Sr50aDevice, "no valid reading (distance -999, quality 0)")])
def test_device_error_code_gives_an_error_reading(sim, opened, name, device_cls, error):
    dev = sim(device_cls, name)
    dev.fault = "error_code"
    driver = opened(name, dev.link, samples=2)
    [r] = driver.read(5.0)
    assert r.quality == "error" and r.values == {} and r.error.startswith(error)


@pytest.mark.parametrize("name,device_cls", [("maxbotix", MaxbotixDevice), ("a02yyuw", A02yyuwDevice),
                                             ("sr50a", Sr50aDevice)])
def test_impossible_reading_is_suspect(sim, opened, name, device_cls):
    dev = sim(device_cls, name)
    dev.fault = "out_of_range"
    driver = opened(name, dev.link, samples=2)
    [r] = driver.read(5.0)
    assert r.quality == "suspect" and "distance" in r.values


def test_only_garbage_gives_an_error_reading_not_a_crash(sim, opened):
    dev = sim(A02yyuwDevice, "a02")
    dev.fault = "garbage"
    driver = opened("a02yyuw", dev.link, samples=2)
    [r] = driver.read(0.6)
    assert r.quality == "error" and r.error.startswith("no valid frame within 0.6s")


@pytest.mark.parametrize("name,device_cls", [("maxbotix", MaxbotixDevice), ("a02yyuw", A02yyuwDevice),
                                             ("sr50a", Sr50aDevice)])
def test_unplug_raises_device_error_and_replug_resumes(sim, opened, name, device_cls):
    dev = sim(device_cls, name)
    dev.distance = 1.5
    driver = opened(name, dev.link, samples=2)
    assert driver.read(5.0)[0].value("distance") == pytest.approx(1.5)
    dev.unplug()
    with pytest.raises(DeviceError):
        driver.read(2.0)
    driver.close()
    with pytest.raises(DeviceError):
        driver.open()  # the link is gone while unplugged
    dev.start()
    driver.open()
    assert driver.read(5.0)[0].value("distance") == pytest.approx(1.5)


def test_silent_device_raises_device_error(sim, opened):
    dev = sim(Sr50aDevice, "sr50a", answer_polls=False)
    driver = opened("sr50a", dev.link, samples=2)
    with pytest.raises(DeviceError, match="no data"):
        driver.read(0.5)


def test_sr50a_polls_with_the_manual_command_at_its_address(sim, opened):
    dev = sim(Sr50aDevice, "sr50a", address="07")
    dev.distance = 1.2
    driver = opened("sr50a", dev.link, samples=3, address="07")
    [r] = driver.read(5.0)
    assert r.value("distance") == pytest.approx(1.2) and r.value("echo_quality") == 194
    assert dev.received[:3] == [b"p07"] * 3  # `pAA<CR>`, CR being the device's terminator


def test_sr50a_accepts_unsolicited_packets(sim, opened):
    dev = sim(Sr50aDevice, "sr50a", answer_polls=False, period=0.05)
    dev.distance = 0.9
    driver = opened("sr50a", dev.link, samples=3)
    [r] = driver.read(5.0)
    assert r.quality == "ok" and r.value("distance") == pytest.approx(0.9)


def test_sr50a_low_quality_is_suspect_and_units_m(sim, opened):
    dev = sim(Sr50aDevice, "sr50a", units="m")
    dev.distance = 1.25
    dev.fault = "low_quality"
    driver = opened("sr50a", dev.link, samples=2, units="m")
    [r] = driver.read(5.0)
    assert r.quality == "suspect" and r.value("distance") == pytest.approx(1.25) and r.value("echo_quality") == 450


def test_stale_lines_are_dropped_before_a_read(sim, opened):
    """A streaming sensor fills the OS buffer between reads; a reading is made of fresh samples."""
    dev = sim(MaxbotixDevice, "mb", period=0.02)
    dev.distance = 1.0
    driver = opened("maxbotix", dev.link, samples=3)
    driver.read(5.0)
    sent = dev.frames_sent
    wait_for(lambda: dev.frames_sent >= sent + 15, 5, what="old lines to queue up unread")
    dev.distance = 2.0
    # Fresh lines start after the drain; the change above is already on the wire.
    [r] = driver.read(5.0)
    assert r.value("distance") == pytest.approx(2.0)
    assert driver.bad_frames == 0  # the cut line at the drain boundary is not a bad frame


def test_uncompensated_simulators_report_with_their_own_sound_speed():
    """The SR50A assumes 331.4 m/s: at -10 °C it reports more than the true distance (manual Formula 1)."""
    scene = Scene("snow_depth", 2.5)
    scene.now = lambda: (2.0, -10.0)
    dev = Sr50aDevice("/nonexistent", scene)
    assert dev.measured() == pytest.approx(2.0 * 331.4 / speed_of_sound(-10.0))
    corrected = dev.measured() * speed_of_sound(-10.0) / sr50a.Sr50a.assumed_sound_speed
    assert corrected == pytest.approx(2.0)
    assert not sr50a.Sr50a.temperature_compensated and not a02yyuw.A02yyuw.temperature_compensated
    assert maxbotix.Maxbotix.temperature_compensated


def test_defaults_are_the_devices_own():
    for name in DRIVERS:
        assert make(name).options.baudrate == 9600
    o = make("sr50a").options
    assert (o.address, o.units, o.samples, o.kind) == ("33", "mm", 11, "snow_depth")
    assert make("maxbotix").options.range_m == 5
    assert make("a02yyuw").options.unit == "mm"


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_sample_config_is_valid(name):
    from gateway.config import load_config
    config = load_config(str(ROOT / "drivers" / name / "sample.yaml"))
    assert [s.driver for s in config.sensors] == [name]


def test_a02yyuw_trigger_mode_sends_0x55_per_frame(sim, opened):
    """JSN-SR04T mode 3 / v3 serial mode: the module answers each 0x55 with one frame."""
    dev = sim(A02yyuwDevice, "jsn", triggered=True)
    dev.distance = 0.75
    driver = opened("a02yyuw", dev.link, samples=4, trigger=True)
    [r] = driver.read(5.0)
    assert r.quality == "ok" and r.value("distance") == pytest.approx(0.75)
    # The simulator counts a frame after writing it, so the driver may have read the 4th before it is counted.
    wait_for(lambda: len(dev.received) >= 4 and dev.frames_sent >= 4, timeout=10, what="4 triggers and 4 frames")


def test_a02yyuw_triggered_module_is_silent_without_trigger(sim, opened):
    dev = sim(A02yyuwDevice, "jsn", triggered=True)
    driver = opened("a02yyuw", dev.link, samples=1)
    with pytest.raises(DeviceError, match="no data"):
        driver.read(0.5)


def test_sr50a_address_must_be_a_quoted_string():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match='write the address in quotes'):
        make("sr50a", address=7)
    assert make("sr50a", address="07").options.address == "07"
