"""The dispatcher admin UI in a real headless Chromium against a real HTTP server.

Drives the page as a dispatcher would: sign in, read the map, drivers and KPIs, watch them change
after route requests, slow a road and an area down (the traffic epoch changes and the next request
is planned again), flush the cache, re-plan a driver, swap the model. Every page must log no
console error and throw no page error; the layout is checked at 1400x900 and on a 390x844 phone.
Screenshots go to test-artifacts/ (git-ignored); with ROUTING_DOCS_SCREENSHOT=path the desktop one
is also written there (how docs/admin.png is made).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.auth_helpers import bearer
from tests.conftest import REPO, require
from tests.e2e.live_server import LiveServer, live_server

try:
    from playwright import sync_api as playwright_api
except ImportError:  # the browser fixture says why (and fails in CI)
    playwright_api = None


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (imported lazily: the module loads without playwright)."""
    return playwright_api.expect(target)  # type: ignore[union-attr]


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000  # for the page's 2.5 s polling to catch up: generous, the machine is shared


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[LiveServer]:
    # Pings never become live traffic here: every epoch change in these tests is the test's own.
    with live_server(tmp_path_factory.mktemp("admin-ui"), helsinki_path, ping_traffic_interval_s=0.0) as live:
        yield live


@pytest.fixture(scope="module")
def api(server: LiveServer) -> Iterator[httpx.Client]:
    token = server.container.tokens.create("dispatcher", name="e2e api", rate_per_s=0)
    with httpx.Client(base_url=server.url, headers=bearer(token), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def fleet(server: LiveServer, api: httpx.Client) -> dict[str, dict[str, Any]]:
    """Three drivers with planned routes and pings: van-2 has a late stop, van-3's ping is stale."""
    net = server.container.graph.snapshot.graph.network
    rng = np.random.default_rng(7)
    idx = rng.choice(net.node_count, 20, replace=False)
    pts = [(float(net.node_lat[i]), float(net.node_lon[i])) for i in idx]
    now = datetime.now(UTC)

    def body(driver: str, start: tuple[float, float], stops: list[tuple[float, float]]) -> dict[str, Any]:
        return {"driver_id": driver, "start": {"lat": start[0], "lon": start[1]},
                "stops": [{"id": f"{driver}-s{k + 1}", "lat": lat, "lon": lon, "service_s": 120}
                          for k, (lat, lon) in enumerate(stops)]}  # fmt: skip

    bodies = {"van-1": body("van-1", pts[0], pts[1:7]), "van-2": body("van-2", pts[7], pts[8:13]),
              "van-3": body("van-3", pts[13], pts[14:18])}  # fmt: skip
    # A window that closed a second after now: whatever the order, that stop is late.
    bodies["van-2"]["stops"][2]["window"] = {"earliest": (now - timedelta(hours=1)).isoformat(),
                                             "latest": (now + timedelta(seconds=1)).isoformat()}  # fmt: skip

    def on_the_way(b: dict[str, Any]) -> tuple[float, float]:
        """The intersection nearest to halfway from the start to the first stop asked for (not the planned
        first stop: the search's time budget decides the order)."""
        lat = (b["start"]["lat"] + b["stops"][0]["lat"]) / 2
        lon = (b["start"]["lon"] + b["stops"][0]["lon"]) / 2
        j = int(np.argmin((net.node_lat - lat) ** 2 + ((net.node_lon - lon) * np.cos(np.radians(lat))) ** 2))
        return float(net.node_lat[j]), float(net.node_lon[j])

    pings = {driver: on_the_way(b) for driver, b in bodies.items()}
    for driver, b in bodies.items():
        r = api.post("/v1/routes", json=b)
        assert r.status_code == 200, r.text
        lat, lon = pings[driver]
        age = timedelta(minutes=10) if driver == "van-3" else timedelta(seconds=5)
        ping = {"lat": lat, "lon": lon, "timestamp": (now - age).isoformat(), "speed_mps": 8.0}
        assert api.post(f"/v1/drivers/{driver}/positions", json=ping).status_code == 202
    return bodies


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(playwright_api is not None, "playwright not installed (pip install -e '.[dev]')")
    require(CHROMIUM.is_file(), f"Chromium not found at {CHROMIUM} (make browser installs it)")
    playwright_api.expect.set_options(timeout=WAIT_MS)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageErrors:
    """Console messages of type error and uncaught page errors, with the ones a test expects."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def open_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """``open_page(viewport)`` -> (page, errors); after the test no unexpected error may have been logged."""
    contexts = []
    watchers: list[PageErrors] = []

    def make(viewport: dict[str, int] = DESKTOP, **kw: Any) -> tuple[Any, PageErrors]:
        ctx = browser.new_context(viewport=viewport, **kw)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        errors = PageErrors(page)
        watchers.append(errors)
        page.goto(f"{server.url}/admin")
        return page, errors

    yield make
    for ctx in contexts:
        ctx.close()
    for w in watchers:
        assert w.unexpected() == [], "the page logged errors"


def sign_in(page: Any, token: str) -> None:
    page.fill("input[name=token]", token)
    page.click("#login-form button[type=submit]")


def dispatcher_token(server: LiveServer) -> str:
    return server.container.tokens.create("dispatcher", name=f"ui-{uuid.uuid4().hex[:6]}", rate_per_s=0)


def signed_in(open_page: Any, server: LiveServer, viewport: dict[str, int] = DESKTOP, **kw: Any) -> Any:
    page, _ = open_page(viewport, **kw)
    sign_in(page, dispatcher_token(server))
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.get_by_test_id("map")).not_to_have_attribute("data-roads", "0")
    return page


def screenshot(page: Any, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def kpi_total(page: Any) -> int:
    """The requests answered since start, from the requests tile's basis line."""
    text = page.get_by_test_id("kpi-requests").inner_text()
    return int(re.search(r"(\d+) answered since start", text).group(1))  # type: ignore[union-attr]


def driver_row(page: Any, driver: str) -> Any:
    return page.get_by_test_id("drivers").locator(f"tbody tr[data-id='{driver}']")


# -- tests ------------------------------------------------------------------------------------


def test_static_shell_is_public_and_data_needs_a_dispatcher(server: LiveServer, fleet: dict[str, Any]) -> None:
    assert httpx.get(f"{server.url}/admin").status_code == 200
    assert httpx.get(f"{server.url}/admin/static/admin.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.url}/admin/static/missing.js").status_code == 404
    for path in ("/v1/admin/overview", "/v1/admin/network", "/v1/admin/drivers", "/v1/admin/requests"):
        assert httpx.get(server.url + path).status_code == 401, path
    driver = server.container.tokens.create("driver", driver_id="van-1", rate_per_s=0)
    assert httpx.get(f"{server.url}/v1/admin/drivers", headers=bearer(driver)).status_code == 403
    r = httpx.post(f"{server.url}/v1/admin/traffic", json={"edge": 0, "speed_factor": 0.5}, headers=bearer(driver))
    assert r.status_code == 403


def test_sign_in_refuses_unknown_and_driver_tokens(open_page: Any, server: LiveServer, fleet: dict[str, Any]) -> None:
    page, errors = open_page()
    # The browser logs each refused call as a failed resource load: those are the point here.
    errors.expect(r"status of 40[13]")
    expect(page.locator("input[name=token]")).to_be_visible()
    expect(page.locator("#app-view")).to_be_hidden()
    sign_in(page, "rt_not-a-token")
    expect(page.get_by_test_id("login-error")).to_contain_text("Token rejected")
    sign_in(page, server.container.tokens.create("driver", driver_id="van-1", rate_per_s=0))
    expect(page.get_by_test_id("login-error")).to_contain_text("not a dispatcher token")
    expect(page.locator("#app-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_dashboard_shows_the_fleet_and_changes_with_new_requests(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    page = signed_in(open_page, server)
    # every call carried the token, kept in sessionStorage for this tab only
    assert page.evaluate("Object.keys(sessionStorage)") == ["routing.admin.token"]
    expect(page.locator("#h-map")).to_contain_text("Helsinki")
    drivers = page.get_by_test_id("drivers")
    for driver in fleet:
        expect(driver_row(page, driver)).to_be_visible()
    expect(driver_row(page, "van-2").locator(".badge")).to_have_text(re.compile(r"late \(\d+\)"))
    expect(driver_row(page, "van-1").locator(".badge")).to_have_text("on time")
    expect(driver_row(page, "van-3")).to_contain_text("10 min ago")
    expect(driver_row(page, "van-1")).to_contain_text("6 / 6")
    # the map drew the network, three driver markers and three routes
    map_el = page.get_by_test_id("map")
    expect(map_el).to_have_attribute("data-drivers", "3")
    expect(map_el).to_have_attribute("data-routes", "3")
    assert int(map_el.get_attribute("data-roads")) > 500
    expect(page.get_by_test_id("kpi-on-time")).to_contain_text("of 15 planned stops")
    expect(page.get_by_test_id("kpi-workers").locator(".value")).to_have_text("1")
    expect(page.get_by_test_id("requests").locator("tbody tr[data-id]")).to_have_count(3)
    before = kpi_total(page)
    cache_before = page.get_by_test_id("kpi-cache-hit").inner_text()

    # New requests: one more driver, and a repeat of van-1's (a cache hit)
    new_body = {**fleet["van-1"], "driver_id": "van-4"}
    new_body["stops"] = [dict(s, id=s["id"].replace("van-1", "van-4")) for s in fleet["van-1"]["stops"][:3]]
    assert api.post("/v1/routes", json=new_body).json()["cache"] == "miss"
    assert api.post("/v1/routes", json=fleet["van-1"]).json()["cache"] == "hit"
    expect(driver_row(page, "van-4")).to_be_visible()
    expect(driver_row(page, "van-4")).to_contain_text("3 / 3")
    page.wait_for_function(
        f"document.querySelector('[data-testid=kpi-requests]').innerText.includes('{before + 2} answered')"
    )
    assert kpi_total(page) == before + 2
    expect(page.get_by_test_id("kpi-cache-hit")).not_to_have_text(cache_before)
    expect(page.get_by_test_id("requests").locator("tbody tr[data-id]")).to_have_count(5)
    expect(page.get_by_test_id("requests").locator("tbody tr").first.locator(".badge.hit")).to_be_visible()
    expect(page.get_by_test_id("latency-chart")).not_to_have_attribute("data-points", "0")
    expect(page.get_by_test_id("map")).to_have_attribute("data-routes", "4")

    # Click a request: its timings per layer
    page.get_by_test_id("requests").locator("tbody tr[data-id]").nth(1).click()
    detail = page.get_by_test_id("request-detail")
    expect(detail).to_be_visible()
    for layer in ("ingest", "queue wait", "inference", "search", "post", "total"):
        expect(detail).to_contain_text(layer)
    expect(detail).to_contain_text("batch of")
    expect(drivers).to_be_visible()
    driver_row(page, "van-2").click()
    expect(page.get_by_test_id("driver-detail")).to_be_visible()
    screenshot(page, "admin-desktop.png", capsys)


def test_map_pans_and_zooms(open_page: Any, server: LiveServer, fleet: dict[str, Any]) -> None:
    page = signed_in(open_page, server)
    map_el = page.get_by_test_id("map")
    expect(map_el).to_have_attribute("data-zoom", "1.000")
    box = map_el.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -400)  # wheel up: zoom in around the cursor
    page.wait_for_function("Number(document.querySelector('[data-testid=map]').dataset.zoom) > 1.5")
    centre = map_el.get_attribute("data-center")
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 40, steps=6)  # drag: pan
    page.mouse.up()
    expect(map_el).not_to_have_attribute("data-center", centre)
    lat, lon = (float(v) for v in map_el.get_attribute("data-center").split(","))
    lat0, lon0 = (float(v) for v in centre.split(","))
    assert lat > lat0 and lon < lon0  # dragging right and down shows what lies west and north
    page.click("#zoom-fit")
    expect(map_el).to_have_attribute("data-zoom", "1.000")
    page.click("#zoom-out")
    expect(map_el).to_have_attribute("data-zoom", re.compile(r"0\.6\d+"))


def test_clicking_a_driver_shows_its_stops(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any]
) -> None:
    page = signed_in(open_page, server)
    expect(page.get_by_test_id("map")).not_to_have_attribute("data-routes", "0")
    # Click van-2's marker on the map canvas: where the page's fitted view puts its last ping.
    drivers = api.get("/v1/admin/drivers").json()["drivers"]
    van2 = next(d for d in drivers if d["driver_id"] == "van-2")
    x, y = _marker_position(page, api, van2["position"]["lat"], van2["position"]["lon"])
    # nothing of another driver is drawn within the page's click radius (14 px) of that marker
    others = [
        (d["position"]["lat"], d["position"]["lon"]) for d in drivers if d["driver_id"] != "van-2" and d["position"]
    ]
    others += [
        (s["lat"], s["lon"]) for d in drivers if d["driver_id"] != "van-2" and d["route"] for s in d["route"]["stops"]
    ]
    for lat, lon in others:
        ox, oy = _marker_position(page, api, lat, lon)
        assert np.hypot(ox - x, oy - y) > 14, "the seeded layout puts another driver's marker under van-2's"
    page.get_by_test_id("map").click(position={"x": x, "y": y})
    detail = page.get_by_test_id("driver-detail")
    expect(detail).to_be_visible()
    expect(detail.locator("#dd-title")).to_have_text("van-2")
    rows = page.get_by_test_id("driver-stops").locator("tbody tr")
    expect(rows).to_have_count(5)
    late = page.get_by_test_id("driver-stops").locator("tbody tr.late")
    expect(late).to_have_count(1)
    expect(late).to_contain_text("van-2-s3")
    expect(late).to_contain_text("late")
    expect(rows.first).to_contain_text(re.compile(r"\d\d:\d\d:\d\d"))  # planned ETA
    expect(late).to_contain_text(re.compile(r"\d\d:\d\d–\d\d:\d\d"))  # its time window
    expect(driver_row(page, "van-2")).to_have_class(re.compile("selected"))
    # and from the table
    driver_row(page, "van-1").click()
    expect(detail.locator("#dd-title")).to_have_text("van-1")
    expect(page.get_by_test_id("driver-stops").locator("tbody tr")).to_have_count(6)
    expect(page.get_by_test_id("driver-stops").locator("tbody tr.late")).to_have_count(0)


