"""Learned travel times end to end: trips -> the GNN -> ONNX profile in SQL -> the traffic layer ->
/route, /table and /v1/routes (versions, cache keys, arrival intervals, cautious quantile), and the
``routing traffic learn`` command on the real NYC taxi sample (midtown Manhattan map)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gnn_model.eta.trips import Trips, read_trips
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from routing_api.app import create_app
from routing_api.bootstrap import Container, bootstrap
from routing_api.cli import main as cli_main
from routing_api.settings import Settings
from tests.auth_helpers import dispatcher_headers
from travel_times.learn import learn_profile

RUSH = datetime(2026, 11, 30, 8, 0)  # a Monday morning (naive: the profile's local clock)
NIGHT = datetime(2026, 12, 1, 3, 0)


def _synthetic_trips(graph: RoadGraph, n: int, seed: int) -> Trips:
    """Trips between random nodes, driven 2x slower than the base model in the morning rush and at
    the base model's pace at night (the base model's own path and time, then scaled)."""
    rng = np.random.default_rng(seed)
    snap = RoutingSnapshot(graph, TrafficState())
    net = graph.network
    a, b = rng.choice(net.node_count, n), rng.choice(net.node_count, n)
    keep = a != b
    a, b = a[keep], b[keep]
    ph_a = graph.snap(net.node_lat[a], net.node_lon[a], 50.0)
    ph_b = graph.snap(net.node_lat[b], net.node_lon[b], 50.0)
    secs = np.diag(snap.durations(ph_a, ph_b, NIGHT))
    rush = rng.random(a.size) < 0.5
    day0 = np.datetime64("2026-11-02T00:00")  # a Monday
    days = rng.integers(0, 5, a.size).astype("timedelta64[D]")
    at = day0 + days + np.where(rush, np.timedelta64(8 * 60, "m"), np.timedelta64(3 * 60, "m"))
    dur = secs * np.where(rush, 2.0, 1.0) * rng.lognormal(0.0, 0.05, a.size)
    return Trips(np.asarray([f"t{i}" for i in range(a.size)]), at.astype("datetime64[s]"), net.node_lat[a],
                 net.node_lon[a], net.node_lat[b], net.node_lon[b], dur)  # fmt: skip


def _settings(db_url: str, model_dir: Path) -> Settings:
    return Settings(database_url=db_url, redis_url=None, amqp_url=None, model_dir=str(model_dir),
                    max_wait_ms=2.0)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def learned_app(
    tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path
) -> Iterator[tuple[TestClient, Container, dict]]:
    tmp = tmp_path_factory.mktemp("learned")
    c = bootstrap(_settings(f"sqlite:///{tmp / 'db.sqlite3'}", tmp / "models"), migrate=True)
    c.maps.import_map(helsinki_path)
    with TestClient(create_app(container=c), headers=dispatcher_headers(c)) as client:
        graph = c.graph.snapshot.graph
        result = learn_profile(graph, _synthetic_trips(graph, 900, seed=1), max_epochs=120, seed=0)
        yield client, c, {"result": result, "graph": graph}
    c.close()


def test_learned_profile_recovers_the_rush_hour_slowdown(learned_app: tuple[TestClient, Container, dict]) -> None:
    _, _, ctx = learned_app
    m = ctx["result"].metrics
    gnn, base = m["holdout"]["gnn"], m["holdout"]["base"]
    # The base model misses the 2x rush: half the trips are off by half. The GNN learns the time of day.
    assert base["median_ape"] > 0.25
    assert gnn["median_ape"] < 0.15 and 0.85 <= gnn["bias"] <= 1.15
    assert m["onnx_parity_max_abs"] < 1e-3
    assert len(ctx["result"].version) == 12


def test_profile_in_force_changes_routes_tables_and_versions(learned_app: tuple[TestClient, Container, dict]) -> None:
    client, c, ctx = learned_app
    res = ctx["result"]
    map_id = c.graph.map.id
    net = ctx["graph"].network
    coords = f"{net.node_lon[3]},{net.node_lat[3]};{net.node_lon[400]},{net.node_lat[400]}"
    rush_q = "depart_at=2026-11-30T08:05:00%2B02:00"  # 08:05 Helsinki time is not the profile's clock: UTC
    before = client.get(f"/route/v1/driving/{coords}?overview=false&{rush_q}").json()
    assert before["travel_profile"] is None
    epoch = c.maps.save_learned_profile(map_id, res.version, res.onnx_model, res.metrics, source="trips",
                                        timezone="UTC")  # fmt: skip
    assert c.graph.refresh() == epoch
    assert c.graph.snapshot.traffic.learned_version == res.version
    after = client.get(f"/route/v1/driving/{coords}?overview=false&{rush_q}").json()
    assert after["travel_profile"] == res.version and after["traffic_epoch"] == epoch
    night = client.get(f"/route/v1/driving/{coords}?overview=false&depart_at=2026-12-01T03:05:00Z").json()
    # Monday 06:05 UTC is before the rush the trips had at 08:00; 03:05 is the night pace.
    assert after["routes"][0]["duration"] > 0 and night["routes"][0]["duration"] > 0
    table = client.get(f"/table/v1/driving/{coords}?depart_at=2026-11-30T08:05:00Z").json()
    assert table["travel_profile"] == res.version
    rush = table["durations"][0][1]
    assert rush > 1.5 * night["routes"][0]["duration"]  # learned: about 2x slower in the rush
    # Back to the base model.
    c.maps.activate_learned_profile(map_id, None)
    c.graph.refresh()
    assert c.graph.snapshot.traffic.learned is None


def test_route_plan_carries_arrival_intervals_and_a_cautious_quantile(
    learned_app: tuple[TestClient, Container, dict],
) -> None:
    client, c, ctx = learned_app
    res = ctx["result"]
    c.maps.activate_learned_profile(c.graph.map.id, res.version)
    c.graph.refresh()
    net = ctx["graph"].network
    body = {"driver_id": "van-eta", "start": {"lat": float(net.node_lat[10]), "lon": float(net.node_lon[10])},
            "depart_at": "2026-11-30T08:00:00Z", "end": "open",
            "stops": [{"id": f"s{i}", "lat": float(net.node_lat[i * 37]), "lon": float(net.node_lon[i * 37])}
                      for i in range(1, 6)]}  # fmt: skip
    r = client.post("/v1/routes", json=body)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["versions"]["travel_profile"] == res.version and plan["eta_quantile"] == 0.5
    for leg in plan["legs"]:
        assert leg["duration_p10_s"] <= leg["duration_s"] + 1.0 <= leg["duration_p90_s"] + 2.0
    for stop in plan["stops"]:
        lo, mid, hi = (datetime.fromisoformat(stop[k]) for k in ("arrival_p10", "arrival", "arrival_p90"))
        assert lo <= mid + timedelta(seconds=1) and mid <= hi + timedelta(seconds=1)
    assert datetime.fromisoformat(plan["stops"][-1]["arrival_p90"]) > datetime.fromisoformat(
        plan["stops"][-1]["arrival_p10"]
    )
    cautious = client.post("/v1/routes", json={**body, "options": {"eta_quantile": 0.9}}).json()
    assert cautious["eta_quantile"] == 0.9 and cautious["cache"] == "miss"
    assert cautious["total_duration_s"] > plan["total_duration_s"]
    bad = client.post("/v1/routes", json={**body, "options": {"eta_quantile": 0.7}})
    assert bad.status_code == 422 and "eta_quantile" in bad.text
    # Switching the profile changes the cache key: the same request is a miss again.
    assert client.post("/v1/routes", json=body).json()["cache"] == "hit"
    c.maps.activate_learned_profile(c.graph.map.id, None)
    c.graph.refresh()
    again = client.post("/v1/routes", json=body).json()
    assert again["cache"] == "miss" and again["versions"]["travel_profile"] is None
    assert all(s["arrival_p10"] is None for s in again["stops"])


@pytest.mark.shared_data
def test_traffic_learn_command_on_real_taxi_trips(tmp_path: Path, road_networks: Path, shared_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    trips = shared_data / "trip_requests" / "nyc_taxi_2016_kaggle_sample_jan_apr.csv.gz"
    monkeypatch.setenv("ROUTING_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert cli_main(["db", "upgrade"]) == 0
    assert cli_main(["import-map", str(road_networks / "manhattan_midtown.osm.pbf")]) == 0
    capsys.readouterr()
    # Bad input: a clear message and exit status 2, nothing stored.
    assert cli_main(["traffic", "learn", "--trips", str(trips)]) == 2
    assert "--format" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert cli_main(["traffic", "learn", "--trips", str(missing), "--format", "nyc-kaggle"]) == 2
    assert "not found" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    assert cli_main(["traffic", "learn", "--trips", str(wrong), "--format", "nyc-kaggle"]) == 2
    assert "missing column" in capsys.readouterr().err
    assert cli_main(["traffic", "learned", "abc"]) == 2
    assert cli_main(["traffic", "learn", "--trips", str(trips), "--format", "nyc-kaggle", "--max-epochs", "20"]) == 0
    out = capsys.readouterr().out
    assert '"active": true' in out
    assert cli_main(["traffic", "learned"]) == 0
    listing = capsys.readouterr().out
    assert '"source": "trips"' in listing and '"timezone": "America/New_York"' in listing


def test_trip_reader_reads_both_formats(tmp_path: Path) -> None:
    kaggle = tmp_path / "k.csv"
    kaggle.write_text("id,vendor_id,pickup_datetime,dropoff_datetime,passenger_count,pickup_longitude,pickup_latitude,"
                      "dropoff_longitude,dropoff_latitude,store_and_fwd_flag,trip_duration\n"
                      "id1,1,2016-02-28 02:23:02,2016-02-28 02:31:08,1,-73.98,40.742,-73.96,40.76,N,486\n")  # fmt: skip
    t = read_trips(kaggle, "nyc-kaggle")
    assert len(t) == 1 and t.duration_s[0] == 486 and t.pickup_lat[0] == pytest.approx(40.742)
    debs = tmp_path / "d.csv"
    debs.write_text("m,h,2013-01-01 00:00:00,2013-01-01 00:02:00,120,0.44,-73.956528,40.716976,-73.962440,40.715008,"
                    "CSH,3.50,0.50,0.50,0.00,0.00,4.50\n")  # fmt: skip
    d = read_trips(debs, "nyc-taxi")
    assert d.duration_s[0] == 120 and d.dropoff_lon[0] == pytest.approx(-73.96244)
    assert str(d.pickup_at[0]) == "2013-01-01T00:00:00"
    with pytest.raises(ValueError, match="line 2"):
        bad = tmp_path / "b.csv"
        bad.write_text(kaggle.read_text().replace("486", "x"))
        read_trips(bad, "nyc-kaggle")
    assert datetime.now(UTC)  # keep the import used


def test_a_running_service_picks_up_a_profile_stored_by_another_process(
    tmp_path: Path, helsinki_path: Path, model_dir: Path
) -> None:
    """`routing serve` in its own process: a profile stored by this process (as `routing traffic learn`
    does) is in force in the service's next answers, through the traffic epoch it polls."""
    import time

    import httpx

    from gnn_model.eta.export import export_onnx, version_of
    from gnn_model.eta.model import EtaConfig, EtaGnn
    from graph_store.repository import MapRepository, make_engine
    from tests.integration.test_replay_service import running_service
    from travel_times.learn import edge_model_inputs

    with running_service(tmp_path, helsinki_path, model_dir) as svc:
        repo = MapRepository(make_engine(svc.db_url))
        active = repo.active_map()
        assert active is not None
        graph = RoadGraph(repo.load_network(active.id), map_version=active.id)
        inputs, _, _ = edge_model_inputs(graph)
        onnx_model = export_onnx(EtaGnn(EtaConfig(edge_features=int(inputs.x.shape[1]))).eval(), inputs)
        version = version_of(onnx_model)
        net = graph.network
        url = f"{svc.url}/route/v1/driving/{net.node_lon[3]},{net.node_lat[3]};{net.node_lon[400]},{net.node_lat[400]}"
        before = httpx.get(url, params={"overview": "false"}, headers=svc.headers()).json()
        assert before["travel_profile"] is None
        repo.save_learned_profile(active.id, version, onnx_model, {"holdout": {}}, source="trips", timezone="UTC")
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            seen = httpx.get(url, params={"overview": "false"}, headers=svc.headers()).json()["travel_profile"]
            if seen == version:
                break
            time.sleep(0.5)
        assert seen == version
        repo.engine.dispose()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from routing_api.model_service import ensure_compiled
    from routing_api.model_training import CHECKPOINT

    path = tmp_path_factory.mktemp("models")
    ensure_compiled(CHECKPOINT, path)
    return path
