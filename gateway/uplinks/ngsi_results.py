"""Per-entity results of an NGSI-LD batch answer, in the shapes brokers send.

- The standard BatchOperationResult (Orion-LD, Stellio):
  `{"success": [id, ...], "errors": [{"entityId": id, "error": ProblemDetails}]}`.
- Scorpio (Commons HttpUtils.generateBatchResult):
  `{"success": [id, ...], "errors": [{"type": "Upsert", "id": id, "ProblemDetails": {...}}]}`,
  and for a batch where every entity failed a 400 (or 500) with only `errors`.
- Orion-LD's legacy upsert answers a batch that both creates and updates with
  207 and an empty `errors` list: that is success for every entity.

An entity error whose status is 5xx, or whose type is LdContextNotAvailable,
is the broker's trouble, not the entity's: it stays pending and is retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchResult:
    success: set[str] = field(default_factory=set)
    errors: dict[str, dict] = field(default_factory=dict)  # entity id -> ProblemDetails
    all_succeeded: bool = False  # a 207 with no errors (Orion-LD mixed create/update)


def _entry(entry: Any) -> tuple[str | None, dict]:
    if not isinstance(entry, dict):
        return None, {}
    eid = entry.get("entityId", entry.get("id"))
    problem = entry.get("error", entry.get("ProblemDetails"))
    return (eid if isinstance(eid, str) else None), (problem if isinstance(problem, dict) else {"detail": problem})


def parse(doc: Any) -> BatchResult:
    """Raises ValueError for a body that is no batch result at all."""
    if not isinstance(doc, dict) or not isinstance(doc.get("errors", []), list):
        raise ValueError("not a BatchOperationResult")
    out = BatchResult(success={s for s in doc.get("success") or [] if isinstance(s, str)})
    for entry in doc.get("errors") or []:
        eid, problem = _entry(entry)
        if eid is not None:
            out.errors[eid] = problem
    out.all_succeeded = not doc.get("errors")
    return out


def transient(problem: dict) -> bool:
    status = problem.get("status")
    if isinstance(status, int) and status >= 500:
        return True
    return str(problem.get("type", "")).endswith("LdContextNotAvailable")


def reason(problem: dict, status: int) -> str:
    return f"HTTP {status} entity error: {json.dumps(problem, ensure_ascii=False)[:1000]}"
