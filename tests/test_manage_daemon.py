"""Remote management end to end (issue 10, SPEC §7): `gateway run` as a real
process, a real Mosquitto, the city side signing with the fleet key; a serial
sensor behind a pseudo-terminal that is unplugged to make it fail."""

from __future__ import annotations

import hashlib
import json
import os

import yaml

from tests.helpers import GatewayProcess, free_port, wait_for
from tests.manage_helpers import SECRET, Operator, unit  # noqa: F401  (unit: the fixture)

HEALTH_FIELDS = {"at", "version", "config_hash", "uptime_s", "sensors", "uplinks", "buffer", "host"}

def test_health_is_retained_with_every_field_and_a_failing_sensor_shows_within_5s(unit, broker):
    late = Operator(broker.port, unit.key_file)  # connects after the fact: only a retained message reaches it
    health = wait_for(lambda: late.health(), 10, what="the retained health")[-1]
    late.stop()
    assert set(health) >= HEALTH_FIELDS
    assert health["config_hash"] == hashlib.sha256(unit.config_bytes()).hexdigest()
    assert set(health["sensors"]) == {"river-1", "river-mb"}
    assert set(health["sensors"]["river-1"]) == {"state", "detail", "last_reading_at"}
    assert health["sensors"]["river-1"]["last_reading_at"].endswith("Z")
    assert set(health["uplinks"]["city-mqtt"]) == {"connected", "pending", "oldest_pending_age_s", "dead_letters",
                                                   "last_error"}
    assert health["uplinks"]["city-mqtt"]["connected"] is True
    assert set(health["buffer"]) == {"readings", "evictions", "file_bytes", "disk_free_bytes"}
    assert health["buffer"]["file_bytes"] > 0 and health["buffer"]["disk_free_bytes"] > 0
    assert set(health["host"]) == {"cpu_temperature_c", "undervoltage", "throttled", "clock"}
    assert health["host"]["clock"] in ("synced", "unsynced")

    seen = len(unit.city.health())
    unit.device.unplug()
    failing = wait_for(lambda: next((h for h in unit.city.health()[seen:]
                                     if h["sensors"]["river-mb"]["state"] == "failing"), None), 5,
                       what="river-mb failing in a health message within 5 s")
    assert failing["sensors"]["river-1"]["state"] == "ok" and failing["sensors"]["river-mb"]["detail"]
    seen = len(unit.city.health())
    unit.device.start()
    wait_for(lambda: any(h["sensors"]["river-mb"]["state"] == "ok" for h in unit.city.health()[seen:]), 15,
             what="river-mb back to ok in a health message")


def test_a_signed_config_adding_a_sensor_is_applied_and_its_readings_arrive(unit):
    doc = json.loads(json.dumps(unit.doc))
    doc["sensors"].append({"id": "snow-9", "driver": "sim_snow", "interval": "300ms", "seed": 9})
    text = yaml.safe_dump(doc, sort_keys=False)
    before = unit.config_bytes()
    sent = unit.city.push_config(text)
    state = unit.city.state_for(sent["seq"])
    assert state["result"] == "applied" and state["errors"] == []
    assert state["config_hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert unit.config.read_text() == text
    assert (unit.tmp / "gateway.yaml.previous").read_bytes() == before
    wait_for(lambda: any(r["sensor"] == "snow-9" for r in unit.readings()), 20, what="snow-9 readings")
    wait_for(lambda: any(t == "city/test-gw/snow-9" for t, _, _ in unit.city.messages), 20,
             what="snow-9 readings over MQTT")
    wait_for(lambda: unit.city.health()[-1]["config_hash"] == state["config_hash"], 10,
             what="the health to carry the new config's hash")


def test_a_config_moving_the_storage_is_applied_and_the_running_storage_stays_until_a_restart(unit):
    """The reload plan keeps storage, service and gateway.id until a restart; the
    management agent follows what runs, not the text it was sent: an update request
    lands where the updater's path unit watches (beside the running buffer)."""
    doc = json.loads(json.dumps(unit.doc))
    moved = unit.tmp / "elsewhere"
    moved.mkdir()
    doc["storage"]["path"] = str(moved / "buffer.db")
    sent = unit.city.push_config(yaml.safe_dump(doc, sort_keys=False))
    assert unit.city.state_for(sent["seq"])["result"] == "applied"
    request = unit.city.command("update", {"url": "https://city.example/gw.whl", "sha256": "ab" * 32})
    assert unit.city.result_for("update", request["id"])["ok"] is True
    assert (unit.tmp / "update-request.json").exists() and not (moved / "update-request.json").exists()


def test_an_invalid_config_is_rejected_with_its_lines_and_the_running_config_is_untouched(unit):
    before = unit.config_bytes()
    text = yaml.safe_dump(unit.doc, sort_keys=False).replace("interval: 300ms", "interval: 300", 1)
    text += "extra_section: 1\n"
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == "interval: 300")
    sent = unit.city.push_config(text)
    state = unit.city.state_for(sent["seq"])
    assert state["result"] == "rejected"
    assert f"config/set:{line}: sensors[0].interval: a duration needs a unit: write 300s (or ms, m, h)" in state["errors"]
    assert any(e.startswith("config/set:") and "extra_section" in e for e in state["errors"])
    assert state["config_hash"] == hashlib.sha256(before).hexdigest()
    assert unit.config_bytes() == before and not (unit.tmp / "gateway.yaml.previous").exists()
    count = len(unit.readings())
    wait_for(lambda: len(unit.readings()) > count + 3, 10, what="reading to go on")


