"""The NGSI-LD uplink against what Orion-LD, Scorpio and Stellio really answer
(tests/ngsi_broker.py's flavours, tenant modes, token rotation and slow answers,
each read from the broker's source): readings flow, the setup's faults keep
them pending, only an entity the broker names becomes a dead letter."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from gateway.buffer import Buffer
from tests.ngsi_broker import NgsiBroker
from tests.ngsi_checks import CONTEXT_FILES
from tests.ngsi_helpers import GW, RIVER, Harness, river, upserts_move_forwards

FLAVOURS = ["orion", "scorpio", "stellio"]


@pytest.fixture
def brokers():
    started: list[NgsiBroker] = []

    def make(**options) -> NgsiBroker:
        started.append(NgsiBroker(**options).start())
        return started[-1]
    yield make
    for b in started:
        b.stop()


def eid(sensor: str) -> str:
    return f"urn:ngsi-ld:FloodMonitoring:{GW}.{sensor}"


# --- 207 shapes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rejected_entities_are_dead_letters_and_every_other_reading_keeps_flowing(tmp_path, brokers, flavour):
    broker = brokers(flavour=flavour)
    broker.reject[eid("river-2")] = "stationID unknown to this city"
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    for i in range(4):
        for s in ("river-1", "river-2", "river-3"):
            river(h, 1.0 + i / 10, s)
    h.run()
    dead = h.dead()
    assert [s for s, _ in dead] == ["river-2"] * 4, "every river-2 reading refused, nothing else"
    assert all("stationID unknown to this city" in reason for _, reason in dead)
    for s in ("river-1", "river-3"):
        assert broker.history(eid(s), "currentLevel") == [1.0, 1.1, 1.2, 1.3]
        assert broker.entities[eid(s)]["currentLevel"]["value"] == 1.3
    assert h.buffer.acked["orion"] == h.buffer.last_seq
    upserts = [s for p, s, ids in broker.log if "/upsert" in p and eid("river-1") in ids]
    assert len(upserts) == 1, "one batch answer, read in its own shape: no retry loop"


def test_scorpio_answers_a_batch_that_failed_entirely_with_400_naming_each_entity(tmp_path, brokers):
    broker = brokers(flavour="scorpio")
    broker.reject.update({eid("river-1"): "no", eid("river-2"): "no"})
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 1.0, "river-1")
    river(h, 1.0, "river-2")
    h.run()
    assert broker.statuses("FloodMonitoring") == [400], "no bisection needed: the 400 names both"
    assert sorted(s for s, _ in h.dead()) == ["river-1", "river-2"]


def test_orion_mixed_create_and_update_is_207_with_empty_errors_and_that_is_success(tmp_path, brokers):
    broker = brokers(flavour="orion")
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 1.0, "river-1")
    h.run()
    river(h, 1.1, "river-1")  # exists: updated
    river(h, 2.0, "river-2")  # new: created
    h2 = Harness(tmp_path, broker.url, buffer=h.buffer, heartbeat="1h")
    h2.n = h.n
    h2.run()
    assert broker.statuses("FloodMonitoring") == [201, 207]
    assert h.dead() == [] and h.buffer.acked["orion"] == h.buffer.last_seq
    assert broker.entities[eid("river-1")]["currentLevel"]["value"] == 1.1


def test_an_entity_the_207_does_not_mention_is_retried_alone(tmp_path, brokers):
    broker = brokers(flavour="stellio")
    broker.reject[eid("river-3")] = "refused"
    broker.omit = {eid("river-2")}
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    for s in ("river-1", "river-2", "river-3"):
        river(h, 1.0, s)
    h.run()
    assert broker.statuses("FloodMonitoring") == [207, 204], "the unmentioned entity alone, not the whole batch again"
    assert [s for s, _ in h.dead()] == ["river-3"]


def test_an_entity_error_of_the_broker_itself_is_retried_not_dead_lettered(tmp_path, brokers):
    broker = brokers()
    pd = {"type": "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable", "title": "Unable to download context",
          "status": 503}
    broker.fail_next.append((207, {"Content-Type": "application/json"},
                             json.dumps({"success": [], "errors": [{"entityId": eid("river-1"), "error": pd}]}).encode()))
    h = Harness(tmp_path, broker.url, heartbeat="1h", reconnect_max="1s")
    river(h, 1.0)
    h.run()
    assert h.dead() == [] and broker.entities[eid("river-1")]["currentLevel"]["value"] == 1.0


def test_a_temporal_error_listing_entities_is_retried_and_history_stays_complete(tmp_path, brokers):
    """A request on the temporal path is one entity's history: a 500 whose body lists that
    entity is a failure of the request, not a per-entity report that settles it."""
    broker = brokers()
    body = json.dumps({"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": "database down",
                       "errors": [{"entityId": RIVER, "error": {"status": 500}}]}).encode()
    broker.fail_on.append(("/temporal", (500, {"Content-Type": "application/json"}, body)))
    h = Harness(tmp_path, broker.url, heartbeat="1h", reconnect_max="1s")
    for i in range(4):
        river(h, 1.0 + i / 10)
    h.run()
    assert 500 in broker.statuses()
    assert broker.history(RIVER, "currentLevel") == [1.0, 1.1, 1.2, 1.3] and h.dead() == []


# --- setup faults: pending, loud, delivered once fixed ----------------------------------------------

@pytest.mark.parametrize("mode, tenant, words", [
    ("unsupported", "takamatsu", "Tenants not supported"),  # Orion-LD without -multiservice
    ({"sapporo"}, "takamatsu", "NonexistentTenant"),  # Stellio, a tenant not declared
])
def test_a_refused_tenant_keeps_every_reading_pending_and_says_so(tmp_path, brokers, caplog, mode, tenant, words):
    broker = brokers(tenants=mode)
    h = Harness(tmp_path, broker.url, tenant=tenant, reconnect_max="1s")
    for i in range(5):
        river(h, 1.0 + i / 10)
    with caplog.at_level(logging.ERROR):
        h.attempt(3.0)
    assert h.dead() == [] and h.buffer.acked["orion"] == 0, "a fault of the setup makes no dead letter"
    assert words in h.transport.last_error and "tenant" in h.transport.last_error
    assert not h.transport.connected
    assert sum("refused the tenant" in r.getMessage() for r in caplog.records) == 1, "said once, loudly"
    fixed = Harness(tmp_path, broker.url, buffer=h.buffer, tenant=None if mode == "unsupported" else "sapporo")
    fixed.run()
    assert fixed.dead() == [] and broker.history(RIVER, "currentLevel") == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert fixed.transport.last_error is None


@pytest.mark.parametrize("answer, words", [
    ((308, {"Location": "https://orion.example/ngsi-ld/v1/entityOperations/upsert"}, b""), "redirect"),
    ((415, {"Content-Type": "application/json"}, b'{"type": "x/UnsupportedMediaType", "title": "bad type"}'),
     "media type"),
    ((405, {}, b""), "no such endpoint"),
])
def test_a_wrong_endpoint_or_media_type_is_a_setup_fault_not_a_dead_letter(tmp_path, brokers, caplog, answer,
                                                                           words):
    broker = brokers()
    broker.fail_next += [answer] * 3
    h = Harness(tmp_path, broker.url, reconnect_max="1s", heartbeat="1h")
    river(h, 1.0)
    with caplog.at_level(logging.WARNING):
        h.run()
    assert h.dead() == [] and broker.entities[RIVER]["currentLevel"]["value"] == 1.0
    assert broker.statuses()[:3] == [answer[0]] * 3
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(words in m for m in said), f"the fault is said as what it is: {said}"


def test_a_wrong_base_url_stays_pending(tmp_path, brokers):
    broker = brokers()
    h = Harness(tmp_path, broker.url + "/orion", reconnect_max="1s")
    river(h, 1.0)
    h.attempt(2.0)
    assert h.dead() == [] and "no such endpoint" in h.transport.last_error


# --- credentials -----------------------------------------------------------------------------------

def test_token_rotated_at_the_identity_provider_and_the_file_2s_later_loses_nothing(tmp_path, brokers):
    token = tmp_path / "orion.token"
    token.write_text("tok-first\n")
    broker = brokers(token="tok-first")
    h = Harness(tmp_path, broker.url, token_file=str(token), reconnect_max="1s", batch=5, heartbeat="1h")

    async def feed():
        for i in range(40):
            river(h, 1.0 + i / 100)
            h.buffer.commit()
            if i == 10:
                new = broker.rotate()
            if i == 30:  # 2 s later
                token.write_text(new + "\n")
            await asyncio.sleep(0.1)
    h.run(during=feed)
    assert h.dead() == []
    assert 401 in broker.statuses()
    assert broker.history(RIVER, "currentLevel") == [1.0 + i / 100 for i in range(40)]


def test_oauth2_client_credentials_fetches_a_token_and_renews_it_before_expiry(tmp_path, brokers):
    secret = tmp_path / "client.secret"
    secret.write_text("s3cret\n")
    broker = brokers(token="tok-a", clients={"gw-07": "s3cret"}, token_lifetime=1.0)
    h = Harness(tmp_path, broker.url, token_url=broker.url + "/token", client_id="gw-07",
                client_secret_file=str(secret), batch=1, heartbeat="1h")

    async def feed():
        for i in range(30):
            river(h, 1.0 + i / 100)
            h.buffer.commit()
            if i == 15:
                broker.rotate()  # revoked at the provider: the next 401 fetches a new one
            await asyncio.sleep(0.1)
    h.run(during=feed)
    assert h.dead() == [] and len(broker.history(RIVER, "currentLevel")) == 30
    assert broker.tokens_issued >= 3, "renewed before expiry (1 s lifetime over 3 s) and after the revocation"
    assert broker.statuses().count(401) <= 1


def test_a_token_wrapped_onto_two_lines_is_refused_at_check_and_never_logged(tmp_path):
    from gateway.config import ConfigError, parse_config
    token = tmp_path / "orion.token"
    token.write_text("Bearer-part-one\npart-two-s3cret\n")
    text = (f"gateway: {{id: g, location: [34.3, 134.0]}}\nuplinks:\n  - name: orion\n    type: ngsi-ld\n"
            f"    url: https://127.0.0.1:1026\n    token_file: {token}\n")
    with pytest.raises(ConfigError, match="more than one line") as exc:
        parse_config(text)
    assert "s3cret" not in str(exc.value)


def test_a_token_file_rewritten_onto_two_lines_is_a_setup_fault_and_never_logged(tmp_path, brokers, caplog):
    token = tmp_path / "orion.token"
    token.write_text("tok-first\n")
    broker = brokers(token="tok-first")
    h = Harness(tmp_path, broker.url, token_file=str(token), reconnect_max="1s", heartbeat="1h")
    river(h, 1.0)
    broker.rotate()
    token.write_text("Bearer tok-s3cret-part\nand-the-rest\n")  # wrapped by an editor
    with caplog.at_level(logging.DEBUG):
        h.attempt(2.5)
    assert h.dead() == [] and "token_file" in h.transport.last_error
    assert "s3cret" not in caplog.text and "s3cret" not in h.transport.last_error


def test_the_http_librarys_protocol_error_never_quotes_a_header(brokers):
    """h11's LocalProtocolError quotes the illegal header, the bearer token with it."""
    import httpx

    from gateway.uplinks.base import TransientError
    from gateway.uplinks.ngsi_http import exchange
    broker = brokers()

    async def go():
        async with httpx.AsyncClient() as client:
            await exchange(client, "POST", broker.url + "/x", deadline=5,
                           headers={"Authorization": "Bearer s3cret\r\nX-Evil: 1"})
    with pytest.raises(TransientError) as exc:
        asyncio.run(go())
    assert "s3cret" not in str(exc.value) and "LocalProtocolError" in str(exc.value)


