"""A broker that rejects a publish (MQTT 5 reason code) makes a dead letter, not
a retry loop; `dead --retry` sends it again. TLS with a private CA, mutual TLS
and a password from a file; the password never reaches a log."""

import subprocess

from tests.helpers import (GatewayProcess, Mosquitto, Subscriber, buffer_stats, free_port, gateway_cli, make_pki,
                           sim_config, wait_for, write_config)

RIVER_ONLY = [{"id": "river-1", "driver": "sim_river", "interval": "100ms"},
              {"id": "snow-1", "driver": "sim_snow", "interval": "100ms"}]


def test_rejected_publish_becomes_a_dead_letter_and_retry_delivers_it(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite city/test-gw/snow-1\ntopic readwrite city/test-gw/status\ntopic read city/#\n")
    broker = Mosquitto(tmp_path / "mq", extra=f"acl_file {acl}\n").start()
    try:
        uplink = {"name": "city-mqtt", "type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}", "protocol": 5}
        config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [uplink], sensors=RIVER_ONLY))
        gw = GatewayProcess(config, tmp_path / "gw.log").start()
        wait_for(lambda: buffer_stats(config)["uplinks"]["city-mqtt"]["dead_letters"] >= 5, 30, what="dead letters")
        assert gw.terminate() == 0
        stats = buffer_stats(config)["uplinks"]["city-mqtt"]
        assert stats["pending"] == 0, "rejections are not retried in a loop"
        listing = gateway_cli("buffer", "-c", str(config), "dead").stdout.splitlines()
        assert listing and all("test-gw.river-1." in line and "Not authorized" in line for line in listing)
        dead = stats["dead_letters"]

        broker.stop()
        acl.write_text("topic readwrite city/#\n")  # the city fixed its ACL
        broker.start()
        sub = Subscriber(broker.port)
        gateway_cli("buffer", "-c", str(config), "dead", "--retry")
        assert buffer_stats(config)["uplinks"]["city-mqtt"]["pending"] == dead
        gw = GatewayProcess(config, tmp_path / "gw2.log").start()
        wait_for(lambda: sum(r["sensor"] == "river-1" for r in sub.readings()) >= dead, 30, what="retried readings")
        assert gw.terminate() == 0
        assert buffer_stats(config)["uplinks"]["city-mqtt"]["dead_letters"] == 0
        sub.stop()
    finally:
        broker.stop()


def test_mutual_tls_with_private_ca_and_password_file(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    secret = "s3cret-do-not-log"
    (tmp_path / "mqtt.secret").write_text(secret + "\n")
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gw07", secret], check=True, capture_output=True)
    # The plain listener serves the test's subscriber; the TLS one wants a client certificate and a password.
    broker = Mosquitto(tmp_path / "mq", head="per_listener_settings true\n")
    tls_port = free_port()
    broker.extra = (f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
                    f"keyfile {pki}/server.key\nrequire_certificate true\nallow_anonymous false\n"
                    f"password_file {pwfile}\n")
    plain = broker.port
    broker.start()
    try:
        sub = Subscriber(plain)
        uplink = {"name": "city-mqtt", "type": "mqtt", "url": f"mqtts://127.0.0.1:{tls_port}", "username": "gw07",
                  "password_file": str(tmp_path / "mqtt.secret"), "ca_file": str(pki / "ca.pem"),
                  "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")}
        config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [uplink], sensors=RIVER_ONLY))
        gw = GatewayProcess(config, tmp_path / "gw.log").start()
        wait_for(lambda: len(sub.readings()) >= 10, 30, what="readings over mutual TLS")
        assert gw.terminate() == 0
        assert secret not in gw.log_text()
        assert buffer_stats(config)["uplinks"]["city-mqtt"]["pending"] == 0
        sub.stop()

        # Without the client certificate the broker refuses: readings stay buffered, the log says why.
        del uplink["cert_file"], uplink["key_file"]
        (tmp_path / "second").mkdir()
        config = write_config(tmp_path / "gw2.yaml", sim_config(tmp_path / "second", [uplink], sensors=RIVER_ONLY))
        gw = GatewayProcess(config, tmp_path / "gw2.log").start()
        wait_for(lambda: "closed the connection before accepting it" in gw.log_text(), 30, what="a refusal")
        assert gw.terminate() == 0
        assert secret not in gw.log_text()
    finally:
        broker.stop()
