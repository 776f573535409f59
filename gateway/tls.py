"""The one place a client TLS context is built: the MQTT uplink, the NGSI-LD
uplink and `gateway check` all call `client_context`, so `check` loads the TLS
material exactly as `run` will and a config that passes never fails there.

Trust: the system's CA store, unless `ca_file` names the CAs to trust instead.
Mutual TLS: `cert_file` with its `key_file`; the key must match the
certificate and must not need a passphrase (a daemon has no one to ask; protect
the key file by its permissions instead).
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsError(Exception):
    """TLS material that cannot be used; `key` names the config key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _no_passphrase() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal nobody watches


def _reason(exc: ssl.SSLError) -> str:
    return exc.reason or exc.strerror or str(exc)


def _text(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # load_cert_chain reports the reason


def client_context(ca_file: Path | str | None = None, cert_file: Path | str | None = None,
                   key_file: Path | str | None = None) -> ssl.SSLContext:
    """A verifying client context (hostname checked, TLS 1.2 at least); raises TlsError."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise TlsError("ca_file", f"{ca_file} holds no usable CA certificate ({_reason(exc)})") from None
    except OSError as exc:
        raise TlsError("ca_file", f"cannot read {ca_file}: {exc.strerror or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is None and key_file is None:
        return context
    if cert_file is None or key_file is None:
        missing = "cert_file" if cert_file is None else "key_file"
        raise TlsError(missing, "mutual TLS needs both cert_file and key_file")
    if b"-----BEGIN CERTIFICATE-----" not in _text(Path(cert_file)):
        raise TlsError("cert_file", f"{cert_file} holds no PEM certificate")
    key_text = _text(Path(key_file))
    if b"ENCRYPTED" in key_text:
        raise TlsError("key_file", f"{key_file} is encrypted; the gateway needs an unencrypted key "
                                   "(protect it by file permissions)")
    if b"PRIVATE KEY-----" not in key_text:
        raise TlsError("key_file", f"{key_file} holds no PEM private key")
    try:
        context.load_cert_chain(str(cert_file), str(key_file), password=_no_passphrase)
    except ssl.SSLError as exc:
        reason = _reason(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise TlsError("key_file", f"{key_file} is not the key of the certificate in {cert_file}") from None
        raise TlsError("key_file", f"{key_file} is not a usable private key for {cert_file} ({reason})") from None
    except OSError as exc:
        raise TlsError("key_file", f"cannot read {key_file}: {exc.strerror or exc}") from None
    return context