# --- a hostile broker: slow, huge, stalling ---------------------------------------------------------

def test_retry_after_is_capped_at_reconnect_max(tmp_path, brokers):
    broker = brokers()
    broker.fail_next.append((429, {"Retry-After": "999999"}, b""))
    h = Harness(tmp_path, broker.url, reconnect_max="1s", heartbeat="1h")
    river(h, 1.0)
    h.run(timeout=15)
    assert broker.statuses()[0] == 429 and 401 not in broker.statuses()
    assert broker.times[1] - broker.times[0] < 10, "waited about reconnect_max, not 999999 s"


def test_a_broker_dripping_its_answer_cannot_hold_a_request(tmp_path, brokers):
    broker = brokers()
    broker.drip = 0.5  # a byte every half second: the 201's body would take ~40 s
    h = Harness(tmp_path, broker.url, timeout="2s", reconnect_max="1s", heartbeat="1h")
    river(h, 1.0)
    h.attempt(5.0)
    assert "no complete answer within 2s" in h.transport.last_error
    assert h.dead() == [] and h.buffer.acked["orion"] == 0
    broker.drip = 0
    Harness(tmp_path, broker.url, buffer=h.buffer, heartbeat="1h").run()
    assert h.buffer.acked["orion"] == h.buffer.last_seq


