"""A test NGSI-LD context broker on 127.0.0.1 that is strict where the real ones
are (the checks: tests/ngsi_checks.py) and answers as they do, read from their
sources, and keeps what it received for assertions.

Answers, by `flavour`:
- "orion" (Orion-LD 1.7, legacyPostBatchUpsert.cpp): upsert 201 (all created) /
  204 (all updated) / 207 {success, errors: [{entityId, error}]}; a batch that
  both creates and updates is a 207 with every id in `success` and an empty
  `errors`; 503 "TRoE Not Enabled" on the temporal path when `temporal` is off.
- "scorpio" (Scorpio 5, HttpUtils.generateBatchResult): errors as
  {type: "Upsert", id, ProblemDetails}; a batch whose every entity failed is a
  400 carrying only `errors`; a mixed batch without errors is a 201.
- "stellio" (EntityOperationHandler.kt): the standard 207; mixed is a 201.
Tenants (`tenants`): None accepts any; "unsupported" answers any NGSILD-Tenant
with 400 "Tenants not supported" (Orion-LD without -multiservice); a set of
names answers any other with 404 NonexistentTenant (Stellio).
Credentials: `token` is the bearer the broker wants; `clients` (id -> secret)
opens POST /token, OAuth2 client credentials handing out the current token for
`token_lifetime` s; `rotate()` makes a new one (the old is refused at once).
Misbehaviour: `delay` s before an answer, `drip` s between its bytes,
`store_nothing` (201/204 while keeping nothing), `omit` (ids a 207 leaves
unmentioned), `fail_next`/`fail_on` (injected answers), `reject` (per-entity errors).
Upserts also write temporal instances when the temporal store is on (as TRoE does).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.ngsi_checks import (CONTEXT_FILES, CORE_V18, HERE, LINK_RE, check_entity, check_request,  # noqa: F401
                               openapi, serve_context)

UPSERT, TEMPORAL, TOKEN = "/ngsi-ld/v1/entityOperations/upsert", "/ngsi-ld/v1/temporal/entities", "/token"
JSON = {"Content-Type": "application/json"}


def _ids(body: bytes) -> list[str]:
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    docs = doc if isinstance(doc, list) else [doc]
    return [str(d.get("id")) for d in docs if isinstance(d, dict)]


def problem(status: int, title: str, detail: str = "", kind: str = "BadRequestData") -> tuple[int, dict, bytes]:
    body = {"type": f"https://uri.etsi.org/ngsi-ld/errors/{kind}", "title": title, "detail": detail, "status": status}
    return status, dict(JSON), json.dumps(body).encode()


class NgsiBroker:
    def __init__(self, *, temporal: bool = True, max_body: int = 1_000_000, validate: bool = True,
                 core_context: str = CORE_V18, token: str | None = None, flavour: str = "orion",
                 tenants: None | str | set[str] = None, clients: dict[str, str] | None = None,
                 token_lifetime: float = 3600.0, contexts: dict[str, dict] | None = None,
                 tls: tuple[Path, Path] | None = None):
        self.temporal, self.max_body, self.validate = temporal, max_body, validate
        self.core_context, self.token, self.flavour, self.tenant_mode = core_context, token, flavour, tenants
        self.clients, self.token_lifetime = clients or {}, token_lifetime
        self.tls = tls  # (certificate, key): HTTPS
        for url, doc in (contexts or {}).items():
            serve_context(url, doc)
        self.delay = 0.0
        self.drip = 0.0
        self.store_nothing = False
        self.omit: set[str] = set()
        self.entities: dict[str, dict] = {}  # id -> current state (normalized)
        self.instances: dict[tuple[str, str], list[dict]] = {}  # (id, attr) -> temporal instances, arrival order
        self.invalid: list[tuple[str, str]] = []  # (path, problem)
        self.log: list[tuple[str, int, list[str]]] = []  # (path, status, ids of the entities in the request)
        self.times: list[float] = []  # monotonic arrival time of each logged request
        self.links: list[str] = []  # the context each NGSI-LD request named
        self.upserted: list[tuple[str, dict]] = []  # (id, entity) of every accepted upsert, in order
        self.tenants: set[str | None] = set()
        self.tokens_issued = 0
        self.fail_next: list[tuple[int, dict, bytes]] = []
        self.fail_on: list[tuple[str, tuple[int, dict, bytes]]] = []  # (path part, answer): the next such request
        self.reject: dict[str, str] = {}  # entity id -> why the broker refuses it (per-entity error)
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
                time.sleep(broker.delay)
                reason = self.responses.get(status, ("",))[0]
                head = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
                head.append(f"Content-Length: {len(payload)}")
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
                try:
                    for i in range(0, len(data), 1 if broker.drip else len(data) or 1):
                        self.wfile.write(data[i:i + (1 if broker.drip else len(data))])
                        self.wfile.flush()
                        time.sleep(broker.drip)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (its deadline)

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
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, self.tls))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
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
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def rotate(self) -> str:
        """A new token at the identity provider; the old one is refused from now on."""
        with self.lock:
            self.token = "tok-" + secrets.token_hex(8)
            return self.token

    # --- assertions helpers ---

    def history(self, entity_id: str, attr: str) -> list:
        with self.lock:
            return [i.get("value", i.get("object")) for i in self.instances.get((entity_id, attr), [])]

    def observed(self, entity_id: str, attr: str) -> list[str]:
        with self.lock:
            return [i["observedAt"] for i in self.instances.get((entity_id, attr), [])]

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.log if path_part in p)

    def statuses(self, entity_type: str = "") -> list[int]:
        """Every answer's status, or those to requests holding an entity of `entity_type`."""
        with self.lock:
            return [s for _, s, ids in self.log if not entity_type or any(f":{entity_type}:" in i for i in ids)]

    # --- the API ---

    def handle(self, method: str, target: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(target)
        with self.lock:
            answer = self._handle(method, url.path, url.query, headers, body)
            self.log.append((url.path, answer[0], _ids(body)))
            self.times.append(time.monotonic())
            return answer

    def _handle(self, method: str, path: str, query: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        if path == TOKEN and self.clients:
            return self._issue_token(headers, body)
        if path not in (UPSERT, TEMPORAL):
            return problem(404, "Service Not Found", path, kind="ResourceNotFound")
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthorized", kind="Unauthorized")
        refused = self._tenant_refusal(headers.get("NGSILD-Tenant"))
        if refused:
            return refused
        if self.fail_next:
            return self.fail_next.pop(0)
        for i, (part, answer) in enumerate(self.fail_on):
            if part in path:
                del self.fail_on[i]
                return answer
        if len(body) > self.max_body:
            return problem(413, "Payload Too Large", f"{len(body)} bytes; at most {self.max_body}",
                           kind="RequestEntityTooLarge")
        if path == TEMPORAL and not self.temporal:
            return problem(503, "TRoE Not Enabled", path, kind="ResourceNotFound")
        bad = check_request(method, path, query, headers, body, self.validate)
        if bad:
            self.invalid.append((path, bad))
            return problem(400, "Invalid request", bad)
        link = LINK_RE.match(headers["Link"]).group(1)
        self.links.append(link)
        self.tenants.add(headers.get("NGSILD-Tenant"))
        doc = json.loads(body)
        if path == UPSERT:
            return self._upsert(doc, link, query)
        return self._temporal(doc, link)

    def _tenant_refusal(self, tenant: str | None) -> tuple[int, dict, bytes] | None:
        if tenant is None or self.tenant_mode is None:
            return None
        if self.tenant_mode == "unsupported":
            return problem(400, "Tenants not supported",
                           "tenant in use but tenant support is not enabled for the broker")
        if tenant not in self.tenant_mode:
            return problem(404, "Tenant not found", f"Tenant {tenant} does not exist", kind="NonexistentTenant")
        return None

    def _issue_token(self, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        form = dict(parse_qsl(body.decode()))
        try:
            client, secret = base64.b64decode(headers.get("Authorization", "")[6:]).decode().split(":", 1)
        except ValueError:
            client = secret = ""
        if form.get("grant_type") != "client_credentials" or self.clients.get(client) != secret:
            return 401, dict(JSON), b'{"error": "invalid_client"}'
        self.tokens_issued += 1
        doc = {"access_token": self.token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        return 200, dict(JSON), json.dumps(doc).encode()

    # --- upsert and temporal ---

    def _entity_error(self, eid: str, title: str, detail: str) -> dict:
        pd = {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "title": title, "detail": detail,
              "status": 400}
        if self.flavour == "scorpio":
            return {"type": "Upsert", "id": eid, "ProblemDetails": pd}
        return {"entityId": eid, "error": pd}

    def _upsert(self, entities: list, link: str, query: str) -> tuple[int, dict, bytes]:
        if "options=update" not in query:
            return problem(400, "this client upserts with options=update", query)
        success, errors, created = [], [], []
        for e in entities:
            eid = e.get("id")
            problems = check_entity(e, link, self.core_context) if self.validate else []
            if problems:
                self.invalid.append(("upsert " + str(eid), "; ".join(problems)))
                errors.append(self._entity_error(eid, "Invalid entity", "; ".join(problems)))
            elif eid in self.reject:
                errors.append(self._entity_error(eid, "Bad Request", self.reject[eid]))
            else:
                if eid not in self.entities:
                    created.append(eid)
                self._store(e)
                success.append(eid)
        return self._batch_answer(success, errors, created)

    def _store(self, e: dict) -> None:
        if self.store_nothing:
            return
        current = self.entities.get(e["id"])
        if current is None:
            self.entities[e["id"]] = copy.deepcopy(e)
        else:
            current.update(copy.deepcopy(e))  # options=update: attributes replaced, others kept
        if self.temporal:
            self._store_instances(e)
        self.upserted.append((e["id"], copy.deepcopy(e)))

    def _batch_answer(self, success: list, errors: list, created: list) -> tuple[int, dict, bytes]:
        answered = [s for s in success if s not in self.omit]
        errors = [e for e in errors if e.get("entityId", e.get("id")) not in self.omit]
        self.omit -= set(success)  # left out of one answer only
        if errors and not success and self.flavour == "scorpio":
            return 400, dict(JSON), json.dumps({"errors": errors}).encode()
        if errors or len(answered) < len(success):
            return 207, dict(JSON), json.dumps({"success": answered, "errors": errors}).encode()
        if created and len(created) < len(success) and self.flavour == "orion":
            return 207, dict(JSON), json.dumps({"success": success, "errors": []}).encode()
        if created:
            return 201, dict(JSON), json.dumps(created).encode()
        return 204, {}, b""

    def _temporal(self, entity: dict, link: str) -> tuple[int, dict, bytes]:
        problems = check_entity(entity, link, self.core_context, temporal=True) if self.validate else []
        if problems:
            self.invalid.append(("temporal " + str(entity.get("id")), "; ".join(problems)))
            return problem(400, "Invalid temporal entity", "; ".join(problems))
        eid = entity["id"]
        if eid in self.reject:
            return problem(400, "Bad Request", self.reject[eid])
        new = not any(k[0] == eid for k in self.instances)
        if not self.store_nothing:
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
