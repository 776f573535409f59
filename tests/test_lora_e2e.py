"""End to end: `gateway run` (a subprocess with a temp config) reads each LoRa
driver's pty simulator and writes lora_node readings to the console uplink (a
file); every modem is unplugged and replugged under the running gateway, which
goes on without a restart."""

from __future__ import annotations

import json
import textwrap
import time

from hil.lora_modems import lpp_temperature_humidity
from tests.helpers import GatewayProcess
from tests.lora_support import DRIVERS, wait_for

SENSORS = {  # sensor id -> (driver, extra YAML keys)
    "rak": ("lora_rak3172", "nodes: {'0': {name: river-mouth, channels: {1: water_temperature}}}"),
    "rn": ("lora_rn2483", ""),
    "e220": ("lora_e220", ""),
    "es920": ("lora_es920lr", ""),
}


def _config(tmp_path) -> str:
    sensors = ""
    for sid, (driver, extra) in SENSORS.items():
        sensors += f"  - id: {sid}\n    driver: {driver}\n    interval: 1s\n    port: {tmp_path / sid}\n"
        if extra:
            sensors += f"    {extra}\n"
    return textwrap.dedent(f"""\
        gateway: {{id: e2e-lora, shutdown_timeout: 2s}}
        storage: {{path: {tmp_path / 'buffer.db'}, commit_interval: 200ms}}
        uplinks:
          - {{name: console, type: console, path: {tmp_path / 'out.jsonl'}}}
        sensors:
        """) + sensors


def _readings(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _send(sim, payload: bytes) -> None:
    if sim.listening:
        sim.transmit(payload.hex().upper().encode() if type(sim).__name__ == "Es920lrSim" else payload)


def _deliver_all(sims, out, temperature: float, log) -> list[dict]:
    """Send from each node until every sensor's reading with this temperature is on the console."""
    payload = lpp_temperature_humidity(temperature, 55.0)
    last_sent: dict[str, float] = {}

    def arrived():
        got = {r["sensor"]: r for r in _readings(out)
               if any(v["value"] == temperature for v in r["values"].values())}
        for sid, sim in sims.items():
            # Resend until it arrives, but with air between packets: the E220 frames by idle gaps.
            if sid not in got and time.monotonic() - last_sent.get(sid, 0) > 0.5:
                _send(sim, payload)
                last_sent[sid] = time.monotonic()
        return list(got.values()) if len(got) == len(sims) else None

    return wait_for(arrived, timeout=20, what=f"readings at {temperature} °C from every modem")


def test_gateway_run_reads_every_lora_modem_and_survives_replug(tmp_path):
    sims = {sid: DRIVERS[driver][1](tmp_path / sid).start() for sid, (driver, _) in SENSORS.items()}
    config = tmp_path / "gateway.yaml"
    config.write_text(_config(tmp_path))
    out = tmp_path / "out.jsonl"
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    log = gateway.log_text
    try:
        first = _deliver_all(sims, out, 21.5, log)
        by_sensor = {r["sensor"]: r for r in first}
        assert by_sensor["rak"]["device"] == "river-mouth"
        assert by_sensor["rak"]["values"]["water_temperature"] == {"value": 21.5, "unit": "°C"}
        assert by_sensor["es920"]["device"] == "0002"
        assert by_sensor["rn"]["values"]["snr"]["unit"] == "dB"
        for r in first:
            assert r["kind"] == "lora_node" and r["quality"] == "ok" and r["values"]["rssi"]["unit"] == "dBm"

        for sim in sims.values():
            sim.unplug()
        wait_for(lambda: all(f"sensor {sid} ({d}): failing" in log() for sid, (d, _) in SENSORS.items()),
                 timeout=10, what="every sensor to notice the unplug")
        for sim in sims.values():
            sim.start()
        after = _deliver_all(sims, out, -2.5, log)
        assert {r["sensor"] for r in after} == set(SENSORS)
        assert gateway.proc.poll() is None  # the same gateway process, never restarted
        assert sims["rn"].commands().count("mac pause") == 2  # setup ran again on the replugged modem
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ngateway log:\n{log()}") from None
    finally:
        code = gateway.terminate(timeout=15)
        for sim in sims.values():
            sim.stop()
    assert code == 0, log()


def test_gateway_probe_waits_for_the_next_packets(tmp_path):
    import threading

    from tests.helpers import gateway_cli
    sim = DRIVERS["lora_rn2483"][1](tmp_path / "rn").start()
    config = tmp_path / "probe.yaml"
    config.write_text(f"gateway: {{id: probe-gw}}\nstorage: {{path: {tmp_path / 'buffer.db'}}}\nsensors:\n"
                      f"  - {{id: rn, driver: lora_rn2483, interval: 2s, port: {tmp_path / 'rn'}}}\n")
    stop = threading.Event()

    def node():  # a node sending every 0.2 s, heard whenever the modem listens
        n = 0
        while not stop.wait(0.2):
            if sim.listening:
                sim.transmit(lpp_temperature_humidity(10 + n, 50.0), rssi=-80, snr=4)
                n += 1

    sender = threading.Thread(target=node, daemon=True)
    sender.start()
    try:
        result = gateway_cli("probe", "-c", str(config), "rn", "--count", "2")
    finally:
        stop.set()
        sender.join()
        sim.stop()
    readings = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(readings) == 2
    assert all(r["kind"] == "lora_node" and r["values"]["snr"] == {"value": 4, "unit": "dB"} for r in readings)
    assert readings[0]["values"]["temperature_1"]["value"] < readings[1]["values"]["temperature_1"]["value"]