def test_a_huge_error_body_is_read_only_up_to_a_bound(tmp_path, brokers):
    broker = brokers()
    detail = "x" * (50 * 1024 * 1024)
    broker.fail_next.append((400, {"Content-Type": "application/json"},
                             json.dumps({"type": "x/BadRequestData", "title": "no", "detail": detail}).encode()))
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 1.0)
    h.run()
    [(_, reason)] = h.dead()
    assert len(reason) < 2000, "the reason is a bounded excerpt"


def test_a_huge_207_is_cut_and_the_entities_asked_about_in_halves(tmp_path, brokers):
    broker = brokers()
    junk = json.dumps({"success": [], "errors": [], "junk": "x" * (50 * 1024 * 1024)}).encode()
    broker.fail_next.append((207, {"Content-Type": "application/json"}, junk))
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    for s in ("river-1", "river-2"):
        river(h, 1.0, s)
    h.run()
    assert h.dead() == [] and len([e for e in broker.entities if "FloodMonitoring" in e]) == 2
    assert broker.statuses("FloodMonitoring") == [207, 201, 201]


def test_a_201_that_stores_nothing_cannot_be_detected(tmp_path, brokers):
    """What we can and cannot know: a broker that says 201 and keeps nothing looks
    like success. The uplink believes it (no read-back: it would double the load)."""
    broker = brokers()
    broker.store_nothing = True
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 1.0)
    river(h, 1.1)
    h.run()
    assert h.buffer.acked["orion"] == h.buffer.last_seq and broker.entities == {}


