"""SIGHUP reloads the config (issue 5): sensors and uplinks added, removed or
changed without losing buffered readings; an invalid config is rejected with
its problems and the running one stays."""

from __future__ import annotations

import signal
import sqlite3

import pytest

from tests.daemon_helpers import (Daemon, base_config, console_lines, free_port, gateway_cli, status_json, wait_for,
                                  write_config)


def _buffered_ids(db) -> set[str]:
    """Ids of the committed readings (the buffer keeps an id's <ms>.<counter> as one number)."""
    with sqlite3.connect(db) as c:
        return {f"test-gw.{sensor}.{ident // 1_000_000}.{ident % 1_000_000:06d}"
                for sensor, ident in c.execute("SELECT sensor, ident FROM readings")}


@pytest.fixture
def daemon(tmp_path):
    down = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: readings stay pending for "city"
    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}],
                      uplinks=[{"name": "city", "type": "mqtt", "url": down}])
    cfg = write_config(tmp_path / "gw.yaml", doc)
    d = Daemon(cfg)
    yield d, cfg, doc, tmp_path
    d.kill()


def test_sighup_adds_a_sensor_and_keeps_pending_readings(daemon):
    d, cfg, doc, tmp_path = daemon
    wait_for(lambda: (s := status_json(cfg)) and s["uplinks"]["city"]["pending"] >= 10, what="pending readings")
    pending_before = _buffered_ids(tmp_path / "buffer.db")
    assert len(pending_before) >= 5
    # The uplink "city" keeps its name but now writes to a file; a snow sensor joins.
    out = tmp_path / "city.jsonl"
    doc["uplinks"] = [{"name": "city", "type": "console", "path": str(out)}]
    doc["sensors"].append({"id": "snow-1", "driver": "sim_snow", "interval": "100ms"})
    write_config(cfg, doc)
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(r["sensor"] == "snow-1" for r in console_lines(out)), what="the new sensor reporting")
    wait_for(lambda: pending_before <= {r["id"] for r in console_lines(out)}, what="every pending reading sent")
    s = status_json(cfg)
    assert set(s["sensors"]) == {"river-1", "snow-1"}
    assert s["uplinks"]["city"]["type"] == "console" and s["uplinks"]["city"]["connected"]
    assert "config reloaded: 2 sensors, 1 uplinks" in d.logs()
    assert d.stop() == 0


def test_a_reloaded_config_says_its_warnings_as_a_start_does(daemon):
    """What `gateway check` warns of reaches the journal for every config that comes into effect."""
    d, cfg, doc, tmp_path = daemon
    wait_for(lambda: status_json(cfg), what="the daemon running")
    doc["sensors"].append({"id": "sonar-1", "driver": "maxbotix", "interval": "1s", "port": "/dev/ttyUSB-not-here"})
    write_config(cfg, doc)
    d.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.logs(), what="the reload")
    assert "sensors[1].port: warning: serial port /dev/ttyUSB-not-here does not exist" in d.logs(), d.logs()[-2000:]
    assert d.stop() == 0


def test_sighup_removes_a_sensor_and_adds_an_uplink_that_gets_the_backlog(daemon):
    d, cfg, doc, tmp_path = daemon
    wait_for(lambda: (s := status_json(cfg)) and s["sensors"]["river-1"]["reads"] >= 5, what="readings")
    backlog = _buffered_ids(tmp_path / "buffer.db")
    out = tmp_path / "archive.jsonl"
    doc["sensors"] = [{"id": "snow-1", "driver": "sim_snow", "interval": "100ms"}]
    doc["uplinks"].append({"name": "archive", "type": "console", "path": str(out)})
    write_config(cfg, doc)
    d.signal(signal.SIGHUP)
    wait_for(lambda: (s := status_json(cfg)) and set(s["sensors"]) == {"snow-1"}, what="river-1 gone")
    # A new uplink starts at the oldest reading still buffered.
    wait_for(lambda: backlog <= {r["id"] for r in console_lines(out)}, what="the backlog in the new uplink")
    wait_for(lambda: any(r["sensor"] == "snow-1" for r in console_lines(out)), what="the new sensor's readings")
    assert set(status_json(cfg)["uplinks"]) == {"city", "archive"}
    assert d.stop() == 0