def _marker_position(page: Any, api: httpx.Client, lat: float, lon: float) -> tuple[float, float]:
    """Screen position of a point in the map's initial view (the same fit as the page: bbox + 8 %)."""
    net = api.get("/v1/admin/network").json()
    min_lat, min_lon, max_lat, max_lon = net["bbox"]
    lat0, lon0 = (min_lat + max_lat) / 2, (min_lon + max_lon) / 2
    mx = 110_574 * np.cos(np.radians(lat0))
    box = page.get_by_test_id("map").bounding_box()
    w, h = box["width"], box["height"]
    s = min(w / ((max_lon - min_lon) * mx * 1.08), h / ((max_lat - min_lat) * 110_574 * 1.08))
    return w / 2 + (lon - lon0) * mx * s, h / 2 - (lat - lat0) * 110_574 * s


def test_traffic_update_changes_the_epoch_and_the_next_route(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    page = signed_in(open_page, server)
    epoch = server.container.graph.snapshot.epoch
    expect(page.get_by_test_id("header-epoch")).to_have_text(str(epoch))
    # A road van-1 drives: the edge its second stop snaps to
    stop = fleet["van-1"]["stops"][1]
    edge = int(
        server.container.graph.snapshot.graph.snap(np.array([stop["lat"]]), np.array([stop["lon"]]), 500).edge[0]
    )
    page.fill("#t-edge", str(edge))
    page.select_option("#t-factor", "0.1")
    page.get_by_test_id("apply-traffic").click()
    expect(page.get_by_test_id("feedback-traffic")).to_contain_text(f"Traffic epoch {epoch} → {epoch + 1}")
    expect(page.get_by_test_id("header-epoch")).to_have_text(str(epoch + 1))
    expect(page.get_by_test_id("kpi-epoch").locator(".value")).to_have_text(str(epoch + 1))
    live = api.get("/v1/admin/overview").json()["traffic"]["live"]
    slowed = {o["edge"]: o for o in live}
    assert edge in slowed and slowed[edge]["speed_kph"] == pytest.approx(slowed[edge]["free_flow_kph"] * 0.1, abs=0.1)
    # The same request is planned again under the new epoch (its cache key has the epoch)
    again = api.post("/v1/routes", json=fleet["van-1"]).json()
    assert again["cache"] == "miss" and again["versions"]["traffic_epoch"] == epoch + 1
    driver_row(page, "van-1").click()
    expect(page.locator("#dd-sub")).to_contain_text(f"epoch {epoch + 1}")

    # An area drawn on the map: press "Draw on map", drag a box over the middle of the map
    page.click("#draw-area")
    box = page.get_by_test_id("map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 80, cy - 60)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 80, cy + 60, steps=5)
    page.mouse.up()
    expect(page.locator("#t-bbox")).not_to_have_text("none drawn")
    assert page.locator("#traffic-form input[value=bbox]").is_checked()
    page.select_option("#t-factor", "0.5")
    page.get_by_test_id("apply-traffic").click()
    feedback = page.get_by_test_id("feedback-traffic")
    expect(feedback).to_contain_text(f"Traffic epoch {epoch + 1} → {epoch + 2}")
    expect(feedback).to_contain_text("50 % of free-flow speed")
    segments = int(re.search(r": (\d+) road segment", feedback.inner_text()).group(1))  # type: ignore[union-attr]
    assert segments > 2
    expect(page.get_by_test_id("header-epoch")).to_have_text(str(epoch + 2))
    # the slowed roads are on the map: show it with van-2's stops and a request's timings
    driver_row(page, "van-2").click()
    page.get_by_test_id("requests").locator("tbody tr[data-id]").first.click()
    expect(page.get_by_test_id("request-detail")).to_contain_text("batch of")
    path = screenshot(page, "admin-traffic.png", capsys)
    docs = os.environ.get("ROUTING_DOCS_SCREENSHOT")
    if docs:
        (REPO / docs).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, REPO / docs)

    # A bad edge id is refused with a message naming the field
    page.click("#traffic-form input[value=edge]")
    page.fill("#t-edge", "999999")
    page.get_by_test_id("apply-traffic").click()
    expect(feedback).to_contain_text("edge: edge must be in 0..")
    assert server.container.graph.snapshot.epoch == epoch + 2


def test_flush_cache_from_the_page(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any]
) -> None:
    page = signed_in(open_page, server)
    api.post("/v1/routes", json=fleet["van-3"])
    assert api.post("/v1/routes", json=fleet["van-3"]).json()["cache"] == "hit"
    page.get_by_test_id("flush-cache").click()
    expect(page.get_by_test_id("feedback-flush")).to_contain_text(re.compile(r"Flushed [1-9]\d* cached route"))
    assert api.post("/v1/routes", json=fleet["van-3"]).json()["cache"] == "miss"


