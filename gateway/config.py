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

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from gateway import keydoc, registry, yamlsource
from gateway.pipeline_options import compose, looks_like
from gateway.sdk.driver import Driver, SensorOptions
from gateway.sdk.fields import Duration, Location, Name, SecretFile, Strict, read_regular
from gateway.sdk.fields import key_error as _key_error
from gateway.storagepath import storage_path_problems
from gateway.yamlsource import Problem
from gateway.config_uplinks import (MANAGE_TOPICS, UPLINK_TYPES, ConsoleUplinkConfig, ManageSection,  # noqa: F401
                                    MqttUplinkConfig, NgsiLdUplinkConfig, UplinkBase)

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


class WebSection(Strict):
    """The on-site page (gateway/web.py). Off unless `service.web` is there."""

    listen: str = Field("127.0.0.1:8080", description="host:port ([::1]:port for IPv6); "
                        "anything but 127.0.0.1 or ::1 needs token_file")
    token_file: SecretFile | None = Field(None, description="the page's access token (a file, like every secret)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
            raise ValueError(f"write host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 (got {v!r})")
        return v

    @model_validator(mode="after")
    def _token(self) -> "WebSection":
        host = self.listen.rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "::1") and self.token_file is None:
            raise _key_error("listen", f"the page on {host} can be reached from other machines: "
                             "give token_file (only 127.0.0.1 and ::1 go without)")
        return self


class ServiceSection(Strict):
    """How the daemon lives on the Pi: status socket, metrics, clock trust, on-site page."""

    status_socket: Path | None = Field(None, description="default: beside the buffer, <buffer>.sock")
    metrics_port: int | None = Field(None, ge=1, le=65_535, description="Prometheus on 127.0.0.1; off when unset")
    clock_check: Literal["auto", "kernel", "build-time", "off"] = "auto"
    clock_hold: Duration = Field(300.0, description="hold deliveries at most this long while the clock is unsynced")
    web: WebSection | None = Field(None, description="the on-site page; off when absent")
    unhealthy_after: Duration = Field(900.0, description="a sensor failing this long makes /healthz answer 503 "
                                      "(the watchdog is not affected: a restart fixes no sensor)")




class Config(BaseModel):
    gateway: GatewaySection
    storage: StorageSection = StorageSection()
    service: ServiceSection = ServiceSection()
    uplinks: list[UplinkBase] = []
    sensors: list[SensorOptions] = []
    source: str = "<config>"
    warnings: list[str] = []  # `FILE:LINE: key.path: warning: ...` (gateway/config_warnings.py)

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


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model of the section at `loc` (inside `model`)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        sub = _submodel(field.annotation) if field else None
        if sub is None:
            return None
        model = sub
    return model


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the section at `loc` (inside `model`) accepts."""
    found = _model_at(model, loc)
    return list(found.model_fields) if found else []


def _unit_note(err: dict[str, Any], model: type[BaseModel]) -> str:
    """For a key with a unit: what it takes (range and unit), and a hint for mm or cm written for m."""
    loc = tuple(err["loc"])
    parent = _model_at(model, loc[:-1]) if loc and isinstance(loc[-1], str) else None
    field = parent.model_fields.get(loc[-1]) if parent else None
    unit = keydoc.unit_of(field) if field else None
    if unit is None:
        return ""
    note = f"; {loc[-1]}: {keydoc.type_text(field)}"
    limit, value = (err.get("ctx") or {}).get("le"), err.get("input")
    if unit == "m" and isinstance(limit, (int, float)) and isinstance(value, (int, float)):
        note += looks_like(value, limit)
    return note


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
    "finite_number": "must be a finite number, at most about 1.8e308 (not .inf or .nan)",
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
        return f"must be {ctx['expected']}{_got(err)}{_unit_note(err, model)}"
    if kind in _PLAIN:
        return _PLAIN[kind] + _got(err) + _unit_note(err, model)
    bounds = {"greater_than": "greater than", "greater_than_equal": "at least",
              "less_than": "less than", "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}{_got(err)}{_unit_note(err, model)}"
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
                    loc += tuple(key.split("."))
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


def sensor_model(driver: type[Driver]) -> type[SensorOptions]:
    """A sensor entry's model: the driver's own keys, plus the pipeline's for a distance sensor."""
    return compose(driver.Options)


def _uplinks(data: dict, out: _Collector) -> list[UplinkBase]:
    """Each `uplinks:` item against the model its `type` picks."""
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
    return uplinks


def _sensors(data: dict, out: _Collector) -> list[SensorOptions]:
    """Each `sensors:` item against its driver's model (composed with the pipeline's keys)."""
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
        sensors.append(out.validate(sensor_model(driver), raw, ("sensors", i)))
    return sensors


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
    for message in storage_path_problems(storage.path, file) if storage is not None else ():
        out.add(("storage", "path"), message)
    service = ServiceSection()
    if data.get("service") is not None and out.mapping(data["service"], ("service",)):
        service = out.validate(ServiceSection, data["service"], ("service",))

    uplinks = _uplinks(data, out)
    sensors = _sensors(data, out)

    if problems or gateway is None or storage is None or service is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    config = Config(gateway=gateway, storage=storage, service=service, uplinks=uplinks, sensors=sensors, source=file)
    _cross_checks(config, out)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    from gateway.config_warnings import config_warnings
    config.warnings = config_warnings(config, file, lines.line_of)
    return config


def _tls_checks(config: Config, out: _Collector) -> None:
    """TLS material loaded exactly as the uplinks will load it at run time."""
    from gateway import tls
    for i, u in enumerate(config.uplinks):
        files = {k: getattr(u, k, None) for k in ("ca_file", "cert_file", "key_file")}
        if not any(files.values()):
            continue
        try:
            tls.client_context(**files)
        except tls.TlsError as exc:
            out.add(("uplinks", i, exc.key), str(exc))


def _cross_checks(config: Config, out: _Collector) -> None:
    _tls_checks(config, out)
    managing = [i for i, u in enumerate(config.uplinks) if getattr(u, "manage", None) is not None]
    for i in managing[1:]:
        out.add(("uplinks", i, "manage"), "only one uplink may have a manage section")
    if managing:  # their readings would land on the management topics under city/{gateway}/
        for i, s in enumerate(config.sensors):
            if s.id in MANAGE_TOPICS:
                out.add(("sensors", i, "id"), f"{s.id!r} is a remote management topic; give the sensor another id")
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


def read_config_text(path: str | Path) -> str:
    """The config file's text, bounded: a regular file of at most
    yamlsource.MAX_BYTES (a FIFO, /dev/zero or a 50 MB file is one problem)."""
    path = Path(path)
    try:
        data = read_regular(path, yamlsource.MAX_BYTES)
    except ValueError as exc:
        raise ConfigError([Problem(str(path), 0, "(file)", f"cannot read config: {exc}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), 0, "(file)", "config is not UTF-8 text")]) from None


def load_config(path: str | Path) -> Config:
    return parse_config(read_config_text(path), str(path))