def test_an_invalid_config_is_rejected_and_the_old_one_keeps_running(daemon):
    d, cfg, doc, tmp_path = daemon
    wait_for(lambda: status_json(cfg), what="the daemon")
    good = cfg.read_text()
    cfg.write_text(good.replace("driver: sim_river", "driver: sim_river\n  intervall: 5s"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload rejected" in d.logs(), what="the rejection")
    assert "sensors[0].intervall: unknown key" in d.logs()
    reads = status_json(cfg)["sensors"]["river-1"]["reads"]
    wait_for(lambda: status_json(cfg)["sensors"]["river-1"]["reads"] > reads + 2, what="reading goes on")
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_a_reload_that_cannot_start_a_new_uplink_is_refused_and_the_old_set_keeps_running(tmp_path):
    """Issue 9, defect 4: all-or-nothing. Nothing of the new config is put into
    effect when a part of it cannot start; status says the reload was refused
    and why; the next reload compares against what really runs."""
    out1, out2 = tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"
    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}],
                      uplinks=[{"name": "city", "type": "console", "path": str(out1)}])
    cfg = write_config(tmp_path / "gw.yaml", doc)
    d = Daemon(cfg)
    try:
        wait_for(lambda: len(console_lines(out1)) >= 3, what="readings in the first file")
        doc["sensors"].append({"id": "snow-1", "driver": "sim_snow", "interval": "100ms"})
        # "city" changes its file; "archive" passes the check but cannot open its file (a link into a
        # directory that is not there: the check sees a file name in a directory that exists).
        (tmp_path / "archive.jsonl").symlink_to(tmp_path / "no-such-dir" / "a.jsonl")
        doc["uplinks"] = [{"name": "city", "type": "console", "path": str(out2)},
                          {"name": "archive", "type": "console", "path": str(tmp_path / "archive.jsonl")}]
        write_config(cfg, doc)
        d.signal(signal.SIGHUP)
        s = wait_for(lambda: (s := status_json(cfg)) and s["reload"] and s["reload"]["result"] == "refused" and s,
                     what="the refused reload in the status")
        assert "uplink archive cannot start" in s["reload"]["reason"] and "No such file" in s["reload"]["reason"]
        assert set(s["sensors"]) == {"river-1"} and set(s["uplinks"]) == {"city"}
        count = len(console_lines(out1))
        wait_for(lambda: len(console_lines(out1)) > count + 3, what="the old uplink still delivering")
        assert console_lines(out2) == [], "nothing of the refused config delivered"
        assert "reload refused: uplink archive cannot start" in d.logs()
        table = gateway_cli("status", "-c", str(cfg)).stdout
        assert "last reload REFUSED" in table and "uplink archive cannot start" in table, table

        doc["uplinks"] = doc["uplinks"][:1]  # the technician drops the broken uplink
        write_config(cfg, doc)
        d.signal(signal.SIGHUP)
        wait_for(lambda: (s := status_json(cfg)) and s["reload"]["result"] == "applied"
                 and set(s["sensors"]) == {"river-1", "snow-1"}, what="the second reload applied")
        wait_for(lambda: any(r["sensor"] == "snow-1" for r in console_lines(out2)), what="the new file in use")
        delivered = lambda: {r["id"] for r in console_lines(out1) + console_lines(out2)}  # noqa: E731
        wait_for(lambda: _buffered_ids(tmp_path / "buffer.db") <= delivered(), what="nothing lost across the reloads")

        cfg.write_text(cfg.read_text().replace("driver: sim_snow", "driver: sim_snow\n  colour: red"))
        d.signal(signal.SIGHUP)
        s = wait_for(lambda: (s := status_json(cfg)) and s["reload"]["result"] == "refused" and s,
                     what="an invalid config refused")
        assert any("sensors[1].colour: unknown key" in e for e in s["reload"]["errors"]), s["reload"]
        assert set(s["sensors"]) == {"river-1", "snow-1"}
        assert d.stop() == 0
    finally:
        d.kill()
