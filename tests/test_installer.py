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
