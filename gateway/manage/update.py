"""`gateway update WHEEL_OR_URL --sha256 HEX`: a software update that puts
itself back when the new version does not come up.

    /opt/city-edge-gateway/venv -> venvs/<version>-<hash>    (the link systemd's ExecStart goes through)
    /opt/city-edge-gateway/venvs/installed                   (what scripts/install.sh installed)

1. the wheel (a file, or an http(s) URL, downloaded) must match --sha256;
2. it is installed into a new virtualenv beside the running one, and that
   venv's own `gateway check` must accept the current config;
3. the buffer format: the new version must write the format the running one
   reads (SCHEMA_VERSION), so a rollback opens the buffer the new version wrote.
   Additions the format allows (new tables, new memo keys) pass; a format change
   is refused here, to wait for an update path that can confirm it first;
4. the link is switched atomically (rename of a new symlink over the old) and
   the service restarted;
5. within --deadline the new daemon must answer on its status socket from the
   new venv (it opens the socket just before READY=1) with its managing uplink
   connected; otherwise the link goes back, the service is restarted on the old
   venv, and the result says rolled_back.

The buffer is never touched by the update: undelivered readings wait in it
across both switches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import Config, load_config
from gateway.manage.agent import managing_uplink
from gateway.sdk.fields import parse_duration

log = logging.getLogger(__name__)

DEFAULT_OPT = Path("/opt/city-edge-gateway")
DEFAULT_RESTART = "systemctl restart city-edge-gateway.service"


# The buffer format a version writes, wherever that version keeps the constant.
FORMAT_PROBE = """
import importlib
for name in ("gateway.bufferfile", "gateway.buffer"):
    try:
        print(importlib.import_module(name).SCHEMA_VERSION)
        break
    except (ImportError, AttributeError):
        pass
"""


class UpdateRefused(Exception):
    """Nothing was switched: why, for the operator."""


def add_parser(sub, common) -> None:
    p = sub.add_parser("update", parents=[common], help="install a new version beside this one; roll back if it "
                                                         "does not come up")
    p.add_argument("source", nargs="?", help="a wheel file, or an http(s) URL of one")
    p.add_argument("--sha256", help="the wheel's SHA-256 (hex)")
    p.add_argument("--request", type=Path, help="take source and sha256 from the daemon's request file (the signed "
                                                "update command; run by city-edge-gateway-update.service)")
    p.add_argument("--opt", type=Path, default=DEFAULT_OPT, help=f"install directory (default {DEFAULT_OPT})")
    p.add_argument("--restart", default=DEFAULT_RESTART, help=f"restarts the service (default: {DEFAULT_RESTART})")
    p.add_argument("--deadline", type=parse_duration, default=120.0, help="for READY and the managing uplink")
    p.add_argument("--pip-option", action="append", default=[], help="passed to pip (repeatable)")


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def fetch(source: str, sha256: str, downloads: Path) -> Path:
    if source.startswith(("http://", "https://")):
        import httpx
        downloads.mkdir(parents=True, exist_ok=True)
        path = downloads / source.rstrip("/").rsplit("/", 1)[-1]
        with httpx.stream("GET", source, follow_redirects=True, timeout=60) as r:
            r.raise_for_status()
            with open(path, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
    else:
        path = Path(source)
    if not path.name.endswith(".whl"):
        raise UpdateRefused(f"{path.name} is not a wheel (.whl)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256.lower():
        raise UpdateRefused(f"{path.name}: sha256 is {digest}, not the {sha256} given")
    return path


def build_venv(wheel: Path, opt: Path, digest: str, pip_options: list[str]) -> Path:
    version = wheel.name.split("-")[1]
    venv = opt / "venvs" / f"{version}-{digest[:12]}"
    if venv.exists():
        shutil.rmtree(venv)  # a half-built one from an interrupted update
    made = _run([sys.executable, "-m", "venv", str(venv)])
    if made.returncode != 0:
        raise UpdateRefused(f"cannot create {venv}: {made.stderr.strip()}")
    pip = _run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                *pip_options, str(wheel)])
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise UpdateRefused(f"pip could not install {wheel.name}: {pip.stderr.strip()[-2000:]}")
    return venv


def check_with(venv: Path, config: Path) -> None:
    """The new version's own `gateway check` on the config in effect."""
    out = _run([str(venv / "bin/gateway"), "check", "-c", str(config)], timeout=120)
    if out.returncode != 0:
        raise UpdateRefused(f"the new version rejects {config}:\n{out.stderr.strip()[-4000:]}")
    fmt = _run([str(venv / "bin/python"), "-c", FORMAT_PROBE])
    from gateway.bufferfile import SCHEMA_VERSION
    if fmt.returncode != 0 or fmt.stdout.strip() != str(SCHEMA_VERSION):
        raise UpdateRefused(f"the new version writes buffer format {fmt.stdout.strip() or '?'}, this one reads "
                            f"{SCHEMA_VERSION}: a rollback could not open its buffer")


