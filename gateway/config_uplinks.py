"""The uplinks' config models (SPEC §2 `uplinks:`): one model per `type`, each
with its own checks, MQTT's protocol limits among them. gateway/config.py
picks the model by `type` and reports every problem with its line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.sdk.fields import Duration, Name, ReadableFile, SecretFile, Strict
from gateway.sdk.fields import key_error as _key_error


def _check_url(url: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"URL must start with {' or '.join(s + '://' for s in schemes)} (got {url!r})")
    if parts.username or parts.password:
        raise ValueError("no user or password in the URL: write username and password_file/token_file; "
                         "secrets come only from files")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"URL has an invalid port (1..65535): {url!r}") from None
    if port == 0:
        raise ValueError(f"URL has an invalid port (1..65535): {url!r}")
    return url


class UplinkBase(Strict):
    name: Name


class ConsoleUplinkConfig(UplinkBase):
    """JSON lines to stdout ("-") or to a file: the embedded default."""

    type: Literal["console"]
    path: str = "-"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if v == "-":
            return v
        if "\0" in v:
            raise ValueError("a file path cannot contain a NUL character")
        path = Path(v)
        if path.is_dir():
            raise ValueError(f"{v} is a directory; write \"-\" for stdout or a file name")
        if not path.parent.is_dir():
            raise ValueError(f"directory {path.parent} does not exist; create it or write \"-\" for stdout")
        return v


# MQTT's own limits (MQTT 3.1.1 §1.5.3, §3.1.2.10; MQTT 5 §3.1.2.11.2): a string is at
# most 65,535 bytes of UTF-8 without U+0000, keep alive a 16-bit count of seconds, the
# session expiry interval a 32-bit one. Past them the client cannot even connect.
MQTT_STRING_MAX = 65_535
MQTT_KEEPALIVE_MAX = 65_535
MQTT_SESSION_EXPIRY_MAX = 2**32 - 1
# The longest a placeholder can be: ids and names are at most 64 characters.
_LONGEST = {key: "x" * 64 for key in ("gateway", "sensor", "kind", "device")}


def _mqtt_string(v: str, what: str) -> str:
    if "\0" in v:
        raise ValueError(f"an MQTT {what} cannot contain a NUL character (MQTT strings exclude U+0000)")
    if len(v.encode("utf-8")) > MQTT_STRING_MAX:
        raise ValueError(f"an MQTT {what} is at most {MQTT_STRING_MAX} bytes of UTF-8 (MQTT's string limit)")
    return v


def _gateway_placeholder_only(v: str, what: str) -> None:
    try:
        v.format(gateway="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"the {what}'s only placeholder is {{gateway}} (bad: {exc})") from None


MANAGE_TOPICS = ("health", "config", "cmd")


class ManageSection(Strict):
    """Remote management over this uplink's broker (SPEC §7)."""

    public_key_file: ReadableFile = Field(description="the fleet's Ed25519 public key (PEM)")
    prefix: str = "city/{gateway}"
    health_interval: Duration = 60.0
    rollback_after: Duration = 600.0

    @field_validator("public_key_file")
    @classmethod
    def _key(cls, v: Path) -> Path:
        from gateway.manage.envelope import load_public_key
        load_public_key(v)  # a ValueError says what is wrong with it
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        _gateway_placeholder_only(v, "prefix")
        if "#" in v or "+" in v or v.endswith("/"):
            raise ValueError("a prefix has no wildcards (# +) and no trailing /")
        return _mqtt_string(v, "topic prefix")


