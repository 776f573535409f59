"""The signed `update` command, across the privilege line: the daemon (an
unprivileged, sandboxed user) cannot install software or restart itself, so it
only writes the request into its state directory; systemd's
city-edge-gateway-update.path sees the file and runs `gateway update --request`
as root, which writes the outcome beside it. Whichever version runs afterwards
publishes that outcome on `cmd/update/result` with the request's id."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from gateway.atomicfile import replace_atomically
from gateway.manage.commands import CommandError
from gateway.manage.envelope import utc_stamp

REQUEST = "update-request.json"
RESULT = "update-result.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _write_atomically(path: Path, doc: dict) -> None:
    # Synced: a power cut must not leave an empty request for the path unit to start on again and again.
    replace_atomically(path, json.dumps(doc).encode(), 0o644)  # root writes the result; the daemon's user reads it


def write_request(directory: Path, args: dict, request_id: Any) -> dict:
    url, digest = args.get("url"), str(args.get("sha256", "")).lower()
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise CommandError("update needs args.url, an http(s) URL of a wheel")
    if not _SHA256.match(digest):
        raise CommandError("update needs args.sha256, the wheel's SHA-256 in hex")
    path = directory / REQUEST
    if path.exists():
        raise CommandError("an update is already requested and not yet taken up")
    _write_atomically(path, {"id": request_id, "url": url, "sha256": digest, "at": utc_stamp()})
    return {"requested": url, "note": "the outcome follows on this topic with the same id"}


def take_request(path: Path) -> dict:
    """The updater's side: read the request and move it out of the path unit's sight."""
    taken = path.with_name(path.name + ".taken")
    os.replace(path, taken)  # first: a request that cannot be read must not start the updater again and again
    return json.loads(taken.read_text())


def write_result(directory: Path, request_id: Any, ok: bool, outcome: dict | str) -> None:
    doc = {"id": request_id, "ok": ok, "result" if ok else "error": outcome}
    _write_atomically(directory / RESULT, doc)


def take_result(directory: Path) -> dict | None:
    """The daemon's side, at start: the outcome of an update it has not reported yet."""
    path = directory / RESULT
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return doc
