"""What `storage.path` must be (checked by `gateway check` and at every load):
a file of its own (absent, empty, an SQLite file, or a buffer of ours gone
corrupt; never the config or anyone else's file, which a buffer would replace),
in a directory that exists or can be created and that the service user can
write; not under /proc or /sys.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

SERVICE_USER = "city-edge-gateway"  # the unit's User= (systemd/city-edge-gateway.service)
STATE_DIRECTORY = Path("/var/lib/city-edge-gateway")  # the unit's StateDirectory=: systemd creates it
SQLITE_HEADER = b"SQLite format 3\x00"
PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))


def storage_path_problems(path: Path, config_file: str | None = None) -> list[str]:
    text = str(path)
    if "\x00" in text:
        return ["must not contain a NUL character"]
    where = Path(os.path.realpath(path))
    for pseudo in PSEUDO_FILE_SYSTEMS:
        if where == pseudo or pseudo in where.parents:
            return [f"{path} is under {pseudo}, which keeps no files: give the buffer a place on the SD card"]
    if config_file and path.exists() and Path(config_file).exists() and os.path.samefile(path, config_file):
        return [f"{path} is this config file itself; the buffer needs a file of its own, e.g. "
                f"{STATE_DIRECTORY / 'buffer.db'}"]
    problem = _file_problem(path) if path.exists() or path.is_symlink() else None
    return [problem] if problem else _directory_problems(where.parent)


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} exists and is not a regular file (a device, FIFO, socket or dangling link)"
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except PermissionError:
        return None  # the daemon's own user may read it; its open says more
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if head and head != SQLITE_HEADER and not _was_a_buffer(path):
        return (f"{path} exists and is not an SQLite file (not a buffer): it is never replaced; "
                f"give the buffer a file name of its own")
    return None


def _was_a_buffer(path: Path) -> bool:
    """A gateway ran on it (its id lease or instance lock is beside it): a buffer gone
    corrupt, which the daemon moves aside and replaces (SPEC §5), not someone else's file."""
    return any(path.with_name(path.name + suffix).exists() for suffix in (".ids", ".lock"))


def _directory_problems(directory: Path) -> list[str]:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"{existing} is a file, not a directory: the buffer cannot be below it"]
    if existing != directory and directory == STATE_DIRECTORY:
        return []  # systemd creates it for the service user
    user = _service_user()
    if not _writable(existing, user):
        who = f"the service user {user[0]}" if user else f"this user ({pwd.getpwuid(os.geteuid()).pw_name})"
        if existing == directory:
            return [f"directory {directory} is not writable by {who}"]
        return [f"directory {directory} does not exist and cannot be created: {existing} is not writable by {who}"]
    return []


def _service_user() -> tuple[str, int, set[int]] | None:
    """Root checking a config checks for the service user, if it exists; anyone else for themselves."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return pw.pw_name, pw.pw_uid, set(os.getgrouplist(pw.pw_name, pw.pw_gid))


def _writable(directory: Path, user: tuple[str, int, set[int]] | None) -> bool:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    if user is None:
        return os.access(directory, os.W_OK | os.X_OK)
    _, uid, groups = user
    st = directory.stat()
    if uid == st.st_uid:
        return st.st_mode & 0o300 == 0o300
    if st.st_gid in groups:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003
