"""Issue 12 on a real cluster: three RabbitMQ nodes (MQTT plugin, durable
sessions in quorum queues), the gateway given all three URLs. The node the
gateway is connected to is killed under load; a durable subscriber on another
node gets every reading, in order per sensor (SPEC §5 across a failover),
duplicates counted."""

import re

import pytest

from tests.helpers import (GatewayProcess, Subscriber, buffer_stats, per_sensor_in_order, sim_config, wait_for,
                           write_config)
from tests.rabbitmq import RabbitCluster, available, wait_quorum_queue
from tests.test_mqtt_delivery import run_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert available(), "RabbitMQ is missing: scripts/test installs Debian's rabbitmq-server"
    c = RabbitCluster(tmp_path_factory.mktemp("rabbit")).start()
    yield c
    c.stop()


def connected_port(gw: GatewayProcess) -> int | None:
    found = re.findall(r"connected to 127\.0\.0\.1:(\d+)", gw.log_text())
    return int(found[-1]) if found else None


def test_killing_the_connected_node_under_load_loses_nothing_and_keeps_order(tmp_path, cluster):
    first, second, third = cluster.nodes
    sub = Subscriber(third.mqtt_port, client_id="city-archive")  # durable: a quorum queue on all three nodes
    queue = wait_quorum_queue(cluster, "mqtt-subscription-city-archiveqos1", members=3)
    uplink = {"name": "city-mqtt", "type": "mqtt", "url": [n.url for n in cluster.nodes], "reconnect_max": "2s"}
    config = write_config(tmp_path / "gw.yaml", sim_config(tmp_path, [uplink]))
    gw = GatewayProcess(config, tmp_path / "gw.log").start()
    wait_for(lambda: len(sub.readings()) > 200, 60, what="readings flowing through the cluster")
    assert connected_port(gw) == first.mqtt_port, "the first URL first"

    first.kill()  # under load: 60 readings/s, up to 20 publishes awaiting PUBACK
    wait_for(lambda: connected_port(gw) in (second.mqtt_port, third.mqtt_port), 60, what="failover to another node")
    run_for(gw, 3)
    assert gw.terminate() == 0

    stats = buffer_stats(config)
    appended = stats["buffer"]["appended"]
    readings = wait_for(lambda: (r := sub.readings()) and len({x["id"] for x in r}) >= appended and r, 120,
                        what=f"{appended} distinct readings at the durable subscriber")
    ids = [r["id"] for r in readings]
    assert len(set(ids)) == appended, "zero lost, nothing invented"
    assert per_sensor_in_order(readings, by_device=False), "order kept per sensor across the failover"
    assert stats["uplinks"]["city-mqtt"]["pending"] == 0
    print(f"cluster failover: {appended} readings, {len(ids) - len(set(ids))} duplicates, queue {queue['name']} "
          f"on {queue['members']}")
    sub.stop()