def test_replan_a_driver_from_its_last_position(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any]
) -> None:
    page = signed_in(open_page, server)
    before = next(d for d in api.get("/v1/admin/drivers").json()["drivers"] if d["driver_id"] == "van-2")
    driver_row(page, "van-2").click()
    page.get_by_test_id("replan").click()
    expect(page.get_by_test_id("feedback-replan")).to_contain_text("Re-planned 5 stops from the last position")
    after = next(d for d in api.get("/v1/admin/drivers").json()["drivers"] if d["driver_id"] == "van-2")
    assert after["route"]["route_id"] != before["route"]["route_id"]
    assert after["route"]["start"] == {"lat": before["position"]["lat"], "lon": before["position"]["lon"]}
    assert after["route"]["end"] == fleet["van-2"]["start"]  # "return" still means back to the depot
    assert sorted(s["id"] for s in after["route"]["stops"]) == sorted(s["id"] for s in fleet["van-2"]["stops"])
    expect(page.locator("#dd-sub")).to_contain_text(after["route"]["route_id"][:8])


def test_revoked_token_returns_to_sign_in(open_page: Any, server: LiveServer, fleet: dict[str, Any]) -> None:
    page, errors = open_page()
    errors.expect(r"status of 401")
    token = dispatcher_token(server)
    sign_in(page, token)
    expect(page.locator("#app-view")).to_be_visible()
    assert server.container.tokens.revoke(token) == 1
    # the next poll after the token cache's freshness (5 s) is refused
    expect(page.locator("input[name=token]")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("login-error")).to_contain_text("Signed out")
    assert page.evaluate("sessionStorage.length") == 0


