"""The OSRM-compatible HTTP API over a real SQLite store with Helsinki, and the `routing` CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from graph_store import polyline
from routing_api import osrm
from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers

# Points in central Helsinki, all within the bundled extract.
PTS = [(24.9384, 60.1699), (24.9500, 60.1750), (24.9450, 60.1660), (24.9420, 60.1760)]


def _coords(points: list[tuple[float, float]]) -> str:
    return ";".join(f"{lon},{lat}" for lon, lat in points)


def _settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": url, "environment": "test", "snap_max_distance_m": 500.0,
                              "table_max_locations": 1000, "route_max_locations": 500}  # fmt: skip
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[Container]:
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'routing.sqlite3'}"
    c = bootstrap(_settings(url), migrate=True)
    c.maps.import_map(helsinki_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), headers=dispatcher_headers(container)) as tc:
        yield tc


def _ok(client: TestClient, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == "Ok"
    return body


def _error(client: TestClient, url: str, code: str | tuple[str, ...], status: int = 400) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    assert isinstance(body["message"], str) and body["message"]
    codes = (code,) if isinstance(code, str) else code
    assert body["code"] in codes, body
    return body


# -- health -------------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_with_map(client: TestClient, container: Container) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["map"]["name"] == "Helsinki"
    assert body["checks"]["map"]["id"] == container.maps.active_map().id  # type: ignore[union-attr]


def test_readyz_without_map(sqlite_url: str) -> None:
    c = bootstrap(_settings(sqlite_url), migrate=True)
    try:
        with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as tc:
            response = tc.get("/readyz")
            assert response.status_code == 503
            assert response.json()["status"] == "not ready"
            assert response.json()["checks"]["map"] == "not loaded"
            assert tc.get("/healthz").status_code == 200
            # The OSRM services say so instead of failing.
            r = tc.get(f"/route/v1/driving/{_coords(PTS[:2])}")
            assert r.status_code == 503 and r.json()["code"] == "NoMap"
    finally:
        c.close()


# -- nearest ------------------------------------------------------------------------


def test_nearest_shape(client: TestClient, container: Container) -> None:
    lon, lat = PTS[0]
    body = _ok(client, f"/nearest/v1/driving/{lon},{lat}")
    (wp,) = body["waypoints"]
    assert len(wp["location"]) == 2
    snapped_lon, snapped_lat = wp["location"]
    assert abs(snapped_lon - lon) < 0.01 and abs(snapped_lat - lat) < 0.01
    assert 0 <= wp["distance"] < 50
    assert len(wp["nodes"]) == 2 and all(isinstance(n, int) for n in wp["nodes"])
    net = container.graph.snapshot.graph.network
    osm_ids = set(net.node_osm_id.tolist())
    assert set(wp["nodes"]) <= osm_ids and wp["nodes"][0] != wp["nodes"][1]
    assert body["graph_version"] == container.maps.active_map().id  # type: ignore[union-attr]
    assert isinstance(body["traffic_epoch"], int)


def test_nearest_refuses_number_above_one(client: TestClient) -> None:
    lon, lat = PTS[0]
    _error(client, f"/nearest/v1/driving/{lon},{lat}?number=3", "InvalidOptions")
    _ok(client, f"/nearest/v1/driving/{lon},{lat}?number=1")


def test_nearest_takes_one_coordinate(client: TestClient) -> None:
    _error(client, f"/nearest/v1/driving/{_coords(PTS[:2])}", "InvalidQuery")


# -- route --------------------------------------------------------------------------


@pytest.mark.parametrize("geometries", ["polyline", "polyline6", "geojson"])
def test_route_geometry_ends_at_the_waypoints(client: TestClient, geometries: str) -> None:
    body = _ok(client, f"/route/v1/driving/{_coords(PTS[:3])}?geometries={geometries}&overview=full")
    (route,) = body["routes"]
    geometry = route["geometry"]
    if geometries == "geojson":
        assert geometry["type"] == "LineString"
        coords = np.asarray(geometry["coordinates"])
        lon, lat = coords[:, 0], coords[:, 1]
        tol = 1e-6
    else:
        lat, lon = polyline.decode(geometry, 6 if geometries == "polyline6" else 5)
        tol = 1e-5 if geometries == "polyline6" else 1e-5 + 5e-6
    assert lat.size >= 2
    first, last = body["waypoints"][0]["location"], body["waypoints"][-1]["location"]
    assert abs(lon[0] - first[0]) <= tol and abs(lat[0] - first[1]) <= tol
    assert abs(lon[-1] - last[0]) <= tol and abs(lat[-1] - last[1]) <= tol


def test_route_polyline6_matches_geojson(client: TestClient) -> None:
    base = f"/route/v1/driving/{_coords(PTS[:2])}?overview=full"
    p6 = _ok(client, base + "&geometries=polyline6")["routes"][0]["geometry"]
    gj = np.asarray(_ok(client, base + "&geometries=geojson")["routes"][0]["geometry"]["coordinates"])
    lat, lon = polyline.decode(p6, 6)
    np.testing.assert_allclose(lat, gj[:, 1], atol=1.1e-6)
    np.testing.assert_allclose(lon, gj[:, 0], atol=1.1e-6)


def test_route_legs_and_totals(client: TestClient) -> None:
    body = _ok(client, f"/route/v1/driving/{_coords(PTS)}?overview=false")
    (route,) = body["routes"]
    assert "geometry" not in route
    assert len(route["legs"]) == len(PTS) - 1
    assert len(body["waypoints"]) == len(PTS)
    assert route["duration"] == pytest.approx(sum(leg["duration"] for leg in route["legs"]), abs=0.05 * len(PTS))
    assert route["distance"] == pytest.approx(sum(leg["distance"] for leg in route["legs"]), abs=0.05 * len(PTS))
    assert route["weight"] == route["duration"] and route["weight_name"] == "duration"
    for leg in route["legs"]:
        assert leg["duration"] > 0 and leg["distance"] > 0


def test_route_overview_default_has_geometry(client: TestClient) -> None:
    route = _ok(client, f"/route/v1/driving/{_coords(PTS[:2])}")["routes"][0]
    assert isinstance(route["geometry"], str) and route["geometry"]


def test_route_with_coordinates_as_polyline(client: TestClient) -> None:
    lons = [p[0] for p in PTS[:2]]
    lats = [p[1] for p in PTS[:2]]
    plain = _ok(client, f"/route/v1/driving/{_coords(PTS[:2])}?overview=false")["routes"][0]
    encoded = polyline.encode(lats, lons, 6)
    via_polyline = _ok(client, f"/route/v1/driving/polyline6({encoded})?overview=false")["routes"][0]
    assert via_polyline["duration"] == plain["duration"]


def test_route_depart_at(client: TestClient) -> None:
    url = f"/route/v1/driving/{_coords(PTS[:2])}?overview=false"
    free = _ok(client, url)["routes"][0]["duration"]
    timed = _ok(client, url + "&depart_at=2025-06-02T08:30:00%2B03:00")["routes"][0]["duration"]
    assert timed == free  # no traffic in this database


# -- table --------------------------------------------------------------------------


def test_table_shape_and_diagonal(client: TestClient) -> None:
    body = _ok(client, f"/table/v1/driving/{_coords(PTS)}?annotations=duration,distance")
    durations = np.asarray(body["durations"], dtype=float)
    distances = np.asarray(body["distances"], dtype=float)
    assert durations.shape == distances.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(durations), 0)
    np.testing.assert_array_equal(np.diag(distances), 0)
    off = ~np.eye(4, dtype=bool)
    assert np.all(durations[off] > 0) and np.all(distances[off] > 0)
    assert len(body["sources"]) == len(body["destinations"]) == 4


def test_table_defaults_to_durations_only(client: TestClient) -> None:
    body = _ok(client, f"/table/v1/driving/{_coords(PTS[:3])}")
    assert "durations" in body and "distances" not in body
    body = _ok(client, f"/table/v1/driving/{_coords(PTS[:3])}?annotations=distance")
    assert "distances" in body and "durations" not in body


def test_table_subsets_equal_routes(client: TestClient) -> None:
    sources, destinations = [0, 2], [1, 3, 0]
    body = _ok(client, f"/table/v1/driving/{_coords(PTS)}?sources=0;2&destinations=1;3;0"
                       "&annotations=duration,distance")  # fmt: skip
    durations = np.asarray(body["durations"], dtype=float)
    distances = np.asarray(body["distances"], dtype=float)
    assert durations.shape == (2, 3)
    full = _ok(client, f"/table/v1/driving/{_coords(PTS)}?annotations=duration,distance")
    np.testing.assert_array_equal(durations, np.asarray(full["durations"])[np.ix_(sources, destinations)])
    assert [wp["location"] for wp in body["sources"]] == [full["sources"][i]["location"] for i in sources]
    assert [wp["location"] for wp in body["destinations"]] == [
        full["destinations"][j]["location"] for j in destinations
    ]
    for a, i in enumerate(sources):
        for b, j in enumerate(destinations):
            if i == j:
                assert durations[a, b] == 0
                continue
            route = _ok(client, f"/route/v1/driving/{_coords([PTS[i], PTS[j]])}?overview=false")["routes"][0]
            assert durations[a, b] == pytest.approx(route["duration"], abs=0.1)
            assert distances[a, b] == pytest.approx(route["distance"], abs=0.1)


def test_unreachable_pairs_are_null_not_zero() -> None:
    body = orjson.loads(osrm.osrm_json({"durations": osrm._matrix(np.array([[0.0, math.inf], [12.34, 0.0]]))}).body)
    assert body["durations"] == [[0.0, None], [12.3, 0.0]]


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/route/v1/driving/abc",
        "/route/v1/driving/24.9384,60.1699;24.95",
        "/route/v1/driving/24.9384;60.1699",
        "/table/v1/driving/24.9384,60.1699;;24.95,60.175",
        "/route/v1/driving/polyline6(abc)",
        "/nearest/v1/driving/x,y",
    ],
)
def test_malformed_coordinates(client: TestClient, path: str) -> None:
    _error(client, path, "InvalidQuery")


@pytest.mark.parametrize(
    "path",
    [
        "/route/v1/driving/24.9384,999;24.95,60.175",
        "/route/v1/driving/24.9384,60.1699;200,60.175",
        "/nearest/v1/driving/24.9384,-91",
        "/table/v1/driving/24.9384,60.1699;24.95,1e999",
    ],
)
def test_invalid_coordinate_values(client: TestClient, path: str) -> None:
    _error(client, path, "InvalidValue")


def test_point_far_from_roads(client: TestClient) -> None:
    body = _error(client, f"/route/v1/driving/{_coords(PTS[:1])};0,0", "NoSegment")
    assert "1" in body["message"]
    _error(client, "/nearest/v1/driving/0,0", "NoSegment")
    _error(client, f"/table/v1/driving/0,0;{_coords(PTS[:1])}", "NoSegment")


def test_radiuses_limit_snapping(client: TestClient) -> None:
    lon, lat = PTS[0]
    far = (lon, lat + 0.002)  # ~220 m north of the first point
    wp = _ok(client, f"/nearest/v1/driving/{far[0]},{far[1]}")["waypoints"][0]
    assert wp["distance"] > 1
    _error(client, f"/nearest/v1/driving/{far[0]},{far[1]}?radiuses={wp['distance'] / 2}", "NoSegment")
    _ok(client, f"/nearest/v1/driving/{far[0]},{far[1]}?radiuses=unlimited")


def test_too_many_coordinates(sqlite_url: str, helsinki_path: Path) -> None:
    c = bootstrap(_settings(sqlite_url, table_max_locations=3), migrate=True)
    try:
        c.maps.import_map(helsinki_path)
        with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as tc:
            _ok(tc, f"/table/v1/driving/{_coords(PTS[:3])}")
            _error(tc, f"/table/v1/driving/{_coords(PTS)}", "TooBig")
    finally:
        c.close()


def test_too_many_route_coordinates(sqlite_url: str, helsinki_path: Path) -> None:
    c = bootstrap(_settings(sqlite_url, route_max_locations=3), migrate=True)
    try:
        c.maps.import_map(helsinki_path)
        with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as tc:
            _ok(tc, f"/route/v1/driving/{_coords(PTS[:3])}?overview=false")
            _error(tc, f"/route/v1/driving/{_coords(PTS)}", "TooBig")
    finally:
        c.close()


@pytest.mark.parametrize(
    "query",
    [
        "geometries=foo",
        "overview=sometimes",
        "annotations=true",
        "radiuses=1",
        "radiuses=10;abc",
        "radiuses=-5;10",
        "depart_at=yesterday",
        "steps=true",
        "alternatives=true",
    ],
)
def test_bad_route_option_values(client: TestClient, query: str) -> None:
    _error(client, f"/route/v1/driving/{_coords(PTS[:2])}?{query}", "InvalidOptions")


@pytest.mark.parametrize(
    "query", ["sources=9", "sources=", "sources=a", "destinations=-1", "annotations=speed", "annotations="]
)
def test_bad_table_option_values(client: TestClient, query: str) -> None:
    _error(client, f"/table/v1/driving/{_coords(PTS[:2])}?{query}", "InvalidOptions")


@pytest.mark.parametrize("service", ["route", "table", "nearest"])
def test_unknown_option(client: TestClient, service: str) -> None:
    coords = _coords(PTS[:1]) if service == "nearest" else _coords(PTS[:2])
    body = _error(client, f"/{service}/v1/driving/{coords}?foo=1", "InvalidOptions")
    assert "foo" in body["message"]


def test_accepted_osrm_options_that_change_nothing(client: TestClient) -> None:
    url = f"/route/v1/driving/{_coords(PTS[:2])}?overview=false"
    plain = _ok(client, url)["routes"][0]
    same = _ok(client, url + "&steps=false&alternatives=false&generate_hints=false&continue_straight=default")
    assert same["routes"][0]["duration"] == plain["duration"]


def test_unknown_service_path(client: TestClient) -> None:
    response = client.get("/foo/v1/driving/1,2")
    assert response.status_code in (400, 404)
    assert response.status_code < 500


@pytest.mark.parametrize(
    "path",
    [
        "/route/v1/driving",
        "/route/v1/driving/",
        "/route/v1",
        "/table/v1/driving",
        "/nearest/v1/driving/",
        "/table/v2/driving/24.9384,60.1699",
        "/route/v1/driving/24.9384,60.1699;24.95,60.175/extra",
        "/route/v1/dr!ving/24.9384,60.1699;24.95,60.175",
        "/trip/v1/driving",
        "/match/v2/driving/24.9384,60.1699;24.95,60.175",
    ],
)
def test_malformed_osrm_urls(client: TestClient, path: str) -> None:
    _error(client, path, ("InvalidUrl", "InvalidService"))


# -- CLI ----------------------------------------------------------------------------


def _cli(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
    env["ROUTING_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "routing_api.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_cli_upgrade_and_import(tmp_path: Path, sqlite_url: str) -> None:
    up = _cli(tmp_path, sqlite_url, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    first = _cli(tmp_path, sqlite_url, "import-map")
    assert first.returncode == 0, first.stderr
    assert "Helsinki: imported" in first.stdout
    second = _cli(tmp_path, sqlite_url, "import-map")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    listed = _cli(tmp_path, sqlite_url, "maps", "list")
    assert listed.returncode == 0 and "Helsinki" in listed.stdout and listed.stdout.lstrip().startswith("*")
    empty = tmp_path / "empty.osm.pbf"
    empty.write_bytes(b"")
    bad = _cli(tmp_path, sqlite_url, "import-map", str(empty))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error:")
    assert "Traceback" not in bad.stderr and "Traceback" not in bad.stdout
    # Nothing was written: the Helsinki map is still the only one and active.
    listed_again = _cli(tmp_path, sqlite_url, "maps", "list")
    assert listed_again.stdout == listed.stdout


def test_cli_import_before_upgrade_fails(tmp_path: Path, sqlite_url: str) -> None:
    result = _cli(tmp_path, sqlite_url, "import-map")
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_files_and_traffic(tmp_path: Path, sqlite_url: str) -> None:
    assert _cli(tmp_path, sqlite_url, "db", "upgrade").returncode == 0
    missing = _cli(tmp_path, sqlite_url, "import-map", str(tmp_path / "nope.osm.pbf"))
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
    no_map = _cli(tmp_path, sqlite_url, "traffic", "observe", "--edge", "1", "--speed-kph", "10")
    assert no_map.returncode == 2 and no_map.stderr.startswith("error:")
    assert _cli(tmp_path, sqlite_url, "import-map").returncode == 0
    observed = _cli(tmp_path, sqlite_url, "traffic", "observe", "--edge", "1", "--speed-kph", "10")
    assert observed.returncode == 0, observed.stderr
    assert observed.stdout.strip() == "traffic epoch 1"
    bad_edge = _cli(tmp_path, sqlite_url, "traffic", "observe", "--edge", "999999", "--speed-kph", "10")
    assert bad_edge.returncode == 2 and "Traceback" not in bad_edge.stderr
    if_empty = _cli(tmp_path, sqlite_url, "import-map", "--if-empty")
    assert if_empty.returncode == 0 and "nothing imported" in if_empty.stdout


def test_service_unavailable_says_when_to_retry() -> None:
    from routing_api.osrm import OsrmError, error_response

    busy = error_response(OsrmError("ServiceUnavailable", "optimizer busy", 503))
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert "Retry-After" not in error_response(OsrmError("InvalidQuery", "bad", 400)).headers
