"""The MQTT connection against a real Mosquitto, in process: one paho client for
the uplink's life (in-flight publishes survive a broker crash with their packet
ids), failover across a list of brokers, and logs that say what happened once:
no paho error on a clean stop, one line for a keepalive timeout, one for a
refused password, one for a client key that does not match its certificate."""

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess

import pytest

from gateway.buffer import Row
from gateway.config import MqttUplinkConfig
from gateway.uplinks.mqtt import MqttTransport
from tests.helpers import Mosquitto, Subscriber, free_port, make_pki, wait_for


def uplink(urls, **extra) -> MqttUplinkConfig:
    return MqttUplinkConfig.model_validate({"name": "city-mqtt", "type": "mqtt", "url": urls, **extra})


def url(port: int) -> str:
    return f"mqtt://127.0.0.1:{port}"


def row(i: int, sensor: str = "river-1") -> Row:
    body = json.dumps({"id": f"test-gw.{sensor}.{1_763_780_000_000 + i}.000000", "sensor": sensor})
    return Row(i, sensor, "river_level", None, body, False)


async def until(condition, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def started(t: MqttTransport) -> MqttTransport:
    """As the uplink supervisor does it: start, then `run` as the connection's own task."""
    await t.start()
    t.runner = asyncio.create_task(t.run())  # kept: the loop holds tasks only weakly
    return t


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("qos", [1, 2])
def test_publishes_in_flight_when_the_broker_dies_are_acknowledged_after_the_reconnect(tmp_path, broker, qos):
    sub = Subscriber(broker.port)

    async def main():
        t = MqttTransport(uplink(url(broker.port), qos=qos, reconnect_max="1s"), "test-gw")
        await started(t)
        await asyncio.wait_for(t.ready(), 30)
        client = t.link.client
        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker takes the bytes and never answers
        sends = [t.send([row(i)]) for i in range(20)]
        await until(lambda: not client.want_write(), 10, "the publishes written to the socket")
        broker.kill()
        broker.start()  # same persistence: the subscriber's session is back, our 20 never reached it
        results = await asyncio.wait_for(asyncio.gather(*sends), 60)
        assert results == [[None]] * 20, "each in-flight publish is resent by the same session and acknowledged"
        assert t.link.client is client, "one paho client for the uplink's life"
        await t.stop()

    asyncio.run(main())
    wanted = {json.loads(row(i).body)["id"] for i in range(20)}
    wait_for(lambda: wanted <= {r["id"] for r in sub.readings()}, 30, what="all 20 at the subscriber")
    sub.stop()


def test_sends_asked_for_while_disconnected_go_out_after_the_reconnect(tmp_path, broker):
    sub = Subscriber(broker.port)

    async def main():
        t = MqttTransport(uplink(url(broker.port), reconnect_max="1s"), "test-gw")
        await started(t)
        await asyncio.wait_for(t.ready(), 30)
        broker.kill()
        await until(lambda: not t.connected, 30, "the disconnect")
        sends = [t.send([row(i)]) for i in range(10)]
        broker.start()
        assert await asyncio.wait_for(asyncio.gather(*sends), 60) == [[None]] * 10
        await t.stop()

    asyncio.run(main())
    got = wait_for(lambda: len(r := sub.readings()) >= 10 and r, 30, what="10 readings")
    assert [r["id"] for r in got] == [json.loads(row(i).body)["id"] for i in range(10)], "in the order asked"
    sub.stop()


def test_failover_to_the_next_broker_in_the_list_and_back(tmp_path, broker):
    other = Mosquitto(tmp_path / "second").start()
    dead = free_port()

    async def main():
        t = MqttTransport(uplink([url(dead), url(broker.port), url(other.port)], reconnect_max="1s"), "test-gw")
        await started(t)
        await asyncio.wait_for(t.ready(), 30)
        assert t.broker == f"127.0.0.1:{broker.port}", "an unreachable first broker is skipped"
        broker.kill()
        await until(lambda: t.connected and t.broker == f"127.0.0.1:{other.port}", 30, "failover to the third")
        assert await asyncio.wait_for(t.send([row(1)]), 30) == [None]
        await t.stop()

    try:
        asyncio.run(main())
    finally:
        other.stop()


def test_a_clean_stop_leaves_no_paho_error_in_the_log(tmp_path, broker, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        t = MqttTransport(uplink(url(broker.port)), "test-gw")
        await started(t)
        await asyncio.wait_for(t.ready(), 30)
        assert await asyncio.wait_for(t.send([row(1)]), 30) == [None]
        await t.stop()

    asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert not messages(caplog, "not connected")


def test_a_keepalive_timeout_is_one_disconnect_and_the_next_connection_stays(tmp_path, broker, caplog):
    caplog.set_level(logging.INFO)

    async def main():
        t = MqttTransport(uplink(url(broker.port), keepalive="1s", reconnect_max="1s"), "test-gw")
        await started(t)
        await asyncio.wait_for(t.ready(), 30)
        os.kill(broker.proc.pid, signal.SIGSTOP)  # a hung broker: no PINGRESP
        try:
            await until(lambda: not t.connected, 30, "the keepalive timeout")
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        await until(lambda: t.connected, 60, "the reconnect")
        connections = len(messages(caplog, "connected to 127.0.0.1"))
        await asyncio.sleep(3)  # a stray second disconnect callback would drop this connection
        assert t.connected and len(messages(caplog, "connected to 127.0.0.1")) == connections
        await t.stop()

    asyncio.run(main())
    assert len(messages(caplog, "disconnected from")) == 1, "paho reports the timeout twice: logged once"
    assert not messages(caplog, "check the TLS"), "a keepalive timeout is no certificate or password problem"


def test_a_refused_password_is_one_line_naming_the_refusal(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gw07", "right"], check=True, capture_output=True)
    (tmp_path / "mqtt.secret").write_text("wrong\n")
    broker = Mosquitto(tmp_path / "mq", extra=f"allow_anonymous false\npassword_file {pwfile}\n").start()

    async def main():
        t = MqttTransport(uplink(url(broker.port), username="gw07", password_file=str(tmp_path / "mqtt.secret"),
                                 reconnect_max="1s"), "test-gw")
        await started(t)
        await until(lambda: t.last_error and "refused" in t.last_error, 30, "the refusal")
        await until(lambda: t.link.schedule.attempts >= 3, 30, "three attempts")
        assert not t.connected
        await t.stop()
        return t.link.attempts_total

    try:
        attempts = asyncio.run(main())
    finally:
        broker.stop()
    refusals = messages(caplog, "refused the connection")
    assert attempts - 1 <= len(refusals) <= attempts, "one line for each refused attempt"
    assert all("Not authorized" in r or "password" in r for r in refusals), refusals
    assert not messages(caplog, "closed the connection before accepting it"), "no second, contradicting line"
    assert "wrong" not in caplog.text


def test_a_client_key_that_does_not_match_its_certificate_is_an_error_retried_not_a_dead_task(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    key = tmp_path / "client.key"
    shutil.copy(pki / "server.key", key)  # the technician copied the wrong key
    broker = Mosquitto(tmp_path / "mq", head="per_listener_settings true\n")
    tls_port = free_port()
    broker.extra = (f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
                    f"keyfile {pki}/server.key\nrequire_certificate true\nallow_anonymous true\n")
    broker.start()

    async def main():
        t = MqttTransport(uplink(f"mqtts://127.0.0.1:{tls_port}", ca_file=str(pki / "ca.pem"),
                                 cert_file=str(pki / "client.pem"), key_file=str(key), reconnect_max="1s"), "test-gw")
        await started(t)
        await until(lambda: t.last_error and "not the key of the certificate" in t.last_error, 30,
                    "the key mismatch as last_error")
        await until(lambda: t.link.schedule.attempts >= 3, 30, "three attempts")
        assert not t._task.done(), "the connection task lives on"
        attempts = t.link.attempts_total
        shutil.copy(pki / "client.key", key)  # fixed on site: the next attempt connects
        await until(lambda: t.connected, 30, "the connection with the right key")
        assert t.last_error is None
        await t.stop()
        return attempts

    try:
        attempts = asyncio.run(main())
    finally:
        broker.stop()
    mismatch = messages(caplog, "not the key of the certificate")
    assert 3 <= len(mismatch) <= attempts + 1, "one line for each failed attempt, no traceback, no second line"
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