def test_unsigned_wrongly_signed_misaddressed_and_replayed_messages_are_refused(unit, tmp_path):
    from gateway.manage.envelope import sign
    from tests.manage_helpers import fleet_keys as other_keys
    before = unit.config_bytes()
    city = unit.city
    text = yaml.safe_dump({**unit.doc, "sensors": unit.doc["sensors"][:1]}, sort_keys=False)

    unsigned = city.payload("config", config=text)
    city.publish("config/set", json.dumps({"payload": json.dumps(unsigned)}))
    assert "unsigned" in city.state_for(unsigned["seq"])["errors"][0]

    stranger_key, _ = other_keys(tmp_path / "stranger")
    forged = city.payload("config", config=text)
    from gateway.manage.envelope import load_private_key
    city.publish("config/set", sign(load_private_key(stranger_key), forged))
    assert "bad signature" in city.state_for(forged["seq"])["errors"][0]

    elsewhere = city.push_config(text, gateway="other-gw")
    assert "addressed to gateway 'other-gw'" in city.state_for(elsewhere["seq"])["errors"][0]

    stale = city.push_config(text, issued_at="2020-01-01T00:00:00.000Z")
    assert "more than 1 h old" in city.state_for(stale["seq"])["errors"][0]

    ok = city.command("status")
    assert city.result_for("status", ok["id"])["ok"] is True
    replay = city.command("status", seq=ok["seq"])  # a new id, the same seq: a replayed message
    refused = city.result_for("status", replay["id"])
    assert refused["ok"] is False and "replayed" in refused["error"]
    for state in city.docs("config/state"):
        assert state["result"] == "rejected"
    assert unit.config_bytes() == before

    # The last accepted seq survives a restart.
    assert unit.gateway.terminate() == 0
    unit.gateway = GatewayProcess(unit.config, unit.tmp / "gateway2.log").start()
    wait_for(lambda: "management: listening" in unit.gateway.log_text(), 60, what="the restarted daemon")
    again = city.command("status", seq=ok["seq"])
    assert "replayed" in city.result_for("status", again["id"], 30)["error"]


def test_a_config_that_breaks_the_managing_connection_is_rolled_back_and_no_reading_is_lost(unit):
    before = unit.config_bytes()
    doc = json.loads(json.dumps(unit.doc))
    doc["uplinks"][1]["url"] = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    sent = unit.city.push_config(yaml.safe_dump(doc, sort_keys=False))
    state = unit.city.state_for(sent["seq"], timeout=60)
    assert state["result"] == "rolled_back"
    assert state["config_hash"] == hashlib.sha256(before).hexdigest()
    assert unit.config_bytes() == before
    assert "rolling back" in unit.gateway.log_text()
    # Every reading taken until now, also while the uplink pointed nowhere, reaches the city.
    assert unit.gateway.terminate() == 0
    taken = {r["id"] for r in unit.readings()}
    assert len(taken) > 20
    missing = taken - unit.mqtt_reading_ids()
    assert not missing, f"{len(missing)} readings never reached the broker"


