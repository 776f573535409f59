"""Bearer tokens for the NGSI-LD uplink.

Keyrock and Keycloak tokens expire (Keyrock's after an hour), so a token is
never read once for the life of the daemon:
- `FileToken`: token_file, read again whenever the broker refuses the token
  (401/403): whoever rotates it only has to replace the file.
- `ClientCredentials`: OAuth2 client credentials (RFC 6749 §4.4) at token_url,
  with client_id and the secret from client_secret_file (HTTP Basic, which
  both Keyrock and Keycloak take); the token is fetched again before it
  expires, and at once when the broker refuses it.
A token must be one line of visible ASCII: anything else would be an illegal
header, and the HTTP library's error would quote it into the log.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from gateway.sdk.fields import read_secret
from gateway.uplinks.ngsi_http import ERROR_BODY_LIMIT, SetupFault, exchange

TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
REFRESH_MARGIN = 0.2  # fetch a new token when this share of its lifetime is left (at most 60 s before expiry)


def _checked(token: object, where: str) -> str:
    if not isinstance(token, str) or not TOKEN_CHARS.fullmatch(token):
        raise SetupFault(f"{where} holds no usable token (one line of visible ASCII characters)")
    return token


class NoToken:
    async def header(self, client: httpx.AsyncClient) -> str | None:
        return None

    def refused(self) -> bool:
        return False  # nothing to renew: retrying at once would not help


class FileToken:
    def __init__(self, path: Path):
        self.path = path
        self._token: str | None = None

    async def header(self, client: httpx.AsyncClient) -> str | None:
        if self._token is None:
            try:
                self._token = _checked(read_secret(self.path), f"token_file {self.path}")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise SetupFault(f"cannot read token_file {self.path} ({type(exc).__name__})") from None
        return f"Bearer {self._token}"

    def refused(self) -> bool:
        """The broker refused the token: read the file again. True: worth retrying at once."""
        old, self._token = self._token, None
        try:
            return read_secret(self.path) != old
        except (OSError, UnicodeDecodeError, ValueError):
            return False


class ClientCredentials:
    def __init__(self, token_url: str, client_id: str, secret_file: Path, deadline: float):
        self.token_url, self.client_id, self.secret_file = token_url, client_id, secret_file
        self.deadline = deadline
        self._token: str | None = None
        self._renew_at = 0.0

    async def header(self, client: httpx.AsyncClient) -> str | None:
        if self._token is None or time.monotonic() >= self._renew_at:
            await self._fetch(client)
        return f"Bearer {self._token}"

    def refused(self) -> bool:
        self._token = None
        return True

    async def _fetch(self, client: httpx.AsyncClient) -> None:
        try:
            secret = read_secret(self.secret_file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SetupFault(f"cannot read client_secret_file {self.secret_file} ({type(exc).__name__})") from None
        answer = await exchange(client, "POST", self.token_url, deadline=self.deadline,
                                data={"grant_type": "client_credentials"}, auth=(self.client_id, secret),
                                headers={"Accept": "application/json"})
        if answer.status != 200:
            raise SetupFault(f"token_url refused client {self.client_id!r} ({answer.describe()[:ERROR_BODY_LIMIT]})")
        try:
            doc = answer.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise SetupFault("token_url answered without an access_token") from None
        self._token = _checked(token, "token_url's answer")
        lifetime = max(1.0, lifetime)
        self._renew_at = time.monotonic() + lifetime - min(60.0, lifetime * REFRESH_MARGIN)


def token_source(config, deadline: float):
    if config.token_url:
        return ClientCredentials(config.token_url, config.client_id, config.client_secret_file, deadline)
    if config.token_file is not None:
        return FileToken(config.token_file)
    return NoToken()
