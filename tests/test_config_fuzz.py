"""A config is hostile input (issue 13, points 4 and 5): YAML bombs, recursion,
special files as the config, a secret or a certificate, and values past what
`run` (and MQTT) can take. Each case runs the real `gateway check` in a process
bounded to 200 MB of address space and 5 s of CPU, with a wall-clock guard for
hangs: it must end in time with exit 2 and problems as `FILE:LINE:` lines, one
line each, never a traceback. The same bounded loader serves `run`, a SIGHUP
reload, `gateway status` and the boot import (tests below and in test_installer)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_helpers import Daemon, base_config, console_lines, status_json, wait_for, write_config

MEMORY_BYTES = 200 * 1024 * 1024
CPU_SECONDS = 5
WALL_SECONDS = 30  # only a hang (a FIFO, a blocking read) spends wall time without CPU

HEAD = "gateway: {id: fuzz-gw}\nstorage: {path: BUFFER}\n"
SENSOR = "sensors:\n  - {id: s1, driver: sim_river, interval: 1s}\n"


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def bounded_check(config: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(config)], capture_output=True,
                              text=True, timeout=WALL_SECONDS, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gateway check -c {config} hung for {WALL_SECONDS}s") from None


def _problems(result: subprocess.CompletedProcess, config: Path) -> list[str]:
    assert result.returncode != -signal.SIGXCPU, f"more than {CPU_SECONDS}s of CPU"
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{config}:")]
    assert lines and all(re.match(rf"{re.escape(str(config))}:\d+: \S", line) for line in lines), result.stderr
    return lines


def _laughs(levels: int = 9) -> str:
    out = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels):
        out += f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n"
    return out


def _merge_doubling(levels: int = 40) -> str:
    out = "m0: &m0 {k: 1}\n"
    for i in range(1, levels):
        out += f"m{i}: &m{i} {{<<: *m{i - 1}, x{i}: *m{i - 1}}}\n"
    return out


BOMBS = {  # name -> (YAML text, what the one problem says)
    "billion-laughs": (_laughs(), "more than 50000 values"),
    "merge-keys-doubling": (_merge_doubling(), "more than 50000 values"),
    "self-referencing-sequence": ("a: &a [1, *a]\n", "refers to the collection it is in"),
    "self-referencing-mapping": ("a: &a {b: *a}\n", "refers to the collection it is in"),
    "self-referencing-merge": ("a: &a {<<: *a}\n", "refers to the collection it is in"),
    "1000-deep-flow": ("x: " + "[" * 1000 + "]" * 1000 + "\n", "nested deeper than 32 levels"),
    "1000-deep-mappings": ("x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", "nested deeper than 32 levels"),
    "200-deep-block": ("".join(" " * i + "a:\n" for i in range(200)), "nested deeper than 32 levels"),
    "bad-date": ("when: 2001-13-45\n", "cannot be read"),
    "5000-digit-integer": ("storage: {max_readings: " + "1" * 5000 + "}\n", "cannot be read"),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_yaml_bomb_is_one_problem_in_bounded_time_and_memory(name, tmp_path):
    text, says = BOMBS[name]
    config = tmp_path / "bomb.yaml"
    config.write_text(text if name == "200-deep-block" else HEAD.replace("BUFFER", str(tmp_path / "b.db")) + text)
    problems = _problems(bounded_check(config), config)
    assert len(problems) == 1 and says in problems[0], problems


def test_a_50_mb_config_is_refused_unread(tmp_path):
    config = tmp_path / "huge.yaml"
    with open(config, "wb") as f:
        f.write(HEAD.replace("BUFFER", str(tmp_path / "b.db")).encode())
        f.truncate(50 * 1024 * 1024)
    problems = _problems(bounded_check(config), config)
    assert problems == [f"{config}:0: (file): cannot read config: file {config} is larger than 256 KiB, the most it may be"]


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom"])
def test_a_special_file_as_the_config_is_refused(special, fifo, tmp_path):
    config = fifo if special == "fifo" else Path(special)
    problems = _problems(bounded_check(config), config)
    assert len(problems) == 1 and "not a regular file" in problems[0], problems


FILE_KEYS = {  # the key, and the uplink it belongs to
    "password_file": "{name: m, type: mqtt, url: 'mqtts://127.0.0.1:8883', username: u, password_file: FILE}",
    "ca_file": "{name: m, type: mqtt, url: 'mqtts://127.0.0.1:8883', ca_file: FILE}",
    "cert_file": "{name: m, type: mqtt, url: 'mqtts://127.0.0.1:8883', cert_file: FILE, key_file: FILE}",
    "token_file": "{name: o, type: ngsi-ld, url: 'https://127.0.0.1:1026', token_file: FILE}",
    "ngsi ca_file": "{name: o, type: ngsi-ld, url: 'https://127.0.0.1:1026', ca_file: FILE}",
}


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom", "directory"])
@pytest.mark.parametrize("key", FILE_KEYS)
def test_a_secret_or_certificate_must_be_a_regular_file(key, special, fifo, tmp_path):
    target = {"fifo": str(fifo), "directory": str(tmp_path)}.get(special, special)
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db"))
                      + "uplinks:\n  - " + FILE_KEYS[key].replace("FILE", target) + "\n")
    problems = _problems(bounded_check(config), config)
    assert problems and all("regular file" in p or "directory" in p for p in problems), problems


def test_a_huge_secret_and_a_two_line_token_are_refused(tmp_path):
    big, wrapped = tmp_path / "big.secret", tmp_path / "wrapped.token"
    big.write_bytes(b"x" * (10 * 1024 * 1024))
    wrapped.write_text("eyJhbGciOi\nJIUzI1NiJ9\n")
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db")) + "uplinks:\n"
                      f"  - {{name: m, type: mqtt, url: 'mqtt://127.0.0.1:1', username: u, password_file: {big}}}\n"
                      f"  - {{name: o, type: ngsi-ld, url: 'http://127.0.0.1:1', token_file: {wrapped}}}\n")
    problems = _problems(bounded_check(config), config)
    assert any("uplinks[0].password_file" in p and "larger than 64 KiB" in p for p in problems), problems
    assert any("uplinks[1].token_file" in p and "more than one line" in p for p in problems), problems


# --- point 5: what `run` cannot start is a check error naming the limit --------------------------

MQTT = "{name: m, type: mqtt, url: 'mqtt://127.0.0.1:1883', KEYS}"
NGSI = "{name: o, type: ngsi-ld, url: 'http://127.0.0.1:1026', KEYS}"
LIMITS = {  # name -> (uplink, keys, key path, words of the message)
    "keepalive": (MQTT, "keepalive: 70000s", "uplinks[0].keepalive", "65535s"),
    "session_expiry": (MQTT, "protocol: 5, session_expiry: 5000000000s", "uplinks[0].session_expiry", "4294967295s"),
    "client_id": (MQTT, "client_id: " + "c" * 70_000, "uplinks[0].client_id", "65535 bytes"),
    "topic": (MQTT, "topic: " + "t" * 70_000, "uplinks[0].topic", "65535 bytes"),
    "topic-nul": (MQTT, 'topic: "city/\\0/{sensor}"', "uplinks[0].topic", "NUL"),
    "username-nul": (MQTT, 'username: "gw\\0"', "uplinks[0].username", "NUL"),
    "tenant-non-ascii": (NGSI, "tenant: städte", "uplinks[0].tenant", "ASCII"),
    "tenant-crlf": (NGSI, 'tenant: "a\\r\\nX-Injected: 1"', "uplinks[0].tenant", "ASCII"),
    "console-missing-dir": ("{name: c, type: console, path: /no/such/dir/out.jsonl}", "", "uplinks[0].path",
                            "does not exist"),
    "console-nul": ('{name: c, type: console, path: "/tmp/a\\0b"}', "", "uplinks[0].path", "NUL"),
}


@pytest.mark.parametrize("name", LIMITS)
def test_check_rejects_an_uplink_run_cannot_start(name, tmp_path):
    uplink, keys, path, words = LIMITS[name]
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db")) + "uplinks:\n  - "
                      + uplink.replace("KEYS", keys).replace(", }", "}") + "\n")
    problems = _problems(bounded_check(config), config)
    assert len(problems) == 1 and f" {path}: " in problems[0] and words in problems[0], problems


SENSOR_LIMITS = {  # the sensor's extra keys -> (key path, words)
    "interval: 0.0000000000001s": ("sensors[0].interval", "at least 1ms"),
    "interval: １０s": ("sensors[0].interval", "a positive number"),
    "interval: " + "9" * 400 + "s": ("sensors[0].interval", "at most 4294967295s"),
    "interval: 1s, mount_height: 1e309": ("sensors[0].mount_height", "finite number"),
    "interval: 1s, mount_height: .nan": ("sensors[0].mount_height", "finite number"),
}


@pytest.mark.parametrize("keys", SENSOR_LIMITS)
def test_check_rejects_a_sensor_value_run_cannot_use(keys, tmp_path):
    path, words = SENSOR_LIMITS[keys]
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db"))
                      + f"sensors:\n  - {{id: s1, driver: maxbotix, port: /dev/null, {keys}}}\n")
    problems = _problems(bounded_check(config), config)
    assert len(problems) == 1 and f" {path}: " in problems[0] and words in problems[0], problems


def test_a_config_at_the_limits_is_valid(tmp_path):
    """The bounds leave room for real configs: 300 sensors sharing defaults by merge keys."""
    sensors = "  - &defaults {id: river-0, driver: sim_river, interval: 10s}\n"
    sensors += "".join(f"  - {{<<: *defaults, id: river-{i}}}\n" for i in range(1, 300))
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db"))
                      + "uplinks:\n  - {name: m, type: mqtt, url: 'mqtt://127.0.0.1:1883', keepalive: 65535s, "
                        "protocol: 5, session_expiry: 4294967295s, client_id: " + "c" * 1000 + "}\n"
                      + "sensors:\n" + sensors)
    result = bounded_check(config)
    assert result.returncode == 0, result.stderr[-2000:]


# --- the same bounds in a running daemon: a SIGHUP reload ---------------------------------------

def test_a_hostile_config_on_reload_is_rejected_and_the_daemon_goes_on(tmp_path):
    out = tmp_path / "out.jsonl"
    doc = base_config(tmp_path, sensors=[{"id": "river-1", "driver": "sim_river", "interval": "100ms"}],
                      uplinks=[{"name": "console", "type": "console", "path": str(out)}])
    cfg = write_config(tmp_path / "gw.yaml", doc)
    good = cfg.read_text()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = Daemon(cfg)
    try:
        wait_for(lambda: status_json(cfg), timeout=30, what="the daemon")
        hostile = {  # text -> what its one problem says (the daemon's log holds back repeated lines)
            good + _laughs(): "more than 50000 values",
            good + "x: " + "[" * 1000 + "]" * 1000 + "\n": "nested deeper than 32 levels",
            good + "a: &a [*a]\n": "refers to the collection it is in",
            good.replace("uplinks:\n", f"uplinks:\n- {{name: m, type: mqtt, url: 'mqtts://127.0.0.1:1', ca_file: {fifo}}}\n"):
                "not a regular file",
        }
        for text, says in hostile.items():
            cfg.write_text(text)
            d.signal(signal.SIGHUP)
            wait_for(lambda: says in d.logs(), timeout=30, what=f"the reload rejected: {says}")
        assert "Traceback" not in d.logs()
        # The reload path still works: a valid change is applied.
        doc["sensors"].append({"id": "snow-1", "driver": "sim_snow", "interval": "100ms"})
        write_config(cfg, doc)
        d.signal(signal.SIGHUP)
        wait_for(lambda: any(r["sensor"] == "snow-1" for r in console_lines(out)), timeout=30,
                 what="the valid reload applied")
        assert d.proc.poll() is None
    finally:
        code = d.stop()
    assert code == 0, d.logs()[-3000:]


def test_gateway_status_reads_a_bombed_config_in_bounded_memory(tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text(HEAD.replace("BUFFER", str(tmp_path / "b.db")) + _laughs())
    result = subprocess.run([sys.executable, "-m", "gateway", "status", "-c", str(config)], capture_output=True,
                            text=True, timeout=WALL_SECONDS, preexec_fn=_limits)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "no status socket" in result.stderr
