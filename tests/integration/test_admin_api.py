"""The admin UI's data and action endpoints (/v1/admin/...) on the real app, Helsinki map and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph_store import polyline
from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.settings import Settings
from tests.auth_helpers import bearer, dispatcher_headers
from tests.conftest import require

READS = ("/v1/admin/overview", "/v1/admin/network", "/v1/admin/drivers", "/v1/admin/requests",
         "/v1/admin/requests/nope", "/v1/admin/models", "/v1/admin/travel-profile")  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[tuple[TestClient, Container]]:
    tmp = tmp_path_factory.mktemp("admin-api")
    settings = Settings(database_url=f"sqlite:///{tmp / 'db.sqlite3'}", redis_url=None, amqp_url=None,
                        model_dir=str(tmp / "models"), max_wait_ms=1.0, ping_traffic_interval_s=0.0)  # fmt: skip
    c = bootstrap(settings, migrate=True)
    c.maps.import_map(helsinki_path)
    with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as client:
        yield client, c
    c.close()


@pytest.fixture(scope="module")
def points(app: tuple[TestClient, Container]) -> list[tuple[float, float]]:
    net = app[1].graph.snapshot.graph.network
    idx = np.random.default_rng(11).choice(net.node_count, 30, replace=False)
    return [(float(net.node_lat[i]), float(net.node_lon[i])) for i in idx]


def _body(driver: str, pts: list[tuple[float, float]], **extra: Any) -> dict[str, Any]:
    return {"driver_id": driver, "start": {"lat": pts[0][0], "lon": pts[0][1]},
            "stops": [{"id": f"{driver}-{k}", "lat": lat, "lon": lon, "service_s": 30}
                      for k, (lat, lon) in enumerate(pts[1:], start=1)], **extra}  # fmt: skip


def test_every_admin_endpoint_needs_a_dispatcher_token(app: tuple[TestClient, Container]) -> None:
    client, c = app
    driver = bearer(c.tokens.create("driver", driver_id="van-1", rate_per_s=0))
    anonymous = {"Authorization": ""}
    for path in READS:
        assert client.get(path, headers=anonymous).status_code == 401, path
        assert client.get(path, headers=driver).status_code == 403, path
    for path, body in (("/v1/admin/traffic", {"edge": 0, "speed_factor": 0.5}), ("/v1/admin/drivers/van-1/replan", {}),
                       ("/v1/admin/cache/flush", None), ("/v1/admin/model", {"backend": "none"}),
                       ("/v1/admin/travel-profile/activate", {"version": None})):  # fmt: skip
        assert client.post(path, json=body, headers=anonymous).status_code == 401, path
        assert client.post(path, json=body, headers=driver).status_code == 403, path
    assert client.get("/v1/admin/overview").status_code == 200


def test_network_has_every_road_once_with_its_geometry(app: tuple[TestClient, Container]) -> None:
    client, c = app
    graph = c.graph.snapshot.graph
    net = client.get("/v1/admin/network").json()
    assert net["map_id"] == graph.map_version and net["name"] == "Helsinki" and net["edges"] == graph.network.edge_count
    covered: list[int] = []
    for edge, reverse, cls, line in net["roads"]:
        covered += [edge] + ([reverse] if reverse >= 0 else [])
        assert net["classes"][cls] == graph.network.edge_road_class[edge]
        lat, lon = polyline.decode(line, net["precision"])
        want_lat, want_lon = graph.network.edge_geometry(edge)
        assert np.allclose(lat, want_lat, atol=1e-5) and np.allclose(lon, want_lon, atol=1e-5)
    assert sorted(covered) == list(range(graph.network.edge_count))


def test_overview_kpis_follow_route_requests(app: tuple[TestClient, Container], points: list) -> None:
    client, c = app
    before = client.get("/v1/admin/overview").json()
    body = _body("kpi-van", points[:6])
    assert client.post("/v1/routes", json=body).json()["cache"] == "miss"
    assert client.post("/v1/routes", json=body).json()["cache"] == "hit"
    after = client.get("/v1/admin/overview").json()
    k = after["kpis"]
    assert k["total_requests"] == before["kpis"]["total_requests"] + 2
    assert k["cache_lookups"] >= 2 and 0 < k["cache_hit_ratio"] < 1
    assert k["mean_batch_size"] >= 1 and k["latency_p99_ms"] >= k["latency_p50_ms"] > 0
    assert after["workers"]["online"] == 1 and after["queue"]["adapter"] == "in-process"
    assert (
        after["model"] == {"version": c.model.version, "backend": c.model.name, "ready": True}
        and after["map"]["name"] == "Helsinki"
    )
    assert after["on_time"]["stops"] >= 5 and after["on_time"]["share"] is not None


def test_traffic_update_on_one_road_both_directions(app: tuple[TestClient, Container], points: list) -> None:
    client, c = app
    graph = c.graph.snapshot.graph
    edge = int(np.flatnonzero(np.asarray(graph.reverse_edge) >= 0)[0])
    reverse = int(graph.reverse_edge[edge])
    body = _body("traffic-van", points[6:11])
    first = client.post("/v1/routes", json=body).json()
    epoch = c.graph.snapshot.epoch
    r = client.post("/v1/admin/traffic", json={"edge": edge, "speed_factor": 0.25, "ttl_s": 600})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["previous_epoch"] == epoch and res["traffic_epoch"] == epoch + 1 == c.graph.snapshot.epoch
    assert res["edge_ids"] == sorted([edge, reverse]) and res["edges"] == 2
    expires = datetime.fromisoformat(res["expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
    live = {o["edge"]: o for o in client.get("/v1/admin/overview").json()["traffic"]["live"]}
    free = float(graph.network.edge_speed_kph[edge])
    assert live[edge]["speed_kph"] == pytest.approx(max(0.5, free * 0.25), abs=0.06)
    assert live[edge]["free_flow_kph"] == pytest.approx(free, abs=0.06)
    # the same request is planned again under the new epoch
    again = client.post("/v1/routes", json=body).json()
    assert first["versions"]["traffic_epoch"] == epoch and again["versions"]["traffic_epoch"] == epoch + 1
    assert again["cache"] == "miss"
    one_way = client.post("/v1/admin/traffic", json={"edge": edge, "speed_factor": 0.5, "both_directions": False})
    assert one_way.json()["edge_ids"] == [edge]


def test_traffic_update_on_an_area_takes_every_road_inside(app: tuple[TestClient, Container]) -> None:
    client, c = app
    net = c.graph.snapshot.graph.network
    box = {"min_lat": 60.1680, "min_lon": 24.9400, "max_lat": 60.1700, "max_lon": 24.9450}
    res = client.post("/v1/admin/traffic", json={"bbox": box, "speed_factor": 0.5, "both_directions": False}).json()
    inside = [
        e for e in range(net.edge_count)
        if any(box["min_lat"] <= la <= box["max_lat"] and box["min_lon"] <= lo <= box["max_lon"]
               for la, lo in zip(*net.edge_geometry(e), strict=True))
    ]  # fmt: skip
    assert inside and res["edge_ids"] == inside and res["edges"] == len(inside)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"edge": 10**6, "speed_factor": 0.5}, ["body", "edge"]),
        ({"edge": -1, "speed_factor": 0.5}, ["body", "edge"]),
        ({"speed_factor": 0.5}, ["body"]),
        (
            {
                "edge": 1,
                "bbox": {"min_lat": 60.16, "min_lon": 24.93, "max_lat": 60.17, "max_lon": 24.94},
                "speed_factor": 0.5,
            },
            ["body"],
        ),
        (
            {"bbox": {"min_lat": 60.17, "min_lon": 24.93, "max_lat": 60.16, "max_lon": 24.94}, "speed_factor": 0.5},
            ["body", "bbox"],
        ),
        (
            {"bbox": {"min_lat": 10.0, "min_lon": 10.0, "max_lat": 10.1, "max_lon": 10.1}, "speed_factor": 0.5},
            ["body", "bbox"],
        ),
        ({"edge": 1, "speed_factor": 0}, ["body", "speed_factor"]),
        ({"edge": 1, "speed_factor": 0.5, "ttl_s": 0}, ["body", "ttl_s"]),
    ],
)
def test_bad_traffic_updates_are_refused_naming_the_field(
    app: tuple[TestClient, Container], body: dict[str, Any], loc: list[str]
) -> None:
    client, c = app
    epoch = c.graph.snapshot.epoch
    r = client.post("/v1/admin/traffic", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc
    assert c.graph.snapshot.epoch == epoch


def test_replan_from_the_last_ping_without_done_stops(app: tuple[TestClient, Container], points: list) -> None:
    client, _ = app
    body = _body("replan-van", points[11:17])
    first = client.post("/v1/routes", json=body).json()
    ping = {"lat": points[20][0], "lon": points[20][1], "timestamp": datetime.now(UTC).isoformat()}
    assert client.post("/v1/drivers/replan-van/positions", json=ping).status_code == 202
    done = first["order"][:2]
    r = client.post("/v1/admin/drivers/replan-van/replan", json={"done": done})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["previous_route_id"] == first["route_id"] and res["dropped"] == done
    assert sorted(res["planned"]) == sorted(set(first["order"]) - set(done))
    route = res["route"]
    assert sorted(route["order"]) == sorted(res["planned"]) and route["legs"][-1]["to"] == "end"
    driver = next(d for d in client.get("/v1/admin/drivers").json()["drivers"] if d["driver_id"] == "replan-van")
    assert driver["route"]["route_id"] == route["route_id"]
    assert driver["route"]["start"] == {"lat": ping["lat"], "lon": ping["lon"]}
    assert driver["route"]["end"] == body["start"]  # "return": back to the depot, not to the ping
    logged = client.get(f"/v1/admin/requests/{route['route_id']}").json()["request"]
    asked = {s["id"]: s for s in body["stops"]}
    assert [s["id"] for s in logged["stops"]] == res["planned"]
    assert all((s["lat"], s["lon"], s["service_s"]) == (asked[s["id"]]["lat"], asked[s["id"]]["lon"], 30)
               for s in logged["stops"])  # fmt: skip


def test_replan_refusals(app: tuple[TestClient, Container], points: list) -> None:
    client, _ = app
    body = _body("refuse-van", points[17:20])
    order = client.post("/v1/routes", json=body).json()["order"]
    r = client.post("/v1/admin/drivers/refuse-van/replan", json={"done": ["nope"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "done"]
    r = client.post("/v1/admin/drivers/refuse-van/replan", json={"done": order})
    assert r.status_code == 409 and r.json()["detail"][0]["kind"] == "nothing_left"
    r = client.post("/v1/admin/drivers/nobody/replan", json={})
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["path", "driver_id"]
    r = client.post("/v1/admin/drivers/refuse-van/replan", json={"done": "s1"})
    assert r.status_code == 422 and "done" in str(r.json()["detail"])


def test_recent_requests_newest_first_with_timings_and_details(app: tuple[TestClient, Container], points: list) -> None:
    client, _ = app
    ok = client.post("/v1/routes", json=_body("log-van", points[:4])).json()
    bad = _body("log-van", points[:4])
    bad["stops"][0].update(lat=10.0, lon=10.0)  # off the map: 422, logged too
    assert client.post("/v1/routes", json=bad).status_code == 422
    rows = client.get("/v1/admin/requests", params={"limit": 2}).json()["requests"]
    assert len(rows) == 2 and rows[0]["status"] == 422 and rows[0]["error_kind"] == "outside_map"
    assert rows[1]["route_id"] == ok["route_id"] and rows[1]["cache"] == "miss"
    assert set(rows[1]["timings_ms"]) >= {"ingest", "queue_wait", "inference", "search", "post", "total"}
    assert rows[1]["versions"]["traffic_epoch"] == ok["versions"]["traffic_epoch"]
    mine = client.get("/v1/admin/requests", params={"driver_id": "log-van"}).json()["requests"]
    assert {r["driver_id"] for r in mine} == {"log-van"} and len(mine) == 2
    detail = client.get(f"/v1/admin/requests/{ok['route_id']}").json()
    assert detail["response"]["order"] == ok["order"] and detail["request"]["driver_id"] == "log-van"
    assert client.get("/v1/admin/requests/nope").status_code == 404
    assert client.get("/v1/admin/requests", params={"limit": 0}).status_code == 422


def test_models_lists_the_committed_checkpoint(app: tuple[TestClient, Container]) -> None:
    client, c = app
    res = client.get("/v1/admin/models").json()
    assert res["current"] == {"version": c.model.version, "backend": c.model.name}
    assert res["default_checkpoint"] in res["checkpoints"] and "onnxruntime" in res["backends"]
    assert res["hot_swap"] is True


def test_admin_page_is_served_without_a_token(app: tuple[TestClient, Container]) -> None:
    client, _ = app
    anonymous = {"Authorization": ""}
    page = client.get("/admin", headers=anonymous)
    assert page.status_code == 200 and 'data-testid="map"' in page.text and 'name="token"' in page.text
    for name in ("admin.js", "admin.css"):
        assert client.get(f"/admin/static/{name}", headers=anonymous).status_code == 200
    for name in ("nope.js", "..%2Fpage.py", "page.py"):
        assert client.get(f"/admin/static/{name}", headers=anonymous).status_code == 404


# -- learned travel-time profiles -------------------------------------------------------------


def _metrics(gnn_median: float) -> dict[str, Any]:
    figures = {"base": 0.31, "global_factor": 0.24, "class_least_squares": 0.21, "edge_means": 0.19, "gnn": gnn_median}
    return {"trips_on_map": 5321, "trained_from": "2016-01-01", "trained_until": "2016-05-31",
            "holdout_from": "2016-06-01", "holdout_trips": 812, "epochs": 40, "fit_s": 12.5,
            "onnx_parity_max_abs": 1e-6,
            "holdout": {m: {"trips": 812, "mape": v + 0.05, "median_ape": v, "mae_s": 100 * v, "bias": 1 - v / 10,
                            **({"p10_p90_coverage": 0.79} if m == "gnn" else {})}
                        for m, v in figures.items()}}  # fmt: skip


def store_profile(c: Container, seed: int, gnn_median: float, *, activate: bool = True) -> str:
    """An untrained (seeded) ETA GNN of the active map, stored as a learned profile; returns its version."""
    try:
        import torch

        from gnn_model.eta.export import export_onnx, version_of
        from gnn_model.eta.model import EtaConfig, EtaGnn
        from travel_times.learn import edge_model_inputs
    except ImportError as exc:
        require(False, f"the ETA model needs torch: {exc}")
        raise
    inputs, _, _ = edge_model_inputs(c.graph.snapshot.graph)
    torch.manual_seed(seed)
    onnx_model = export_onnx(EtaGnn(EtaConfig(edge_features=int(inputs.x.shape[1]))).eval(), inputs)
    version = version_of(onnx_model)
    c.maps.save_learned_profile(c.graph.map.id, version, onnx_model, _metrics(gnn_median), source="trips",
                                timezone="America/New_York", activate=activate)  # fmt: skip
    return version


def test_travel_profile_without_any_learned_one(app: tuple[TestClient, Container]) -> None:
    client, c = app
    if c.maps.learned_profiles(c.graph.map.id):
        pytest.skip("profiles stored already")  # only when this test runs after the ones below
    res = client.get("/v1/admin/travel-profile").json()
    assert res["in_force"] is None and res["profiles"] == [] and res["traffic_epoch"] == c.graph.snapshot.epoch


def test_travel_profiles_list_activate_and_back_to_base(app: tuple[TestClient, Container], points: list) -> None:
    client, c = app
    older = store_profile(c, 1, 0.16, activate=False)
    newer = store_profile(c, 2, 0.12)
    assert older != newer
    # another process stored it: this one sees it once it refreshes (the activate endpoint does that itself)
    c.graph.refresh()
    res = client.get("/v1/admin/travel-profile").json()
    assert res["in_force"] == newer == c.graph.snapshot.traffic.learned_version
    assert [p["version"] for p in res["profiles"]] == [newer, older]
    assert [p["active"] for p in res["profiles"]] == [True, False]
    top = res["profiles"][0]
    assert top["source"] == "trips" and top["timezone"] == "America/New_York"
    assert (top["trips_on_map"], top["trained_from"], top["trained_until"]) == (5321, "2016-01-01", "2016-05-31")
    assert list(top["holdout"]) == ["base", "global_factor", "class_least_squares", "edge_means", "gnn"]
    assert top["holdout"]["gnn"] == {"trips": 812, "mape": pytest.approx(0.17), "median_ape": 0.12,
                                     "mae_s": pytest.approx(12.0), "bias": pytest.approx(0.988),
                                     "p10_p90_coverage": 0.79}  # fmt: skip
    assert top["holdout"]["base"]["p10_p90_coverage"] is None
    assert datetime.fromisoformat(top["created_at"]).tzinfo is not None

    body = _body("profile-van", points[:5])
    first = client.post("/v1/routes", json=body).json()
    epoch = c.graph.snapshot.epoch
    r = client.post("/v1/admin/travel-profile/activate", json={"version": older})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["previous"] == newer and res["in_force"] == older == c.graph.snapshot.traffic.learned_version
    assert res["traffic_epoch"] == epoch + 1 == c.graph.snapshot.epoch
    assert [p["active"] for p in res["profiles"]] == [False, True]
    again = client.post("/v1/routes", json=body).json()
    assert (
        again["cache"] == "miss"
        and again["versions"]["traffic_epoch"] == epoch + 1 != first["versions"]["traffic_epoch"]
    )

    # back to the base model
    r = client.post("/v1/admin/travel-profile/activate", json={"version": None})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["in_force"] is None is c.graph.snapshot.traffic.learned_version
    assert res["traffic_epoch"] == epoch + 2 and not any(p["active"] for p in res["profiles"])
    assert client.get("/v1/admin/travel-profile").json()["in_force"] is None


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        ({"version": "000000000000"}, 404, ["body", "version"]),
        ({}, 422, ["body", "version"]),
        ({"version": 12}, 422, ["body", "version"]),
        ({"version": ""}, 422, ["body", "version"]),
        ({"version": None, "extra": 1}, 422, ["body", "extra"]),
        (None, 422, ["body"]),
    ],
)
def test_bad_profile_activations_are_refused(
    app: tuple[TestClient, Container], body: dict[str, Any] | None, status: int, loc: list[str]
) -> None:
    client, c = app
    epoch, in_force = c.graph.snapshot.epoch, c.graph.snapshot.traffic.learned_version
    r = client.post("/v1/admin/travel-profile/activate", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][: len(loc)] == loc
    if status == 404:
        assert detail["msg"] == "no learned travel-time profile '000000000000' for this map"
    assert (c.graph.snapshot.epoch, c.graph.snapshot.traffic.learned_version) == (epoch, in_force)
