"""The configuration file (SPEC §2), validated once into typed objects.

`load_config` returns a Config or raises ConfigError holding every problem as
`FILE:LINE: key.path: message`. Sensors and uplinks are validated one by one
against the model their `driver` / `type` picks, so each error names the
sensor's own key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.sdk.driver import SensorOptions
from gateway import registry, yamlsource
from gateway.sdk.fields import Duration, Location, Name, ReadableFile, SecretFile, Strict
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

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        if v.is_dir():
            raise ValueError(f"{v} is a directory; give the buffer's file name, e.g. {v / 'buffer.db'}")
        return v


def _key_error(key: str, message: str) -> PydanticCustomError:
    """A model-level error that belongs to one key: the collector appends `key` to
    its path, so the line and the path name that key, not the whole section."""
    return PydanticCustomError("key_error", message, {"key": key})


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
        if v != "-" and Path(v).is_dir():
            raise ValueError(f"{v} is a directory; write \"-\" for stdout or a file name")
        return v


class MqttUplinkConfig(UplinkBase):
    type: Literal["mqtt"]
    url: list[str] = Field(description="a broker URL, or a list of them: the uplink moves to the next when one "
                                       "is unreachable")
    topic: str = "city/{gateway}/{sensor}"
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


class NgsiLdUplinkConfig(UplinkBase):
    type: Literal["ngsi-ld"]
    url: str
    tenant: str | None = None
    token_file: SecretFile | None = None
    ca_file: ReadableFile | None = None
    core_context: str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    timeout: Duration = 10.0
    batch: int = Field(500, ge=1, le=10_000, description="readings per send (several requests: temporal + upsert)")
    max_request_bytes: int = Field(1_000_000, ge=10_000, le=1_048_575, description="upsert/temporal body limit")
    heartbeat: Duration = Field(60.0, description="how often the gateway's own Device entity is refreshed")
    reconnect_max: Duration = 30.0

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


SECTIONS = ("gateway", "storage", "service", "uplinks", "sensors")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as `AlertLevels | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the section at `loc` (inside `model`) accepts."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        sub = _submodel(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key; known keys here: {', '.join(known)}" if known else "unknown key"


def _got(err: dict[str, Any]) -> str:
    value = err.get("input")
    return "" if isinstance(value, (dict, list)) else f" (got {value!r})"


# Pydantic's own wording, turned into what a technician in the field can act on.
_PLAIN = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text (put it in quotes)",
    "path_type": "must be a file path",
    "dict_type": "must be a mapping: keys indented below it, or {key: value, ...}",
    "model_type": "must be a mapping: keys indented below it, or {key: value, ...}",
    "model_attributes_type": "must be a mapping: keys indented below it, or {key: value, ...}",
    "list_type": "must be a list: items on lines starting with '- ', or [a, b]",
    "tuple_type": "must be a list: [a, b]",
}


def _message(err: dict[str, Any], model: type[BaseModel]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(str(err["loc"][-1]), _known_keys(model, err["loc"][:-1]))
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"must be {ctx['expected']}{_got(err)}"
    if kind in _PLAIN:
        return _PLAIN[kind] + _got(err)
    bounds = {"greater_than": "greater than", "greater_than_equal": "at least",
              "less_than": "less than", "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}{_got(err)}"
    msg = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


class _Collector:
    """Gathers every problem of one file, each with its line and key path."""

    def __init__(self, file: str, lines: yamlsource.LineMap, problems: list[Problem]):
        self.file, self.lines, self.problems = file, lines, problems

    def add(self, path: tuple, message: str) -> None:
        self.problems.append(Problem(self.file, self.lines.line_of(path), yamlsource.format_path(path), message))

    def validate(self, model: type[BaseModel], raw: Any, prefix: tuple) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                key = (err.get("ctx") or {}).get("key")
                if err["type"] == "key_error" and key:
                    loc += (key,)
                self.add(prefix + loc, _message(err, model))
            return None

    def mapping(self, raw: Any, path: tuple) -> bool:
        if isinstance(raw, dict):
            return True
        self.add(path, _PLAIN["dict_type"] + _got({"input": raw}))
        return False

    def items(self, data: dict, section: str) -> list[tuple[int, dict]]:
        """The list under `section` (absent or empty: no items), each a mapping."""
        raw = data.get(section)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.add((section,), _PLAIN["list_type"] + _got({"input": raw}))
            return []
        return [(i, item) for i, item in enumerate(raw) if self.mapping(item, (section, i))]

    def duplicates(self, items: list[tuple[int, dict]], section: str, key: str, what: str) -> None:
        # Reported at the later occurrence, like a duplicate YAML key.
        seen: dict[str, int] = {}
        for i, raw in items:
            value = raw.get(key)
            if not isinstance(value, str):
                continue
            if value in seen:
                first = self.lines.line_of((section, seen[value], key))
                self.add((section, i, key), f"duplicate {what} {value!r} (first at line {first})")
            else:
                seen[value] = i


def driver_problem(name: str, exc: registry.DriverLoadError) -> str:
    """Why a driver cannot be used, in words a technician can act on."""
    installed = registry.available()
    cause = exc.__cause__
    if name in installed and cause is not None:
        return (f"driver {name!r} is installed but broken ({installed[name]}: {type(cause).__name__}: {cause}); "
                "reinstall or remove its package")
    close = difflib.get_close_matches(name, installed, n=1)
    if name not in installed and close:
        return f"unknown driver {name!r}; did you mean {close[0]}? (`gateway drivers` lists them)"
    return str(exc)


def parse_config(text: str, file: str = "<config>") -> Config:
    data, lines, problems = yamlsource.load(text, file)
    if data is None:
        raise ConfigError(problems)
    if data == {} and not problems:
        raise ConfigError([Problem(file, 1, "(top)", "the config is empty; it needs at least a gateway section with an id")])
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top)",
                                   "the config must be a mapping with the sections gateway, storage, uplinks, sensors")])
    out = _Collector(file, lines, problems)
    for key in data:
        if key not in SECTIONS:
            out.add((key,), _unknown_key(key, list(SECTIONS)))

    gateway = None
    if "gateway" not in data:
        out.problems.append(Problem(file, 1, "gateway", "required section is missing (gateway: with at least an id)"))
    else:
        section = {} if data["gateway"] is None else data["gateway"]  # an empty `gateway:` misses its id
        if out.mapping(section, ("gateway",)):
            gateway = out.validate(GatewaySection, section, ("gateway",))
    storage = StorageSection()
    if data.get("storage") is not None and out.mapping(data["storage"], ("storage",)):
        storage = out.validate(StorageSection, data["storage"], ("storage",))
    service = ServiceSection()
    if data.get("service") is not None and out.mapping(data["service"], ("service",)):
        service = out.validate(ServiceSection, data["service"], ("service",))

    raw_uplinks = out.items(data, "uplinks")
    out.duplicates(raw_uplinks, "uplinks", "name", "uplink name")
    uplinks: list[UplinkBase] = []
    for i, raw in raw_uplinks:
        kind = raw.get("type")
        model = UPLINK_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            out.add(("uplinks", i, "type"), "required key is missing" if kind is None else
                    f"unknown uplink type {kind!r}; one of: {', '.join(UPLINK_TYPES)}")
            continue
        uplinks.append(out.validate(model, raw, ("uplinks", i)))

    raw_sensors = out.items(data, "sensors")
    out.duplicates(raw_sensors, "sensors", "id", "sensor id")
    sensors: list[SensorOptions] = []
    for i, raw in raw_sensors:
        name = raw.get("driver")
        if not isinstance(name, str):
            out.add(("sensors", i, "driver"), "required key is missing" if name is None else
                    f"must be a driver name from `gateway drivers`{_got({'input': name})}")
            continue
        try:
            driver = registry.load(name)
        except registry.DriverLoadError as exc:
            out.add(("sensors", i, "driver"), driver_problem(name, exc))
            continue
        sensors.append(out.validate(driver.Options, raw, ("sensors", i)))

    if problems or gateway is None or storage is None or service is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    config = Config(gateway=gateway, storage=storage, service=service, uplinks=uplinks, sensors=sensors, source=file)
    _cross_checks(config, out)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return config


def _cross_checks(config: Config, out: _Collector) -> None:
    if any(isinstance(u, NgsiLdUplinkConfig) for u in config.uplinks):
        for i, s in enumerate(config.sensors):
            if config.location_of(s) is None:
                out.add(("sensors", i, "location"), "an ngsi-ld uplink needs a location for every sensor: "
                        "give this sensor a location or set gateway.location")
    sets = registry.device_sets()
    for i, s in enumerate(config.sensors):
        if s.devices not in sets:
            out.add(("sensors", i, "devices"), f"unknown device set {s.devices!r}; installed: {', '.join(sets)}")
    # temperature_from: the speed-of-sound correction takes air_temperature from a bme280 sensor.
    drivers = {s.id: s.driver for s in config.sensors}
    for i, s in enumerate(config.sensors):
        source = getattr(s, "temperature_from", None)
        if source is not None and drivers.get(source) != "bme280":
            found = f"sensor {source!r} uses driver {drivers[source]!r}" if source in drivers else f"no sensor {source!r}"
            out.add(("sensors", i, "temperature_from"), f"must name a bme280 sensor ({found})")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, "(file)", f"cannot read config: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), 0, "(file)", "config is not UTF-8 text")]) from None
    return parse_config(text, str(path))