# --- contexts and the temporal store ----------------------------------------------------------------

def city_context() -> dict:
    """A city's own context: the Smart Data Models terms, hosted in the city network."""
    docs = [json.loads(path.read_text())["@context"] for url, path in CONTEXT_FILES.items() if "smart-data" in url]
    return {"@context": docs}


def test_context_url_every_request_names_it_and_the_broker_validates_with_it(tmp_path, brokers):
    url = "https://contexts.city.example/gateway/v1/context.jsonld"
    broker = brokers(contexts={url: city_context()})
    h = Harness(tmp_path, broker.url, context=url)
    for i in range(3):
        river(h, 1.0 + i / 10)
    h.add("snow-1", "snow_depth", {"snow_depth": (420, "mm"), "air_temperature": (-1.0, "°C")})
    h.run()
    assert broker.invalid == [] and h.dead() == []
    assert broker.links and set(broker.links) == {url}, "heartbeat, upserts and temporal all name the city context"
    snow = broker.entities[f"urn:ngsi-ld:WeatherObserved:{GW}.snow-1"]["snowHeight"]
    assert (snow["value"], snow["unitCode"]) == (42.0, "CMT"), "mm converted to cm"


def test_default_contexts_are_pinned_versions_not_master(tmp_path, brokers):
    broker = brokers()
    h = Harness(tmp_path, broker.url)
    river(h, 1.0)
    h.run()
    assert broker.links and not any("/master/" in link for link in broker.links)


@pytest.mark.parametrize("answer", [
    (503, {"Content-Type": "application/json"},
     b'{"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound", "title": "TRoE Not Enabled"}'),
    (501, {}, b""),
    (405, {}, b""),
])
def test_no_temporal_store_is_read_from_the_answer_and_older_readings_never_upserted(tmp_path, brokers, answer):
    broker = brokers()
    broker.fail_on.append(("/temporal", answer))
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 9.0, at=1_763_790_000, alert=True)  # an alert, newest, sent ahead
    for i in range(4):
        river(h, 1.0 + i / 10)
    h.run()
    assert h.dead() == []
    assert upserts_move_forwards(broker.upserted) == []
    assert broker.entities[RIVER]["currentLevel"]["value"] == 9.0
    assert h.transport.not_sent_older == 4


def test_an_unknown_tenant_on_the_temporal_path_is_not_taken_for_a_missing_temporal_store(tmp_path, brokers):
    broker = brokers(tenants={"sapporo"})
    h = Harness(tmp_path, broker.url, tenant="takamatsu", reconnect_max="1s")
    river(h, 1.0)
    river(h, 1.1)
    h.attempt(2.0)
    assert h.transport.temporal and "tenant" in h.transport.last_error and h.dead() == []


def test_temporal_on_with_a_broker_without_one_is_a_setup_fault(tmp_path, brokers):
    broker = brokers(temporal=False)
    h = Harness(tmp_path, broker.url, temporal="on", reconnect_max="1s")
    river(h, 1.0)
    river(h, 1.1)
    h.attempt(2.0)
    assert "temporal" in h.transport.last_error and h.dead() == [] and h.buffer.acked["orion"] == 0


