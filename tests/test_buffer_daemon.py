"""The daemon on a buffer that fails (issue 9 defects 1, 10, 12; issue 13
point 2), as a real process: a full tmpfs at start and while running, a stop
during write failures, and a second daemon on the same buffer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict

from tests.helpers import GatewayProcess, buffer_stats, per_sensor_in_order, sim_config, wait_for, write_config
from tests.small_disk import small_disk  # noqa: F401  (fixture)
from tests.test_notify import NotifySocket


def _console(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _config(tmp_path, buffer_dir, out):
    doc = sim_config(buffer_dir, [{"name": "c", "type": "console", "path": str(out)}], commit_interval="200ms")
    return write_config(tmp_path / "gw.yaml", doc)


def test_a_second_daemon_on_the_same_buffer_refuses_to_start_naming_the_first(tmp_path):
    out = tmp_path / "out.jsonl"
    config = _config(tmp_path, tmp_path, out)
    first = GatewayProcess(config, tmp_path / "first.log").start()
    wait_for(lambda: len(_console(out)) > 10 and (tmp_path / "buffer.sock").exists(), 30, what="the first daemon")
    second = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 1
    assert f"another gateway (pid {first.proc.pid}) is running on the buffer" in second.stderr, second.stderr
    status = subprocess.run([sys.executable, "-m", "gateway", "status", "--json", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["pid"] == first.proc.pid, "the first one's status socket is still there"
    assert first.terminate() == 0
    assert "nothing lost" in first.log_text() and "cannot write" not in first.log_text()


def test_a_full_disk_at_start_waits_loudly_and_starts_when_space_returns(tmp_path, small_disk, monkeypatch):
    out = tmp_path / "out.jsonl"
    config = _config(tmp_path, small_disk.path, out)
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))  # the daemon talks to "systemd"
    small_disk.fill()
    gw = GatewayProcess(config, tmp_path / "gw.log").start()
    wait_for(lambda: any("cannot be opened" in m for m in notify.poll()), 30, what="STATUS saying why it waits")
    assert "EXTEND_TIMEOUT_USEC" in " ".join(notify.poll()) and "READY=1" not in notify.poll()
    assert "nothing is read until it opens" in gw.log_text() and not list(small_disk.path.glob("*.corrupt-*"))
    small_disk.make_room()
    wait_for(lambda: "READY=1" in notify.poll(), 60, what="READY once there is room")
    wait_for(lambda: len(_console(out)) > 10, 30, what="readings")
    assert gw.terminate() == 0
    notify.sock.close()


def _stop_message(log: str) -> str:
    return [line for line in log.splitlines() if "gateway stopped" in line][-1]


def test_a_daemon_on_a_full_disk_loses_nothing_committed_repeats_no_id_and_says_what_it_lost(tmp_path, small_disk):
    out = tmp_path / "out.jsonl"
    config = _config(tmp_path, small_disk.path, out)
    first = GatewayProcess(config, tmp_path / "first.log").start()
    wait_for(lambda: len(_console(out)) > 30, 30, what="readings before the disk fills")
    small_disk.fill()
    wait_for(lambda: "cannot write" in first.log_text(), 30, what="the buffer to find the disk full")
    small_disk.fill()  # whatever a checkpoint freed: the stop finds the disk full too
    assert first.terminate() == 0
    stop = _stop_message(first.log_text())
    claimed = int(re.search(r"next start to send: c: (\d+)", stop).group(1))
    assert re.search(r"LOST: [1-9]\d* readings of this run never reached the disk", stop), stop
    delivered_by_first = len(_console(out))
    ceiling = int((small_disk.path / "buffer.db.ids").read_text())  # every id of the first run lies below it

    # A start on the still full disk: it waits for the file to open or, if it opens, for the id lease.
    second = GatewayProcess(config, tmp_path / "second.log").start()
    wait_for(lambda: re.search("cannot be opened|cannot write the id lease", second.log_text()), 30,
             what="the second start to wait")
    small_disk.make_room()
    wait_for(lambda: len(_console(out)) > delivered_by_first + 30, 60, what="readings after space returned")
    assert second.terminate() == 0
    assert "nothing lost" in _stop_message(second.log_text())

    readings = _console(out)
    bodies = defaultdict(set)
    for r in readings:
        bodies[r["id"]].add(json.dumps(r, sort_keys=True))
    assert all(len(b) == 1 for b in bodies.values()), "an id never names two readings"
    later = {r["id"] for r in readings[delivered_by_first:] if int(r["id"].split(".")[2]) < ceiling}
    assert len(later) == claimed, "the first stop said exactly what it left on disk"
    assert len(bodies) == buffer_stats(config)["buffer"]["appended"], "every committed reading was delivered"
    assert buffer_stats(config)["uplinks"]["c"]["pending"] == 0
    assert per_sensor_in_order(readings)


def test_a_status_socket_that_answers_is_never_taken_over(tmp_path):
    """Two configs, two buffers, one `service.status_socket`: the second daemon runs, without a socket."""
    sock = tmp_path / "status.sock"
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        doc = sim_config(tmp_path / name, [{"name": "c", "type": "console", "path": str(tmp_path / f"{name}.jsonl")}])
        doc["service"] = {"status_socket": str(sock)}
        configs.append(write_config(tmp_path / f"{name}.yaml", doc))
    first = GatewayProcess(configs[0], tmp_path / "a.log").start()
    wait_for(sock.exists, 30, what="the first daemon's status socket")
    second = GatewayProcess(configs[1], tmp_path / "b.log").start()
    wait_for(lambda: "in use by another running gateway" in second.log_text(), 30, what="the second to leave it")
    status = subprocess.run([sys.executable, "-m", "gateway", "status", "--json", "-c", str(configs[0])],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["pid"] == first.proc.pid
    assert second.terminate() == 0 and sock.exists(), "its stop does not remove the first one's socket either"
    assert first.terminate() == 0
