"""The pieces of remote management on their own (issue 10): the envelope's
checks, the persisted seq (a real buffer file), host facts (firmware and
thermal zone simulated at their file and command interfaces), the atomic
config file, the manage section of the config, and the agent with the daemon
replaced by fakes against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from gateway.buffer import Buffer
from gateway.config import ConfigError, parse_config
from gateway.manage.agent import Manager
from gateway.manage.commands import Hooks
from gateway.manage.configfile import previous_path, replace_keeping_previous
from gateway.manage.envelope import (Message, Refused, SeqGuard, load_private_key, load_public_key, open_envelope,
                                     sign, utc_stamp)
from gateway.manage.health import Host
from tests.helpers import wait_for
from tests.manage_helpers import Operator, fleet_keys


@pytest.fixture
def keys(tmp_path):
    private, public = fleet_keys(tmp_path / "keys")
    return load_private_key(private), load_public_key(public), private, public


def envelope(key, **fields) -> bytes:
    body = {"type": "cmd", "gateway": "gw-1", "issued_at": utc_stamp(), "seq": 5, "id": "r1", "name": "status",
            "args": {}, **fields}
    return sign(key, body).encode()


def opened(raw: bytes, public, synced: bool = True) -> Message:
    return open_envelope(raw, public, gateway="gw-1", kind="cmd", clock_synced=synced)


def test_envelope_accepts_the_fleet_signature_for_this_gateway_or_all(keys):
    private, public, *_ = keys
    assert opened(envelope(private), public).get("id") == "r1"
    assert opened(envelope(private, gateway="*"), public).seq == 5


@pytest.mark.parametrize("change, reason", [
    (lambda env: {"payload": env["payload"]}, "unsigned"),
    (lambda env: {**env, "payload": env["payload"].replace('"seq":5', '"seq":6')}, "bad signature"),
    (lambda env: {**env, "signature": "not base64!"}, "bad signature"),
    (lambda env: "just text", "not a signed envelope"),
])
def test_envelope_refuses_tampering(keys, change, reason):
    private, public, *_ = keys
    raw = json.dumps(change(json.loads(envelope(private)))).encode()
    with pytest.raises(Refused, match=reason):
        opened(raw, public)


def test_envelope_refuses_another_gateway_the_wrong_type_and_times_out_of_the_window(keys):
    private, public, *_ = keys
    with pytest.raises(Refused, match="addressed to gateway 'gw-2'"):
        opened(envelope(private, gateway="gw-2"), public)
    with pytest.raises(Refused, match="payload type 'config' on a cmd topic"):
        opened(envelope(private, type="config"), public)
    old = utc_stamp(time.time() - 3700)
    ahead = utc_stamp(time.time() + 400)
    with pytest.raises(Refused, match="more than 1 h old"):
        opened(envelope(private, issued_at=old), public)
    with pytest.raises(Refused, match="5 min ahead"):
        opened(envelope(private, issued_at=ahead), public)
    # While the clock is not synced the gateway cannot judge the time: the seq still guards.
    assert opened(envelope(private, issued_at=old), public, synced=False).seq == 5


def test_the_last_seq_is_kept_in_the_buffer_across_a_reopen(tmp_path, keys):
    private, public, *_ = keys
    path = tmp_path / "buffer.db"
    buf = Buffer(path, ["city"], gateway="gw-1")

    def remember(key, value):
        buf.remember(key, value)
        buf.commit()

    guard = SeqGuard(lambda k: buf.recall(k).get(k), remember)
    guard.accept(opened(envelope(private, seq=41), public))
    with pytest.raises(Refused, match="not greater than the last accepted 41"):
        guard.accept(opened(envelope(private, seq=41), public))
    buf.close()  # what a kill leaves: only committed state
    again = Buffer(path, ["city"], gateway="gw-1")
    guard = SeqGuard(lambda k: again.recall(k).get(k), lambda k, v: again.remember(k, v))
    with pytest.raises(Refused, match="replayed"):
        guard.accept(opened(envelope(private, seq=40), public))
    guard.accept(opened(envelope(private, seq=42), public))
    again.close()


def test_host_facts_from_the_thermal_zone_and_the_firmware(tmp_path, monkeypatch):
    sys_root = tmp_path / "sys"
    (sys_root / "class/thermal/thermal_zone0").mkdir(parents=True)
    (sys_root / "class/thermal/thermal_zone0/temp").write_text("61234\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vcgencmd"
    tool.write_text("#!/bin/sh\necho throttled=0x50005\n")  # undervoltage now, throttled now, and since boot
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert Host(sys_root).facts(True) == {"cpu_temperature_c": 61.2, "undervoltage": True, "throttled": True,
                                          "clock": "synced"}
    firmware = sys_root / "devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text("50000\n")  # the kernel's copy: only "has occurred" bits
    assert Host(sys_root).facts(False)["undervoltage"] is False
    nothing = Host(tmp_path / "no-sys", vcgencmd="no-such-tool").facts(False)
    assert nothing == {"cpu_temperature_c": None, "undervoltage": None, "throttled": None, "clock": "unsynced"}


def test_config_file_is_replaced_atomically_keeping_the_previous_one(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    replace_keeping_previous(path, b"new\n")
    assert path.read_text() == "new\n" and previous_path(path).read_text() == "old\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml", "gateway.yaml.previous"]


def _doc(tmp_path: Path, public: Path, port: int = 1883) -> dict:
    return {"gateway": {"id": "gw-1"}, "storage": {"path": str(tmp_path / "buffer.db")},
            "uplinks": [{"name": "city", "type": "mqtt", "url": f"mqtt://127.0.0.1:{port}",
                         "manage": {"public_key_file": str(public), "rollback_after": "5s"}}]}


def test_manage_section_is_checked_at_load(tmp_path, keys):
    *_, private, public = keys
    doc = _doc(tmp_path, public)
    assert parse_config(yaml.safe_dump(doc)).uplinks[0].manage.rollback_after == 5.0
    doc["uplinks"][0]["manage"]["public_key_file"] = str(private)
    doc["uplinks"].append({**doc["uplinks"][0], "name": "city-2", "manage": {"public_key_file": str(public)}})
    doc["uplinks"][0]["manage"]["prefix"] = "city/#"
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(doc, sort_keys=False), "gw.yaml")
    text = str(err.value)
    assert "uplinks[0].manage.public_key_file: " in text and "not a PEM public key" in text
    assert "uplinks[0].manage.prefix: a prefix has no wildcards" in text


def test_only_one_uplink_may_manage(tmp_path, keys):
    *_, public = keys
    doc = _doc(tmp_path, public)
    doc["uplinks"].append({**doc["uplinks"][0], "name": "city-2"})
    with pytest.raises(ConfigError, match=r"uplinks\[1\].manage: only one uplink may have a manage section"):
        parse_config(yaml.safe_dump(doc, sort_keys=False), "gw.yaml")


def test_a_config_the_reload_plan_refuses_is_rejected_and_the_file_kept(tmp_path, keys, broker):
    """The agent alone, the daemon replaced by callables: a refusal of the
    all-or-nothing apply leaves the file and the state as they were."""
    *_, private, public = keys
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_doc(tmp_path, public, broker.port), sort_keys=False))
    config = parse_config(path.read_text(), str(path))
    memo: dict[str, str] = {}
    applied = []

    async def refuse(new):
        applied.append(new)
        raise RuntimeError("sensor river-9: the device is busy")

    async def never(*a):
        raise AssertionError("not called")

    hooks = Hooks(snapshot=lambda: {"sensors": {}, "uplinks": {}, "buffer": {}}, apply_config=refuse, reload=never,
                  retry_dead=lambda: 0, logs=lambda s, l: [], recall=memo.get,
                  remember=memo.__setitem__, clock_synced=lambda: True)
    city = Operator(broker.port, private, gateway="gw-1")
    before = path.read_bytes()

    async def scenario():
        manager = Manager(config, hooks, Host(tmp_path / "no-sys", "no-tool"))
        await manager.start()
        try:
            await asyncio.to_thread(wait_for, lambda: city.health(), 10, 0.05, "health")
            sent = city.push_config(path.read_text().replace("5s", "6s"))
            return await asyncio.to_thread(city.state_for, sent["seq"])
        finally:
            await manager.stop()

    state = asyncio.run(scenario())
    city.stop()
    assert state["result"] == "rejected" and "the device is busy" in state["errors"][0]
    assert len(applied) == 1 and path.read_bytes() == before and not previous_path(path).exists()
    assert memo["manage:seq"] == str(state["seq"])


def test_the_health_facts_on_the_gateways_own_device_entity():
    from gateway import ngsi_ld_mapping as mapping
    from tests.ngsi_broker import CORE_V18, check_entity
    health = {"at": "2026-12-01T10:00:00.000Z", "version": "0.2.0", "config_hash": "ab", "uptime_s": 5.0,
              "sensors": {"river-1": {"state": "ok", "detail": None, "last_reading_at": "2026-12-01T09:59:58.000Z"},
                          "river-mb": {"state": "failing", "detail": "unplugged",
                                       "last_reading_at": "2026-12-01T09:58:00.000Z"}},
              "uplinks": {"city": {"connected": True}, "orion": {"connected": False}},
              "buffer": {}, "host": {"cpu_temperature_c": 71.0, "undervoltage": True, "throttled": False,
                                     "clock": "synced"}}
    e = mapping.gateway_device_health("gw-1", (34.3, 134.0), ["river_level"], health)
    assert e["deviceState"]["value"] == "degraded: sensor river-mb failing; uplink orion disconnected; undervoltage"
    assert e["softwareVersion"]["value"] == "0.2.0"
    via_orion = mapping.gateway_device_health("gw-1", None, [], health, via="orion")["deviceState"]["value"]
    assert via_orion == "degraded: sensor river-mb failing; undervoltage", "an entity that arrives proves its uplink"
    assert e["dateLastValueReported"]["value"]["@value"] == "2026-12-01T09:59:58.000Z"
    assert check_entity(e, mapping.SDM_CONTEXTS["Device"], CORE_V18) == []
    for s in health["sensors"].values():
        s["state"] = "ok"
    health["uplinks"]["orion"]["connected"] = True
    health["host"]["undervoltage"] = False
    assert mapping.gateway_device_health("gw-1", None, [], health)["deviceState"]["value"] == "ok"


def test_a_managed_gateway_refuses_sensor_ids_that_are_management_topics(tmp_path, keys):
    *_, public = keys
    doc = _doc(tmp_path, public)
    doc["sensors"] = [{"id": "health", "driver": "maxbotix", "port": "/dev/ttyUSB0", "interval": "1s"}]
    with pytest.raises(ConfigError, match=r"sensors\[0\].id: 'health' is a remote management topic"):
        parse_config(yaml.safe_dump(doc, sort_keys=False), "gw.yaml")


def test_an_update_that_changes_the_buffer_format_is_refused(tmp_path):
    """A rollback must open what the new version wrote: another SCHEMA_VERSION is
    refused before anything is switched (the new venv stood in for by scripts)."""
    from gateway.bufferfile import SCHEMA_VERSION
    from gateway.manage.update import UpdateRefused, check_with
    venv = tmp_path / "venvs/9.0.0-abc"
    (venv / "bin").mkdir(parents=True)
    for name, text in (("gateway", "exit 0"), ("python", f"echo {SCHEMA_VERSION + 1}")):
        (venv / "bin" / name).write_text(f"#!/bin/sh\n{text}\n")
        (venv / "bin" / name).chmod(0o755)
    with pytest.raises(UpdateRefused, match=f"writes buffer format {SCHEMA_VERSION + 1}, this one reads {SCHEMA_VERSION}"):
        check_with(venv, tmp_path / "gateway.yaml")
    (venv / "bin/python").write_text(f"#!/bin/sh\necho {SCHEMA_VERSION}\n")
    check_with(venv, tmp_path / "gateway.yaml")


def test_an_update_that_fails_before_the_switch_still_writes_its_result(tmp_path):
    """A download that fails (here: nothing listens) is not a refusal the updater
    foresaw, yet the city must hear of it; an emptied request (a power cut) is set
    aside with a clear line instead of starting the updater again and again."""
    import socket
    import subprocess
    import sys

    from gateway.manage import update_request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw-1}}\nstorage: {{path: {tmp_path / 'buffer.db'}}}\n"
                      "uplinks:\n  - {name: console, type: console}\nsensors: []\n")
    opt = tmp_path / "opt"
    (opt / "venvs/installed").mkdir(parents=True)
    (opt / "venv").symlink_to("venvs/installed")
    update_request.write_request(tmp_path, {"url": f"http://127.0.0.1:{closed}/city_edge_gateway-9.9.9-py3-none-any.whl",
                                            "sha256": "ab" * 32}, "req-7")
    request = tmp_path / update_request.REQUEST

    def updater():
        return subprocess.run([sys.executable, "-m", "gateway", "update", "--request", str(request), "--opt", str(opt),
                               "-c", str(config), "--restart", "true"], capture_output=True, text=True, timeout=120)
    out = updater()
    assert out.returncode == 2 and "nothing switched" in out.stderr and "Traceback" not in out.stderr, out.stderr
    result = update_request.take_result(tmp_path)
    assert result["id"] == "req-7" and result["ok"] is False and "ConnectError" in result["error"]
    assert not request.exists() and os.readlink(opt / "venv") == "venvs/installed"

    request.write_text("")  # what a power cut during the write could have left before it was synced
    out = updater()
    assert out.returncode == 2 and "cannot be read" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not request.exists(), "set aside: the path unit does not start the updater on it again"
