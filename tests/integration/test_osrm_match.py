"""The OSRM-compatible ``match`` service over HTTP, on a real SQLite store with Helsinki."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph_store import polyline
from graph_store.geo import haversine_m
from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers

A, B = (24.9384, 60.1699), (24.9500, 60.1750)  # central Helsinki
T0 = 1_780_000_000


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[Container]:
    url = f"sqlite:///{tmp_path_factory.mktemp('match') / 'routing.sqlite3'}"
    c = bootstrap(Settings(database_url=url, environment="test", route_max_locations=500), migrate=True)
    c.maps.import_map(helsinki_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container), headers=dispatcher_headers(container)) as tc:
        yield tc


@pytest.fixture(scope="module")
def trace(client: TestClient) -> dict[str, Any]:
    """Fixes every ~50 m along the fastest route from A to B (its geometry from /route), 5 s apart,
    pushed 6 m off the road alternately left and right (north and south)."""
    body = client.get(f"/route/v1/driving/{A[0]},{A[1]};{B[0]},{B[1]}?overview=full&geometries=polyline6").json()
    lat, lon = polyline.decode(body["routes"][0]["geometry"], 6)
    d = np.concatenate(([0.0], np.cumsum(haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]))))
    at = np.arange(0.0, d[-1], 50.0)
    flat, flon = np.interp(at, d, lat), np.interp(at, d, lon)
    flat = flat + np.where(np.arange(at.size) % 2 == 0, 6.0, -6.0) / 111_195.0
    ts = T0 + 5 * np.arange(at.size)
    return {"lat": flat, "lon": flon, "ts": ts, "route_m": body["routes"][0]["distance"]}


def _coords(lat: np.ndarray, lon: np.ndarray) -> str:
    return ";".join(f"{x:.6f},{y:.6f}" for x, y in zip(lon, lat, strict=True))


def _ok(client: TestClient, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == "Ok"
    return body


def _error(client: TestClient, url: str, code: str, words: str = "") -> str:
    response = client.get(url)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    assert words in body["message"], body
    return str(body["message"])


def test_match_answers_in_osrms_shape(client: TestClient, container: Container, trace: dict[str, Any]) -> None:
    lat, lon, ts = trace["lat"], trace["lon"], trace["ts"]
    url = (f"/match/v1/driving/{_coords(lat, lon)}?timestamps={';'.join(str(int(t)) for t in ts)}"
           f"&radiuses={';'.join(['8'] * lat.size)}&overview=full&geometries=geojson&annotations=true")  # fmt: skip
    body = _ok(client, url)
    snap = container.graph.snapshot
    assert body["graph_version"] == snap.graph.map_version and body["traffic_epoch"] == snap.epoch
    (m,) = body["matchings"]
    assert 0.5 < m["confidence"] <= 1.0
    assert m["weight_name"] == "duration" and m["weight"] == m["duration"] > 0
    # The trace starts and ends within its first and last 50 m of the route: a little shorter.
    assert trace["route_m"] - 120 < m["distance"] <= trace["route_m"] + 20
    assert len(m["legs"]) == lat.size - 1
    assert sum(leg["distance"] for leg in m["legs"]) == pytest.approx(m["distance"], abs=0.1 * lat.size)
    for leg in m["legs"]:
        ann = leg["annotation"]
        assert len(ann["nodes"]) == len(ann["distance"]) + 1 == len(ann["duration"]) + 1 == len(ann["speed"]) + 1
        assert sum(ann["distance"]) == pytest.approx(leg["distance"], abs=0.1 * len(ann["distance"]) + 0.1)
    coords = np.asarray(m["geometry"]["coordinates"])
    assert m["geometry"]["type"] == "LineString" and coords.shape[1] == 2
    assert np.allclose(coords[0], [lon[0], lat[0]], atol=2e-4)
    assert len(body["tracepoints"]) == lat.size
    assert np.median([tp["distance"] for tp in body["tracepoints"]]) <= 6.5
    for i, tp in enumerate(body["tracepoints"]):
        assert tp is not None
        assert tp["matchings_index"] == 0 and tp["waypoint_index"] == i
        assert tp["alternatives_count"] >= 0 and tp["name"] == ""
        assert tp["distance"] < 20.0  # 6 m off the road driven (a carriageway, maybe, not the nearest road)
        assert float(haversine_m(lat[i], lon[i], tp["location"][1], tp["location"][0])) == pytest.approx(
            tp["distance"], abs=0.5
        )


def test_match_defaults_polyline_and_overview_false(client: TestClient, trace: dict[str, Any]) -> None:
    lat, lon = trace["lat"], trace["lon"]
    body = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}")
    (m,) = body["matchings"]
    decoded = polyline.decode(m["geometry"], 5)
    assert decoded[0].size >= 2
    p6 = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}?geometries=polyline6&overview=simplified")
    assert polyline.decode(p6["matchings"][0]["geometry"], 6)[0].size >= 2
    none = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}?overview=false&annotations=nodes,distance")
    assert "geometry" not in none["matchings"][0]
    assert set(none["matchings"][0]["legs"][0]["annotation"]) == {"nodes", "distance"}
    assert "annotation" not in body["matchings"][0]["legs"][0]


def test_match_splits_at_time_gaps_and_skips_unmatchable_fixes(client: TestClient, trace: dict[str, Any]) -> None:
    lat, lon, ts = trace["lat"].copy(), trace["lon"].copy(), trace["ts"].copy()
    k = lat.size // 2
    ts[k:] += 600
    stamps = ";".join(str(int(t)) for t in ts)
    split = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}?timestamps={stamps}")
    assert len(split["matchings"]) == 2
    assert split["tracepoints"][k]["matchings_index"] == 1 and split["tracepoints"][k]["waypoint_index"] == 0
    ignore = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}?timestamps={stamps}&gaps=ignore")
    assert len(ignore["matchings"]) == 1
    lat[3] += 0.02  # ~2 km north, in the sea: no road in reach
    body = _ok(client, f"/match/v1/driving/{_coords(lat, lon)}")
    assert body["tracepoints"][3] is None
    assert body["tracepoints"][4]["waypoint_index"] == 3


def test_match_refuses_bad_input(client: TestClient, trace: dict[str, Any]) -> None:
    lat, lon = trace["lat"][:4], trace["lon"][:4]
    base = f"/match/v1/driving/{_coords(lat, lon)}"
    _error(client, f"/match/v1/driving/{_coords(lat[:1], lon[:1])}", "InvalidQuery", "at least two")
    _error(client, f"{base}?timestamps=1;2;3", "InvalidOptions", "timestamps")
    _error(client, f"{base}?timestamps=1;2;2;3", "InvalidValue", "timestamps")
    _error(client, f"{base}?timestamps=4;3;2;1", "InvalidValue", "timestamps")
    _error(client, f"{base}?timestamps=1;x;3;4", "InvalidQuery", "timestamps[1]")
    _error(client, f"{base}?radiuses=5;5;5", "InvalidOptions", "radiuses")
    _error(client, f"{base}?radiuses=5;0;5;5", "InvalidValue", "radiuses[1]")
    _error(client, f"{base}?radiuses=5;5;500;5", "InvalidValue", "radiuses[2]")
    _error(client, f"{base}?radiuses=5;5;5;-1", "InvalidValue", "radiuses[3]")
    _error(client, f"{base}?gaps=sometimes", "InvalidOptions", "gaps")
    _error(client, f"{base}?annotations=colour", "InvalidOptions", "annotations")
    _error(client, f"{base}?steps=true", "InvalidOptions", "steps")
    _error(client, f"{base}?tidy=true", "InvalidOptions", "tidy")
    _error(client, f"{base}?frobnicate=1", "InvalidOptions", "frobnicate")
    _error(client, "/match/v1/driving/24.9,60.1;nonsense", "InvalidQuery")
    _error(client, "/match/v1/driving/25.2,60.05;25.2001,60.05", "NoMatch")  # open sea


def test_match_needs_a_dispatcher_token(client: TestClient, trace: dict[str, Any]) -> None:
    url = f"/match/v1/driving/{_coords(trace['lat'][:3], trace['lon'][:3])}"
    assert client.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
