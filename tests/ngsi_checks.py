"""What the test NGSI-LD broker (tests/ngsi_broker.py) checks, from the official
material only (tests/ngsi-ld, patched only for the defects its README lists):

every request against the ETSI OpenAPI; every entity expanded with pyld against
its Link context plus the core context (local copies, no network; a test may
serve more contexts, e.g. a city's, through `serve_context`); every entity's
key-values form against its Smart Data Models schema.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

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
CONTEXT_FILES = {  # the pinned commits of tests/ngsi-ld/README.md
    CORE_V18: HERE / "core-context/ngsi-ld-core-context-v1.8.jsonld",
    f"{RAW}/dataModel.Environment/f0150e5c97f41e4c0881a0bcfa05d559058bdea1/context.jsonld":
        HERE / "sdm/Environment/context.jsonld",
    f"{RAW}/dataModel.Weather/adf1dd5918da36980208a0a46ed76c81fba91ea5/context.jsonld": HERE / "sdm/Weather/context.jsonld",
    f"{RAW}/dataModel.Device/96e38834eda502ed6a764e1fa7059a8c3561dcda/context.jsonld": HERE / "sdm/Device/context.jsonld",
}
SERVED: dict[str, dict] = {}  # more contexts a test serves (a city's own), URL -> document
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


def serve_context(url: str, document: dict) -> None:
    SERVED[url] = document


def known_context(url: str) -> bool:
    return url in CONTEXT_FILES or url in SERVED


def document_loader(url: str, options: Any = None) -> dict:
    if url in SERVED:
        return {"contextUrl": None, "documentUrl": url, "document": SERVED[url]}
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


def check_request(method: str, path: str, query: str, headers: dict, body: bytes, validate: bool) -> str | None:
    """What is wrong with a request as a whole (None: nothing)."""
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return f"Content-Type {headers.get('Content-Type')!r}: this client sends application/json"
    link = headers.get("Link")
    if not link or not LINK_RE.match(link):
        return f"Link header missing or malformed: {link!r}"
    if not known_context(LINK_RE.match(link).group(1)):
        return f"Link names an unknown context {LINK_RE.match(link).group(1)}"
    if not validate:
        return None
    try:
        openapi().validate_request(_Request(method, path, query, headers, body))
    except Exception as exc:  # openapi-core raises one of several validation errors
        cause = exc.__cause__
        details = [e.message[:300] for e in getattr(cause, "schema_errors", [])[:3]]
        return f"OpenAPI: {type(exc).__name__}: {'; '.join(details) or str(exc)[:300]}"
    return None