class MqttUplinkConfig(UplinkBase):
    type: Literal["mqtt"]
    url: list[str] = Field(description="a broker URL, or a list of them: the uplink moves to the next when one "
                                       "is unreachable")
    topic: str = "city/{gateway}/{sensor}"
    status_topic: str = Field("city/{gateway}/status", description="retained online/offline and the last will")
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password_file: SecretFile | None = None
    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None
    client_id: str | None = None
    batch: int = Field(1, ge=1, le=10_000)
    window: int = Field(20, ge=1, le=65_535, description="publishes awaiting PUBACK at once")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry: Duration = 86_400.0
    keepalive: Duration = 30.0
    reconnect_max: Duration = 30.0
    drain_rate: float | None = Field(None, gt=0, description="readings/s at most while a backlog drains; "
                                                             "alerts are not counted")
    format: Literal["json", "iota-json"] = "json"
    apikey: str | None = Field(None, description="iota-json: the IoT Agent service's API key")
    attributes: dict[str, str] = Field({}, description="iota-json: value name -> short attribute name")
    manage: ManageSection | None = Field(None, description="remote management over this broker (docs/remote-management.md)")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> list[str]:
        urls = [v] if isinstance(v, str) else v
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ValueError("must be a broker URL or a list of them")
        for url in urls:
            _check_url(url, ("mqtt", "mqtts"))
        if len({urlsplit(u).scheme for u in urls}) > 1:
            raise ValueError("every broker in the list takes the same scheme: all mqtts:// or all mqtt://")
        return urls

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        try:
            v.format(gateway="g", sensor="s", kind="k", device="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"topic placeholders are {{gateway}}, {{sensor}}, {{kind}}, {{device}} (bad: {exc})") from None
        if "#" in v or "+" in v:
            raise ValueError("a publish topic cannot contain the wildcards # or +")
        _mqtt_string(v, "topic")
        if len(v.format(**_LONGEST).encode("utf-8")) > MQTT_STRING_MAX:
            raise ValueError(f"an MQTT topic is at most {MQTT_STRING_MAX} bytes of UTF-8 (MQTT's string limit), "
                             "with its placeholders filled in")
        return v

    @field_validator("client_id", "username", "apikey")
    @classmethod
    def _strings(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v is None else _mqtt_string(v, info.field_name.replace("_", " "))

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, v: float) -> float:
        if not 1 <= v <= MQTT_KEEPALIVE_MAX:
            raise ValueError(f"MQTT's keep alive is 1s to {MQTT_KEEPALIVE_MAX}s (a 16-bit count of seconds)")
        return v

    @field_validator("session_expiry")
    @classmethod
    def _session_expiry(cls, v: float) -> float:
        if v > MQTT_SESSION_EXPIRY_MAX:
            raise ValueError(f"MQTT 5's session expiry is at most {MQTT_SESSION_EXPIRY_MAX}s (a 32-bit count of seconds)")
        return v

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, v: str) -> str:
        _gateway_placeholder_only(v, "status topic")
        if "#" in v or "+" in v or not v:
            raise ValueError("a status topic is a plain topic: no wildcards # or +, not empty")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> "MqttUplinkConfig":
        # Each error names the key that is there, so the line points at it.
        if self.cert_file is not None and self.key_file is None:
            raise _key_error("cert_file", "cert_file needs key_file too (mutual TLS takes both)")
        if self.key_file is not None and self.cert_file is None:
            raise _key_error("key_file", "key_file needs cert_file too (mutual TLS takes both)")
        if self.password_file is not None and self.username is None:
            raise _key_error("password_file", "password_file needs a username")
        if (self.cert_file or self.ca_file) and not self.tls:
            raise _key_error("url", "ca_file/cert_file need a TLS URL: write mqtts://")
        if self.format == "iota-json" and not self.apikey:
            raise _key_error("format", "format iota-json needs an apikey")
        return self

    @property
    def tls(self) -> bool:
        return self.url[0].startswith("mqtts://")


_TENANT = re.compile(r"[A-Za-z0-9_-]{1,50}", re.ASCII)


class NgsiLdUplinkConfig(UplinkBase):
    type: Literal["ngsi-ld"]
    url: str
    tenant: str | None = None
    token_file: SecretFile | None = None
    token_url: str | None = Field(None, description="OAuth2 client credentials: the identity provider's token URL")
    client_id: str | None = None
    client_secret_file: SecretFile | None = None
    ca_file: ReadableFile | None = None
    context: str | None = Field(None, description="a city-hosted JSON-LD context every request names "
                                                  "(default: the pinned Smart Data Models contexts)")
    core_context: str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    temporal: Literal["auto", "on", "off"] = Field("auto", description="history through the temporal API; "
                                                   "off: only through upserts")
    timeout: Duration = Field(30.0, description="whole request, answer included (a broker may fetch contexts)")
    batch: int = Field(2000, ge=1, le=10_000, description="readings per send (several requests: temporal + upsert)")
    max_request_bytes: int = Field(1_000_000, ge=10_000, le=1_048_575, description="upsert/temporal body limit")
    heartbeat: Duration = Field(60.0, description="how often the gateway's own Device entity is refreshed")
    reconnect_max: Duration = Field(30.0, description="longest wait between retries, a broker's Retry-After included")

    @field_validator("url", "token_url", "context")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("http", "https"))

    @model_validator(mode="after")
    def _credentials(self) -> "NgsiLdUplinkConfig":
        names = ("token_url", "client_id", "client_secret_file")
        given = [n for n in names if getattr(self, n) is not None]
        if given and self.token_file is not None:
            raise _key_error("token_file", "give either token_file or token_url/client_id/client_secret_file")
        missing = [n for n in names if n not in given]
        if given and missing:
            raise _key_error(given[0], "OAuth2 client credentials need token_url, client_id and client_secret_file "
                                       f"({', '.join(missing)} missing)")
        return self

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str | None) -> str | None:
        # An HTTP header value, and a database name at the broker (Orion keeps one per tenant).
        if v is not None and not _TENANT.fullmatch(v):
            raise ValueError(f"a tenant is 1 to 50 ASCII letters, digits, '_' or '-' (got {v[:60]!r})")
        return v


UPLINK_TYPES: dict[str, type[UplinkBase]] = {
    "console": ConsoleUplinkConfig,
    "mqtt": MqttUplinkConfig,
    "ngsi-ld": NgsiLdUplinkConfig,
}
