"""The driver API end to end in monolith mode: ingest, queue + batcher + model + search, post-processing.

Runs the real app (lifespan included) on the bundled Helsinki map, SQLite, the in-memory
cache and the in-process queue; the services mode on real servers is tested elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph_store import polyline
from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers

DEPART = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # a Monday morning


def _settings(db_url: str, model_dir: Path, **kw: object) -> Settings:
    return Settings(database_url=db_url, redis_url=None, amqp_url=None, model_dir=str(model_dir),
                    max_wait_ms=2.0, **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[tuple[TestClient, Container]]:
    tmp = tmp_path_factory.mktemp("api")
    c = bootstrap(_settings(f"sqlite:///{tmp / 'db.sqlite3'}", tmp / "models", max_stops=30), migrate=True)
    c.maps.import_map(helsinki_path)
    with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as client:
        yield client, c
    c.close()


@pytest.fixture(scope="module")
def points(app_client: tuple[TestClient, Container]) -> np.ndarray:
    _, c = app_client
    net = c.graph.snapshot.graph.network
    rng = np.random.default_rng(3)
    idx = rng.choice(net.node_count, 40, replace=False)
    return np.column_stack((net.node_lat[idx], net.node_lon[idx]))


def _request(points: np.ndarray, n: int, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "driver_id": "van-1",
        "start": {"lat": float(points[0, 0]), "lon": float(points[0, 1])},
        "depart_at": DEPART.isoformat(),
        "stops": [{"id": f"s{i}", "lat": float(points[i, 0]), "lon": float(points[i, 1]), "service_s": 60}
                  for i in range(1, n + 1)],
    }  # fmt: skip
    body.update(extra)
    return body


def test_route_answer_shape_and_consistency(app_client, points) -> None:
    client, _ = app_client
    r = client.post("/v1/routes", json=_request(points, 8))
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["order"]) == sorted(f"s{i}" for i in range(1, 9))
    legs = body["legs"]
    assert len(legs) == 9  # start -> 8 stops -> back to start
    chain = ["start", *body["order"], "end"]
    assert [leg["from"] for leg in legs] == chain[:-1] and [leg["to"] for leg in legs] == chain[1:]
    # each leg's geometry starts where the previous ended
    ends = [polyline.decode(leg["geometry"], 6) for leg in legs]
    for (a_lat, a_lon), (b_lat, b_lon) in pairwise(ends):
        assert abs(a_lat[-1] - b_lat[0]) < 1e-5 and abs(a_lon[-1] - b_lon[0]) < 1e-5
    arrivals = [datetime.fromisoformat(s["arrival"]) for s in body["stops"]]
    assert arrivals == sorted(arrivals) and arrivals[0] > DEPART
    # arrival of stop k = departure of stop k-1 + leg k duration
    for k in range(1, len(body["stops"])):
        dep = datetime.fromisoformat(body["stops"][k - 1]["departure"])
        assert abs((arrivals[k] - dep).total_seconds() - legs[k]["duration_s"]) < 0.2
    assert abs(body["total_duration_s"] - (sum(leg["duration_s"] for leg in legs) + 8 * 60)) < 1.0
    assert body["versions"]["graph"] >= 1 and body["versions"]["model"]
    assert body["cache"] == "miss" and body["served_by"]["batch_size"] >= 1
    assert set(body["timings_ms"]) >= {"ingest", "queue_wait", "inference", "search", "post"}
    assert body["feasible"] is True and body["late_stops"] == []


def test_repeated_request_is_a_cache_hit(app_client, points) -> None:
    client, _ = app_client
    first = client.post("/v1/routes", json=_request(points, 6)).json()
    second = client.post("/v1/routes", json=_request(points, 6)).json()
    assert second["cache"] == "hit"
    assert second["order"] == first["order"] and second["route_id"] != first["route_id"]
    stored = client.get(f"/v1/routes/{second['route_id']}")
    assert stored.status_code == 200 and stored.json()["order"] == first["order"]
    assert client.get("/v1/routes/nope").status_code == 404
    metrics = client.get("/metrics").text
    assert 'routing_cache_total{result="hit"}' in metrics and "routing_layer_seconds_bucket" in metrics


def test_a_hit_later_in_the_same_time_bucket_shifts_its_schedule(app_client, points) -> None:
    """A hit reuses the cached legs; its arrivals follow the new departure time exactly, like a miss's would."""
    client, _ = app_client
    body = _request(points, 7, driver_id="van-shift")
    first = client.post("/v1/routes", json=body).json()
    later = DEPART + timedelta(minutes=1)  # same 15-minute traffic bucket
    second = client.post("/v1/routes", json={**body, "depart_at": later.isoformat()}).json()
    assert first["cache"] == "miss" and second["cache"] == "hit"
    for a, b in zip(first["stops"], second["stops"], strict=True):
        shift = datetime.fromisoformat(b["arrival"]) - datetime.fromisoformat(a["arrival"])
        assert abs(shift.total_seconds() - 60.0) < 1e-3
    assert second["total_duration_s"] == first["total_duration_s"]


