"""`gateway status` over the daemon's Unix socket, Prometheus metrics and
/healthz (issue 5), against a running daemon on simulated sensors."""

from __future__ import annotations

import urllib.request

import pytest

from tests.daemon_helpers import (Daemon, base_config, console_lines, free_port, gateway_cli, status_json, wait_for,
                            write_config)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("status")
    metrics_port = free_port()
    closed_port = free_port()  # nothing listens: the MQTT uplink stays down and readings pile up
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path,
        sensors=[{"id": "river-1", "driver": "sim_river", "interval": "200ms"},
                 {"id": "snow-1", "driver": "sim_snow", "interval": "300ms"},
                 # A serial sensor whose USB adapter is not plugged in: failing, with the reason.
                 {"id": "river-2", "driver": "maxbotix", "interval": "1s", "port": str(tmp_path / "ttyUSB-unplugged")}],
        uplinks=[{"name": "console", "type": "console", "path": str(tmp_path / "out.jsonl")},
                 {"name": "city", "type": "mqtt", "url": f"mqtt://127.0.0.1:{closed_port}"}],
        metrics_port=metrics_port))
    d = Daemon(cfg)
    try:
        wait_for(lambda: (s := status_json(cfg)) and all(s["sensors"][x]["reads"] >= 3 for x in ("river-1", "snow-1"))
                 and s["sensors"]["river-2"]["read_errors"] >= 1, what="three readings per sim sensor in the status")
        yield cfg, d, tmp_path, metrics_port
    finally:
        assert d.stop() == 0


def test_status_json_reports_sensors_uplinks_and_buffer(running):
    cfg, _, tmp_path, _ = running
    s = status_json(cfg)
    assert s["gateway"] == "test-gw" and s["healthy"] is True
    river = s["sensors"]["river-1"]
    assert river["driver"] == "sim_river" and river["state"] == "ok" and river["read_errors"] == 0
    assert river["last_reading"]["sensor"] == "river-1"
    assert river["last_reading"]["values"]["water_level"]["unit"] == "m"
    assert 0 <= river["age_s"] < 5
    assert s["sensors"]["snow-1"]["last_reading"]["kind"] == "snow_depth"
    unplugged = s["sensors"]["river-2"]
    assert unplugged["state"] == "failing" and unplugged["last_reading"] is None and unplugged["age_s"] is None
    assert "ttyUSB-unplugged" in unplugged["detail"] and unplugged["read_errors"] >= 1
    # The console got what was read; the MQTT uplink is down with everything pending.
    # The last reading in the status is exactly the one the console uplink delivers.
    delivered = wait_for(lambda: {r["id"]: r for r in console_lines(tmp_path / "out.jsonl")
                                  if r["id"] == river["last_reading"]["id"]}, what="the reading delivered")
    assert delivered[river["last_reading"]["id"]] == river["last_reading"]
    console, city = s["uplinks"]["console"], s["uplinks"]["city"]
    assert console["connected"] is True and console["type"] == "console"
    assert city["connected"] is False and city["type"] == "mqtt"
    assert city["pending"] >= 6 and city["pending"] >= console["pending"]
    assert city["oldest_pending_age_s"] is not None and city["oldest_pending_age_s"] >= 0
    assert s["buffer"]["readings"] >= 1 and s["buffer"]["evictions"] == 0


def test_status_table_is_readable(running):
    cfg = running[0]
    out = gateway_cli("status", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "river-1" in out.stdout and "snow-1" in out.stdout
    assert any(line.startswith("river-2") and "failing" in line for line in out.stdout.splitlines()), out.stdout
    assert any(line.startswith("city") and " NO " in line for line in out.stdout.splitlines()), out.stdout


def test_status_without_a_daemon_says_so(tmp_path):
    cfg = write_config(tmp_path / "gw.yaml", base_config(tmp_path, sensors=[], uplinks=[]))
    out = gateway_cli("status", "-c", str(cfg))
    assert out.returncode == 1
    assert "is the gateway running" in out.stderr


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_in_prometheus_text(running):
    port = running[3]
    code, text = _get(port, "/metrics")
    assert code == 200
    for needle in ('gateway_readings_total{sensor="river-1"}', 'gateway_sensor_ok{sensor="river-2"} 0.0', 'gateway_read_errors_total{sensor="snow-1"} 0.0',
                   'gateway_uplink_connected{uplink="city"} 0.0', 'gateway_uplink_connected{uplink="console"} 1.0',
                   'gateway_uplink_pending{uplink="city"}', 'gateway_uplink_oldest_pending_age_seconds{uplink="city"}',
                   "gateway_buffer_evictions_total 0.0", 'gateway_uplink_dead_letters{uplink="city"} 0.0',
                   'gateway_uplink_publish_latency_seconds{uplink="console"}'):
        assert needle in text, needle
    pending = [line for line in text.splitlines() if line.startswith('gateway_uplink_pending{uplink="city"}')]
    assert float(pending[0].split()[-1]) >= 6


def test_healthz(running):
    assert _get(running[3], "/healthz") == (200, "ok\n")
    assert _get(running[3], "/nothing")[0] == 404


def test_healthz_is_unhealthy_once_a_sensor_has_failed_longer_than_unhealthy_after(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "200ms"},
                           {"id": "river-2", "driver": "maxbotix", "interval": "1s",
                            "port": str(tmp_path / "ttyUSB-unplugged")}],
        uplinks=[], metrics_port=port, unhealthy_after="2s"))
    d = Daemon(cfg)
    try:
        code, text = wait_for(lambda: (r := _get_or_none(port, "/healthz")) and r[0] == 503 and r, 60,
                              what="/healthz to turn unhealthy")
        assert text.startswith("sensor river-2: failing for ") and "ttyUSB-unplugged" in text
        assert "river-1" not in text
        assert status_json(cfg)["healthy"] is True  # the watchdog's health: a restart fixes no sensor
    finally:
        assert d.stop() == 0


