"""A test NGSI-LD context broker on 127.0.0.1 that is strict where Orion-LD is
and keeps what it received for assertions.

Every request is checked against the official ETSI OpenAPI (tests/ngsi-ld/openapi,
patched only for the defects its README lists), every entity is expanded with
pyld against its Link context plus the core context (local copies, no network),
and every entity's key-values form is validated against its Smart Data Models
schema (remote $refs mapped to the local copies). A request that fails any check
is answered 400 and recorded in `invalid`.

Behaviour as Orion-LD: upsert 201 (ids created) / 204 (all updated) / 207
(BatchOperationResult); 413 for a body above `max_body` (1 MB); 503 "TRoE not
enabled" on the temporal path when `temporal` is off; injected answers (429
with Retry-After, 503 …) through `fail_next`; per-entity errors for ids in
`reject`. Upserts also write temporal instances when the temporal store is on
(Orion-LD's TRoE does the same).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from pyld import jsonld
from referencing import Registry, Resource
from werkzeug.datastructures import Headers, ImmutableMultiDict

HERE = Path(__file__).parent / "ngsi-ld"
CORE_V18 = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
RAW = "https://raw.githubusercontent.com/smart-data-models"
CONTEXT_FILES = {
    CORE_V18: HERE / "core-context/ngsi-ld-core-context-v1.8.jsonld",
    f"{RAW}/dataModel.Environment/master/context.jsonld": HERE / "sdm/Environment/context.jsonld",
    f"{RAW}/dataModel.Weather/master/context.jsonld": HERE / "sdm/Weather/context.jsonld",
    f"{RAW}/dataModel.Device/master/context.jsonld": HERE / "sdm/Device/context.jsonld",
}
SCHEMA_FILES = {
    "https://smart-data-models.github.io/data-models/common-schema.json": HERE / "sdm/common/common-schema.json",
    "https://smart-data-models.github.io/dataModel.Weather/weather-schema.json": HERE / "sdm/Weather/weather-schema.json",
    "https://smart-data-models.github.io/dataModel.Device/device-schema.json": HERE / "sdm/Device/device-schema.json",
}
MODEL_SCHEMAS = {
    "FloodMonitoring": HERE / "sdm/Environment/FloodMonitoring/schema.json",
    "WaterObserved": HERE / "sdm/Environment/WaterObserved/schema.json",
    "WeatherObserved": HERE / "sdm/Weather/WeatherObserved/schema.json",
    "Device": HERE / "sdm/Device/Device/schema.json",
    "DeviceMeasurement": HERE / "sdm/Device/DeviceMeasurement/schema.json",
}
LINK_RE = re.compile(r'^\s*<([^>]+)>\s*;\s*rel="http://www\.w3\.org/ns/json-ld#context"\s*;\s*type="application/ld\+json"\s*$')
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
ZULU = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# --- the official material, patched for the listed defects only -------------------------------------

def _walk(node: Any, fn) -> None:
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


def patched_openapi() -> dict:
    spec = yaml.safe_load((HERE / "openapi/ngsi-ld-api-v1.6.1.yaml").read_text())

    def media_types(node: dict) -> None:
        content = node.get("content")
        if isinstance(content, dict):
            for wrong, right in (("application/json+ld", "application/ld+json"),  # defect 1
                                 ("application/geo", "application/geo+json")):  # defect 6
                if wrong in content:
                    content[right] = content.pop(wrong)
    _walk(spec, media_types)
    schemas = spec["components"]["schemas"]
    prop = schemas["Property"]["properties"]
    prop["value"]["anyOf"] = prop["value"].pop("oneOf")  # defect 2: AnyValue overlaps DateTimeValue
    prop["previousValue"]["allOf"][0]["anyOf"] = prop["previousValue"]["allOf"][0].pop("oneOf")
    upsert = spec["paths"]["/entityOperations/upsert"]["post"]["requestBody"]["content"]
    upsert["application/ld+json"]["schema"] = {  # defect 3: allOf [array, object] fits nothing
        "type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/Entity"},
                                             {"required": ["id", "type", "@context"]}]}}
    temporal = schemas["EntityTemporal"]["properties"]
    temporal["id"] = {"type": "string", "format": "uri"}  # defect 4
    temporal["type"] = {"type": "string"}
    for geo in ("location", "observationSpace", "operationSpace"):  # defect 7
        temporal[geo] = {"oneOf": [{"$ref": "#/components/schemas/GeoProperty"},
                                   {"type": "array", "items": {"$ref": "#/components/schemas/GeoProperty"}}]}
    schemas["BatchOperationResult"]["required"] = ["success", "errors"]  # defect 5
    # defect 8 (Link is no URI) needs no patch: no URI format checker runs; Link is checked below.
    return spec


@lru_cache(maxsize=1)
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(patched_openapi())


def document_loader(url: str, options: Any = None) -> dict:
    path = CONTEXT_FILES.get(url)
    if path is None:
        raise jsonld.JsonLdError(f"context {url} is not available offline", "jsonld.LoadDocumentError",
                                 code="loading remote context failed")
    return {"contextUrl": None, "documentUrl": url, "document": _context_doc(url)}


@lru_cache(maxsize=None)
def _context_doc(url: str) -> dict:
    return json.loads(CONTEXT_FILES[url].read_text())


@lru_cache(maxsize=1)
def schema_registry() -> Registry:
    resources = [(url, Resource.from_contents(json.loads(p.read_text()))) for url, p in SCHEMA_FILES.items()]
    return Registry().with_resources(resources)


@lru_cache(maxsize=None)
def model_validator(entity_type: str, partial: bool = False) -> Draft202012Validator | None:
    path = MODEL_SCHEMAS.get(entity_type)
    if path is None:
        return None
    schema = json.loads(path.read_text())
    if partial:  # temporal instances carry only some attributes
        schema.pop("required", None)
    return Draft202012Validator(schema, registry=schema_registry(), format_checker=FormatChecker())


def key_values(entity: dict) -> dict:
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ("id", "type") or not isinstance(attr, dict):
            out[name] = attr
        elif attr.get("type") == "Relationship":
            out[name] = attr.get("object")
        else:
            v = attr.get("value")
            out[name] = v["@value"] if isinstance(v, dict) and "@value" in v else v
    return out


# --- per-entity checks ----------------------------------------------------------------------------

def check_entity(entity: dict, context: str, core: str, temporal: bool = False) -> list[str]:
    """Problems with one entity (normalized, or temporal with arrays of instances)."""
    problems = []
    if "@context" in entity:
        problems.append("@context in a body sent as application/json (it goes in the Link header)")
    eid = entity.get("id")
    if not isinstance(eid, str) or not re.match(r"^urn:ngsi-ld:[A-Za-z]+:[^\s]+$", eid):
        problems.append(f"id {eid!r} is not an urn:ngsi-ld URI")
    for name, attr in entity.items():
        if name in ("id", "type"):
            continue
        for inst in (attr if isinstance(attr, list) else [attr]):
            if not isinstance(inst, dict):
                problems.append(f"{name}: not an attribute object")
                continue
            kind = inst.get("type")
            if kind in ("Property", "GeoProperty") and inst.get("value") is None:
                problems.append(f"{name}: Property without value")
            if "observedAt" in inst and not ZULU.match(str(inst["observedAt"])):
                problems.append(f"{name}: observedAt {inst['observedAt']!r} is not UTC with Z")
            if temporal and "observedAt" not in inst:
                problems.append(f"{name}: a temporal instance without observedAt")
            if kind == "GeoProperty":
                lon, lat = inst["value"]["coordinates"][:2]
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    problems.append(f"{name}: coordinates out of range (GeoJSON is [lon, lat])")
    problems += _expansion_problems(entity, context, core)
    problems += _schema_problems(entity, temporal)
    return problems


def _expansion_problems(entity: dict, context: str, core: str) -> list[str]:
    doc = dict(entity)
    doc["@context"] = [context, core]  # the core context is always applied, last
    try:
        expanded = jsonld.expand(doc, {"documentLoader": document_loader})
    except jsonld.JsonLdError as exc:
        return [f"JSON-LD expansion failed: {exc}"]
    if len(expanded) != 1:
        return ["entity did not expand to one node"]
    node = expanded[0]
    problems = []
    kept = {k for k in node if not k.startswith("@")}
    for name in entity:
        if name in ("id", "type"):
            continue
        iris = [k for k in kept if k.endswith("/" + name) or k.endswith("#" + name)]
        if not iris:
            problems.append(f"attribute {name!r} does not expand to an IRI under {context}")
        elif all(k.startswith(DEFAULT_VOCAB) for k in iris):  # only the core's @vocab caught it
            problems.append(f"attribute {name!r} is not defined by {context} (fell into the default context)")
    for t in node.get("@type", []):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", t):
            problems.append(f"type {t!r} does not expand to an IRI")
    return problems


def _schema_problems(entity: dict, temporal: bool) -> list[str]:
    validator = model_validator(entity.get("type"), temporal)
    if validator is None:
        return [f"no Smart Data Model schema for type {entity.get('type')!r}"]
    if not temporal:
        docs = [key_values(entity)]
    else:
        docs = [key_values({"id": entity["id"], "type": entity["type"], name: inst})
                for name, attr in entity.items() if name not in ("id", "type") for inst in attr]
    return [f"schema {entity.get('type')}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for doc in docs for e in validator.iter_errors(doc)]


# --- the HTTP side --------------------------------------------------------------------------------

class _Request:
    """What openapi-core needs to know about one request."""

    def __init__(self, method: str, path: str, query: str, headers: dict, body: bytes):
        self.host_url = "http://localhost:443"
        self.path = path
        self.method = method.lower()
        self.parameters = RequestParameters(query=ImmutableMultiDict(parse_qsl(query)), header=Headers(headers),
                                            cookie=ImmutableMultiDict(), path={})
        self.content_type = headers.get("Content-Type", "")
        self.body = body


def problem(status: int, title: str, detail: str = "", kind: str = "BadRequestData") -> tuple[int, dict, bytes]:
    body = {"type": f"https://uri.etsi.org/ngsi-ld/errors/{kind}", "title": title, "detail": detail}
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class NgsiBroker:
    def __init__(self, *, temporal: bool = True, max_body: int = 1_000_000, validate: bool = True,
                 core_context: str = CORE_V18, token: str | None = None):
        self.temporal = temporal
        self.max_body = max_body
        self.validate = validate
        self.core_context = core_context
        self.token = token
        self.entities: dict[str, dict] = {}  # tenant/id -> current state (normalized)
        self.instances: dict[tuple[str, str], list[dict]] = {}  # (id, attr) -> temporal instances, arrival order
        self.invalid: list[tuple[str, str]] = []  # (path, problem)
        self.log: list[tuple[str, int, int]] = []  # (path, status, entities)
        self.times: list[float] = []  # monotonic arrival time of each logged request
        self.upserted: list[tuple[str, dict]] = []  # (id, entity) of every accepted upsert, in order
        self.tenants: set[str | None] = set()
        self.fail_next: list[tuple[int, dict, bytes]] = []
        self.fail_on: list[tuple[str, tuple[int, dict, bytes]]] = []  # (path part, answer): the next such request
        self.reject: dict[str, str] = {}  # entity id -> why the broker refuses it (207 error)
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        if validate:
            openapi()  # load once, before the first request

    # --- lifecycle ---

    def start(self) -> "NgsiBroker":
        broker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, payload = broker.handle("POST", self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

            def __init__(self, *a):
                self.conns: set[socket.socket] = set()
                super().__init__(*a)

            def process_request(self, request, client_address):
                self.conns.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                self.conns.discard(request)
                super().shutdown_request(request)

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="ngsi-broker", daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away like a crashed broker: the port refuses, open connections drop."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(server.conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- assertions helpers ---

    def history(self, entity_id: str, attr: str) -> list[Any]:
        with self.lock:
            return [i.get("value", i.get("object")) for i in self.instances.get((entity_id, attr), [])]

    def observed(self, entity_id: str, attr: str) -> list[str]:
        with self.lock:
            return [i["observedAt"] for i in self.instances.get((entity_id, attr), [])]

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.log if path_part in p)

    # --- the API ---

    def handle(self, method: str, target: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(target)
        with self.lock:
            answer = self._handle(method, url.path, url.query, headers, body)
            self.log.append((url.path, answer[0], 0))
            self.times.append(time.monotonic())
            return answer

    def _handle(self, method: str, path: str, query: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthorized", kind="Unauthorized")
        if self.fail_next:
            return self.fail_next.pop(0)
        for i, (part, answer) in enumerate(self.fail_on):
            if part in path:
                del self.fail_on[i]
                return answer
        if len(body) > self.max_body:
            return problem(413, "Payload Too Large", f"{len(body)} bytes; at most {self.max_body}",
                           kind="RequestEntityTooLarge")
        if path == "/ngsi-ld/v1/temporal/entities" and not self.temporal:
            return problem(503, "TRoE not enabled", "start the broker with -troe", kind="OperationNotSupported")
        bad = self._check_request(method, path, query, headers, body)
        if bad:
            self.invalid.append((path, bad))
            return problem(400, "Invalid request", bad)
        link = LINK_RE.match(headers["Link"]).group(1)
        doc = json.loads(body)
        tenant = headers.get("NGSILD-Tenant")
        self.tenants.add(tenant)
        if path == "/ngsi-ld/v1/entityOperations/upsert":
            return self._upsert(doc, link, query)
        if path == "/ngsi-ld/v1/temporal/entities":
            return self._temporal(doc, link)
        return problem(404, "Not found", path, kind="ResourceNotFound")

    def _check_request(self, method: str, path: str, query: str, headers: dict, body: bytes) -> str | None:
        if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return f"Content-Type {headers.get('Content-Type')!r}: this client sends application/json"
        link = headers.get("Link")
        if not link or not LINK_RE.match(link):
            return f"Link header missing or malformed: {link!r}"
        if LINK_RE.match(link).group(1) not in CONTEXT_FILES:
            return f"Link names an unknown context {LINK_RE.match(link).group(1)}"
        if not self.validate:
            return None
        try:
            openapi().validate_request(_Request(method, path, query, headers, body))
        except Exception as exc:  # openapi-core raises one of several validation errors
            cause = exc.__cause__
            details = [e.message[:300] for e in getattr(cause, "schema_errors", [])[:3]]
            return f"OpenAPI: {type(exc).__name__}: {'; '.join(details) or str(exc)[:300]}"
        return None

    def _upsert(self, entities: list, link: str, query: str) -> tuple[int, dict, bytes]:
        if "options=update" not in query:
            return problem(400, "this client upserts with options=update", query)
        success, errors, created = [], [], []
        for e in entities:
            eid = e.get("id")
            problems = check_entity(e, link, self.core_context) if self.validate else []
            if problems:
                self.invalid.append(("upsert " + str(eid), "; ".join(problems)))
                errors.append({"entityId": eid, "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                                          "title": "Invalid entity", "detail": "; ".join(problems)}})
                continue
            if eid in self.reject:
                errors.append({"entityId": eid, "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                                          "title": "Bad Request", "detail": self.reject[eid]}})
                continue
            current = self.entities.get(eid)
            if current is None:
                self.entities[eid] = copy.deepcopy(e)
                created.append(eid)
            else:
                current.update(copy.deepcopy(e))  # options=update: attributes replaced, others kept
            if self.temporal:
                self._store_instances(e)
            success.append(eid)
            self.upserted.append((eid, copy.deepcopy(e)))
        if errors:
            body = {"success": success, "errors": errors}
            return 207, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if created:
            return 201, {"Content-Type": "application/json"}, json.dumps(created).encode()
        return 204, {}, b""

    def _temporal(self, entity: dict, link: str) -> tuple[int, dict, bytes]:
        problems = check_entity(entity, link, self.core_context, temporal=True) if self.validate else []
        if problems:
            self.invalid.append(("temporal " + str(entity.get("id")), "; ".join(problems)))
            return problem(400, "Invalid temporal entity", "; ".join(problems))
        eid = entity["id"]
        new = not any(k[0] == eid for k in self.instances)
        for name, attr in entity.items():
            if name not in ("id", "type"):
                self.instances.setdefault((eid, name), []).extend(copy.deepcopy(attr))
        if new:
            return 201, {"Location": f"/ngsi-ld/v1/temporal/entities/{eid}"}, b""
        return 204, {}, b""

    def _store_instances(self, entity: dict) -> None:
        for name, attr in entity.items():
            if isinstance(attr, dict) and "observedAt" in attr:
                self.instances.setdefault((entity["id"], name), []).append(copy.deepcopy(attr))
