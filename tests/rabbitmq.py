"""A real three-node RabbitMQ cluster (Debian's rabbitmq-server, its MQTT plugin,
quorum queues for durable MQTT sessions) on loopback, for the failover tests
and bench/fleet.py.

Sized for a small shared machine: one Erlang scheduler per node, no busy
waiting, its own epmd on a free port (so it meets no other Erlang on the
machine), every listener and the distribution on 127.0.0.1. Each node runs in a
session of its own, so `kill()` takes the whole node down at once, like a
machine that loses power.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port, port_open, wait_for

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
ERL_ARGS = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"

# What a city must configure for the guarantees the tests check (docs/city-scale.md says why).
CITY_CONF = """\
mqtt.durable_queue_type = quorum
mqtt.allow_anonymous = true
loopback_users = none
disk_free_limit.absolute = 50MB
"""


def listen_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a node restarted on its old port must
    not find it taken by some client's outgoing connection meanwhile."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() and shutil.which("epmd") is not None


class Node:
    def __init__(self, cluster: "RabbitCluster", letter: str):
        self.cluster, self.letter = cluster, letter
        self.name = f"rabbit-{letter}@localhost"
        self.dir = cluster.workdir / letter
        self.mqtt_port, self.amqp_port, self.dist_port = listen_port(), listen_port(), listen_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def env(self) -> dict:
        return {**os.environ, **self.cluster.erl_env(), "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
                "RABBITMQ_PID_FILE": str(self.dir / "pid"), "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS}

    def start(self) -> "Node":
        self.dir.mkdir(parents=True, exist_ok=True)
        if getattr(self, "_log", None):
            self._log.close()
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            f"mqtt.tcp_listen_options.backlog = 4096\n"
            + CITY_CONF +
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"cluster_formation.classic_config.nodes.1 = {self.cluster.nodes[0].name}\n")
        self._log = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_listening(self, timeout: float = 120) -> None:
        wait_for(lambda: port_open(self.mqtt_port) or self.proc.poll() is not None, timeout,
                 what=f"{self.name} to accept MQTT")
        assert self.proc.poll() is None, (self.dir / "stdout.log").read_text()[-3000:]

    def kill(self) -> None:
        """SIGKILL to the node's whole process group: the beam and its helpers, at once."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        wait_for(lambda: not port_open(self.mqtt_port), 30, what=f"{self.name} to be gone")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class RabbitCluster:
    def __init__(self, workdir: Path, size: int = 3):
        self.workdir = workdir
        self.home = workdir / "home"  # the Erlang cookie every node and rabbitmqctl share
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen | None = None
        self.nodes = [Node(self, "abcdefg"[i]) for i in range(size)]

    def erl_env(self) -> dict:
        return {"HOME": str(self.home), "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}

    def start(self) -> "RabbitCluster":
        try:
            return self._start()
        except BaseException:
            self.stop()  # what did start must not outlive a failed start
            raise

    def _start(self) -> "RabbitCluster":
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(f"CITYEDGE{os.getpid()}{self.epmd_port}")
        cookie.chmod(0o400)
        self.epmd = subprocess.Popen([shutil.which("epmd"), "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.epmd_port), 10, what="epmd")
        first, rest = self.nodes[0], self.nodes[1:]
        first.start().wait_listening()
        for node in rest:  # they find the first node through classic_config and join it
            node.start()
        for node in rest:
            node.wait_listening()
        self.ctl("await_online_nodes", str(len(self.nodes)), timeout=120)
        return self

    def kill_all(self) -> None:
        """The whole cluster loses power at once."""
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                os.killpg(node.proc.pid, signal.SIGKILL)
        for node in self.nodes:
            node.kill()

    def restart_all(self) -> float:
        """Every node back on its own data (they wait for each other, so all start together).
        Returns when the first node accepted MQTT again (time.time())."""
        for node in self.nodes:
            node.start()
        wait_for(lambda: any(port_open(n.mqtt_port) for n in self.nodes), 300, what="a node to accept MQTT")
        first = time.time()
        for node in self.nodes:
            node.wait_listening(300)
        self.ctl("await_online_nodes", str(len(self.nodes)), timeout=300)
        return first

    def ctl(self, *args: str, node: Node | None = None, timeout: float = 60) -> str:
        node = node or next(n for n in self.nodes if n.proc and n.proc.poll() is None)
        result = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, "-q", *args],
                                env={**os.environ, **self.erl_env()}, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout

    def queues(self, node: Node | None = None) -> list[dict]:
        return json.loads(self.ctl("list_queues", "name", "type", "members", "messages", "--formatter", "json",
                                   node=node) or "[]")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.epmd and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()


def wait_quorum_queue(cluster: RabbitCluster, name: str, members: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = [q for q in cluster.queues() if q["name"] == name]
        if found and found[0]["type"] == "quorum" and len(found[0]["members"]) == members:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {name} is not a quorum queue on {members} nodes: {found}")
        time.sleep(0.5)
