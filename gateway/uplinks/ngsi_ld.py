"""The NGSI-LD uplink (SPEC §6): readings become Smart Data Models entities in a
context broker (FIWARE Orion-LD), current state by batch upsert, history as
temporal instances.

One send carries up to `batch` readings in seq order (one group, window 1, so
sends never overtake each other). Per entity in a send:
- every reading but the newest is backlog: its attributes go, oldest first, as
  instances through POST /temporal/entities;
- the newest goes through POST /entityOperations/upsert?options=update, so the
  current state only moves forwards (a reading older than one already upserted,
  e.g. behind an alert sent ahead, stays temporal only).
A broker without a temporal store (503 "TRoE not enabled", 501, or 404 on the
temporal path) gets the backlog replayed in order through upserts instead.

Release rules: a reading is accepted when all its entities are (201/204, or the
id in a 207's `success`); entity errors in a 207 and other 4xx become dead
letters with the broker's ProblemDetails; 413 (and a 4xx for a whole batch)
splits the batch until the culprit stands alone; 408/429/5xx, timeouts and a
broker out of reach raise TransientError (honouring Retry-After). Readings
already accepted when a send fails are remembered, so the retry does not write
their instances twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import httpx

from gateway import ngsi_ld_mapping as mapping
from gateway.buffer import Row
from gateway.catalogue import SensorCatalogue
from gateway.config import NgsiLdUplinkConfig
from gateway.sdk.fields import read_secret
from gateway.sdk.reading import format_time
from gateway.tls import client_context
from gateway.uplinks.base import TransientError, Transport

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
TEMPORAL = "/ngsi-ld/v1/temporal/entities"
TEMPORAL_PROBE = 3600.0  # s between asks whether a broker without a temporal store has gained one
LINK = '<{}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@dataclass
class _Item:
    """One entity of one reading."""

    row: int  # index into the send's rows
    entity: dict[str, Any]
    at: str  # observedAt of the reading
    body: bytes = b""


@dataclass
class _Outcome:
    reasons: list[str | None]
    decided: list[bool] = field(default_factory=list)


class BrokerRejected(Exception):
    """A 4xx (not 408/429) for a whole request: the reason is the ProblemDetails."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _problem(resp: httpx.Response) -> str:
    text = resp.text.strip()
    return f"HTTP {resp.status_code}: {text[:500]}" if text else f"HTTP {resp.status_code}"


