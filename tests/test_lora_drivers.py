"""The LoRa drivers against their pty modem simulators: the setup each modem
sees, error replies logged but not fatal, skipped garbage, RSSI/SNR per packet,
and an unplugged and replugged modem."""

from __future__ import annotations

import logging

import pytest

from gateway.sdk.driver import DeviceError
from hil.lora_modems import LppNode, lpp_temperature_humidity
from hil.pty_device import PtyDevice
from tests.lora_support import DRIVERS, make_driver, read_readings, wait_for

LPP = lpp_temperature_humidity(21.5, 63.0)  # ch1 21.5 °C, ch2 63 %


@pytest.fixture
def modem(request, tmp_path):
    """(driver, simulator) for the driver named by the test's parameter, opened."""
    name, keys = request.param if isinstance(request.param, tuple) else (request.param, {})
    sim = DRIVERS[name][1](tmp_path / "modem").start()
    driver = make_driver(name, tmp_path / "modem", **keys)
    driver.open()
    yield driver, sim
    driver.close()
    sim.stop()


def transmit(sim, payload: bytes, **link) -> None:
    wait_for(lambda: sim.listening, what="the modem to listen")
    data = payload.hex().upper().encode() if type(sim).__name__ == "Es920lrSim" else payload
    assert sim.transmit(data, **link)


@pytest.mark.parametrize("modem", ["lora_rak3172"], indirect=True)
def test_rak3172_setup_sequence(modem):
    driver, sim = modem
    assert sim.commands() == ["AT", "AT+NWM=?", "AT+NWM=0", "AT", "AT+PRECV=0", "AT+P2P=923200000:10:125:0:8:13",
                              "AT+PRECV=65534"]
    assert sim.p2p == "923200000:10:125:0:8:13" and sim.receiving
    assert driver.counts["garbage"] == 0  # the restart banner is known text


@pytest.mark.parametrize("modem", ["lora_rak3172"], indirect=True)
def test_rak3172_already_in_p2p_mode_is_not_restarted(modem):
    driver, sim = modem
    driver.close()
    sim.received.clear()
    driver.open()
    assert sim.commands() == ["AT", "AT+NWM=?", "AT+PRECV=0", "AT+P2P=923200000:10:125:0:8:13", "AT+PRECV=65534"]


@pytest.mark.parametrize("modem", [("lora_rn2483", {"spreading_factor": 12, "coding_rate": "4/8"})], indirect=True)
def test_rn2483_setup_sequence(modem):
    driver, sim = modem
    assert sim.commands() == ["mac pause", "radio set mod lora", "radio set freq 923200000", "radio set sf sf12",
                              "radio set bw 125", "radio set cr 4/8", "radio set prlen 8", "radio set pwr 13",
                              "radio set wdt 0", "radio rx 0"]
    assert sim.armed


@pytest.mark.parametrize("modem", [("lora_es920lr", {"frequency": 920_600_000, "pan_id": "00ab"})], indirect=True)
def test_es920lr_setup_sequence(modem):
    driver, sim = modem
    assert sim.commands() == ["2", "node 1", "bw 4", "sf 10", "channel 1", "panid 00AB", "ownid 0000", "power 13",
                              "rssi 1", "rcvid 1", "start"]
    assert sim.mode == "operation"


@pytest.mark.parametrize("modem", ["lora_e220"], indirect=True)
def test_e220_sends_nothing(modem):
    driver, sim = modem
    transmit(sim, LPP, rssi=-80)
    (reading,) = read_readings(driver, 1)
    assert sim.received == []
    assert reading.value("temperature_1") == 21.5 and reading.value("humidity_2") == 63.0
    assert reading.value("rssi") == -80 and "snr" not in reading.values


@pytest.mark.parametrize("modem", list(DRIVERS), indirect=True)
def test_simulated_node_reading(modem):
    driver, sim = modem
    payload = LppNode(seed=3).payload()
    transmit(sim, payload)
    (reading,) = read_readings(driver, 1)
    assert reading.kind == "lora_node" and reading.quality == "ok"
    assert set(reading.values) >= {"temperature_1", "humidity_2", "rssi"}
    assert reading.values["temperature_1"].unit == "°C" and reading.values["rssi"].unit == "dBm"


