"""TLS material is loaded by one function (gateway/tls.py) for the MQTT and
NGSI-LD uplinks and for `gateway check` (issue 9, defect 3): a CA file that
holds no certificate or a key that does not match its certificate is a check
error `FILE:LINE: key.path: message`, and `gateway run` ends with the same
lines and exit 2, never a traceback."""

from __future__ import annotations

import re
import subprocess

import pytest

from gateway.tls import TlsError, client_context
from tests.daemon_helpers import gateway_cli
from tests.helpers import make_pki

PROBLEM = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>\S+): (?P<message>.+)$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_pki(d)
    subprocess.run(["openssl", "genrsa", "-out", "other.key", "2048"], cwd=d, check=True, capture_output=True)
    (d / "notes.txt").write_text("the CA is on the USB stick\n")
    return d


def _config(tmp_path, pki, **files) -> str:
    lines = ["gateway: {id: tls-gw}", f"storage: {{path: {tmp_path}/buffer.db}}", "uplinks:",
             "  - name: city", "    type: mqtt", "    url: mqtts://127.0.0.1:8883"]
    lines += [f"    {key}: {pki / name}" for key, name in files.items()]
    file = tmp_path / "gw.yaml"
    file.write_text("\n".join(lines) + "\n")
    return str(file)


@pytest.mark.parametrize("files, line, path, message", [
    ({"ca_file": "notes.txt"}, 7, "uplinks[0].ca_file", "holds no usable CA certificate"),
    ({"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "other.key"}, 9, "uplinks[0].key_file",
     "is not the key of the certificate in"),
    ({"ca_file": "ca.pem", "cert_file": "ca.key", "key_file": "client.key"}, 8, "uplinks[0].cert_file",
     "holds no PEM certificate"),
])
def test_check_and_run_load_tls_material_alike(tmp_path, pki, files, line, path, message):
    config = _config(tmp_path, pki, **files)
    for command in ("check", "run"):
        result = gateway_cli(command, "-c", config)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        found = [m for m in map(PROBLEM.match, result.stderr.splitlines()) if m]
        assert [(m["file"], int(m["line"]), m["path"]) for m in found] == [(config, line, path)], result.stderr
        assert message in found[0]["message"]


def test_good_material_passes_check(tmp_path, pki):
    config = _config(tmp_path, pki, ca_file="ca.pem", cert_file="client.pem", key_file="client.key")
    result = gateway_cli("check", "-c", config)
    assert result.returncode == 0, result.stderr


def test_the_context_trusts_the_system_store_unless_a_ca_file_is_given(pki):
    import ssl
    assert client_context().cert_store_stats() == ssl.create_default_context().cert_store_stats()
    private = client_context(pki / "ca.pem")
    assert [c["subject"] for c in private.get_ca_certs()] == [((("commonName", "test city CA"),),)]
    assert private.check_hostname and private.verify_mode.name == "CERT_REQUIRED"
    with pytest.raises(TlsError) as err:
        client_context(None, pki / "client.pem", pki / "other.key")
    assert err.value.key == "key_file"


def test_an_ngsi_ld_ca_file_is_checked_the_same_way(tmp_path, pki):
    file = tmp_path / "gw.yaml"
    file.write_text(f"gateway: {{id: tls-gw}}\nstorage: {{path: {tmp_path}/buffer.db}}\nuplinks:\n"
                    f"  - name: orion\n    type: ngsi-ld\n    url: https://127.0.0.1:1026\n"
                    f"    ca_file: {pki / 'notes.txt'}\n")
    result = gateway_cli("check", "-c", str(file))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{file}:7: uplinks[0].ca_file: {pki / 'notes.txt'} holds no usable CA"), \
        result.stderr