def _get_or_none(port: int, path: str):
    try:
        return _get(port, path)
    except OSError:
        return None


def test_the_status_table_shows_each_uplinks_last_error():
    import io

    from gateway.status import print_table
    data = {"gateway": "g", "pid": 1, "uptime_s": 5.0, "healthy": True, "problems": [], "clock": {"synced": True},
            "sensors": {}, "buffer": {"path": "b.db", "readings": 3, "evictions": 0},
            "uplinks": {"city": {"connected": False, "pending": 3, "oldest_pending_age_s": 4.0, "dead_letters": 0,
                                 "last_error": "connection refused by 127.0.0.1:1883"},
                        "console": {"connected": True, "pending": 0, "oldest_pending_age_s": None, "dead_letters": 0,
                                    "last_error": None}}}
    out = io.StringIO()
    print_table(data, out)
    lines = out.getvalue().splitlines()
    assert any(l.startswith("city") and l.endswith("(connection refused by 127.0.0.1:1883)") for l in lines)
    assert not any(l.startswith("console") and "(" in l for l in lines)


def test_status_shows_tasks_reload_and_each_uplinks_last_error(running):
    """Issue 9: the health view adds per uplink `last_error`, per sensor `last_reading_at`, `tasks`, `reload`."""
    cfg, _, _, port = running
    s = status_json(cfg)
    tasks = s["tasks"]
    for name in ("commit", "watchdog", "health", "sensor-river-1", "sensor-river-2", "deliver-console",
                 "deliver-city", "uplink-city"):
        assert tasks[name] == {"state": "running", "restarts": 0, "last_error": None}, (name, tasks)
    assert tasks["clock"]["state"] == "done"  # its job ends once the clock is trusted
    assert s["reload"] is None  # no reload yet
    assert "Connection refused" in s["uplinks"]["city"]["last_error"]
    assert s["uplinks"]["console"]["last_error"] is None
    river = s["sensors"]["river-1"]
    assert river["last_reading_at"] is not None and river["last_reading_at"].endswith("Z")
    assert s["sensors"]["river-2"]["last_reading_at"] is None
    code, text = _get(port, "/metrics")
    assert 'gateway_task_up{task="deliver-city"} 1.0' in text and "gateway_reload_refused 0.0" in text
    assert 'gateway_task_restarts_total{task="commit"} 0.0' in text


def test_the_health_view_tells_its_listeners_of_a_state_change(tmp_path):
    import asyncio
    import time

    import yaml

    from gateway.config import parse_config
    from gateway.service import Gateway

    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"},
                                         {"id": "river-2", "driver": "maxbotix", "interval": "100ms",
                                          "port": str(tmp_path / "ttyUSB-unplugged")}], uplinks=[])
    seen: list[dict] = []

    async def scenario():
        gw = Gateway(parse_config(yaml.safe_dump(doc)))
        task = asyncio.create_task(gw.run())
        deadline = time.monotonic() + 20
        while gw.health is None:
            await asyncio.sleep(0.01)
        gw.health.on_change(lambda: seen.append(gw.health.snapshot()["sensors"]))
        while not any(x.get("river-2", {}).get("state") == "failing" for x in seen):
            assert time.monotonic() < deadline, seen[-1:]
            await asyncio.sleep(0.02)
        count = len(seen)
        await asyncio.sleep(0.5)
        gw.request_stop("test")
        assert await task == 0
        return count

    count = asyncio.run(scenario())
    assert seen[-1]["river-1"]["state"] == "ok"
    assert count <= 4, "told of changes, not of every check"
