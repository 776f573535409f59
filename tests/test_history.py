"""The on-site page's recent history (gateway/history.py): bounded in time, in
density and in size; a broken file is started again, never a reason to stop."""

from __future__ import annotations

import time

from gateway.history import RecentHistory
from gateway.sdk.reading import Reading, Value


def _level(at: float, value: float, device: str | None = None, alert: bool = False) -> Reading:
    r = Reading("river-1", "river_level", {"water_level": Value(value, "m"), "alert_level": Value("normal")},
                observed_at=at, device=device)
    r.alert = alert
    return r


def test_points_older_than_the_span_are_dropped_and_survive_a_reopen(tmp_path):
    now = time.time()
    h = RecentHistory(tmp_path / "h", span=3600, step=0)
    for i in range(10):
        h.add(_level(now - 7200 + i * 800, float(i)))
    h.close()
    again = RecentHistory(tmp_path / "h", span=3600, step=0)
    kept = again.series("river-1")["water_level"]
    assert [v for _, _, v in kept] == [5.0, 6.0, 7.0, 8.0, 9.0]  # newer than an hour; text values not kept
    assert "alert_level" not in again.series("river-1")


def test_one_point_per_step_per_device_but_every_alert_change(tmp_path):
    h = RecentHistory(tmp_path / "h", step=60)
    t0 = time.time() - 600
    for i in range(30):  # every 10 s
        h.add(_level(t0 + i * 10, 1.0))
        h.add(_level(t0 + i * 10, 2.0, device="b"))
    h.add(_level(t0 + 295, 3.0, alert=True))
    h.flush()
    points = h.series("river-1")["water_level"]
    assert sum(1 for _, d, _ in points if d == "") == 5 + 1  # t0, +60 ... +240, and the alert
    assert sum(1 for _, d, _ in points if d == "b") == 5


def test_the_table_never_holds_more_than_max_points(tmp_path):
    h = RecentHistory(tmp_path / "h", step=0, max_points=100)
    now = time.time()
    for i in range(500):
        h.add(_level(now - 500 + i, float(i)))
    h.flush()
    values = [v for _, _, v in h.series("river-1")["water_level"]]
    assert values == [float(i) for i in range(400, 500)]  # the newest kept


def test_a_corrupt_history_file_is_started_again(tmp_path, caplog):
    (tmp_path / "h").write_bytes(b"this is not a database" * 100)
    h = RecentHistory(tmp_path / "h", step=0)
    h.add(_level(time.time(), 1.5))
    h.flush()
    assert h.series("river-1")["water_level"][0][2] == 1.5
    assert "does not open" in caplog.text