def test_temporal_off_sends_history_only_through_upserts_in_order(tmp_path, brokers):
    broker = brokers()
    h = Harness(tmp_path, broker.url, temporal="off", heartbeat="1h")
    for i in range(4):
        river(h, 1.0 + i / 10)
    h.run()
    assert broker.count("/temporal") == 0
    assert [e["currentLevel"]["value"] for i, e in broker.upserted if i == RIVER] == [1.0, 1.1, 1.2, 1.3]


def test_a_temporal_chunk_the_broker_rejects_is_bisected_to_the_culprit(tmp_path, brokers):
    broker = brokers()
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    for i in range(8):
        river(h, 1.0 + i / 10)
    bad = broker.fail_on  # the first temporal request (all seven older readings) refused as a whole
    bad.append(("/temporal", (400, {"Content-Type": "application/json"}, b'{"type": "x/BadRequestData"}')))
    h.run()
    assert h.dead() == [], "the whole chunk was refused once; its halves went through"
    assert broker.history(RIVER, "currentLevel") == [1.0 + i / 10 for i in range(8)]


def test_upserts_carry_at_most_1000_entities(tmp_path, brokers):
    broker = brokers(validate=False)
    h = Harness(tmp_path, broker.url, batch=2500, max_request_bytes=1_048_575, heartbeat="1h")
    for s in range(2500):
        h.add(f"b-{s}", "beacon", {"rssi": (-70, "dBm")}, device="p-1")
    h.run(timeout=60)
    sizes = [len(ids) for path, _, ids in broker.log if "/upsert" in path]
    assert max(sizes) == 1000 and sum(sizes) == 2501, "2500 beacons and the heartbeat, at most 1000 a request"


# --- the newest upserted outlives the transport -----------------------------------------------------

@pytest.mark.parametrize("how", ["restart", "reload"])
def test_the_newest_time_upserted_outlives_a_restart_or_reload(tmp_path, brokers, how):
    """An alert upserted and acknowledged; then older readings arrive behind the cursor
    (dead letters moved back by `buffer dead --retry`, a node's late packets): a new
    transport, after a restart or a reload, must not upsert them over the alert."""
    broker = brokers()
    h = Harness(tmp_path, broker.url, heartbeat="1h")
    river(h, 9.0, at=1_763_790_000, alert=True)
    h.buffer.commit()

    async def send_alert():
        await h.transport.start()
        assert await h.transport.send(h.buffer.fetch_alerts(0, 10)) == [None]
        h.buffer.ack("orion", 1)
        await h.transport.stop()
    asyncio.run(send_alert())
    assert broker.entities[RIVER]["currentLevel"]["value"] == 9.0
    buffer = h.buffer
    if how == "restart":
        buffer.commit()
        buffer.close()
        buffer = Buffer(tmp_path / "buffer.db", ["orion"], gateway=GW)
    later = Harness(tmp_path, broker.url, buffer=buffer, heartbeat="1h")
    later.n = 10
    for i in range(3):
        river(later, 1.0 + i / 10)
    later.run()
    assert upserts_move_forwards(broker.upserted) == []
    assert broker.entities[RIVER]["currentLevel"]["value"] == 9.0
    assert broker.history(RIVER, "currentLevel")[-3:] == [1.0, 1.1, 1.2], "older readings still go to history"


# --- TLS: the system CA store, or ca_file -----------------------------------------------------------

@pytest.mark.parametrize("trust", ["system store", "ca_file", "nothing"])
def test_the_city_ca_is_trusted_from_the_system_store_unless_ca_file_says_otherwise(tmp_path, brokers, monkeypatch,
                                                                                    trust):
    from tests.test_mqtt_rejections_and_tls import make_pki
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    broker = brokers(tls=(pki / "server.pem", pki / "server.key"))
    if trust == "system store":  # a CA installed in the OS, as OpenSSL finds it
        monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))
    extra = {"ca_file": str(pki / "ca.pem")} if trust == "ca_file" else {}
    h = Harness(tmp_path, broker.url, reconnect_max="1s", heartbeat="1h", **extra)
    river(h, 1.0)
    if trust == "nothing":
        h.attempt(2.0)
        assert h.dead() == [] and h.buffer.acked["orion"] == 0 and "ConnectError" in h.transport.last_error
        return
    h.run()
    assert broker.entities[RIVER]["currentLevel"]["value"] == 1.0
