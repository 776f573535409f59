"""Every task the daemon starts is supervised (issue 9, defect 2): a dead task is
logged once with its cause, restarted with backoff and shown; a transport
class missing an abstract method fails at load with its name; the health view
is what status and metrics read, without an import of the daemon."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

from gateway.supervisor import TaskSupervisor
from gateway.uplinks.base import Transport, TransportLoadError, check_transport_class


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_dead_task_is_logged_once_with_its_cause_restarted_with_backoff_and_shown(caplog):
    starts: list[float] = []
    changes: list[dict] = []

    async def worker():
        starts.append(time.monotonic())
        if len(starts) <= 3:
            raise RuntimeError(f"bug number {len(starts)}")
        await asyncio.sleep(3600)

    async def scenario():
        sup = TaskSupervisor(on_change=lambda: changes.append(sup.facts()), restart_first=0.05, restart_cap=1.0)
        sup.spawn("deliver-city", worker, label="uplink city")
        await _until(lambda: sup.facts()["deliver-city"]["state"] == "restarting")
        assert sup.problems() == ["uplink city: worker stopped (RuntimeError: bug number 1)"]
        await _until(lambda: len(starts) == 4 and sup.facts()["deliver-city"]["state"] == "running")
        facts = sup.facts()["deliver-city"]
        assert facts["restarts"] == 3 and facts["last_error"] == "RuntimeError: bug number 3"
        assert sup.problems() == []  # running again: healthy
        await sup.stop("deliver-city")  # its owner stops it: not a death, not restarted
        await asyncio.sleep(0.2)
        assert len(starts) == 4 and "deliver-city" not in sup.facts()

    with caplog.at_level(logging.INFO, logger="gateway.supervisor"):
        asyncio.run(scenario())
    deaths = [r for r in caplog.records if "worker stopped" in r.getMessage()]
    assert [r.exc_info[1].args[0] for r in deaths] == ["bug number 1", "bug number 2", "bug number 3"], \
        "each death logged once, with its traceback"
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[2] > gaps[0] * 1.5, f"restarts back off: {gaps}"
    assert any(f["deliver-city"]["state"] == "restarting" for f in changes if "deliver-city" in f)


def test_a_task_cancelled_by_someone_else_is_a_death_and_a_finished_one_is_done():
    async def forever():
        await asyncio.sleep(3600)

    async def once():
        return None

    async def scenario():
        sup = TaskSupervisor(restart_first=0.05, restart_cap=0.1)
        sup.spawn("commit", forever)
        sup.spawn("clock", once)
        first = sup.task("commit")
        first.cancel()
        await _until(lambda: sup.task("commit") is not first and sup.facts()["commit"]["state"] == "running")
        await _until(lambda: sup.facts()["clock"]["state"] == "done")
        assert sup.facts()["commit"]["restarts"] == 1 and sup.facts()["commit"]["last_error"] == "cancelled"
        assert sup.problems() == [], "a task that finished its job is no problem"
        await sup.stop_all()

    asyncio.run(scenario())


class NoSend(Transport):
    async def ready(self) -> None:
        pass


def test_a_transport_missing_an_abstract_method_fails_at_load_with_its_name():
    with pytest.raises(TransportLoadError) as err:
        check_transport_class(NoSend)
    assert "tests.test_supervision.NoSend" in str(err.value) and "send" in str(err.value)
    with pytest.raises(TypeError):
        NoSend()
    from gateway.uplinks.console import ConsoleTransport
    assert check_transport_class(ConsoleTransport) is ConsoleTransport
    assert ConsoleTransport.last_error is None  # every transport has one for status


def test_status_and_metrics_read_the_health_view_without_importing_the_daemon():
    code = ("import sys, gateway.status, gateway.metrics, gateway.health; "
            "assert 'gateway.service' not in sys.modules, sorted(m for m in sys.modules if m.startswith('gateway'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_client_key_that_stops_matching_is_the_uplinks_last_error_and_is_retried(tmp_path):
    """Issue 9, defect 2, on a real Mosquitto wanting client certificates: the key
    is replaced by one that does not match (a renewal gone wrong) and the broker
    restarts. The uplink shows why it cannot connect and keeps trying; once the
    key is right again everything buffered meanwhile is delivered."""
    from tests.daemon_helpers import Daemon, base_config, status_json, write_config
    from tests.helpers import Mosquitto, Subscriber, free_port, make_pki, wait_for

    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    subprocess.run(["openssl", "genrsa", "-out", "other.key", "2048"], cwd=pki, check=True, capture_output=True)
    key = tmp_path / "client.key"
    key.write_bytes((pki / "client.key").read_bytes())
    broker = Mosquitto(tmp_path / "mq", head="per_listener_settings true\n")
    tls_port = free_port()
    broker.extra = (f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
                    f"keyfile {pki}/server.key\nrequire_certificate true\nallow_anonymous true\n")
    broker.start()
    uplink = {"name": "city", "type": "mqtt", "url": f"mqtts://127.0.0.1:{tls_port}", "ca_file": str(pki / "ca.pem"),
              "cert_file": str(pki / "client.pem"), "key_file": str(key), "reconnect_max": "2s"}
    cfg = write_config(tmp_path / "gw.yaml", base_config(
        tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}], uplinks=[uplink]))
    d = Daemon(cfg)
    sub = None
    try:
        sub = Subscriber(broker.port)
        wait_for(lambda: len(sub.readings()) >= 3, what="readings over mutual TLS")
        key.write_bytes((pki / "other.key").read_bytes())
        broker.stop()
        broker.start()
        s = wait_for(lambda: (s := status_json(cfg)) and "not the key of the certificate"
                     in (s["uplinks"]["city"]["last_error"] or "") and s, what="the reason in the status")
        assert s["uplinks"]["city"]["connected"] is False and d.proc.poll() is None
        assert s["healthy"], "an uplink that cannot connect is shown, not a reason to restart the daemon"
        attempts = d.logs().count("not the key of the certificate")
        wait_for(lambda: d.logs().count("not the key of the certificate") > attempts, what="another attempt")
        key.write_bytes((pki / "client.key").read_bytes())  # the technician puts the right key back
        wait_for(lambda: (s := status_json(cfg)) and s["uplinks"]["city"]["connected"]
                 and s["uplinks"]["city"]["last_error"] is None, what="connected again")
        wait_for(lambda: status_json(cfg)["uplinks"]["city"]["pending"] == 0, what="the backlog delivered")
        assert d.stop() == 0
    finally:
        if sub is not None:
            sub.stop()
        d.kill()
        broker.stop()
