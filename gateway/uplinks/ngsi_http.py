"""The NGSI-LD uplink's HTTP side: one bounded exchange with the broker, and
what its answer means.

Bounded, because the broker is not ours: every request has one deadline for
the whole exchange (connect, send, every byte of the answer), so a broker
dripping a byte every few seconds cannot hold it; an answer body is read up to
a limit and the rest dropped; a Retry-After is obeyed up to `reconnect_max`.
No exception text that could quote a request header (the bearer token) reaches
a message: the HTTP library's protocol errors are named by type only.

What an answer means (`judge`), learnt from the brokers' sources:
- 2xx: done; 207 names entities (both the standard `{entityId, error}` and
  Scorpio's `{type, id, ProblemDetails}` shapes, see ngsi_results.py).
- A fault of the setup, not of a reading, raises SetupFault (retried, said
  loudly, nothing becomes a dead letter): 3xx, 401/403, an unknown or refused
  tenant (Orion-LD without -multiservice: 400 "Tenants not supported"; Stellio:
  404 NonexistentTenant), 404/405 on the endpoint itself, 406/415, and 503
  LdContextNotAvailable (the broker cannot download a context).
- No temporal store on the temporal path: 501, 405, or 503 whose ProblemDetails
  title names TRoE/temporal (Orion-LD: "TRoE Not Enabled"), never a 404.
- 408/429/5xx: transient. 413: split. Scorpio's 400 (or 500) for an upsert batch
  that failed entirely carries per-entity errors: read as a 207 (a 503 stays
  transient, whatever it lists). Not on the temporal path: a request there is one
  entity's history, so an error body listing entities is the request's own
  outcome. Any other 4xx: rejected (the caller bisects until one entity stands
  alone: that one is a dead letter).
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.uplinks.base import TransientError

ERROR_BODY_LIMIT = 64 * 1024  # an error answer is a ProblemDetails of a few hundred bytes
RESULT_BODY_LIMIT = 4 * 1024 * 1024  # a 207 for 1000 entities, each with a ProblemDetails


class SetupFault(TransientError):
    """The broker refuses the setup (URL, tenant, credentials, media type, a
    context it cannot fetch): readings stay pending until it is fixed."""


class Verdict(enum.Enum):
    DONE = "done"  # 2xx other than 207
    MULTI = "multi"  # per-entity results in the body
    SPLIT = "split"  # 413: the body is too large
    REJECTED = "rejected"  # a 4xx for the request: bisect down to the culprit
    NO_TEMPORAL = "no temporal store"


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool

    def json(self) -> Any:
        if self.truncated:
            raise ValueError(f"answer longer than {len(self.body)} bytes (cut)")
        return json.loads(self.body)

    def problem(self) -> dict:
        """The ProblemDetails of an error answer, {} when the body is none."""
        try:
            doc = self.json()
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def describe(self) -> str:
        p = self.problem()
        if p.get("title") or p.get("type"):
            kind = str(p.get("type", "")).rsplit("/", 1)[-1]
            detail = f": {str(p['detail'])[:300]}" if p.get("detail") else ""
            return f"HTTP {self.status} {kind} {p.get('title', '')}{detail}".replace("  ", " ")
        text = self.body[:300].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}: {text}" if text else f"HTTP {self.status}"


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), at most `cap`."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(cap, max(0.0, seconds)) if seconds == seconds else None  # NaN: none


def _safe(exc: Exception) -> str:
    # A LocalProtocolError quotes the offending header, the token included: name the type only.
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__


async def exchange(client: httpx.AsyncClient, method: str, url: str, *, deadline: float, **kwargs) -> Answer:
    """One request and its answer, the whole of it within `deadline` seconds."""
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(method, url, **kwargs) as resp:
                limit = RESULT_BODY_LIMIT if resp.status_code == 207 or resp.status_code < 300 else ERROR_BODY_LIMIT
                body, truncated = bytearray(), False
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        del body[limit:]
                        truncated = True
                        break
                return Answer(resp.status_code, resp.headers, bytes(body), truncated)
    except TimeoutError:
        raise TransientError(f"no complete answer within {deadline:g}s") from None
    except httpx.TimeoutException as exc:
        raise TransientError(f"timeout ({_safe(exc)})") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"broker unreachable or broke the exchange ({_safe(exc)})") from None


def _tenant_fault(answer: Answer) -> bool:
    p = answer.problem()
    return str(p.get("type", "")).endswith("NonexistentTenant") or "tenant" in str(p.get("title", "")).lower()


def _no_temporal_store(answer: Answer) -> bool:
    if answer.status in (501, 405):
        return True
    title = str(answer.problem().get("title", "")).lower()
    return answer.status == 503 and ("troe" in title or "temporal" in title)


def _names_entities(answer: Answer) -> bool:
    p = answer.problem()
    return isinstance(p.get("errors"), list) and bool(p["errors"])


def judge(answer: Answer, temporal_path: bool, cap: float) -> Verdict:
    """What an answer means for the readings in the request (see the module docstring)."""
    code, wait = answer.status, retry_after(answer.headers.get("Retry-After"), cap)
    if 200 <= code < 300:
        return Verdict.MULTI if code == 207 else Verdict.DONE
    if 300 <= code < 400:
        raise SetupFault(f"answered {code}, a redirect to {answer.headers.get('Location', '?')[:200]}: "
                         "set url to the broker's own address")
    if code in (401, 403):
        raise SetupFault(f"refused our credentials ({answer.describe()}): check token_file or the client "
                         "credentials", wait)
    if code in (408, 429):
        raise TransientError(answer.describe(), wait)
    if temporal_path and _no_temporal_store(answer):
        return Verdict.NO_TEMPORAL
    if code >= 500 and str(answer.problem().get("type", "")).endswith("LdContextNotAvailable"):
        raise SetupFault(f"the broker cannot download a context ({answer.describe()}): host one in the city "
                         "network and name it in `context:`", wait)
    if code >= 500:
        if _names_entities(answer) and code != 503 and not temporal_path:
            return Verdict.MULTI
        raise TransientError(answer.describe(), wait)
    if code in (400, 404) and _tenant_fault(answer):
        raise SetupFault(f"refused the tenant ({answer.describe()}): fix or remove `tenant`")
    if code in (404, 405):
        raise SetupFault(f"has no such endpoint ({answer.describe()}): check url")
    if code in (406, 415):
        raise SetupFault(f"refused the media type ({answer.describe()})")
    if code == 413:
        return Verdict.SPLIT
    if _names_entities(answer) and not temporal_path:
        return Verdict.MULTI
    return Verdict.REJECTED
