"""What an NGSI-LD broker's answer means for the readings in the request
(gateway/uplinks/ngsi_http.judge, gateway/uplinks/ngsi_results), as tables
read from the brokers' sources: Orion-LD, Scorpio, Stellio."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.uplinks import ngsi_results
from gateway.uplinks.base import TransientError
from gateway.uplinks.ngsi_http import Answer, SetupFault, judge


def _answer(status: int, body: dict | None = None, **headers) -> Answer:
    return Answer(status, httpx.Headers(headers), json.dumps(body).encode() if body is not None else b"", False)


def _pd(kind: str, title: str = "", status: int = 400) -> dict:
    return {"type": f"https://uri.etsi.org/ngsi-ld/errors/{kind}", "title": title, "status": status}


@pytest.mark.parametrize("status, body, temporal_path, expected", [
    (201, None, False, "DONE"),
    (204, None, True, "DONE"),
    (207, {"success": [], "errors": []}, False, "MULTI"),
    (400, {"errors": [{"type": "Upsert", "id": "urn:x", "ProblemDetails": _pd("BadRequestData")}]}, False, "MULTI"),
    (400, _pd("BadRequestData", "Invalid entity"), False, "REJECTED"),
    (422, _pd("BadRequestData"), True, "REJECTED"),
    (413, None, False, "SPLIT"),
    (503, _pd("ResourceNotFound", "TRoE Not Enabled", 503), True, "NO_TEMPORAL"),
    (501, None, True, "NO_TEMPORAL"),
    (405, None, True, "NO_TEMPORAL"),
    (400, _pd("BadRequestData", "Tenants not supported"), False, "SetupFault"),
    (404, _pd("NonexistentTenant", "Tenant not found", 404), True, "SetupFault"),
    (404, None, False, "SetupFault"),
    (404, None, True, "SetupFault"),
    (405, None, False, "SetupFault"),
    (415, None, False, "SetupFault"),
    (301, None, False, "SetupFault"),
    (401, None, False, "SetupFault"),
    (503, _pd("LdContextNotAvailable", "Unable to download context", 503), False, "SetupFault"),
    (503, _pd("ResourceNotFound", "TRoE Not Enabled", 503), False, "TransientError"),
    (503, {"errors": [{"type": "Upsert", "id": "urn:x", "ProblemDetails": _pd("InternalError", "", 503)}]}, False,
     "TransientError"),
    (500, None, True, "TransientError"),
    # One entity's history: an error body listing entities is no per-entity success report.
    (500, {"errors": [{"entityId": "urn:x", "error": _pd("InternalError", "", 500)}]}, True, "TransientError"),
    (400, {"errors": [{"entityId": "urn:x", "error": _pd("BadRequestData")}]}, True, "REJECTED"),
    (500, {"errors": [{"type": "Upsert", "id": "urn:x", "ProblemDetails": _pd("InternalError", "", 500)}]}, False,
     "MULTI"),
    (429, None, False, "TransientError"),
    (408, None, False, "TransientError"),
])
def test_what_an_answer_means(status, body, temporal_path, expected):
    try:
        verdict = judge(_answer(status, body), temporal_path, 30.0).name
    except SetupFault:
        verdict = "SetupFault"
    except TransientError:
        verdict = "TransientError"
    assert verdict == expected


@pytest.mark.parametrize("doc, success, errors, all_ok", [
    ({"success": ["a", "b"], "errors": []}, {"a", "b"}, {}, True),  # Orion-LD, created and updated
    ({"success": ["a"], "errors": [{"entityId": "b", "error": {"title": "no"}}]}, {"a"}, {"b": {"title": "no"}}, False),
    ({"success": ["a"], "errors": [{"type": "Upsert", "id": "b", "ProblemDetails": {"title": "no"}}]},
     {"a"}, {"b": {"title": "no"}}, False),  # Scorpio
    ({"errors": [{"type": "Upsert", "id": "b", "ProblemDetails": {"title": "no"}}]}, set(), {"b": {"title": "no"}},
     False),  # Scorpio, every entity failed (a 400)
])
def test_batch_results_in_every_brokers_shape(doc, success, errors, all_ok):
    result = ngsi_results.parse(doc)
    assert (result.success, result.errors, result.all_succeeded) == (success, errors, all_ok)
    assert ngsi_results.transient({"status": 503}) and ngsi_results.transient({"type": "x/LdContextNotAvailable"})
    assert not ngsi_results.transient({"status": 400})
