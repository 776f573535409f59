"""The configuration file (SPEC §2), validated once into typed objects.

`load_config` returns a Config or raises ConfigError holding every problem as
`FILE:LINE: key.path: message`. Sensors and uplinks are validated one by one
against the model their `driver` / `type` picks, so each error names the
sensor's own key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from drivers.base import SensorOptions
from gateway import registry, yamlsource
from gateway.fields import Duration, Location, Name, ReadableFile, Strict
from gateway.yamlsource import Problem

DEFAULT_CONFIG = Path("/etc/city-edge-gateway/gateway.yaml")


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class GatewaySection(Strict):
    id: Name
    location: Location | None = None
    shutdown_timeout: Duration = 10.0


class StorageSection(Strict):
    path: Path = Path("/var/lib/city-edge-gateway/buffer.db")
    max_readings: int = Field(5_000_000, ge=10)
    durability: Literal["normal", "full"] = "normal"
    commit_interval: Duration = 1.0
    commit_rows: int = Field(500, ge=1, le=100_000)


class ServiceSection(Strict):
    """How the daemon lives on the Pi: status socket, metrics, clock trust."""

    status_socket: Path | None = Field(None, description="default: beside the buffer, <buffer>.sock")
    metrics_port: int | None = Field(None, ge=1, le=65_535, description="Prometheus on 127.0.0.1; off when unset")
    clock_check: Literal["auto", "kernel", "build-time", "off"] = "auto"
    clock_hold: Duration = Field(300.0, description="hold deliveries at most this long while the clock is unsynced")


def _check_url(url: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"URL must start with {' or '.join(s + '://' for s in schemes)} (got {url!r})")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"URL has an invalid port: {url!r}") from None
    return url


class UplinkBase(Strict):
    name: Name


class ConsoleUplinkConfig(UplinkBase):
    """JSON lines to stdout ("-") or to a file: the embedded default."""

    type: Literal["console"]
    path: str = "-"


class MqttUplinkConfig(UplinkBase):
    type: Literal["mqtt"]
    url: str
    topic: str = "city/{gateway}/{sensor}"
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password_file: ReadableFile | None = None
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
    format: Literal["json"] = "json"

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("mqtt", "mqtts"))

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        try:
            v.format(gateway="g", sensor="s", kind="k", device="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"topic placeholders are {{gateway}}, {{sensor}}, {{kind}}, {{device}} (bad: {exc})") from None
        if "#" in v or "+" in v:
            raise ValueError("a publish topic cannot contain the wildcards # or +")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> "MqttUplinkConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")


class NgsiLdUplinkConfig(UplinkBase):
    type: Literal["ngsi-ld"]
    url: str
    tenant: str | None = None
    token_file: ReadableFile | None = None
    ca_file: ReadableFile | None = None
    core_context: str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))


UPLINK_TYPES: dict[str, type[UplinkBase]] = {
    "console": ConsoleUplinkConfig,
    "mqtt": MqttUplinkConfig,
    "ngsi-ld": NgsiLdUplinkConfig,
}


class Config(BaseModel):
    gateway: GatewaySection
    storage: StorageSection = StorageSection()
    service: ServiceSection = ServiceSection()
    uplinks: list[UplinkBase] = []
    sensors: list[SensorOptions] = []
    source: str = "<config>"

    def sensor(self, sensor_id: str) -> SensorOptions:
        for s in self.sensors:
            if s.id == sensor_id:
                return s
        raise KeyError(sensor_id)

    def location_of(self, sensor: SensorOptions) -> tuple[float, float] | None:
        return sensor.location or self.gateway.location


class _Top(Strict):
    gateway: GatewaySection
    storage: StorageSection = StorageSection()
    service: ServiceSection = ServiceSection()
    uplinks: list[dict[str, Any]] = []
    sensors: list[dict[str, Any]] = []


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    msg = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _problems(exc: ValidationError, prefix: tuple, lines: yamlsource.LineMap, file: str) -> list[Problem]:
    out = []
    for err in exc.errors():
        path = prefix + tuple(err["loc"])
        out.append(Problem(file, lines.line_of(path), yamlsource.format_path(path), _message(err)))
    return out


def _validate_item(model: type[BaseModel], raw: dict, prefix: tuple, lines, file, problems) -> BaseModel | None:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems(exc, prefix, lines, file))
        return None


def parse_config(text: str, file: str = "<config>") -> Config:
    data, lines, problems = yamlsource.load(text, file)
    if data is None:
        raise ConfigError(problems)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top)", "the config must be a mapping with gateway, storage, uplinks, sensors")])
    try:
        top = _Top.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, (), lines, file))
        raise ConfigError(sorted(problems, key=lambda p: p.line)) from None

    uplinks: list[UplinkBase] = []
    for i, raw in enumerate(top.uplinks):
        model = UPLINK_TYPES.get(raw.get("type"))
        if model is None:
            problems.append(Problem(file, lines.line_of(("uplinks", i, "type")), f"uplinks[{i}].type",
                                    f"unknown uplink type {raw.get('type')!r}; one of: {', '.join(UPLINK_TYPES)}"))
            continue
        item = _validate_item(model, raw, ("uplinks", i), lines, file, problems)
        if item is not None:
            if any(u.name == item.name for u in uplinks):
                problems.append(Problem(file, lines.line_of(("uplinks", i, "name")), f"uplinks[{i}].name",
                                        f"duplicate uplink name {item.name!r}"))
            uplinks.append(item)

    sensors: list[SensorOptions] = []
    for i, raw in enumerate(top.sensors):
        name = raw.get("driver")
        if not isinstance(name, str):
            problems.append(Problem(file, lines.line_of(("sensors", i, "driver")), f"sensors[{i}].driver",
                                    "missing required key" if name is None else "must be a driver name"))
            continue
        try:
            driver = registry.load(name)
        except registry.DriverLoadError as exc:
            problems.append(Problem(file, lines.line_of(("sensors", i, "driver")), f"sensors[{i}].driver", str(exc)))
            continue
        item = _validate_item(driver.Options, raw, ("sensors", i), lines, file, problems)
        if item is not None:
            if any(s.id == item.id for s in sensors):
                problems.append(Problem(file, lines.line_of(("sensors", i, "id")), f"sensors[{i}].id",
                                        f"duplicate sensor id {item.id!r}"))
            sensors.append(item)

    config = Config(gateway=top.gateway, storage=top.storage, service=top.service, uplinks=uplinks, sensors=sensors, source=file)
    problems.extend(_cross_checks(config, lines, file))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return config


def _cross_checks(config: Config, lines: yamlsource.LineMap, file: str) -> list[Problem]:
    out = []
    if any(isinstance(u, NgsiLdUplinkConfig) for u in config.uplinks):
        for i, s in enumerate(config.sensors):
            if config.location_of(s) is None:
                out.append(Problem(file, lines.line_of(("sensors", i, "id")), f"sensors[{i}].location",
                                   "an ngsi-ld uplink needs a location for every sensor (its own or gateway.location)"))
    return out


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, "(file)", f"cannot read config: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), 0, "(file)", "config is not UTF-8 text")]) from None
    return parse_config(text, str(path))
