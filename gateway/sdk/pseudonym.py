"""Beacon identities never leave the gateway: they are replaced by a keyed hash."""

import hashlib
import hmac


def pseudonym(salt: bytes, raw_id: str) -> str:
    """The first 12 bytes, in hex, of HMAC-SHA256(salt, raw id)."""
    return hmac.new(salt, raw_id.encode(), hashlib.sha256).digest()[:12].hex()
