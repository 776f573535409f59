"""The on-site page (issue 11 point 1) in a real browser: Debian's chromium,
headless, against `gateway run` with simulated sensors, a sensor on a serial
port that does not exist, a console uplink to a file and the page on 127.0.0.2
with a token. 127.0.0.2 is loopback-range but not 127.0.0.1: the page treats
every address but 127.0.0.1 and ::1 as reachable from elsewhere, so it needs
the token there."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.config import ConfigError, parse_config
from gateway.history import RecentHistory, history_path
from gateway.sdk.reading import Reading, Value
from tests.browser import chromium, has_colour
from gateway.web import Request, WebServer
from tests.helpers import GatewayProcess, free_port, wait_for, write_config

STAGES = {"standby": 1.5, "caution": 2.0, "evacuation": 2.5, "danger": 3.0}
TOKEN = "field-token-8c1f"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    (tmp / "web.token").write_text(TOKEN + "\n")
    config = {
        "gateway": {"id": "web-gw", "location": [34.34, 134.05], "shutdown_timeout": "2s"},
        "storage": {"path": str(tmp / "buffer.db"), "commit_interval": "100ms"},
        "service": {"web": {"listen": f"127.0.0.2:{port}", "token_file": str(tmp / "web.token")}},
        "uplinks": [{"name": "console", "type": "console", "path": str(tmp / "out.jsonl")}],
        "sensors": [
            {"id": "river-1", "driver": "sim_river", "interval": "300ms", "time_scale": 60, "mount_height": 6.0,
             "alert_levels": STAGES},
            {"id": "snow-1", "driver": "sim_snow", "interval": "300ms", "mount_height": 3.0,
             "removal_threshold": 0.1},
            {"id": "beacons-1", "driver": "sim_beacon", "interval": "500ms", "seed": 3},
            {"id": "pier-2", "driver": "maxbotix", "interval": "1s", "port": str(tmp / "ttyUSB-unplugged"),
             "mount_height": 5.0},
        ],
    }
    # The last 24 h of the river as the page's own history file holds them: the plot is drawn from it, not
    # from the delivery buffer, and it outlives a restart.
    past = RecentHistory(history_path(tmp / "buffer.db"), step=0)
    now = time.time()
    for i in range(48):
        past.add(Reading("river-1", "river_level", {"water_level": Value(1.0 + i * 0.03, "m")},
                         observed_at=now - 86_000 + i * 1800))
    past.close()
    gw = GatewayProcess(write_config(tmp / "gateway.yaml", config), tmp / "gateway.log").start()
    GatewayProcess.running.discard(gw)  # one daemon for the module's tests: stopped below, not after each test
    base = f"http://127.0.0.2:{port}"
    try:
        wait_for(lambda: _status(base + "/") is not None or gw.proc.poll() is not None, 60, what="the page")
        assert gw.proc.poll() is None, gw.log_text()
        with chromium() as browser:
            yield {"base": base, "tmp": tmp, "gw": gw, "browser": browser}
    finally:
        assert gw.terminate() == 0


def _status(url: str, headers: dict | None = None) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _page(site):
    context = site["browser"].new_context(viewport={"width": 900, "height": 1400})
    page = context.new_page()
    page.goto(site["base"] + f"/?token={TOKEN}")  # once; the page keeps it in a cookie
    return page


def _console(site) -> dict[str, dict]:
    out = site["tmp"] / "out.jsonl"
    lines = out.read_text().splitlines() if out.exists() else []
    return {r["id"]: r for r in map(json.loads, lines)}


def test_the_page_answers_401_without_the_token_off_127_0_0_1(site):
    assert _status(site["base"] + "/") == 401
    assert _status(site["base"] + "/check") == 401
    assert _status(site["base"] + "/", {"Authorization": "Bearer wrong"}) == 401
    assert _status(site["base"] + "/", {"Authorization": f"Bearer {TOKEN}"}) == 200
    page = site["browser"].new_page()
    response = page.goto(site["base"] + "/")
    assert response.status == 401 and "token" in page.content()
    page.close()


def test_the_page_needs_nothing_but_the_gateway(site):
    """No CDN, no font, no script: every request the browser makes goes to the gateway itself."""
    context = site["browser"].new_context()
    page = context.new_page()
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(site["base"] + f"/?token={TOKEN}")
    page.goto(site["base"] + "/check")
    assert urls and all(u.startswith(site["base"] + "/") for u in urls), urls
    assert page.locator("script").count() == 0
    context.close()


def test_values_on_the_page_are_the_last_readings(site, tmp_path):
    page = _page(site)
    wait_for(lambda: page.reload() and page.locator("#sensor-river-1 [data-id]").count(), 30,
             what="a river reading on the page")
    for sid in ("river-1", "snow-1", "beacons-1"):
        card = page.locator(f"#sensor-{sid}")
        reading_id = card.locator("[data-id]").get_attribute("data-id")
        sent = wait_for(lambda: _console(site).get(reading_id), 30, what=f"{reading_id} in the console output")
        shown = {row.get_attribute("data-value"): row.locator(".num").inner_text()
                 for row in card.locator("tr[data-value]").all()}
        assert shown == {name: str(v["value"]) for name, v in sent["values"].items()}
        assert card.locator(".observed").inner_text() == sent["observed_at"]
    png = page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
    assert has_colour(png, "#1864ab")  # the series' blue: plots were drawn
    page.context.close()


def test_the_river_plot_has_its_four_stage_lines_and_the_last_24_h(site, tmp_path):
    page = _page(site)
    plot = page.locator("#sensor-river-1 svg.plot")
    stages = {g.get_attribute("data-stage"): float(g.get_attribute("data-value"))
              for g in plot.locator("g.stage").all()}
    assert stages == STAGES
    level = plot.locator('g.series[data-series="water_level"]')
    assert int(level.get_attribute("data-points")) >= 48  # the day from the history file, then live readings
    png = plot.screenshot(path=str(tmp_path / "river-plot.png"))
    for colour in ("#2f9e44", "#e6b800", "#e03131", "#862e9c"):  # standby, caution, evacuation, danger
        assert has_colour(png, colour), colour
    snow = page.locator("#sensor-snow-1 svg.plot g.stage")
    assert snow.get_attribute("data-stage") == "removal" and snow.get_attribute("data-value") == "0.1"
    beacons = page.locator('#sensor-beacons-1 svg.plot g.series[data-series="adverts"]')
    assert float(beacons.get_attribute("data-last")) >= 1
    page.context.close()


def test_a_failing_sensor_is_shown_with_its_reason(site, tmp_path):
    page = _page(site)
    card = page.locator("#sensor-pier-2")
    wait_for(lambda: page.reload() and "failing" in card.locator(".state").inner_text(), 30,
             what="pier-2 failing")
    assert "ttyUSB-unplugged" in card.locator(".reason").inner_text()
    assert page.locator('tr[data-uplink="console"] .pending').inner_text().isdigit()
    assert "synchronised" in page.locator(".clock").inner_text()
    assert "on-site page on http://127.0.0.2" in page.locator("pre.logs").inner_text()
    png = card.screenshot(path=str(tmp_path / "failing.png"))
    assert has_colour(png, "#c92a2a")  # the failing state's red
    page.context.close()


def test_the_check_form_shows_gateway_checks_errors_with_their_lines(site, tmp_path):
    page = _page(site)
    page.goto(site["base"] + "/check")
    page.fill("textarea[name=config]", "gateway:\n  id: web-gw\nsensors:\n  - id: river-1\n    driver: sim_river\n"
                                       "    interval: 10\n")
    page.click("button[type=submit]")
    problems = page.locator("pre.problems").inner_text()
    assert "config:6: sensors[0].interval: a duration needs a unit: write 10s" in problems
    assert page.locator("pre.listing .hit").inner_text().strip() == "6      interval: 10"
    png = page.screenshot(path=str(tmp_path / "check.png"), full_page=True)
    assert has_colour(png, "#fff3bf")  # the offending line marked
    page.fill("textarea[name=config]", "gateway:\n  id: web-gw\nsensors:\n  - {id: r, driver: maxbotix, interval: 1s, "
                                       "port: /dev/ttyUSB-not-here}\n")
    page.click("button[type=submit]")
    assert "valid" in page.locator(".verdict").inner_text()
    assert "config:4: sensors[0].port: warning: serial port /dev/ttyUSB-not-here does not exist" in \
        page.locator("pre.warnings").inner_text() and "gateway scan serial" in page.locator("pre.warnings").inner_text()
    page.context.close()


def test_a_page_off_127_0_0_1_without_token_file_is_a_config_error():
    text = "gateway:\n  id: g\nservice:\n  web:\n    listen: 0.0.0.0:8080\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    assert str(exc.value.problems[0]).startswith("gw.yaml:5: service.web.listen: the page on 0.0.0.0 can be reached")
    assert parse_config("gateway:\n  id: g\nservice:\n  web: {}\n").service.web.listen == "127.0.0.1:8080"


@pytest.mark.parametrize("host, status", [("127.0.0.1:8080", "200"), ("localhost:8080", "200"), ("[::1]:8080", "200"),
                                          ("rebound.example:8080", "403"), ("", "403")])
def test_without_a_token_only_a_loopback_host_header_is_served(host, status):
    # A web site that rebinds its name to 127.0.0.1 sends its own name as Host: refused.
    server = WebServer("127.0.0.1:8080", None, snapshot=lambda: {"gateway": "g", "sensors": {}, "uplinks": {}})
    request = Request("GET", "/", {}, {"host": host} if host else {})
    with ThreadPoolExecutor(1) as pool:  # a thread of its own: playwright's sync API holds this one's loop
        answer = pool.submit(asyncio.run, server.respond(request)).result()
    assert answer.status.startswith(status)


def test_a_flood_of_idle_connections_is_turned_away_and_the_page_comes_back(site):
    import socket
    host, port = site["base"].removeprefix("http://").split(":")
    idle = []
    try:
        for _ in range(8):  # each holds a request slot: a request line that never ends
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\n")
            idle.append(s)
        extra = socket.create_connection((host, int(port)), timeout=10)
        assert extra.recv(100) == b""  # closed at once, not queued behind the idle ones
        extra.close()
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: _status(site["base"] + "/", {"Authorization": f"Bearer {TOKEN}"}) == 200, 30,
             what="the page to answer again")