def switch(opt: Path, target: Path) -> None:
    """Point opt/venv at target in one rename (never a moment without a venv)."""
    staged = opt / "venv.switching"
    if staged.is_symlink():
        staged.unlink()
    staged.symlink_to(target.relative_to(opt))
    os.replace(staged, opt / "venv")


def current_target(opt: Path) -> Path:
    link = opt / "venv"
    if not link.is_symlink():
        raise UpdateRefused(f"{link} is not a link to venvs/...: reinstall with scripts/install.sh first")
    return (opt / os.readlink(link)).resolve()


def running_from(config: Config, venv: Path) -> bool:
    """The daemon answers on its status socket, runs from `venv`, and its managing uplink is connected."""
    from gateway import status
    try:
        snap = status.query(status.socket_path(config), timeout=3)
        argv = Path(f"/proc/{snap['pid']}/cmdline").read_bytes().split(b"\0")
    except (status.StatusUnavailable, OSError, ValueError, KeyError):
        return False
    # argv[0] is the interpreter named by the entry point's shebang: venvs/<x>/bin/python,
    # written when <x> was installed, so it names the venv the process really runs from.
    ours = bool(argv[0]) and Path(os.path.realpath(Path(os.fsdecode(argv[0])).parent.parent)) == venv
    managing = managing_uplink(config)
    uplink = snap.get("uplinks", {}).get(managing.name, {}) if managing else {"connected": True}
    return ours and bool(uplink.get("connected"))


def restart_and_confirm(restart: str, config: Config, venv: Path, deadline: float) -> bool:
    try:
        done = subprocess.run(restart, shell=True, capture_output=True, text=True, timeout=deadline)
        if done.returncode != 0:  # systemctl: the new version did not send READY=1 (or failed to start)
            log.error("update: %r failed: %s", restart, done.stderr.strip())
    except subprocess.TimeoutExpired:  # a start that hangs is a failed start: the caller switches back
        log.error("update: %r did not return within %gs", restart, deadline)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if running_from(config, venv):
            return True
        time.sleep(0.5)
    return False


def update(source: str, sha256: str, *, config_file: Path, opt: Path = DEFAULT_OPT, restart: str = DEFAULT_RESTART,
           deadline: float = 120.0, pip_options: list[str] = ()) -> dict:
    config = load_config(config_file)
    old = current_target(opt)
    wheel = fetch(source, sha256, opt / "downloads")
    new = build_venv(wheel, opt, sha256.lower(), list(pip_options))
    check_with(new, config_file)
    log.info("update: switching %s from %s to %s", opt / "venv", old.name, new.name)
    switch(opt, new)
    if restart_and_confirm(restart, config, new, deadline):
        log.info("update: %s is running and its managing uplink is connected", new.name)
        _prune(opt, keep={new, old})
        return {"result": "updated", "venv": new.name, "previous": old.name}
    log.error("update: %s did not come up within %gs; switching back to %s", new.name, deadline, old.name)
    switch(opt, old)
    back = restart_and_confirm(restart, config, old, deadline)
    if not back:
        log.error("update: the old version %s has not come back either; check the service", old.name)
    return {"result": "rolled_back", "venv": old.name, "failed": new.name, "old_version_back": back}


def _prune(opt: Path, keep: set[Path]) -> None:
    """Keep the running venv and the one before (a manual way back); remove older ones."""
    for venv in (opt / "venvs").iterdir():
        if venv.resolve() not in keep and venv.name != "installed":
            shutil.rmtree(venv, ignore_errors=True)


def _outcome(args, source: str, sha256: str) -> tuple[int, dict]:
    try:
        result = update(source, sha256, config_file=Path(args.config), opt=args.opt, restart=args.restart,
                        deadline=args.deadline, pip_options=args.pip_option)
    except UpdateRefused as exc:
        print(f"update refused, nothing switched: {exc}", file=sys.stderr)
        return 2, {"result": "refused", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a download, pip or config failure before the switch: the city hears of it
        print(f"update failed, nothing switched: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2, {"result": "refused", "error": f"{type(exc).__name__}: {exc}"}
    return (0 if result["result"] == "updated" else 1), result


def main(args) -> int:
    if args.request is not None:
        from gateway.manage import update_request
        try:
            request = update_request.take_request(args.request)
        except (OSError, ValueError) as exc:  # e.g. emptied by a power cut: set aside, said, not retried for ever
            print(f"update request {args.request} cannot be read ({exc}); set aside as .taken", file=sys.stderr)
            return 2
        rc, result = _outcome(args, request["url"], request["sha256"])
        if rc == 1:
            result["error"] = f"{result['failed']} did not come up within {args.deadline:g}s; back on {result['venv']}"
        update_request.write_result(args.request.parent, request["id"], rc == 0, result if rc == 0 else result["error"])
    elif args.source and args.sha256:
        rc, result = _outcome(args, args.source, args.sha256)
    else:
        print("gateway update: give WHEEL_OR_URL --sha256 HEX, or --request FILE", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return rc
