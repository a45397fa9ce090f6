"""Simulated drivers against a real running service (`routing serve` on a free port, temp SQLite, the
bundled Helsinki map, auth on): pings become traffic, edge fallback while the service is cut off,
the `routing drivers` command end to end."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import migrations
from driver_app_stub.simulator import Simulation, SimulationConfig, run_simulation
from graph_store.models import LiveTrafficObservation
from graph_store.repository import MapRepository, make_engine
from graph_store.routing_graph import RoadGraph
from routing_api.auth import TokenStore
from routing_api.ping_traffic import SOURCE
from tests.servers import routing_serve
from tests.tcp_proxy import TcpProxy

CLI = [sys.executable, "-m", "routing_api.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ROUTING_* settings (a developer's shell must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_") or k.startswith("ROUTING_TEST_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("drivers")
    db_url = f"sqlite:///{tmp / 'db.sqlite3'}"
    engine = make_engine(db_url)
    migrations.upgrade(engine)
    maps = MapRepository(engine)
    info = maps.import_map(helsinki_path).map
    token = TokenStore(engine).create("dispatcher", name="simulator tests", rate_per_s=0)
    network = maps.load_network(info.id)
    rng = np.random.default_rng(11)
    stops_file = tmp / "stops.csv"
    rows = ["id,lat,lon"] + [f"n{i},{network.node_lat[i]:.6f},{network.node_lon[i]:.6f}"
                             for i in rng.choice(network.node_count, 60, replace=False)]  # fmt: skip
    stops_file.write_text("\n".join(rows) + "\n")
    port = _free_port()
    env = _clean_env(ROUTING_DATABASE_URL=db_url, ROUTING_MODEL_DIR=str(tmp / "models"),
                     ROUTING_PING_TRAFFIC_INTERVAL_S="1", ROUTING_PING_TRAFFIC_MIN_PINGS="3",
                     ROUTING_LOG_LEVEL="info")  # fmt: skip
    log_path = tmp / "server.log"
    base = f"http://127.0.0.1:{port}"
    try:
        with routing_serve([*CLI, "serve", "--port", str(port)], base, env, log_path, 240):
            yield {"base": base, "port": port, "token": token, "engine": engine, "map_id": info.id, "network": network,
                   "stops_file": stops_file, "model_dir": tmp / "models", "tmp": tmp, "log": log_path}  # fmt: skip
    finally:
        engine.dispose()


def _headers(service: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {service['token']}"}


def _epoch(service: dict[str, Any]) -> int:
    return int(httpx.get(f"{service['base']}/readyz", timeout=10).json()["checks"]["map"]["traffic_epoch"])


def _config(service: dict[str, Any], **kw: Any) -> SimulationConfig:
    base = {"url": service["base"], "count": 3, "speedup": 10.0, "duration_s": 15.0, "token": service["token"],
            "stops_file": service["stops_file"], "model_dir": service["model_dir"], "seed": 1}  # fmt: skip
    return SimulationConfig(**{**base, **kw})


def test_pings_change_travel_times_and_the_traffic_epoch(service: dict[str, Any]) -> None:
    base, headers = service["base"], _headers(service)
    net = service["network"]
    request = {"driver_id": "probe", "start": {"lat": float(net.node_lat[0]), "lon": float(net.node_lon[0])},
               "stops": [{"id": f"s{i}", "lat": float(net.node_lat[i]), "lon": float(net.node_lon[i])}
                         for i in (100, 200, 300, 400)]}  # fmt: skip
    before = httpx.post(f"{base}/v1/routes", json=request, headers=headers, timeout=30).json()
    epoch0 = _epoch(service)
    assert before["versions"]["traffic_epoch"] == epoch0

    report = run_simulation(_config(service, congested_share=0.5, replan_cooldown_s=10.0))

    assert report["errors_total"] == 0, report["errors"]
    assert report["pings"]["accepted"] == report["pings"]["sent"] > 30
    assert report["service_routes"] >= 3 and report["provisional_routes"] == 0
    assert report["traffic_epoch"]["end"] > report["traffic_epoch"]["start"] == epoch0
    assert report["replans"].get("traffic", 0) >= 1  # drivers noticed the new epoch in ping answers and re-planned
    assert report["stops"]["done"] >= 1

    # The observations the pings made, and the travel time across the most slowed-down road.
    with Session(service["engine"]) as session:
        rows = session.scalars(select(LiveTrafficObservation).where(LiveTrafficObservation.source == SOURCE)
                               .order_by(LiveTrafficObservation.id)).all()  # fmt: skip
    latest = {r.edge_index: r.speed_kph for r in rows}  # later observations of an edge win
    assert latest, "no live observation was made from the pings"
    length, free_kph = net.edge_length_m, net.edge_speed_kph
    gain = {e: 0.6 * length[e] * (3.6 / s - 3.6 / free_kph[e]) for e, s in latest.items()}
    edge = max(gain, key=gain.__getitem__)
    assert gain[edge] > 1.0, "the slowest observed road is too short to measure"
    graph = RoadGraph(net)
    (lat_a, _), (lon_a, _) = graph.edge_geometry(edge, 0.2, 0.2)
    (lat_b, _), (lon_b, _) = graph.edge_geometry(edge, 0.8, 0.8)
    table = httpx.get(f"{base}/table/v1/driving/{lon_a},{lat_a};{lon_b},{lat_b}?sources=0&destinations=1",
                      headers=headers, timeout=10).json()  # fmt: skip
    seconds = table["durations"][0][0]
    free_flow = 0.6 * length[edge] / (free_kph[edge] / 3.6)
    observed = 0.6 * length[edge] / (latest[edge] / 3.6)
    assert free_flow + 0.5 < seconds <= observed + 0.2, (edge, free_flow, seconds, observed)

    # Cache keys roll over with the epoch: the same request is computed again, under the new traffic.
    after = httpx.post(f"{base}/v1/routes", json=request, headers=headers, timeout=30).json()
    assert after["versions"]["traffic_epoch"] > epoch0 and after["cache"] == "miss"


def test_edge_fallback_while_the_service_is_cut_off_then_back(service: dict[str, Any]) -> None:
    proxy = TcpProxy(("127.0.0.1", service["port"]))
    proxy.cut()
    sim = Simulation(_config(service, url=f"http://127.0.0.1:{proxy.port}", count=2, duration_s=15.0, retry_s=0.5,
                             seed=2))  # fmt: skip
    result: list[dict[str, Any]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(sim.run()))
        except BaseException as exc:  # shown by the test, not lost in the thread
            failed.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    try:
        runner.start()
        deadline = time.time() + 60
        while sim.stats.provisional_routes < 2:  # every driver planned locally
            assert not failed, repr(failed)
            assert runner.is_alive() and time.time() < deadline, f"drivers did not fall back: {sim.stats}"
            time.sleep(0.2)
        assert all(d.plan is not None and d.plan.provisional for d in sim.drivers)
        proxy.restore()
        runner.join(timeout=60)
    finally:
        proxy.close()
    assert not failed, repr(failed)
    [report] = result
    assert report["provisional_routes"] == 2 and report["service_routes"] >= 2
    assert report["replans"].get("service_back", 0) == 2  # each driver asked again and got a service route
    assert all(not d["provisional"] and d["route_id"] for d in report["per_driver"])
    assert any(kind.startswith("route_") for kind in report["errors"])
    assert report["edge_model"].startswith("int8 model")  # the local plans were guided by the on-device model


def test_edge_fallback_with_nothing_listening(service: dict[str, Any]) -> None:
    report = run_simulation(_config(service, url=f"http://127.0.0.1:{_free_port()}", count=2, speedup=50.0,
                                    duration_s=4.0, model_dir=None, seed=3))  # fmt: skip
    assert report["provisional_routes"] == 2 and report["service_routes"] == 0
    assert report["errors"]["route_connect"] >= 2 and report["errors"]["ping_connect"] >= 2
    assert report["pings"]["accepted"] == 0
    assert all(d["provisional"] for d in report["per_driver"])
    assert report["stops"]["done"] >= 1  # the drivers drive their provisional routes
    assert "plain search" in report["edge_model"]


def test_drivers_command_prints_its_summary(service: dict[str, Any]) -> None:
    out = service["tmp"] / "report.json"
    proc = subprocess.run([*CLI, "drivers", "--url", service["base"], "--count", "3", "--duration", "5",
                           "--token", service["token"], "--report", str(out)],
                          capture_output=True, text=True, timeout=120, env=_clean_env(), check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for label in ("drivers", "route requests", "re-plans", "pings", "stops done", "errors", "traffic epoch"):
        assert label in proc.stdout, label
    report = json.loads(out.read_text())
    assert report["drivers"] == 3 and report["route_requests"] >= 3 and report["pings"]["accepted"] > 0
    assert report["errors_total"] == 0, report["errors"]
    assert "token" not in report["config"]


@pytest.mark.parametrize("token", ["rt_not_a_token", None])
def test_drivers_command_without_a_valid_token_exits_2(service: dict[str, Any], token: str | None) -> None:
    argv = [*CLI, "drivers", "--url", service["base"], "--duration", "2"] + (["--token", token] if token else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_clean_env(), check=False)
    assert proc.returncode == 2
    assert "error: the service refused the token" in proc.stderr and "Traceback" not in proc.stderr
