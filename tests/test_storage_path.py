"""`storage.path` is checked for what it must be (issue 13 point 3): never the
config file or anyone else's file, not under /proc, not below a regular file,
not a NUL; its directory exists or can be created and is writable. `check`
reports each at the key's line; `buffer stats` never replaces such a file."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import gateway_cli
from tests.test_config import check, problems

GW = "gateway:\n  id: gw-1\nstorage:\n"


def _config(tmp_path, storage_path: str):
    file = tmp_path / "gateway.yaml"
    file.write_text(GW + f"  path: {storage_path}\n")
    return file


CASES = {  # name: (storage.path, words the message must contain)
    "a NUL": ('"{tmp}/buf\\0fer.db"', "NUL character"),
    "under /proc": ("/proc/self/buffer.db", "under /proc"),
    "under /sys": ("/sys/buffer.db", "under /sys"),
    "below a regular file": ("{tmp}/notes.txt/buffer.db", "is a file, not a directory"),
    "someone else's file": ("{tmp}/notes.txt", "is not an SQLite file"),
    "a FIFO": ("{tmp}/fifo", "not a regular file"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_rejects_a_storage_path_that_is_no_place_for_a_buffer(name, tmp_path, capfd):
    (tmp_path / "notes.txt").write_text("calibration notes\n")
    subprocess.run(["mkfifo", str(tmp_path / "fifo")], check=True)
    value, words = CASES[name]
    file = _config(tmp_path, value.replace("{tmp}", str(tmp_path)))
    code, err = check(["check", "-c", str(file)], capfd)
    found = problems(err)
    assert code == 2 and len(found) == 1, err
    assert (int(found[0]["line"]), found[0]["path"]) == (4, "storage.path") and words in found[0]["message"], err
    assert (tmp_path / "notes.txt").read_text() == "calibration notes\n"


def test_the_config_file_itself_is_refused_and_buffer_stats_leaves_it_alone(tmp_path, capfd):
    file = tmp_path / "gateway.yaml"
    file.write_text(GW + f"  path: {file}\n")
    before = file.read_bytes()
    code, err = check(["check", "-c", str(file)], capfd)
    assert code == 2 and "is this config file itself" in problems(err)[0]["message"], err
    stats = gateway_cli("buffer", "-c", str(file), "stats", check=False)
    assert stats.returncode == 2 and file.read_bytes() == before, "never replaced by an SQLite file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml"], "nothing beside it either"


def test_a_directory_on_a_read_only_file_system_is_not_writable(tmp_path, capfd):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        code, err = check(["check", "-c", str(_config(tmp_path, f"{ro}/buffer.db"))], capfd)
        code_below, err_below = check(["check", "-c", str(_config(tmp_path, f"{ro}/new/buffer.db"))], capfd)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert code == 2 and f"directory {ro} is not writable" in problems(err)[0]["message"], err
    assert code_below == 2 and "does not exist and cannot be created" in problems(err_below)[0]["message"]


def test_a_directory_that_can_be_created_or_an_empty_or_sqlite_file_is_fine(tmp_path, capfd):
    for value in (f"{tmp_path}/new/dir/buffer.db", f"{tmp_path}/empty.db"):
        (tmp_path / "empty.db").write_bytes(b"")
        code, err = check(["check", "-c", str(_config(tmp_path, value))], capfd)
        assert code == 0, err
    assert not (tmp_path / "new").exists(), "check creates nothing"


def test_checked_as_root_the_directory_must_be_writable_by_the_service_user(tmp_path, capfd, monkeypatch):
    from gateway import storagepath
    monkeypatch.setattr(storagepath, "_service_user", lambda: ("city-edge-gateway", 54_321, {54_321}))
    (tmp_path / "root-only").mkdir(mode=0o755)
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", 54_321, 54_321)
    code, err = check(["check", "-c", str(_config(tmp_path, f"{tmp_path}/root-only/buffer.db"))], capfd)
    assert code == 2 and "is not writable by the service user city-edge-gateway" in problems(err)[0]["message"]
    code, err = check(["check", "-c", str(_config(tmp_path, f"{tmp_path}/theirs/buffer.db"))], capfd)
    assert code == 0, err
