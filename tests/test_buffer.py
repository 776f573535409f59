"""SPEC §5 on a real SQLite file: bounded size with oldest-non-alert eviction,
a corrupt file moved aside, dead letters, ids unique across restarts."""

import json
import sqlite3
import time

from gateway.buffer import Buffer, dead_letters, retry_dead_letters, stats, unpack
from gateway.ids import IdGenerator
from gateway.sdk.reading import Reading, Value
from tests.helpers import GatewayProcess, buffer_stats, gateway_cli, sim_config, wait_for, write_config


def reading(i: int, alert: bool = False, observed_ms: int | None = None) -> Reading:
    ms = observed_ms if observed_ms is not None else 1_763_780_000_000 + i
    return Reading(sensor="s", kind="river_level", values={"water_level": Value(1.0 + i / 1000, "m")},
                   observed_at=ms / 1000, id=f"gw.s.{ms}.{i:06d}", gateway="gw", alert=alert)


def test_stored_readings_come_back_as_the_exact_json_they_were(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw")
    originals = [reading(1), Reading(sensor="b-1", kind="beacon", device="9d4df41249a7baf7e758b91c",
                                     values={"rssi": Value(-71.5, "dBm"), "count": Value(3)}, quality="suspect",
                                     error="low signal", clock_synced=False, monotonic=12.5, location=(34.1, 134.2),
                                     observed_at=1_763_780_645.678, id="gw.b-1.1763780645679.000042", gateway="gw")]
    for r in originals:
        buf.append(r)
    buf.commit()
    assert [row.body for row in buf.fetch(0, 10)] == [r.to_json() for r in originals]
    buf.close()


def test_full_buffer_evicts_oldest_non_alerts_counts_and_keeps_alerts(tmp_path, caplog):
    buf = Buffer(tmp_path / "b.db", [], gateway="gw", max_readings=10, commit_rows=1000)
    for i in range(30):
        buf.append(reading(i, alert=i in (0, 1, 25)))
    buf.commit()
    seqs = [r[0] for r in buf.conn.execute("SELECT seq FROM readings ORDER BY seq")]
    assert len(seqs) == 10
    assert seqs[:2] == [1, 2], "the two oldest are alerts: kept"
    assert seqs[2:] == [23, 24, 25, 26, 27, 28, 29, 30], "then the newest non-alerts"
    assert buf.evictions == 20
    assert "evicted the 20 oldest non-alert readings" in caplog.text
    buf.close()
    conn = sqlite3.connect(tmp_path / "b.db")
    assert stats(conn, [])["buffer"] == {"readings": 10, "evictions": 20, "appended": 30,
                                         "file_bytes": stats(conn, [])["buffer"]["file_bytes"]}


def test_gateway_with_small_max_readings_keeps_alert_level_changes(tmp_path):
    # A fast storm crosses every stage; with no uplink, readings stay until the bound.
    sensors = [{"id": "river-1", "driver": "sim_river", "interval": "20ms", "time_scale": 2000, "storm_at": "1s",
                "mount_height": 6.0, "alert_levels": {"standby": 1.0, "caution": 1.5, "evacuation": 2.0, "danger": 2.5}}]
    config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [], sensors=sensors, max_readings=10))
    gw = GatewayProcess(config, tmp_path / "gw.log").start()
    wait_for(lambda: "danger" in _bodies(tmp_path), 30, what="the storm to reach the danger stage")
    assert gw.terminate() == 0
    s = buffer_stats(config)
    assert s["buffer"]["evictions"] > 0 and s["buffer"]["evictions"] == s["buffer"]["appended"] - s["buffer"]["readings"]
    with sqlite3.connect(tmp_path / "buffer.db") as conn:
        alerts = [json.loads(unpack(rest))["values"]["alert_level"]["value"]
                  for (rest,) in conn.execute("SELECT rest FROM readings WHERE alert = 1 ORDER BY seq")]
    assert alerts[:4] == ["standby", "caution", "evacuation", "danger"], "every stage change kept"
    assert "evicted" in gw.log_text()


def _bodies(tmp_path) -> str:
    try:
        with sqlite3.connect(tmp_path / "buffer.db") as conn:
            return " ".join(unpack(rest) for (rest,) in conn.execute("SELECT rest FROM readings WHERE alert = 1"))
    except sqlite3.Error:
        return ""


