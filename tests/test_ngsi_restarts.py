"""The NGSI-LD uplink in the real gateway process: a broker refusing the tenant
until the config is fixed and reloaded, and a SIGKILL in the middle of draining
a backlog behind an alert."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.buffer import stats as buffer_stats
from gateway.sdk import Reading, Value
from gateway.sdk.reading import format_time
from tests.daemon_helpers import status_json
from tests.helpers import GatewayProcess, wait_for, write_config
from tests.ngsi_broker import NgsiBroker
from tests.ngsi_helpers import GW, LEVELS, RIVER, upserts_move_forwards

REFUSED_S = 10.0  # the figure


def config(tmp_path: Path, url: str, sensors: bool = True, **uplink) -> Path:
    doc = {
        "gateway": {"id": GW, "location": [34.3428, 134.0466], "shutdown_timeout": "10s"},
        "storage": {"path": str(tmp_path / "buffer.db"), "commit_interval": "200ms"},
        "uplinks": [{"name": "orion", "type": "ngsi-ld", "url": url, "reconnect_max": "1s", **uplink},
                    {"name": "record", "type": "console", "path": str(tmp_path / "readings.jsonl")}],
        "sensors": [{"id": "river-1", "driver": "sim_river", "interval": "200ms", "mount_height": 6.0,
                     "alert_levels": LEVELS}] if sensors else [],
    }
    return write_config(tmp_path / "gw.yaml", doc)


def uplink_state(path: Path) -> dict:
    with sqlite3.connect(path) as conn:
        return buffer_stats(conn, ["orion"])["uplinks"]["orion"]


def test_a_tenant_refused_for_10s_then_fixed_and_reloaded_delivers_every_reading(tmp_path):
    broker = NgsiBroker(tenants="unsupported").start()  # Orion-LD without -multiservice
    cfg = config(tmp_path, broker.url, tenant="takamatsu")
    gw = GatewayProcess(cfg, tmp_path / "gw.log").start()
    try:
        wait_for(lambda: "tenant" in str(((status_json(cfg) or {}).get("uplinks") or {}).get("orion", {})
                                         .get("last_error")), 30, what="the tenant fault in gateway status")
        time.sleep(REFUSED_S)
        refused = status_json(cfg)["uplinks"]["orion"]
        assert refused["dead_letters"] == 0 and refused["pending"] > 20 and not refused["connected"]
        config(tmp_path, broker.url)  # the technician removes the tenant
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (status_json(cfg) or {}).get("uplinks", {}).get("orion", {}).get("last_error") is None
                 and status_json(cfg)["uplinks"]["orion"]["pending"] < 5, 60, what="the backlog delivered")
        assert gw.terminate() == 0
    finally:
        gw.kill()
        broker.stop()
    log = gw.log_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "refused the tenant" in errors[0], "said once, loudly, not on every retry"
    state = uplink_state(tmp_path / "buffer.db")
    assert (state["pending"], state["dead_letters"]) == (0, 0)
    readings = [json.loads(line) for line in (tmp_path / "readings.jsonl").read_text().splitlines()]
    want = [r["observed_at"] for r in readings if "water_level" in r["values"]]
    assert len(want) > 50
    assert sorted(set(broker.observed(RIVER, "currentLevel"))) == want, "every reading arrived, none twice-counted"
    assert broker.entities[RIVER]["currentLevel"]["observedAt"] == want[-1]


def backlog(path: Path, n: int, alert_at: int) -> list[Reading]:
    """n river readings one second apart, the level rising; the alert-level change at `alert_at`."""
    buf = Buffer(path, ["orion"], gateway=GW)
    t0 = time.time() - 10 * n
    out = []
    for i in range(n):
        stage = "danger" if i >= alert_at else "normal"
        r = Reading(sensor="river-1", kind="river_level", observed_at=t0 + i, gateway=GW,
                    values={"water_level": Value(round(1 + i / n, 4), "m"), "alert_level": Value(stage)},
                    id=f"{GW}.river-1.{int((t0 + i) * 1000)}.{i:06d}", location=(34.3428, 134.0466))
        r.alert = i == alert_at
        buf.append(r)
        out.append(r)
    buf.commit()
    buf.close()
    return out


@pytest.mark.parametrize("temporal", [True, False], ids=["with-temporal-store", "without"])
def test_alerts_ahead_sigkill_mid_drain_no_upsert_moves_observed_at_backwards(tmp_path, temporal):
    readings = backlog(tmp_path / "buffer.db", 1500, alert_at=1400)
    broker = NgsiBroker(temporal=temporal, validate=False).start()
    broker.delay = 0.05  # a slow broker: the drain takes a few seconds
    cfg = config(tmp_path, broker.url, sensors=False, batch=25)  # only the backlog
    first = GatewayProcess(cfg, tmp_path / "gw1.log").start()
    try:
        wait_for(lambda: len(broker.log) >= 4, 60, what="the drain under way")
        first.kill()  # SIGKILL, mid-drain
        assert uplink_state(tmp_path / "buffer.db")["pending"] > 10, "killed mid-drain"
        second = GatewayProcess(cfg, tmp_path / "gw2.log").start()
        wait_for(lambda: uplink_state(tmp_path / "buffer.db")["pending"] == 0, 120, what="the rest delivered")
        assert second.terminate() == 0
    finally:
        first.kill()
        broker.stop()
    assert upserts_move_forwards(broker.upserted) == []
    alert = format_time(readings[1400].observed_at)
    upserted = [e["currentLevel"]["observedAt"] for i, e in broker.upserted if i == RIVER]
    assert upserted[0] == alert, "the alert went ahead of the backlog"
    newest = readings[-1]
    state = broker.entities[RIVER]
    assert (state["currentLevel"]["observedAt"], state["currentLevel"]["value"]) == \
        (format_time(newest.observed_at), newest.values["water_level"].value), "the final state is the newest reading"
    assert state["floodLevelStatus"]["value"] == "danger"
    if temporal:
        assert set(broker.observed(RIVER, "currentLevel")) == {format_time(r.observed_at) for r in readings}
