"""scripts/install.sh (issue 5) into a temporary root directory.

What is simulated: with --root the installer touches nothing of this machine;
instead of useradd/usermod it writes the same passwd/group entries into
ROOT/etc, it enables the units with `systemctl --root` (no running systemd
needed), and it skips chown and `systemctl restart`. The venv is real (python -m
venv, pip install of this checkout); --no-deps keeps the test fast and offline,
so the installed venv holds the gateway but not its dependencies."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
GATEWAY = Path(sys.executable).with_name("gateway")


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode and content hash (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--pip-option", "--no-deps", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def _empty_root(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:pi\ni2c:x:998:pi\ngpio:x:997:pi\n"
                                    "bluetooth:x:112:\npi:x:1000:\n")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    return root


@pytest.fixture(scope="module")
def first_install(tmp_path_factory):
    """One real install (venv and pip included) into a fresh root; tests copy it."""
    root = _empty_root(tmp_path_factory.mktemp("install") / "root")
    empty = tree(root)
    install(root)
    return root, empty


@pytest.fixture
def root(first_install, tmp_path):
    """A copy of the installed root, for a test to change."""
    root = tmp_path / "root"
    shutil.copytree(first_install[0], root, symlinks=True)
    return root


def test_install_twice_gives_the_same_tree_and_uninstall_removes_it(first_install, tmp_path):
    installed, empty = first_install
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    first = tree(root)
    second_run = install(root)
    assert "venv is up to date" in second_run.stderr
    assert tree(root) == first

    # The service user, with only the device groups.
    passwd = (root / "etc/passwd").read_text().splitlines()
    user = next(line for line in passwd if line.startswith("city-edge-gateway:"))
    assert user.endswith(":/var/lib/city-edge-gateway:/usr/sbin/nologin")
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (root / "etc/group").read_text().splitlines()}
    assert {g for g, members in groups.items() if "city-edge-gateway" in members} == {"dialout", "i2c", "gpio", "bluetooth"}
    # Units installed and enabled; a real venv with the gateway in it.
    units = root / "etc/systemd/system"
    assert (units / "city-edge-gateway.service").read_text() == (REPO / "systemd/city-edge-gateway.service").read_text()
    assert os.readlink(units / "multi-user.target.wants/city-edge-gateway.service").endswith("/city-edge-gateway.service")
    assert (units / "multi-user.target.wants/city-edge-gateway-boot-config.service").is_symlink()
    assert (units / "paths.target.wants/city-edge-gateway-update.path").is_symlink()  # the signed update command
    venv_python = root / "opt/city-edge-gateway/venv/bin/python"
    check = subprocess.run([str(venv_python), "-c", "import gateway, sys; print(gateway.__file__)"],
                           capture_output=True, text=True, cwd=root)
    assert check.returncode == 0 and str(root / "opt/city-edge-gateway/venv") in check.stdout
    assert (root / "etc/city-edge-gateway/gateway.yaml").exists()
    # `gateway` on PATH: /usr/local/bin/gateway -> the venv's entry point.
    assert os.readlink(root / "usr/local/bin/gateway") == "/opt/city-edge-gateway/venv/bin/gateway"
    assert oct((root / "etc/city-edge-gateway/credentials").stat().st_mode & 0o777) == "0o700"

    install(root, "--uninstall", "--purge")
    assert tree(root) == empty


def test_reinstall_keeps_the_technicians_config_and_uninstall_keeps_the_buffer(root):
    cfg = root / "etc/city-edge-gateway/gateway.yaml"
    cfg.write_text("# edited on site\n")
    install(root)
    assert cfg.read_text() == "# edited on site\n"
    (root / "var/lib/city-edge-gateway/buffer.db").write_text("undelivered")
    install(root, "--uninstall")
    assert cfg.exists() and (root / "var/lib/city-edge-gateway/buffer.db").exists()
    assert not (root / "opt/city-edge-gateway").exists()
    assert "city-edge-gateway" not in (root / "etc/passwd").read_text()


def test_installed_units_verify_in_the_installed_tree(root):
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    # The real gateway entry point in the installed venv, not a stand-in.
    assert os.access(root / "opt/city-edge-gateway/venv/bin/gateway", os.X_OK)
    out = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
                          "city-edge-gateway.service", "city-edge-gateway-boot-config.service",
                          "city-edge-gateway-update.service", "city-edge-gateway-update.path"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def _import_boot_config(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GATEWAY_ROOT": str(root), "GATEWAY_BIN": str(GATEWAY)}
    return subprocess.run([str(REPO / "systemd/import-boot-config")], env=env, capture_output=True, text=True)


def test_a_config_on_the_boot_partition_becomes_the_config(root):
    boot = root / "boot/firmware"
    boot.mkdir(parents=True)
    good = (REPO / "config/pi-example.yaml").read_text().replace("change-me-gateway-01", "river-07")
    (boot / "gateway.yaml").write_text(good)
    out = _import_boot_config(root)
    assert out.returncode == 0, out.stderr
    assert "river-07" in (root / "etc/city-edge-gateway/gateway.yaml").read_text()
    assert (boot / "gateway.yaml.imported").exists() and not (boot / "gateway.yaml").exists()

    # A broken one is not installed; its problems wait beside it for the technician's laptop.
    (boot / "gateway.yaml").write_text(good.replace("interval: 10s", "interval: often"))
    _import_boot_config(root)
    assert "river-07" in (root / "etc/city-edge-gateway/gateway.yaml").read_text()
    assert "sensors[0].interval" in (boot / "gateway.yaml.errors").read_text()


def test_the_installer_makes_a_beacon_salt_the_gateway_accepts(first_install):
    """The BLE pseudonyms' key: made once, 0600 in the credentials directory, from where systemd's
    LoadCredential= hands it to the service (so root's ownership does not keep the service from it),
    and it passes the salt rules of `gateway check`."""
    from drivers.ble_beacon import read_salt
    salt = first_install[0] / "etc/city-edge-gateway/credentials/beacon.salt"
    assert oct(salt.stat().st_mode & 0o777) == "0o600"
    assert len(read_salt(salt)) >= 32
    unit = (REPO / "systemd/city-edge-gateway.service").read_text()
    assert "LoadCredential=secret:/etc/city-edge-gateway/credentials" in unit


def test_a_hostile_config_on_the_boot_partition_is_refused_in_bounded_time(root):
    """A YAML bomb written onto the SD card from any laptop: the boot import (run as
    root, before the service) refuses it quickly with one problem line."""
    boot = root / "boot/firmware"
    boot.mkdir(parents=True)
    bomb = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    (boot / "gateway.yaml").write_text("gateway: {id: river-07}\n" + bomb)
    before = (root / "etc/city-edge-gateway/gateway.yaml").read_text()
    out = subprocess.run([str(REPO / "systemd/import-boot-config")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GATEWAY_ROOT": str(root), "GATEWAY_BIN": str(GATEWAY)})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    errors = (boot / "gateway.yaml.errors").read_text().splitlines()
    assert len(errors) == 2 and "more than 50000 values" in errors[0], errors  # the problem, then the verdict
    assert (root / "etc/city-edge-gateway/gateway.yaml").read_text() == before


def test_secrets_on_the_boot_partition_move_into_the_credentials_directory(root):
    """A config written on a laptop names the documented credentials path; its secrets travel beside it
    in gateway-credentials/. They end up root-only in the credentials directory, gone from the FAT side,
    and the config passes the check that decides its import."""
    boot = root / "boot/firmware"
    (boot / "gateway-credentials").mkdir(parents=True)
    (boot / "gateway-credentials/mqtt.secret").write_text("s3cret-password\n")
    (boot / "gateway-credentials/beacon.salt").write_text("Zq3kP9xW2mLr8vTb5nYc1hFd7gJs4eAo\n")
    (boot / "gateway-credentials/bad name").write_text("x")
    run = "/run/credentials/city-edge-gateway.service"
    (boot / "gateway.yaml").write_text(
        "gateway: {id: river-07}\n"
        "uplinks:\n"
        f"  - {{name: city, type: mqtt, url: 'mqtt://127.0.0.1:1883', username: gw07, password_file: {run}/secret_mqtt.secret}}\n"
        "sensors:\n"
        f"  - {{id: park-1, driver: ble_beacon, interval: 10s, adapter: 'replay:{REPO}/hil/ble/sample.jsonl',\n"
        f"     salt_file: {run}/secret_beacon.salt}}\n")
    out = _import_boot_config(root)
    assert out.returncode == 0, out.stderr
    creds = root / "etc/city-edge-gateway/credentials"
    assert (creds / "mqtt.secret").read_text() == "s3cret-password\n"
    assert oct((creds / "mqtt.secret").stat().st_mode & 0o777) == "0o600"
    assert oct(creds.stat().st_mode & 0o777) == "0o700"
    assert not (boot / "gateway-credentials/mqtt.secret").exists()
    assert not (boot / "gateway-credentials/beacon.salt").exists()
    assert "skipped" in out.stderr and (boot / "gateway-credentials/bad name").exists()
    assert "secret_mqtt.secret" in (root / "etc/city-edge-gateway/gateway.yaml").read_text()
    assert not (boot / "gateway.yaml.errors").exists()
