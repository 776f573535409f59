"""`gateway fleet` (issue 10): the city's tool, as an operator runs it, against
a managed unit on a real Mosquitto. It needs nothing but this package and the
private key, and the key never leaves it."""

from __future__ import annotations

import hashlib
import json
import stat

import yaml

from gateway.manage.envelope import load_public_key, open_envelope
from tests.helpers import gateway_cli
from tests.manage_helpers import SECRET, unit  # noqa: F401  (unit: the fixture)


def fleet(*args: str, check: bool = True):
    return gateway_cli("fleet", *args, check=check)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    fleet("keygen", "--dir", str(tmp_path / "k"))
    assert stat.S_IMODE((tmp_path / "k/fleet.key").stat().st_mode) == 0o600
    key = (tmp_path / "k/fleet.key").read_bytes()
    again = fleet("keygen", "--dir", str(tmp_path / "k"), check=False)
    assert again.returncode == 1 and "not overwriting" in again.stderr
    assert (tmp_path / "k/fleet.key").read_bytes() == key


def test_sign_prints_an_envelope_the_gateway_verifies_and_no_key(tmp_path):
    fleet("keygen", "--dir", str(tmp_path))
    out = fleet("sign", "--key", str(tmp_path / "fleet.key"), "gw-1", "cmd", "probe", "sensor=river-1", "count=2")
    assert "PRIVATE" not in out.stdout
    message = open_envelope(out.stdout.encode(), load_public_key(tmp_path / "fleet.pub"), gateway="gw-1", kind="cmd",
                            clock_synced=True)
    assert message.get("name") == "probe" and message.get("args") == {"sensor": "river-1", "count": 2}


def test_push_config_cmd_and_watch_against_a_managed_unit(unit, broker):
    common = ["--key", str(unit.key_file), "--broker", f"mqtt://127.0.0.1:{broker.port}", "--timeout", "30s"]
    doc = json.loads(json.dumps(unit.doc))
    doc["sensors"][0]["interval"] = "250ms"
    new = unit.tmp / "new.yaml"
    new.write_text(yaml.safe_dump(doc, sort_keys=False))
    pushed = fleet("push-config", "test-gw", str(new), *common)
    state = json.loads(pushed.stdout)
    assert state["result"] == "applied" and state["config_hash"] == hashlib.sha256(new.read_bytes()).hexdigest()

    bad = unit.tmp / "bad.yaml"
    bad.write_text(new.read_text().replace("250ms", "fast"))
    rejected = fleet("push-config", "test-gw", str(bad), *common, check=False)
    assert rejected.returncode == 1 and "config/set:" in json.loads(rejected.stdout)["errors"][0]

    probe = json.loads(fleet("cmd", "test-gw", "probe", "sensor=river-1", "count=1", *common).stdout)
    assert probe["ok"] is True and probe["result"][0]["sensor"] == "river-1"
    refused = fleet("cmd", "test-gw", "probe", "sensor=nope", *common, check=False)
    assert refused.returncode == 1 and json.loads(refused.stdout)["ok"] is False

    table = fleet("watch", "--once", "--broker", f"mqtt://127.0.0.1:{broker.port}").stdout
    row = next(line for line in table.splitlines() if line.startswith("test-gw "))
    columns = dict(zip(["gateway", "age", "version", "ok", "not_ok", "up"], row.split()))
    assert (columns["ok"], columns["not_ok"], columns["up"]) == ("2/2", "-", "2/2"), row  # sensors ok, uplinks up
    assert SECRET not in table