@pytest.mark.parametrize("modem", [("lora_rn2483", {"nodes": {"0": {"name": "weir", "channels": {1: "air_temp"}}}})],
                         indirect=True)
def test_rn2483_asks_rssi_and_snr_after_each_packet(modem):
    driver, sim = modem
    for rssi, snr in ((-97, -3), (-45, 10)):
        transmit(sim, LPP, rssi=rssi, snr=snr)
        (reading,) = read_readings(driver, 1)
        assert (reading.device, reading.value("air_temp"), reading.value("rssi"), reading.value("snr")) == \
            ("weir", 21.5, rssi, snr)
        assert sim.commands()[-3:] == ["radio get rssi", "radio get snr", "radio rx 0"]
    wait_for(lambda: sim.armed, what="listening again")


@pytest.mark.parametrize("modem", ["lora_rn2483"], indirect=True)
def test_rn2483_radio_err_listens_again(modem):
    driver, sim = modem
    assert sim.receive_error()
    assert driver.read(0.3) == []
    assert driver.counts["modem_errors"] == 1
    wait_for(lambda: sim.armed, what="radio rx 0 after radio_err")


@pytest.mark.parametrize("name,command,error", [("lora_rak3172", "AT+P2P=", "AT_PARAM_ERROR"),
                                                ("lora_rn2483", "radio set sf", "invalid_param"),
                                                ("lora_es920lr", "sf", "NG 100")])
def test_modem_error_reply_is_logged_not_fatal(name, command, error, tmp_path, caplog):
    sim = DRIVERS[name][1](tmp_path / "modem").start()
    sim.fail_next(command, error)
    driver = make_driver(name, tmp_path / "modem")
    try:
        with caplog.at_level(logging.WARNING):
            driver.open()
        assert any(error in r.getMessage() and command.split()[0] in r.getMessage() for r in caplog.records)
        assert driver.counts["modem_errors"] == 1
        transmit(sim, LPP)
        (reading,) = read_readings(driver, 1)
        assert reading.value("temperature_1") == 21.5
    finally:
        driver.close()
        sim.stop()


@pytest.mark.parametrize("modem", ["lora_rak3172", "lora_rn2483", "lora_es920lr", "lora_e220"], indirect=True)
def test_garbage_is_skipped_and_counted(modem):
    driver, sim = modem
    sim.garbage()
    if type(sim).__name__ == "E220Sim":
        wait_for(lambda: driver.read(0.2) == [] and driver.counts["garbage"], what="the lone byte to be skipped")
    transmit(sim, LPP)
    (reading,) = read_readings(driver, 1)
    assert reading.value("temperature_1") == 21.5
    assert driver.counts["garbage"] == 1


@pytest.mark.parametrize("name", ["lora_rak3172", "lora_rn2483", "lora_es920lr"])
def test_silent_port_is_a_device_error(name, tmp_path):
    mute = PtyDevice(tmp_path / "mute").start()
    driver = make_driver(name, tmp_path / "mute")
    try:
        if name == "lora_es920lr":
            driver.open()  # a module already in operation mode is silent too: listen anyway
        else:
            with pytest.raises(DeviceError, match="does not answer"):
                driver.open()
    finally:
        driver.close()
        mute.stop()


def test_missing_port_is_a_device_error(tmp_path):
    driver = make_driver("lora_rak3172", tmp_path / "absent")
    with pytest.raises(DeviceError, match="cannot open"):
        driver.open()


@pytest.mark.parametrize("modem", list(DRIVERS), indirect=True)
def test_unplug_replug_reruns_setup(modem):
    driver, sim = modem
    setup = list(sim.received)
    transmit(sim, LPP)
    assert len(read_readings(driver, 1)) == 1
    sim.unplug()

    def read_fails():
        try:
            driver.read(0.1)
        except DeviceError:
            return True
        return False

    wait_for(read_fails, what="the unplugged port to fail")
    driver.close()
    sim.received.clear()
    sim.start()
    driver.open()
    assert sim.received == setup  # the modem was powered down: the whole setup again
    transmit(sim, lpp_temperature_humidity(-2.5, 90))
    (reading,) = read_readings(driver, 1)
    assert reading.value("temperature_1") == -2.5
