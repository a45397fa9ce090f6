"""Replay against the real service: ``routing serve`` (monolith, temp SQLite) as a subprocess on a free port.

* Helsinki (the bundled map): requests -> request log -> ``routing export-requests`` -> ``routing replay``
  -> the same bodies arrive again, in the same order, and are answered from the cache.
* Manhattan midtown (../shared/data): the NYC taxi converter keeps exactly the trips whose two points
  are on the map, and a short replay of them is answered in full.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from driver_app_stub import nyc_taxi
from driver_app_stub.replay import ReplayError
from graph_store.repository import MapRepository, make_engine
from routing_api.model_service import ensure_compiled
from routing_api.model_training import CHECKPOINT
from tests.servers import routing_serve

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "routing_api.cli"]
DEPART = "2026-11-30T08:00:00+02:00"
TAXI_CSV = "trip_requests/nyc_taxi_2013-01-01_debs2015_sorted_data_10k.csv"


@dataclass
class Service:
    url: str
    token: str
    env: dict[str, str]
    db_url: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@contextmanager
def running_service(tmp: Path, map_path: Path, model_dir: Path) -> Iterator[Service]:
    db_url = f"sqlite:///{tmp / 'routing.sqlite3'}"
    env = {**os.environ, "ROUTING_DATABASE_URL": db_url, "ROUTING_MODEL_DIR": str(model_dir),
           "ROUTING_LOG_LEVEL": "warning", "ROUTING_ENVIRONMENT": "test", "ROUTING_AUTH": "tokens"}  # fmt: skip
    for k in ("ROUTING_REDIS_URL", "ROUTING_AMQP_URL", "ROUTING_MODE", "ROUTING_TOKEN"):
        env.pop(k, None)
    for args in (["db", "upgrade"], ["import-map", str(map_path)]):
        done = _cli(args, env)
        assert done.returncode == 0, done.stderr
    done = _cli(["tokens", "create", "--role", "dispatcher", "--rate-limit", "0", "--name", "replay tests"], env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with routing_serve([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], url, env, tmp / "serve.log", 180,
                       cwd=REPO):  # fmt: skip
        yield Service(url, token, env, db_url)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_compiled(CHECKPOINT, path)  # once for both services
    return path


@pytest.fixture(scope="module")
def helsinki_service(tmp_path_factory, helsinki_path: Path, model_dir: Path) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("helsinki"), helsinki_path, model_dir) as svc:
        yield svc


@pytest.fixture(scope="module")
def manhattan_service(tmp_path_factory, road_networks: Path, model_dir: Path) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("manhattan"), road_networks / "manhattan_midtown.osm.pbf",
                         model_dir) as svc:  # fmt: skip
        yield svc


# -- Helsinki: export -> replay round trip -------------------------------------------------------------


def _helsinki_bodies(n: int) -> list[dict]:
    rng = np.random.default_rng(7)
    bodies = []
    for i in range(n):
        lat = np.round(rng.uniform(60.1650, 60.1780, 5), 6)
        lon = np.round(rng.uniform(24.9370, 24.9520, 5), 6)
        bodies.append({
            "driver_id": f"replay-van-{i}", "start": {"lat": float(lat[0]), "lon": float(lon[0])},
            "depart_at": DEPART, "options": {"time_budget_ms": 5},
            "stops": [{"id": f"s{k}", "lat": float(lat[k]), "lon": float(lon[k])} for k in range(1, 5)],
        })  # fmt: skip
    # one the service refuses (a stop off the map): logged with its status, and replayed as well
    off = json.loads(json.dumps(bodies[0]))
    off["driver_id"] = "replay-van-off-map"
    off["stops"][1] = {"id": "far", "lat": 0.0, "lon": 0.0}
    bodies.insert(5, off)
    return bodies


def _export(svc: Service, out: Path, *extra: str, expect: int | None = None) -> list[dict]:
    """``routing export-requests``; with ``expect``, waits for the service's buffered log writer to catch up."""
    deadline = time.monotonic() + 30
    while True:
        done = _cli(["export-requests", "--out", str(out), *extra], svc.env)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_export_then_replay_resends_the_logged_requests(helsinki_service: Service, tmp_path: Path) -> None:
    svc = helsinki_service
    bodies = _helsinki_bodies(10)
    with httpx.Client(base_url=svc.url, headers=svc.headers(), timeout=60) as client:
        statuses = []
        for body in bodies:
            statuses.append(client.post("/v1/routes", json=body).status_code)
            time.sleep(0.05)
    assert statuses == [200] * 5 + [422] + [200] * 5

    log_file = tmp_path / "requests.jsonl"
    rows = _export(svc, log_file, expect=len(bodies))
    assert len(rows) == len(bodies)
    assert [r["request"]["driver_id"] for r in rows] == [b["driver_id"] for b in bodies]
    assert [r["status"] for r in rows] == statuses
    assert [r["received_at"] for r in rows] == sorted(r["received_at"] for r in rows)
    for row, body in zip(rows, bodies, strict=True):
        req = row["request"]
        # The log keeps the request as validated: every option, the defaults the body left out included.
        assert req["start"] == body["start"]
        assert {k: req["options"][k] for k in body["options"]} == body["options"]
        assert [(s["id"], s["lat"], s["lon"]) for s in req["stops"]] == [(s["id"], s["lat"], s["lon"])
                                                                          for s in body["stops"]]  # fmt: skip

    report_path, chart = tmp_path / "report.json", tmp_path / "chart.html"
    done = _cli(["replay", str(log_file), "--url", svc.url, "--token", svc.token, "--speed", "4",
                 "--report", str(report_path), "--chart", str(chart)], svc.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["sent"] == len(bodies) and report["ok"] == len(bodies) - 1
    assert report["errors"] == {"http_422": 1} and report["unanswered"] == 0
    assert report["cache_hit_ratio"] == 1.0  # the same requests again: every one a cache hit
    assert report["latency_ms"]["count"] == len(bodies) - 1 and report["latency_ms"]["p50"] > 0
    assert "latency ms p50" in done.stdout and "<svg" in chart.read_text()

    # the service logged the replayed requests too: the same bodies, in the same order
    everything = _export(svc, tmp_path / "all.jsonl", expect=2 * len(bodies))
    assert len(everything) == 2 * len(bodies)
    assert [r["request"] for r in everything[len(bodies) :]] == [r["request"] for r in rows]
    # --limit takes the oldest; --since/--until select by received_at
    assert _export(svc, tmp_path / "first.jsonl", "--limit", "3") == rows[:3]
    second = _export(svc, tmp_path / "since.jsonl", "--since", everything[len(bodies)]["received_at"])
    assert [r["route_id"] for r in second] == [r["route_id"] for r in everything[len(bodies) :]]
    until = _export(svc, tmp_path / "until.jsonl", "--until", everything[len(bodies)]["received_at"])
    assert until == rows


# -- Manhattan: the NYC taxi converter ------------------------------------------------------------------


def _taxi_subset(shared_data: Path, tmp: Path, rows: int) -> Path:
    lines = (shared_data / TAXI_CSV).read_text().splitlines()[:rows]
    path = tmp / "taxi.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _snap_distance(client: httpx.Client, point: tuple[float, float]) -> float | None:
    r = client.get(f"/nearest/v1/driving/{point[1]:.6f},{point[0]:.6f}")
    if r.status_code == 400 and r.json()["code"] == "NoSegment":
        return None
    assert r.status_code == 200, r.text
    return float(r.json()["waypoints"][0]["distance"])


def test_nyc_converter_keeps_only_on_map_trips(manhattan_service: Service, shared_data: Path, tmp_path: Path) -> None:
    svc = manhattan_service
    csv_path = _taxi_subset(shared_data, tmp_path, 1500)
    trips = nyc_taxi.read_trips(csv_path)
    engine = make_engine(svc.db_url)
    active = MapRepository(engine).active_map()
    engine.dispose()
    assert active is not None
    box = nyc_taxi.BBox(*active.bbox)  # from the database, not from the service's /readyz
    plan = nyc_taxi.TripPlan(k=9)

    records, info = asyncio.run(nyc_taxi.convert(csv_path, svc.url, svc.token, plan))
    kept = {int(r.body["stops"][0]["id"].removeprefix("trip-")) for r in records}
    assert info["trips_read"] == len(trips) == 1500 and info["trips_kept"] == len(kept) == len(records)
    assert 0 < len(kept) < len(trips) // 2  # most of NYC is off a midtown extract
    with httpx.Client(base_url=svc.url, headers=svc.headers(), timeout=30) as client:
        for t in trips:
            in_box = box.contains(t.pickup) and box.contains(t.dropoff)
            if t.line in kept:
                assert in_box, t
                assert _snap_distance(client, t.pickup) is not None and _snap_distance(client, t.dropoff) is not None
            elif in_box:  # inside the box but dropped: one of its points does not snap
                assert None in (_snap_distance(client, t.pickup), _snap_distance(client, t.dropoff)), t
        zero = [t.line for t in trips if t.pickup == (0.0, 0.0) or t.dropoff == (0.0, 0.0)]
        assert zero and not set(zero) & kept  # the sample's 0.0 rows are there and dropped

        # every stop of every request is a kept trip's drop-off; the service plans a few of them
        for r in records:
            assert {int(s["id"].removeprefix("trip-")) for s in r.body["stops"]} <= kept
        for r in records[:: max(1, len(records) // 5)]:
            answer = client.post("/v1/routes", json={**r.body, "options": {"time_budget_ms": 5}})
            assert answer.status_code == 200, answer.text

        # a tighter snapping radius drops trips whose points lie farther from a road
        tight, tight_info = asyncio.run(nyc_taxi.convert(csv_path, svc.url, svc.token, plan, radius_m=8.0))
        assert tight_info["off_road"] > 0 and 0 < len(tight) < len(records)
        for r in tight:
            line = int(r.body["stops"][0]["id"].removeprefix("trip-"))
            trip = next(t for t in trips if t.line == line)
            assert all(d is not None and d <= 8.0 for d in (_snap_distance(client, trip.pickup),
                                                             _snap_distance(client, trip.dropoff)))  # fmt: skip


def test_nyc_converter_with_an_empty_result(manhattan_service: Service, tmp_path: Path) -> None:
    path = tmp_path / "far.csv"
    path.write_text("A,B,2013-01-01 00:00:00,2013-01-01 00:10:00,600,1.0,-73.80,40.65,-73.79,40.64,CSH,1,0,0,0,0,1\n")
    with pytest.raises(ReplayError, match="none of the 1 trips lies on the active map"):
        asyncio.run(nyc_taxi.convert(path, manhattan_service.url, manhattan_service.token, nyc_taxi.TripPlan()))


def test_nyc_replay_on_manhattan_answers_every_request(manhattan_service: Service, shared_data: Path,
                                                       tmp_path: Path) -> None:  # fmt: skip
    svc = manhattan_service
    csv_path = _taxi_subset(shared_data, tmp_path, 3000)
    report_path = tmp_path / "report.json"
    done = _cli(["replay", str(csv_path), "--format", "nyc-taxi", "--url", svc.url, "--token", svc.token,
                 "--speed", "60", "--duration", "3", "--start-offset", "300", "--time-budget-ms", "10",
                 "--report", str(report_path), "--fail-on-errors"], svc.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["sent"] == report["ok"] == report["scheduled"] > 10
    assert report["config"]["nyc_taxi"]["trips_kept"] > 0 and report["config"]["format"] == "nyc-taxi"