def test_phone_layout(
    open_page: Any, server: LiveServer, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    page = signed_in(open_page, server, PHONE, has_touch=True, is_mobile=True, device_scale_factor=2)
    expect(page.get_by_test_id("drivers").locator("tbody tr[data-id]").first).to_be_visible()
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate("document.body.scrollWidth") <= width
    map_box = page.get_by_test_id("map").bounding_box()
    assert map_box["width"] > 300 and map_box["height"] > 250 and map_box["x"] >= 0
    assert map_box["x"] + map_box["width"] <= width
    # one column: the drivers table comes below the map, the KPI tiles two per row
    drivers_box = page.get_by_test_id("drivers").bounding_box()
    assert drivers_box["y"] > map_box["y"] + map_box["height"]
    tiles = [page.get_by_test_id(t).bounding_box() for t in ("kpi-requests", "kpi-latency-p50", "kpi-latency-p99")]
    assert tiles[0]["y"] == tiles[1]["y"] and tiles[2]["y"] > tiles[0]["y"]
    # a tap on a driver row opens its stops
    driver_row(page, "van-1").tap()
    expect(page.get_by_test_id("driver-detail")).to_be_visible()
    screenshot(page, "admin-phone.png", capsys)


def test_activate_another_model_backend(open_page: Any, server: LiveServer, api: httpx.Client) -> None:
    page = signed_in(open_page, server)
    current = api.get("/v1/admin/overview").json()["model"]
    other = "torch" if current["backend"] != "torch" else "onnxruntime"
    page.select_option("#m-backend", other)
    page.get_by_test_id("activate-model").click()
    expect(page.get_by_test_id("feedback-model")).to_contain_text(f"on {other}", timeout=120_000)
    expect(page.get_by_test_id("kpi-model")).to_contain_text(f"backend {other}")
    assert api.get("/v1/admin/overview").json()["model"]["backend"] == other


def store_profile(server: LiveServer, seed: int, gnn_median: float, *, activate: bool = True) -> str:
    """An untrained (seeded) ETA GNN of the map, stored as a learned travel-time profile; returns its version."""
    try:
        import torch

        from gnn_model.eta.export import export_onnx, version_of
        from gnn_model.eta.model import EtaConfig, EtaGnn
        from travel_times.learn import edge_model_inputs
    except ImportError as exc:
        require(False, f"the ETA model needs torch: {exc}")
        raise
    c = server.container
    inputs, _, _ = edge_model_inputs(c.graph.snapshot.graph)
    torch.manual_seed(seed)
    onnx_model = export_onnx(EtaGnn(EtaConfig(edge_features=int(inputs.x.shape[1]))).eval(), inputs)
    version = version_of(onnx_model)
    figures = {"base": 0.312, "global_factor": 0.241, "class_least_squares": 0.208, "edge_means": 0.187,
               "gnn": gnn_median}  # fmt: skip
    metrics = {"trips_on_map": 48_213, "trained_from": "2016-01-01T00:00:00", "trained_until": "2016-05-31T23:59:59",
               "holdout_from": "2016-06-01T00:00:00", "holdout_trips": 6_120, "epochs": 40, "fit_s": 95.2,
               "holdout": {m: {"trips": 6_120, "mape": round(v * 1.3, 4), "median_ape": v, "mae_s": round(900 * v, 1),
                               "bias": round(1 + (0.08 if m == "base" else -0.3 * v / 5), 4),
                               **({"p10_p90_coverage": 0.781} if m == "gnn" else {})}
                           for m, v in figures.items()}}  # fmt: skip
    c.maps.save_learned_profile(c.graph.map.id, version, onnx_model, metrics, source="trips",
                                timezone="America/New_York", activate=activate)  # fmt: skip
    return version


def test_travel_times_panel_shows_and_switches_learned_profiles(
    open_page: Any, server: LiveServer, api: httpx.Client, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    c = server.container
    page = signed_in(open_page, server)
    panel = page.get_by_test_id("travel-times")
    if not c.maps.learned_profiles(c.graph.map.id):
        expect(page.get_by_test_id("travel-none")).to_be_visible()
        expect(page.locator("#tp-version")).to_have_text("base model (none)")
        expect(page.get_by_test_id("activate-profile")).to_be_disabled()

    older = store_profile(server, 1, 0.152, activate=False)
    newer = store_profile(server, 2, 0.121)
    c.graph.refresh()  # as the service's traffic refresher would: the new epoch reaches the page on its next poll
    expect(page.locator("#tp-version")).to_have_text(newer)
    expect(page.get_by_test_id("travel-none")).to_be_hidden()
    expect(page.locator("#tp-trips")).to_contain_text("48,213")
    expect(page.locator("#tp-period")).to_have_text("2016-01-01 → 2016-05-31")
    rows = page.get_by_test_id("travel-holdout").locator("tbody tr")
    expect(rows).to_have_count(5)
    gnn = page.locator("#tp-holdout tr[data-method=gnn]")
    expect(gnn).to_have_class(re.compile(r"\bgnn\b"))
    expect(gnn).to_contain_text("GNN")
    expect(gnn.locator("td")).to_have_text(["GNN (learned profile)", "12.1 %", "15.7 %", "−0.7 %", "78.1 %"])
    expect(page.locator("#tp-holdout tr[data-method=base] td").nth(4)).to_have_text("–")
    assert gnn.evaluate("r => getComputedStyle(r.cells[0]).fontWeight") in ("600", "bold")

    # switch to the older profile from the page
    page.select_option("#tp-select", older)
    page.get_by_test_id("activate-profile").click()
    feedback = page.get_by_test_id("feedback-profile")
    expect(feedback).to_contain_text(f"Travel times now from profile {older}")
    expect(page.locator("#tp-version")).to_have_text(older)
    assert c.graph.snapshot.traffic.learned_version == older
    assert api.get("/v1/admin/travel-profile").json()["in_force"] == older
    epoch = c.graph.snapshot.epoch
    expect(page.get_by_test_id("header-epoch")).to_have_text(str(epoch))
    routed = api.post("/v1/routes", json=fleet["van-1"]).json()
    assert routed["versions"]["traffic_epoch"] == epoch
    panel.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "admin-travel-times.png"
    panel.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    # The README's screenshot of this panel shows a real profile: bench/admin_travel_screenshot.py makes it.

    # and back to the base model
    page.select_option("#tp-select", "")
    page.get_by_test_id("activate-profile").click()
    expect(feedback).to_contain_text("Travel times now from the base model")
    expect(page.locator("#tp-version")).to_have_text("base model (none)")
    assert c.graph.snapshot.traffic.learned_version is None
    # nothing in force: the table shows the newest stored profile's evaluation, saying so
    expect(page.locator("#tp-eval-basis")).to_contain_text(f"{newer} (not in force)")