def _firmware() -> str:
    try:
        return metadata.version("city-edge-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


class NgsiLdTransport(Transport):
    window = 1  # one send at a time: per-entity order and "never backwards" stay simple

    def __init__(self, config: NgsiLdUplinkConfig, gateway: str, catalogue: SensorCatalogue | None = None):
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self.batch = config.batch
        self.limit = config.max_request_bytes
        self.base = config.url.rstrip("/")
        # Shared with the daemon, which replaces its entries on a reload: looked up on every send.
        self.catalogue = catalogue if catalogue is not None else SensorCatalogue()
        self.temporal = True  # until the broker says it has no temporal store
        self._temporal_probe_at = 0.0  # when to ask again (a broker may be restarted with TRoE)
        self.requests = 0  # for the bench and status
        self._latest: dict[str, str] = {}  # entity id -> observedAt of the newest upserted
        self._latest_entity: dict[str, dict] = {}
        self._decided: dict[int, str | None] = {}  # seq -> outcome of rows settled by a failed send
        self._next_heartbeat = 0.0
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.tenant:
            self._headers["NGSILD-Tenant"] = config.tenant
        if config.token_file is not None:
            self._headers["Authorization"] = f"Bearer {read_secret(config.token_file)}"

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        verify = client_context(self.config.ca_file)  # the system CA store unless ca_file
        self._client = httpx.AsyncClient(base_url=self.base, headers=self._headers, verify=verify,
                                         timeout=self.config.timeout, trust_env=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def context_for(self, entity_type: str) -> str:
        """The one context a request of this type names (the core context for a type without a model)."""
        return mapping.SDM_CONTEXTS.get(entity_type, self.config.core_context)

    # --- sending -------------------------------------------------------------------------------

    def send(self, rows: list[Row]) -> asyncio.Future:
        return asyncio.ensure_future(self._send(rows))

    async def _send(self, rows: list[Row]) -> list[str | None]:
        async with self._lock:
            out = _Outcome([None] * len(rows), [False] * len(rows))
            items = self._map(rows, out)
            try:
                await self._deliver(items, out)
            except BaseException:
                for i, row in enumerate(rows):  # remember what this attempt settled
                    if out.decided[i]:
                        self._decided[row.seq] = out.reasons[i]
                raise
            for row in rows:
                self._decided.pop(row.seq, None)
            return out.reasons

    def _map(self, rows: list[Row], out: _Outcome) -> list[_Item]:
        items = []
        for i, row in enumerate(rows):
            if row.seq in self._decided:
                out.reasons[i], out.decided[i] = self._decided[row.seq], True
                continue
            try:
                doc = json.loads(row.body)
                for e in mapping.entities(doc, self.catalogue.get(row.sensor)):
                    items.append(_Item(i, e, doc["observed_at"]))
            except (mapping.Unmappable, ValueError, KeyError, TypeError) as exc:
                out.reasons[i], out.decided[i] = f"not mappable to NGSI-LD: {exc}", True
        return items

    async def _deliver(self, items: list[_Item], out: _Outcome) -> None:
        by_entity: dict[str, list[_Item]] = {}
        for it in items:
            by_entity.setdefault(it.entity["id"], []).append(it)
        newest: list[_Item] = []
        backlog: dict[str, list[_Item]] = {}
        for eid, seq in by_entity.items():
            last = seq[-1]
            if last.at > self._latest.get(eid, ""):
                newest.append(last)
                seq = seq[:-1]
            if seq:
                backlog[eid] = seq
        pending = {id(it): it for it in items}  # items not yet settled, by identity
        if not self.temporal and time.monotonic() >= self._temporal_probe_at:
            self.temporal = True
        if backlog and self.temporal:
            for eid, seq in backlog.items():
                await self._temporal(seq, out, pending)
                if not self.temporal:
                    break
        rounds: list[list[_Item]] = []
        if backlog and not self.temporal:  # replay: round k holds each entity's k-th older reading
            left = {eid: [it for it in seq if id(it) in pending] for eid, seq in backlog.items()}
            depth = max((len(s) for s in left.values()), default=0)
            rounds = [[s[k] for s in left.values() if k < len(s)] for k in range(depth)]
            # An entity whose replay ends below what it already showed gets that newest value back.
            for eid, seq in left.items():
                if seq and eid in self._latest_entity and not any(it.entity["id"] == eid for it in newest):
                    newest.append(_Item(-1, self._latest_entity[eid], self._latest[eid]))
        rounds.append(newest + self._heartbeat())
        for batch in rounds:
            await self._upsert(batch, out, pending)
        for it in newest:
            if it.row >= 0 and not out.reasons[it.row]:
                if it.at > self._latest.get(it.entity["id"], ""):
                    self._latest[it.entity["id"]] = it.at
                    self._latest_entity[it.entity["id"]] = it.entity
        for it in items:
            out.decided[it.row] = True

    def _settle(self, batch: list[_Item], out: _Outcome, pending: dict, reason: str | None) -> None:
        for it in batch:
            pending.pop(id(it), None)
            if it.row >= 0 and reason is not None and out.reasons[it.row] is None:
                out.reasons[it.row] = reason
        # a row is decided once none of its items is pending
        rows_left = {it.row for it in pending.values()}
        for it in batch:
            if it.row >= 0 and it.row not in rows_left:
                out.decided[it.row] = True

    def _heartbeat(self) -> list[_Item]:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return []
        self._next_heartbeat = now + self.config.heartbeat
        at = format_time(time.time())
        e = mapping.gateway_device(self.gateway, self.catalogue.location, self.catalogue.kinds(), _firmware(), "ok", at)
        return [_Item(-1, e, at)]

    # --- temporal instances --------------------------------------------------------------------

    async def _temporal(self, seq: list[_Item], out: _Outcome, pending: dict) -> None:
        """One entity's backlog as temporal instances, oldest first, in requests under the limit."""
        chunks = self._chunks(seq)
        while chunks:
            chunk = chunks.pop(0)
            body = self._temporal_body(chunk)
            if body is None:  # nothing with a time (an error reading): nothing to keep in history
                self._settle(chunk, out, pending, None)
                continue
            try:
                resp = await self._post(TEMPORAL, chunk[0].entity["type"], body)
            except BrokerRejected as exc:
                self._settle(chunk, out, pending, str(exc))
                continue
            if resp.status_code in (201, 204):
                self._settle(chunk, out, pending, None)
            elif self._no_temporal_store(resp):
                log.warning("uplink %s: the broker has no temporal store (%s); replaying backlogs through upsert",
                            self.name, _problem(resp))
                self.temporal = False
                self._temporal_probe_at = time.monotonic() + TEMPORAL_PROBE
                return
            elif resp.status_code == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]
            else:
                self._raise_or_reject(resp, chunk, out, pending)

    def _temporal_body(self, chunk: list[_Item]) -> bytes | None:
        first = chunk[0].entity
        doc: dict[str, Any] = {"id": first["id"], "type": first["type"]}
        for it in chunk:
            for name, attr in it.entity.items():
                if isinstance(attr, dict) and "observedAt" in attr:
                    doc.setdefault(name, []).append(attr)
        if len(doc) == 2:
            return None
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def _chunks(self, seq: list[_Item]) -> list[list[_Item]]:
        chunks, size, cur = [], 100, []
        for it in seq:
            n = len(json.dumps(it.entity, separators=(",", ":")).encode())
            if cur and size + n > self.limit:
                chunks.append(cur)
                cur, size = [], 100
            cur.append(it)
            size += n
        if cur:
            chunks.append(cur)
        return chunks

    def _no_temporal_store(self, resp: httpx.Response) -> bool:
        if resp.status_code in (501, 404):
            return True
        text = resp.text.lower()
        return resp.status_code == 503 and "retry-after" not in resp.headers and ("troe" in text or "temporal" in text)

    # --- current state -------------------------------------------------------------------------

    async def _upsert(self, batch: list[_Item], out: _Outcome, pending: dict) -> None:
        by_context: dict[str, list[_Item]] = {}
        for it in batch:
            it.body = json.dumps(it.entity, ensure_ascii=False, separators=(",", ":")).encode()
            by_context.setdefault(self.context_for(it.entity["type"]), []).append(it)
        queue: list[list[_Item]] = []
        for group in by_context.values():
            cur, size = [], 2
            for it in group:
                if cur and size + len(it.body) + 1 > self.limit:
                    queue.append(cur)
                    cur, size = [], 2
                cur.append(it)
                size += len(it.body) + 1
            if cur:
                queue.append(cur)
        while queue:
            part = queue.pop(0)
            body = b"[" + b",".join(it.body for it in part) + b"]"
            try:
                resp = await self._post(UPSERT + "?options=update", part[0].entity["type"], body)
            except BrokerRejected as exc:
                if len(part) > 1:  # find the culprit
                    half = len(part) // 2
                    queue[:0] = [part[:half], part[half:]]
                else:
                    self._settle(part, out, pending, str(exc))
                continue
            if resp.status_code in (201, 204):
                self._settle(part, out, pending, None)
            elif resp.status_code == 207:
                self._multi_status(resp, part, out, pending)
            elif resp.status_code == 413 and len(part) > 1:
                half = len(part) // 2
                queue[:0] = [part[:half], part[half:]]
            else:
                self._raise_or_reject(resp, part, out, pending)

    def _multi_status(self, resp: httpx.Response, part: list[_Item], out: _Outcome, pending: dict) -> None:
        try:
            result = resp.json()
        except ValueError:
            raise TransientError(f"207 with a body that is not JSON: {resp.text[:200]}") from None
        ok = set(result.get("success") or [])
        errors = {e.get("entityId"): e.get("error") for e in result.get("errors") or [] if isinstance(e, dict)}
        for it in part:
            eid = it.entity["id"]
            if eid in errors:
                reason = f"HTTP 207 entity error: {json.dumps(errors[eid], ensure_ascii=False)}"
                if it.row < 0:
                    log.error("uplink %s: broker rejected %s: %s", self.name, eid, reason)
                self._settle([it], out, pending, reason)
            elif eid in ok:
                self._settle([it], out, pending, None)
        if any(id(it) in pending for it in part):  # neither success nor error: not accepted, try again
            raise TransientError("207 left entities unanswered")

    # --- HTTP ----------------------------------------------------------------------------------

    async def _post(self, path: str, entity_type: str, body: bytes) -> httpx.Response:
        assert self._client is not None, "start() first"
        headers = {"Link": LINK.format(self.context_for(entity_type))}
        self.requests += 1
        try:
            resp = await self._client.post(path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout on {path}: {exc!r}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"broker unreachable: {exc!r}") from None
        code = resp.status_code
        if code in (408, 429) or code >= 500:
            if code >= 500 and path.startswith(TEMPORAL) and self._no_temporal_store(resp):
                return resp
            raise TransientError(f"{path}: {_problem(resp)}", retry_after(resp.headers.get("Retry-After")))
        if code in (401, 403):  # a credentials problem, not a bad reading: keep it and retry
            log.error("uplink %s: broker refused our credentials (%s); check token_file", self.name, code)
            raise TransientError(f"{path}: HTTP {code}")
        if 400 <= code < 500 and code not in (413, 404):
            raise BrokerRejected(_problem(resp))
        if code == 404 and not path.startswith(TEMPORAL):
            raise BrokerRejected(_problem(resp))
        return resp

    def _raise_or_reject(self, resp: httpx.Response, part: list[_Item], out: _Outcome, pending: dict) -> None:
        if resp.status_code >= 400:  # 413 for a single entity: it can never fit
            self._settle(part, out, pending, _problem(resp))
            return
        raise TransientError(f"unexpected answer {_problem(resp)}")
