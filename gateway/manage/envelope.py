"""The signed envelope of SPEC §7: what the city sends is an Ed25519 signature
over a JSON payload string. Signing happens only on the city side (the fleet
tool holds the private key); a gateway holds the public key and checks.

A message is refused, with a reason the city can read, when the signature is
missing or wrong, it names another gateway, its `seq` is not above the last
one accepted, or (while the clock is synced) it was issued more than an hour
ago or more than five minutes ahead.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_AGE_S = 3600.0
MAX_AHEAD_S = 300.0


class Refused(Exception):
    """Why a message was not acted on; the text goes back to the city as is."""


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"{path} is not a PEM public key (write the fleet.pub of `gateway fleet keygen`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def utc_stamp(at: float | None = None) -> str:
    at = time.time() if at is None else at
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sign(key: Ed25519PrivateKey, payload: dict[str, Any]) -> str:
    """The envelope (JSON text) carrying `payload`, signed."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    signature = base64.b64encode(key.sign(text.encode("utf-8"))).decode("ascii")
    return json.dumps({"payload": text, "signature": signature}, ensure_ascii=False)


@dataclass
class Message:
    """A verified payload; `seq` not yet checked against the last accepted one."""

    doc: dict[str, Any]

    @property
    def seq(self) -> int:
        return self.doc["seq"]

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)


def _parse_time(text: Any) -> float:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise Refused("issued_at must be a UTC time ending in Z")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise Refused(f"issued_at is not a time: {text[:40]!r}") from None


def open_envelope(raw: bytes, key: Ed25519PublicKey, *, gateway: str, kind: str,
                  clock_synced: bool, now: float | None = None) -> Message:
    """Check signature, addressee, type and issue time; raise Refused saying why."""
    try:
        env = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refused("not a JSON envelope") from None
    if not isinstance(env, dict) or not isinstance(env.get("payload"), str):
        raise Refused("not a signed envelope: it needs a payload string and a signature")
    signature = env.get("signature")
    if not isinstance(signature, str) or not signature:
        raise Refused("unsigned: the envelope has no signature")
    try:
        key.verify(base64.b64decode(signature, validate=True), env["payload"].encode("utf-8"))
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bad signature: not signed with the fleet's key") from None
    try:
        doc = json.loads(env["payload"])
    except json.JSONDecodeError:
        raise Refused("the signed payload is not JSON") from None
    if not isinstance(doc, dict):
        raise Refused("the signed payload is not a JSON object")
    if doc.get("type") != kind:
        raise Refused(f"payload type {doc.get('type')!r} on a {kind} topic")
    if doc.get("gateway") not in (gateway, "*"):
        raise Refused(f"addressed to gateway {doc.get('gateway')!r}, this is {gateway!r}")
    if not isinstance(doc.get("seq"), int) or isinstance(doc.get("seq"), bool):
        raise Refused("seq must be a whole number")
    issued = _parse_time(doc.get("issued_at"))
    if clock_synced:
        now = time.time() if now is None else now
        if issued < now - MAX_AGE_S:
            raise Refused(f"issued_at {doc['issued_at']} is more than 1 h old")
        if issued > now + MAX_AHEAD_S:
            raise Refused(f"issued_at {doc['issued_at']} is more than 5 min ahead of this gateway's clock")
    return Message(doc)


class SeqGuard:
    """The last accepted `seq`, kept across restarts through two callables
    (the daemon's: Buffer.recall/remember plus a commit, so it is on disk
    before the message is acted on)."""

    KEY = "manage:seq"

    def __init__(self, load, store):
        self._store = store
        text = load(self.KEY)
        self.last = int(text) if text else -1

    def accept(self, message: Message) -> None:
        if message.seq <= self.last:
            raise Refused(f"replayed or stale: seq {message.seq} is not greater than the last accepted {self.last}")
        self.last = message.seq
        self._store(self.KEY, str(message.seq))