def test_each_command_returns_its_result_with_the_request_id(unit):
    city = unit.city

    def run(name, args=None):
        sent = city.command(name, args)
        return city.result_for(name, sent["id"])

    status = run("status")
    assert status["ok"] is True and status["result"]["gateway"] == "test-gw"
    assert set(status["result"]["sensors"]) == {"river-1", "river-mb"}
    probe = run("probe", {"sensor": "river-1", "count": 2})
    assert probe["ok"] is True and [r["sensor"] for r in probe["result"]] == ["river-1", "river-1"]
    assert probe["result"][0]["id"] != probe["result"][1]["id"]
    assert "no sensor 'nope'" in run("probe", {"sensor": "nope"})["error"]
    sent = city.command("retry-dead")
    assert city.result_for("retry-dead", sent["id"]) == {"id": sent["id"], "ok": True, "result": {"moved": 0}}
    edited = unit.config.read_text().replace("interval: 300ms", "interval: 400ms", 1)
    unit.config.write_text(edited)
    reload = run("reload")
    assert reload["ok"] is True and reload["result"]["config_hash"] == hashlib.sha256(edited.encode()).hexdigest()
    unit.config.write_text(edited + "sensorz: []\n")
    broken = run("reload")
    assert broken["ok"] is False and "sensorz" in broken["error"]
    logs = run("logs", {"since": "5m", "level": "info"})
    assert logs["ok"] is True and any("command reload" in line["line"] for line in logs["result"])
    assert all(line["level"] in ("info", "warning", "error", "critical") for line in logs["result"])
    assert run("logs", {"level": "loud"})["ok"] is False
    unknown = run("reboot")
    assert unknown["ok"] is False and "unknown command 'reboot'" in unknown["error"]
    # No secret anywhere the city can read: health, states, results.
    private_pem = unit.key_file.read_text()
    body = unit.city.all_bytes().decode()
    assert SECRET not in body and "PRIVATE KEY" not in body
    assert all(line not in body for line in private_pem.splitlines()[1:-1])


def test_the_signed_update_command_is_handed_to_the_updater_and_its_outcome_reported(unit, tmp_path):
    """The daemon writes the request (it may not install software itself); the
    updater, as city-edge-gateway-update.service runs it, takes it up and writes
    the outcome; the next daemon start reports it with the request's id."""
    import http.server
    import subprocess
    import sys
    import threading

    wheels = tmp_path / "served"
    wheels.mkdir()
    (wheels / "city_edge_gateway-9.9.9-py3-none-any.whl").write_bytes(b"not the wheel the city signed for")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(wheels))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/city_edge_gateway-9.9.9-py3-none-any.whl"
    opt = tmp_path / "opt"
    (opt / "venvs/installed").mkdir(parents=True)
    (opt / "venv").symlink_to("venvs/installed")
    try:
        assert "args.sha256" in unit.city.result_for("update", unit.city.command("update", {"url": url})["id"])["error"]
        sent = unit.city.command("update", {"url": url, "sha256": "ab" * 32})
        accepted = unit.city.result_for("update", sent["id"])
        assert accepted["ok"] is True and accepted["result"]["requested"] == url
        request = unit.tmp / "update-request.json"
        assert json.loads(request.read_text())["id"] == sent["id"]

        out = subprocess.run([sys.executable, "-m", "gateway", "update", "--request", str(request), "--opt", str(opt),
                              "-c", str(unit.config), "--restart", "true"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "sha256 is" in out.stderr
        assert not request.exists() and os.readlink(opt / "venv") == "venvs/installed"
    finally:
        server.shutdown()
    assert unit.gateway.terminate() == 0
    unit.gateway = GatewayProcess(unit.config, unit.tmp / "gateway2.log").start()
    reported = wait_for(lambda: [d for d in unit.city.docs("cmd/update/result") if d["id"] == sent["id"]][1:], 60,
                        what="the update's outcome after the restart")
    assert reported[0]["ok"] is False and "sha256 is" in reported[0]["error"]
    assert not (unit.tmp / "update-result.json").exists()


def test_a_kill_during_the_trial_of_a_config_still_rolls_it_back(unit):
    before = unit.config_bytes()
    doc = json.loads(json.dumps(unit.doc))
    doc["uplinks"][1]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    sent = unit.city.push_config(yaml.safe_dump(doc, sort_keys=False))
    wait_for(lambda: "keeping it if the managing broker answers" in unit.gateway.log_text(), 30,
             what="the config on trial")
    assert unit.config_bytes() != before
    seen = len(unit.city.health())  # health from before the trial says the same: only what follows counts
    unit.gateway.kill()  # kill -9: no chance to roll back on the way out
    unit.gateway = GatewayProcess(unit.config, unit.tmp / "gateway2.log").start()
    state = unit.city.state_for(sent["seq"], timeout=60)
    assert state["result"] == "rolled_back" and unit.config_bytes() == before
    assert "was on trial at the last stop" in unit.gateway.log_text()
    old_hash = hashlib.sha256(before).hexdigest()
    wait_for(lambda: any(h["config_hash"] == old_hash and h["uplinks"]["city-mqtt"]["connected"]
                         for h in unit.city.health()[seen:]), 30, what="the unit back online with its old config")
