"""The NGSI-LD uplink (SPEC §6): readings become Smart Data Models entities in a
context broker (Orion-LD, Scorpio, Stellio), current state by batch upsert,
history as temporal instances.

One send carries up to `batch` readings in seq order (window 1, so sends never
overtake each other). Per entity in a send:
- the newest reading, if newer than the newest already upserted, goes through
  POST /entityOperations/upsert?options=update (at most 1000 entities a request:
  Orion-LD stops looking up existing entities at 1000);
- every other reading is history: POST /temporal/entities, oldest first.
The current state never moves backwards: brokers merge an upsert without
comparing observedAt, so the newest observedAt upserted per entity is kept in
the buffer (`ngsi:<uplink>:<entity id>`, in the same commit as the cursor) and
survives restarts and reloads. An alert sent ahead of the backlog thus stays the
current state, and the older readings behind it go to history only.

`temporal: off`, or a broker without a temporal store under `auto`: the backlog
goes through upserts in order (for subscribers that record changes), but only
readings newer than the entity's current state; older ones are not sent.

What each answer means is decided in ngsi_http.judge; per-entity results in
ngsi_results. A fault of the setup (tenant, URL, credentials, media type) keeps
every reading pending and is said loudly (log, `last_error`, status); only an
error naming one entity makes a dead letter. Readings settled by a send that
then failed are remembered, so the retry does not write them twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from gateway import __version__, ngsi_ld_mapping as mapping
from gateway.buffer import Buffer, Row
from gateway.catalogue import SensorCatalogue
from gateway.config import NgsiLdUplinkConfig
from gateway.sdk.reading import format_time
from gateway.tls import client_context
from gateway.uplinks import ngsi_results
from gateway.uplinks.base import TransientError, Transport
from gateway.uplinks.ngsi_auth import token_source
from gateway.uplinks.ngsi_http import SetupFault, Verdict, exchange, judge
from gateway.uplinks.ngsi_state import NewestUpserted

__all__ = ["NgsiLdTransport"]

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
TEMPORAL = "/ngsi-ld/v1/temporal/entities"
MAX_ENTITIES = 1000  # per upsert request (Orion-LD)
TEMPORAL_CONCURRENCY = 4  # temporal requests at once, for different entities
TEMPORAL_PROBE = 3600.0  # s between asks whether a broker without a temporal store has gained one
LINK = '<{}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@dataclass
class _Item:
    """One entity of one reading."""

    row: int  # index into the send's rows; -1 for the gateway's heartbeat
    entity: dict[str, Any]
    ms: int  # observedAt of the reading, epoch ms
    body: bytes = b""  # the entity as JSON, for an upsert


@dataclass
class _Outcome:
    reasons: list[str | None]
    decided: list[bool]
    left: list[int]  # per row, its items not yet settled
    pending: dict[int, _Item] = field(default_factory=dict)  # items not yet settled, by identity
    retry: str | None = None  # entities the broker failed for its own reasons: retry the send


def _ms(at: str) -> int:
    return round(datetime.fromisoformat(at).timestamp() * 1000)


class NgsiLdTransport(Transport):
    window = 1  # one send at a time: per-entity order and "never backwards" stay simple

    def __init__(self, config: NgsiLdUplinkConfig, gateway: str, catalogue: SensorCatalogue | None = None,
                 buffer: Buffer | None = None):
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self.batch = config.batch
        self.limit = config.max_request_bytes
        # Shared with the daemon, which replaces its entries on a reload: looked up on every send.
        self.catalogue = catalogue if catalogue is not None else SensorCatalogue()
        self.newest = NewestUpserted(buffer, config.name)
        self.temporal = config.temporal != "off"  # under auto: until the broker says it has no temporal store
        self._temporal_probe_at = 0.0
        self._temporal_seen = False  # the broker accepted temporal instances since it last said it has no store
        self.requests = 0  # for the bench and status
        self.not_sent_older = 0  # readings older than the current state, with no temporal store to take them
        self.last_error: str | None = None
        self._decided: dict[int, str | None] = {}  # seq -> outcome of rows settled by a failed send
        self._next_heartbeat = 0.0
        self._lock = asyncio.Lock()
        self._sends: set[asyncio.Future] = set()
        self._client: httpx.AsyncClient | None = None
        self._auth = token_source(config, config.timeout)
        self._headers = {"Accept": "application/json"}
        if config.tenant:
            self._headers["NGSILD-Tenant"] = config.tenant

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        verify = client_context(self.config.ca_file)  # the system CA store unless ca_file
        self._client = httpx.AsyncClient(base_url=self.config.url.rstrip("/"), headers=self._headers, verify=verify,
                                         timeout=self.config.timeout, trust_env=False)

    async def stop(self) -> None:
        # A send still running would write state (newest upserted) after a successor took over.
        for fut in list(self._sends):
            fut.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        self.newest.close()
        if self._client is not None:
            await self._client.aclose()

    @property
    def connected(self) -> bool:
        return self.last_error is None

    def context_for(self, entity_type: str) -> str:
        """The one context a request of this type names: the city's, else the pinned SDM context."""
        return self.config.context or mapping.SDM_CONTEXTS.get(entity_type, self.config.core_context)

    # --- sending -------------------------------------------------------------------------------

    def send(self, rows: list[Row]) -> asyncio.Future:
        fut = asyncio.ensure_future(self._send(rows))
        self._sends.add(fut)
        fut.add_done_callback(self._sends.discard)
        return fut

    async def _send(self, rows: list[Row]) -> list[str | None]:
        async with self._lock:
            out = _Outcome([None] * len(rows), [False] * len(rows), [0] * len(rows))
            items = self._map(rows, out)
            try:
                await self._deliver(items, out)
                if out.retry:
                    raise TransientError(out.retry)
            except BaseException as exc:
                for i, row in enumerate(rows):  # remember what this attempt settled
                    if out.decided[i]:
                        self._decided[row.seq] = out.reasons[i]
                if isinstance(exc, TransientError):
                    self._fault(exc)
                raise
            for row in rows:
                self._decided.pop(row.seq, None)
            if self.last_error is not None:
                log.warning("uplink %s: the broker accepts readings again", self.name)
                self.last_error = None
            return out.reasons

    def _fault(self, exc: TransientError) -> None:
        message = f"the broker {exc}" if isinstance(exc, SetupFault) else str(exc)
        if isinstance(exc, SetupFault) and message != self.last_error:
            log.error("uplink %s: %s; every reading stays in the buffer until this is fixed", self.name, message)
        self.last_error = message

    def _map(self, rows: list[Row], out: _Outcome) -> list[_Item]:
        items = []
        for i, row in enumerate(rows):
            if row.seq in self._decided:
                out.reasons[i], out.decided[i] = self._decided[row.seq], True
                continue
            try:
                doc = json.loads(row.body)
                ms = _ms(doc["observed_at"])
                for e in mapping.entities(doc, self.catalogue.get(row.sensor)):
                    items.append(_Item(i, e, ms))
            except (mapping.Unmappable, ValueError, KeyError, TypeError) as exc:
                out.reasons[i], out.decided[i] = f"not mappable to NGSI-LD: {exc}", True
        return items

    async def _deliver(self, items: list[_Item], out: _Outcome) -> None:
        by_entity: dict[str, list[_Item]] = {}
        for it in items:
            by_entity.setdefault(it.entity["id"], []).append(it)
        for it in items:
            out.pending[id(it)] = it
            out.left[it.row] += 1
        newest: list[_Item] = []
        backlog: dict[str, list[_Item]] = {}
        for eid, seq in by_entity.items():
            seq.sort(key=lambda it: it.ms)
            shown = self.newest.get(eid)
            if seq[-1].ms > shown:
                newest.append(seq.pop())
            self._settle([it for it in seq if it.ms == shown], out, None)  # upserted already: a resend
            seq = [it for it in seq if it.ms != shown]
            if seq:
                backlog[eid] = seq
        if not self.temporal and self.config.temporal == "auto" and time.monotonic() >= self._temporal_probe_at:
            self.temporal = True
        if backlog and self.temporal:
            await self._temporal_all(list(backlog.values()), out)
        rounds: list[list[_Item]] = []
        if backlog and not self.temporal:
            rounds = self._replay_rounds(backlog, out)
        heartbeat = self._heartbeat()
        for it in heartbeat:
            out.pending[id(it)] = it
        rounds.append(newest + heartbeat)
        for batch in rounds:
            await self._upsert(batch, out)

    def _replay_rounds(self, backlog: dict[str, list[_Item]], out: _Outcome) -> list[list[_Item]]:
        """No temporal store: round k holds each entity's k-th remaining reading,
        those newer than its current state only (an upsert never goes backwards)."""
        left = {}
        for eid, seq in backlog.items():
            older = [it for it in seq if id(it) in out.pending and it.ms <= self.newest.get(eid)]
            self.not_sent_older += len(older)
            self._settle(older, out, None)
            left[eid] = [it for it in seq if id(it) in out.pending]
        depth = max((len(s) for s in left.values()), default=0)
        return [[s[k] for s in left.values() if k < len(s)] for k in range(depth)]

    def _settle(self, batch: list[_Item], out: _Outcome, reason: str | None, upserted: bool = False) -> None:
        for it in batch:
            if out.pending.pop(id(it), None) is None or it.row < 0:
                continue
            if reason is not None and out.reasons[it.row] is None:
                out.reasons[it.row] = reason
            if upserted and reason is None:
                self.newest.advance(it.entity["id"], it.ms)
            out.left[it.row] -= 1
            out.decided[it.row] = out.left[it.row] == 0  # once none of its items is pending

    def _heartbeat(self) -> list[_Item]:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return []
        self._next_heartbeat = now + self.config.heartbeat
        c, at = self.catalogue, format_time(time.time())
        e = mapping.gateway_device(self.gateway, c.location, c.kinds(), __version__, "ok", at)
        if c.health is not None:  # the daemon's health facts: a failing sensor shows at the city
            try:
                health = c.health()
                e = mapping.gateway_device_health(self.gateway, c.location, c.kinds(), health, via=self.name)
                at = health["at"]
            except Exception as exc:  # the heartbeat still goes, saying less
                log.warning("uplink %s: gateway health for the Device entity unavailable: %s", self.name, exc)
        return [_Item(-1, e, _ms(at))]

    # --- temporal instances --------------------------------------------------------------------

    async def _temporal_all(self, backlogs: list[list[_Item]], out: _Outcome) -> None:
        """Entities' histories are independent: a few at once, each oldest first (the
        first alone while the broker has not yet shown that it has a temporal store)."""
        queue = iter(backlogs)
        if not self._temporal_seen:
            await self._temporal(next(queue), out)

        async def worker() -> None:
            for seq in queue:
                if self.temporal:
                    await self._temporal(seq, out)
        results = await asyncio.gather(*(worker() for _ in range(TEMPORAL_CONCURRENCY)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _temporal(self, seq: list[_Item], out: _Outcome) -> None:
        """One entity's backlog as temporal instances, oldest first; a request too
        large for the limit, or refused, is halved until the culprit stands alone."""
        chunks = [[it for it in seq if id(it) in out.pending]]
        while chunks:
            chunk = chunks.pop(0)
            body = self._temporal_body(chunk)
            if body is None:  # nothing but times (an error reading): nothing to keep in history
                self._settle(chunk, out, None)
                continue
            if len(body) > self.limit and len(chunk) > 1:
                half = len(chunk) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]
                continue
            answer = await self._post(TEMPORAL, chunk[0].entity["type"], body)
            verdict = judge(answer, True, self.config.reconnect_max)
            if verdict in (Verdict.DONE, Verdict.MULTI):
                self._temporal_seen = True
                self._settle(chunk, out, None)
            elif verdict is Verdict.NO_TEMPORAL:
                if self.temporal:
                    self._no_temporal_store(answer.describe())
                return
            elif len(chunk) > 1:  # too large, or rejected: find the culprit
                half = len(chunk) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]
            else:
                self._settle(chunk, out, answer.describe())

    def _no_temporal_store(self, why: str) -> None:
        if self.config.temporal == "on":
            raise SetupFault(f"has no temporal store ({why}) but the uplink says temporal: on")
        log.warning("uplink %s: the broker has no temporal store (%s); the backlog goes through upserts, "
                    "newer readings only", self.name, why)
        self.temporal = self._temporal_seen = False
        self._temporal_probe_at = time.monotonic() + TEMPORAL_PROBE

    @staticmethod
    def _temporal_body(chunk: list[_Item]) -> bytes | None:
        """{"id", "type", attribute: [instance, ...]}: what has an observedAt, oldest first."""
        first = chunk[0].entity
        doc: dict[str, Any] = {"id": first["id"], "type": first["type"]}
        for it in chunk:
            for name, attr in it.entity.items():
                if isinstance(attr, dict) and "observedAt" in attr:
                    doc.setdefault(name, []).append(attr)
        if not set(doc) - {"id", "type"} - mapping.TIME_ATTRIBUTES:
            return None
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    # --- current state -------------------------------------------------------------------------

    def _parts(self, batch: list[_Item]) -> list[list[_Item]]:
        """Upsert requests: one context each, under the byte limit and MAX_ENTITIES."""
        by_context: dict[str, list[_Item]] = {}
        for it in batch:
            it.body = json.dumps(it.entity, ensure_ascii=False, separators=(",", ":")).encode()
            by_context.setdefault(self.context_for(it.entity["type"]), []).append(it)
        parts: list[list[_Item]] = []
        for group in by_context.values():
            cur, size = [], 2
            for it in group:
                if cur and (size + len(it.body) + 1 > self.limit or len(cur) >= MAX_ENTITIES):
                    parts.append(cur)
                    cur, size = [], 2
                cur.append(it)
                size += len(it.body) + 1
            if cur:
                parts.append(cur)
        return parts

    async def _upsert(self, batch: list[_Item], out: _Outcome) -> None:
        queue = self._parts([it for it in batch if id(it) in out.pending])
        while queue:
            part = queue.pop(0)
            self.newest.commit_before({it.entity["id"] for it in part})
            body = b"[" + b",".join(it.body for it in part) + b"]"
            answer = await self._post(UPSERT + "?options=update", part[0].entity["type"], body)
            verdict = judge(answer, False, self.config.reconnect_max)
            if verdict is Verdict.DONE:
                self._settle(part, out, None, upserted=True)
            elif verdict is Verdict.MULTI:
                queue[:0] = self._multi_status(answer, part, out)
            elif len(part) > 1:  # too large, or rejected: find the culprit
                half = len(part) // 2
                queue[:0] = [part[:half], part[half:]]
            else:
                self._reject(part[0], answer.describe(), out)

    def _reject(self, it: _Item, reason: str, out: _Outcome) -> None:
        if it.row < 0:
            log.error("uplink %s: broker rejected %s: %s", self.name, it.entity["id"], reason)
        self._settle([it], out, reason)

    def _multi_status(self, answer, part: list[_Item], out: _Outcome) -> list[list[_Item]]:
        """Settles what the answer names; returns the unnamed entities, each to be sent alone."""
        try:
            result = ngsi_results.parse(answer.json())
        except ValueError as exc:  # not JSON, or too long to read: ask about fewer entities
            if len(part) > 1:
                return [part[:len(part) // 2], part[len(part) // 2:]]
            raise TransientError(f"HTTP {answer.status} with a body that is no batch result ({exc})") from None
        if result.all_succeeded and answer.status == 207:  # Orion-LD: created and updated, no errors
            self._settle(part, out, None, upserted=True)
            return []
        alone = []
        for it in part:
            eid = it.entity["id"]
            problem = result.errors.get(eid)
            if problem is not None and ngsi_results.transient(problem):
                out.retry = f"the broker failed {eid} for its own reasons: {ngsi_results.reason(problem, answer.status)}"
            elif problem is not None:
                self._reject(it, ngsi_results.reason(problem, answer.status), out)
            elif eid in result.success:
                self._settle([it], out, None, upserted=True)
            elif len(part) > 1:
                alone.append([it])
            else:
                out.retry = f"HTTP {answer.status} left {eid} unanswered"
        return alone

    # --- HTTP ----------------------------------------------------------------------------------

    async def _post(self, path: str, entity_type: str, body: bytes):
        assert self._client is not None, "start() first"
        headers = {"Link": LINK.format(self.context_for(entity_type)), "Content-Type": "application/json"}
        for attempt in (0, 1):
            token = await self._auth.header(self._client)
            if token:
                headers["Authorization"] = token
            self.requests += 1
            answer = await exchange(self._client, "POST", path, deadline=self.config.timeout, content=body,
                                    headers=headers)
            # A refused token: read it again (file) or fetch a new one (client credentials), retry once now.
            if answer.status in (401, 403) and self._auth.refused() and attempt == 0:
                continue
            return answer
        return answer
