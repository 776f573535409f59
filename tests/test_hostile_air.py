"""What arrives over the air is hostile until decoded (issue 13, points 1 and 7):
a packet that does not decode is an error reading and never costs the driver
its port; names from the air become NGSI-LD attribute names and MQTT topic
levels only when they are valid ones, and a node cannot make the gateway
remember an unbounded number of names or nodes."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from drivers.lora_common import MAX_NAMES_PER_NODE, MAX_NODES, Packet, decode_payload
from hil.lora_modems import Rak3172Sim
from tests.helpers import GatewayProcess
from tests.lora_support import make_driver, read_readings, wait_for

FLOOD_SECONDS = 60.0  # the acceptance: 60 s, a node every 0.5 s, a hostile packet every 5 s
HOSTILE = [
    b'{"level": 1' + b"0" * 309 + b"}",  # an integer beyond a float: OverflowError in math.isfinite
    b'{"level": -1' + b"0" * 400 + b"}",
    b"[" * 200 + b"]" * 200,
    b'{"a": ' * 60 + b"1" + b"}" * 60,
    b"\xff\xfe not utf-8",
    b'{"level": 1e999}',
    b'{"n": 12345678901234567890123456789012345678901234567890}',
]


def _readings(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("payload", HOSTILE)
def test_a_hostile_json_payload_is_an_error_reading(payload):
    decoded = decode_payload(payload, "json", {})
    # What decodes is finite numbers; a number beyond a float makes the reading an error.
    assert all(isinstance(v.value, (int, float)) and abs(v.value) < 1e308 for v in decoded.values.values())
    assert (decoded.quality == "error") == (payload.startswith((b'{"level"', b"[", b"\xff")))


def test_a_hostile_packet_never_costs_the_driver_its_port(tmp_path):
    sim = Rak3172Sim(tmp_path / "rak").start()
    driver = make_driver("lora_rak3172", tmp_path / "rak", payload="json")
    driver.open()
    try:
        wait_for(lambda: sim.listening, timeout=10, what="the modem to listen")
        for i, payload in enumerate(HOSTILE):
            sim.transmit(payload)
            sim.transmit(json.dumps({"n": i}).encode())
            got = read_readings(driver, 2, timeout=10)
            assert got[0].quality == "error" or all(abs(v.value) < 1e308 for v in got[0].values.values()
                                                     if isinstance(v.value, (int, float)))
            assert got[1].quality == "ok" and got[1].values["n"].value == i
    finally:
        driver.close()
        sim.stop()


def _flood_config(tmp_path) -> str:
    return textwrap.dedent(f"""\
        gateway: {{id: flood-gw, shutdown_timeout: 2s}}
        storage: {{path: {tmp_path / 'buffer.db'}, commit_interval: 200ms}}
        uplinks:
          - {{name: console, type: console, path: {tmp_path / 'out.jsonl'}}}
        sensors:
          - {{id: rak, driver: lora_rak3172, interval: 1s, port: {tmp_path / 'rak'}, payload: json}}
        """)


def test_lora_flood_every_legitimate_packet_arrives(tmp_path):
    """A legitimate node every 0.5 s and a hostile packet every 5 s, for 60 s,
    through `gateway run` and the simulated modem on a real pty."""
    sim = Rak3172Sim(tmp_path / "rak").start()
    config = tmp_path / "gateway.yaml"
    config.write_text(_flood_config(tmp_path))
    out = tmp_path / "out.jsonl"
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    sent, unheard, hostile = [], [], []
    try:
        wait_for(lambda: sim.listening, timeout=20, what="the gateway to set the modem listening")
        start = time.monotonic()
        n = 0
        while (now := time.monotonic() - start) < FLOOD_SECONDS:
            if n % 10 == 9:
                hostile.append(HOSTILE[(n // 10) % len(HOSTILE)])
                sim.transmit(hostile[-1])
            # A packet sent while the modem is not listening (the driver reopening) is lost.
            (sent if sim.transmit(json.dumps({"seq": n, "level": 1.25}).encode()) else unheard).append(n)
            n += 1
            time.sleep(max(0.0, n * 0.5 - (time.monotonic() - start)))
        assert not unheard, f"packets sent while the driver had lost the modem: {unheard}"

        def arrived():
            got = {r["values"]["seq"]["value"] for r in _readings(out) if "seq" in r["values"]}
            return got >= set(sent)
        wait_for(arrived, timeout=30, what=f"all {len(sent)} legitimate packets on the console")
        # Each hostile packet that does not decode is an error reading, not silence.
        errors = [r for r in _readings(out) if r["quality"] == "error"]
        assert len(errors) == sum(decode_payload(h, "json", {}).quality == "error" for h in hostile) > 0
        assert "Traceback" not in gateway.log_text()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ngateway log:\n{gateway.log_text()[-4000:]}") from None
    finally:
        code = gateway.terminate(timeout=15)
        sim.stop()
    assert code == 0


# --- names from the air (point 7) ---------------------------------------------------------------

@pytest.mark.parametrize("key", ["water level", "a#b", "../etc", "уровень", "", "x" * 65, "1st", "a/b", "a+b",
                                 "a\x00b", "@id", "a:b:c"])
def test_json_keys_that_are_not_attribute_names_never_become_values(key):
    decoded = decode_payload(json.dumps({key: 1.0, "level": 2.0}).encode(), "json", {})
    assert key not in decoded.values
    assert decoded.values["level"].value == 2.0
    assert decoded.quality == "error" and "name" in decoded.error


@pytest.mark.parametrize("key", ["level", "waterLevel", "water_level", "t2", "A_1"])
def test_json_keys_that_are_attribute_names_are_kept(key):
    decoded = decode_payload(json.dumps({key: 1.0}).encode(), "json", {})
    assert decoded.quality == "ok" and decoded.values[key].value == 1.0


def test_names_and_nodes_from_the_air_are_bounded(tmp_path):
    driver = make_driver("lora_rak3172", tmp_path / "rak", payload="json", node_id_bytes=2,
                         nodes={"0001": {"name": "river-mouth"}})
    # One node sending ever new keys: the first MAX_NAMES_PER_NODE are kept, the rest refused.
    for i in range(MAX_NAMES_PER_NODE + 20):
        reading = driver.to_reading(Packet(b"\x00\x02" + json.dumps({f"k{i}": i}).encode()))
    assert reading.quality == "error" and not any(k.startswith("k") for k in reading.values)
    assert len(driver._names["2"]) == MAX_NAMES_PER_NODE
    # Ever new node ids: beyond MAX_NODES they name no device (one entity, not thousands).
    devices = {driver.to_reading(Packet(i.to_bytes(2, "big") + b'{"v": 1}')).device for i in range(3, 3000)}
    assert len(devices - {None}) <= MAX_NODES
    assert len(driver._names) <= MAX_NODES
    # A configured node is always heard, even after the flood.
    assert driver.to_reading(Packet(b"\x00\x01" + b'{"v": 1}')).device == "river-mouth"