def test_end_kinds(app_client, points) -> None:
    client, _ = app_client
    open_body = client.post("/v1/routes", json=_request(points, 5, end="open")).json()
    assert len(open_body["legs"]) == 5 and open_body["legs"][-1]["to"] == open_body["order"][-1]
    end = {"lat": float(points[30, 0]), "lon": float(points[30, 1])}
    fixed = client.post("/v1/routes", json=_request(points, 5, end=end)).json()
    assert len(fixed["legs"]) == 6 and fixed["legs"][-1]["to"] == "end"


def test_impossible_window_names_the_late_stop(app_client, points) -> None:
    client, _ = app_client
    body = _request(points, 4)
    window = {
        "earliest": (DEPART - timedelta(hours=1)).isoformat(),
        "latest": (DEPART + timedelta(seconds=1)).isoformat(),
    }
    body["stops"][2]["window"] = window  # type: ignore[index]
    r = client.post("/v1/routes", json=body).json()
    assert r["feasible"] is False and r["late_stops"] == ["s3"]
    late = {s["id"]: s["late_s"] for s in r["stops"]}
    assert late["s3"] > 0 and all(v == 0 for k, v in late.items() if k != "s3")


@pytest.mark.parametrize(
    ("mutate", "loc_part"),
    [
        (lambda b: b["stops"].append(dict(b["stops"][0])), "stops"),  # duplicate id
        (
            lambda b: b["stops"][0].update(
                window={"earliest": "2026-11-30T10:00:00Z", "latest": "2026-11-30T09:00:00Z"}
            ),
            "window",
        ),
        (lambda b: b["stops"][1].update(lat=10.0, lon=10.0), "stops"),  # far outside the map
        (lambda b: b["start"].update(lat=95.0), "lat"),
        (lambda b: b.update(stops=[]), "stops"),
        (lambda b: b.update(stops=[dict(b["stops"][0], id=f"x{i}") for i in range(31)]), "stops"),  # > max_stops
        (lambda b: b["stops"][0].update(service_s=-5), "service_s"),
        (lambda b: b.update(end="somewhere"), "end"),
    ],
)
def test_bad_requests_get_422_naming_the_field(app_client, points, mutate, loc_part) -> None:
    client, _ = app_client
    body = _request(points, 3)
    mutate(body)
    r = client.post("/v1/routes", json=body)
    assert r.status_code == 422, r.text
    assert loc_part in str(r.json()["detail"])


def test_positions_and_drivers(app_client, points) -> None:
    client, _ = app_client
    route = client.post("/v1/routes", json=_request(points, 3, driver_id="van-9")).json()
    ping = {"lat": float(points[1, 0]), "lon": float(points[1, 1]), "timestamp": DEPART.isoformat(), "speed_mps": 8.5}
    assert client.post("/v1/drivers/van-9/positions", json=ping).status_code == 202
    assert client.post("/v1/drivers/van-9/positions", json={"lat": 1}).status_code == 422
    drivers = {d["driver_id"]: d for d in client.get("/v1/drivers").json()}
    assert drivers["van-9"]["current_route_id"] == route["route_id"]
    assert abs(drivers["van-9"]["last_position"]["lat"] - ping["lat"]) < 1e-9


def test_osrm_trip_is_answered_by_the_optimizer(app_client, points) -> None:
    client, _ = app_client
    coords = ";".join(f"{lon},{lat}" for lat, lon in points[:7])
    r = client.get(f"/trip/v1/driving/{coords}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == "Ok" and len(body["trips"]) == 1 and len(body["trips"][0]["legs"]) == 7
    assert sorted(w["waypoint_index"] for w in body["waypoints"]) == list(range(7))
    assert body["waypoints"][0]["waypoint_index"] == 0
    r2 = client.get(f"/trip/v1/driving/{coords}?roundtrip=false&source=first&destination=last").json()
    assert len(r2["trips"][0]["legs"]) == 6 and r2["waypoints"][-1]["waypoint_index"] == 6
    bad = client.get(f"/trip/v1/driving/{coords}?roundtrip=false&source=any")
    assert bad.status_code == 400 and bad.json()["code"] == "NotImplemented"


def test_readyz_reports_the_warm_model(app_client) -> None:
    client, _ = app_client
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert checks["model"]["warmed"] is True and checks["queue"] == "ok" and checks["cache"] == "ok"


def test_model_hot_swap_keeps_answering(app_client, points) -> None:
    client, _ = app_client
    r = client.post("/v1/admin/model", json={"backend": "torch"})
    assert r.status_code == 200, r.text
    body = client.post("/v1/routes", json=_request(points, 7, driver_id="swap")).json()
    assert body["served_by"]["backend"] == "torch"
    back = client.post("/v1/admin/model", json={"backend": "onnxruntime"}).json()
    assert back["backend"] == "onnxruntime"
    assert client.post("/v1/admin/model", json={"checkpoint": "/nonexistent.pt"}).status_code == 422


def test_two_stops_at_one_intersection_from_different_roads(app_client) -> None:
    # These two points snap to the same intersection, one at the end of the incoming road and
    # one at the start of the outgoing road: a leg of zero length (it used to be a 500).
    client, _ = app_client
    body = {"driver_id": "r", "start": {"lat": 60.177251, "lon": 24.944360}, "end": "open",
            "stops": [{"id": "b", "lat": 60.177762, "lon": 24.945102}]}  # fmt: skip
    r = client.post("/v1/routes", json=body)
    assert r.status_code == 200, r.text
    legs = r.json()["legs"]
    assert len(legs) == 1 and legs[0]["geometry"]