def test_corrupt_buffer_is_moved_aside_and_a_new_one_started_loudly(tmp_path):
    garbage = b"this is not a database\x00" * 500
    (tmp_path / "buffer.db").write_bytes(garbage)
    (tmp_path / "buffer.db.ids").write_text("1763780645678")  # a gateway ran on it: its own buffer, gone bad
    out = tmp_path / "console.jsonl"
    config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [{"name": "c", "type": "console", "path": str(out)}]))
    gw = GatewayProcess(config, tmp_path / "gw.log").start()
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 10, 20, what="readings after recovery")
    assert gw.terminate() == 0
    aside = list(tmp_path.glob("buffer.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage, "kept for inspection, untouched"
    log = gw.log_text()
    assert "CRITICAL" in log and "does not open" in log and "moved aside" in log
    assert buffer_stats(config)["uplinks"]["c"]["pending"] == 0


def test_dead_letters_are_listed_and_retried(tmp_path):
    buf = Buffer(tmp_path / "b.db", ["u"], gateway="gw", max_readings=100)
    seq = buf.append(reading(1))
    buf.commit()
    buf.dead_letter("u", seq, reading(1).to_json(), "broker rejected the publish: Not authorized")
    buf.ack("u", seq)
    buf.commit()
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    [dead] = dead_letters(conn)
    assert (dead.uplink, dead.seq, dead.reason, dead.retry) == ("u", seq, "broker rejected the publish: Not authorized", 0)
    assert stats(conn, ["u"])["uplinks"]["u"] == {"pending": 0, "oldest_pending_age_s": None, "dead_letters": 1}
    assert retry_dead_letters(conn) == 1
    assert stats(conn, ["u"])["uplinks"]["u"]["pending"] == 1
    [again] = buf.fetch_retries("u")
    buf.dead_retry_done(again.id)
    buf.commit()
    assert dead_letters(conn) == []


def test_reading_ids_stay_unique_across_restarts_with_a_clock_that_went_back(tmp_path, monkeypatch):
    lease = tmp_path / "buffer.db.ids"
    first = IdGenerator("gw", lease)
    ids = {first.next("s") for _ in range(1000)}
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now - 86_400)  # rebooted a day "earlier" (no RTC)
    second = IdGenerator("gw", lease)
    more = {second.next("s") for _ in range(1000)}
    assert len(ids | more) == 2000
    assert min(int(i.split(".")[2]) for i in more) > max(int(i.split(".")[2]) for i in ids)


def test_buffer_cli_stats_and_dead(tmp_path):
    config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [{"name": "u", "type": "console", "path": "-"}]))
    buf = Buffer(tmp_path / "buffer.db", ["u"], gateway="gw")
    r = reading(7, observed_ms=int(time.time() * 1000) - 5000)
    seq = buf.append(r)
    buf.dead_letter("u", seq, r.to_json(), "HTTP 400: attribute value out of range")
    buf.commit()
    s = buffer_stats(config)
    assert s["uplinks"]["u"]["pending"] == 1 and s["uplinks"]["u"]["oldest_pending_age_s"] >= 5
    assert s["uplinks"]["u"]["dead_letters"] == 1
    listing = gateway_cli("buffer", "-c", str(config), "dead").stdout
    assert r.id in listing and "HTTP 400: attribute value out of range" in listing
    gateway_cli("buffer", "-c", str(config), "dead", "--retry")
    assert buffer_stats(config)["uplinks"]["u"]["dead_letters"] == 0
    table = gateway_cli("buffer", "-c", str(config), "stats").stdout
    assert "pending" in table and "evicted" in table


def test_remembered_state_outlives_a_restart_and_rides_in_the_readings_commit(tmp_path):
    from gateway.buffer import Buffer
    path = tmp_path / "b.db"
    b = Buffer(path, ["u"], gateway="g")
    b.remember("pipeline:river-1", '{"stage": "danger"}')
    b.remember("ngsi:orion:urn:x", "1700000000000")
    assert b.recall("pipeline:") == {"pipeline:river-1": '{"stage": "danger"}'}  # pending, already visible
    # Not yet committed: a second connection sees nothing.
    other = Buffer(path, ["u"], gateway="g")
    assert other.recall("") == {}
    other.close()
    b.commit()
    b.remember("ngsi:orion:urn:x", None)
    b.close()
    again = Buffer(path, ["u"], gateway="g")
    assert again.recall("") == {"pipeline:river-1": '{"stage": "danger"}'}
    again.close()
