"""Learning travel times from driver pings: simulated drivers on Helsinki, their pings in a real
SQLite store, ``ping_trips`` (map matching into pseudo-trips), ``learn_profile`` and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import insert

import migrations
from graph_store.models import DriverPosition
from graph_store.repository import MapRepository, make_engine
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from routing_api.cli import main
from travel_times.dataset import TripPaths
from travel_times.learn import learn_profile
from travel_times.pings import ping_trips

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 08:00 in Helsinki
TZ = "Europe/Helsinki"
SLOWDOWN = 0.5  # drivers go at half the base model's edge speed
PING_S = 10.0
NOISE_M = 5.0
STOP_S = 300.0
DRIVE_S = 2400.0  # per driver
DRIVERS = 4
_M_PER_DEG = 111_195.0


@dataclass
class Drive:
    """A simulated driver: the edges driven (with their seconds) and the stop, as Unix seconds."""

    driver: str
    edges: set[int]
    edge_s: dict[int, float]
    ping_t: np.ndarray
    stop: tuple[float, float] | None


@dataclass
class World:
    url: str
    repo: MapRepository
    map_id: int
    graph: RoadGraph
    drives: dict[str, Drive]
    edge_s: np.ndarray  # simulated seconds to drive each whole edge


def _simulate(graph: RoadGraph, rng: np.random.Generator, driver: str, t_start: float, edge_s: np.ndarray,
              with_stop: bool) -> tuple[Drive, list[dict[str, object]]]:  # fmt: skip
    """Chain fastest paths between random nodes for ``DRIVE_S`` seconds; ping every ``PING_S``."""
    snapshot = RoutingSnapshot(graph, TrafficState())
    when = START.replace(tzinfo=None)
    node = int(rng.integers(graph.node_count))
    path: list[int] = []
    total = 0.0
    while total < DRIVE_S:
        target = int(rng.integers(graph.node_count))
        nodes = snapshot.node_path(node, target, when)
        if len(nodes) < 15:
            continue
        edges = graph.edges_between(np.asarray(nodes[:-1]), np.asarray(nodes[1:])).tolist()
        path += edges
        total += float(edge_s[edges].sum())
        node = target
    # Segments (edge, f0, f1, t0, t1): each edge at constant speed, one stop mid-way along an edge.
    seg: list[tuple[int, float, float, float, float]] = []
    t = t_start
    stop = None
    for e in path:
        if with_stop and stop is None and t - t_start > 0.4 * DRIVE_S and graph.edge_length_m[e] > 80.0:
            half = 0.5 * edge_s[e]
            seg.append((e, 0.0, 0.5, t, t + half))
            stop = (t + half, t + half + STOP_S)
            seg.append((e, 0.5, 0.5, *stop))
            seg.append((e, 0.5, 1.0, stop[1], stop[1] + half))
            t = stop[1] + half
        else:
            seg.append((e, 0.0, 1.0, t, t + float(edge_s[e])))
            t += float(edge_s[e])
    assert not with_stop or stop is not None
    t_end = seg[-1][4]
    ping_t = np.arange(t_start, t_end, PING_S) + rng.uniform(0.0, 1.0)
    seg_t0 = np.asarray([s[3] for s in seg])
    k = np.clip(np.searchsorted(seg_t0, ping_t, side="right") - 1, 0, len(seg) - 1)
    e_k = np.asarray([seg[i][0] for i in k], dtype=np.int64)
    f0, f1, t0, t1 = (np.asarray([seg[i][j] for i in k]) for j in (1, 2, 3, 4))
    frac = f0 + (f1 - f0) * np.clip((ping_t - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)
    lat, lon = graph._point_at(e_k, frac)
    noise = rng.normal(0.0, NOISE_M / np.sqrt(2.0), (2, ping_t.size))
    lat = lat + noise[0] / _M_PER_DEG
    lon = lon + noise[1] / (_M_PER_DEG * np.cos(np.radians(lat)))
    rows: list[dict[str, object]] = [{"driver_id": driver, "lat": float(a), "lon": float(b), "timestamp": datetime.fromtimestamp(float(s), UTC),
             "speed_mps": None, "heading_deg": None, "received_at": datetime.fromtimestamp(float(s) + 1.0, UTC)}
            for a, b, s in zip(lat, lon, ping_t, strict=True)]  # fmt: skip
    rows.append(dict(rows[len(rows) // 3]))  # the app sent one fix twice
    drive = Drive(driver, set(path), {e: float(edge_s[e]) for e in path}, ping_t, stop)
    return drive, rows


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, helsinki_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path_factory.mktemp('pings') / 'routing.sqlite3'}"
    engine = make_engine(url)
    migrations.upgrade(engine)
    repo = MapRepository(engine)
    info = repo.import_map(helsinki_path).map
    graph = RoadGraph(repo.load_network(info.id), map_version=info.id, name=info.name)
    edge_s = graph.edge_length_m / (SLOWDOWN * graph.network.edge_speed_kph / 3.6)
    rng = np.random.default_rng(7)
    drives: dict[str, Drive] = {}
    rows: list[dict[str, object]] = []
    t0 = START.timestamp()
    for d in range(DRIVERS):
        drive, r = _simulate(graph, rng, f"driver-{d}", t0 + 37.0 * d, edge_s, with_stop=d == 0)
        drives[drive.driver] = drive
        rows += r
    # Pings from the day before (not asked for) and, later, a driver far off the map (nothing matches).
    rows += [{**r, "driver_id": "yesterday", "timestamp": r["timestamp"] - timedelta(days=1)}  # type: ignore[operator]
             for r in rows if r["driver_id"] == "driver-1"]  # fmt: skip
    late = START + timedelta(hours=3)
    rows += [{"driver_id": "far-away", "lat": 61.5 + 0.0003 * i, "lon": 23.8, "timestamp": late + timedelta(seconds=10 * i),
              "speed_mps": None, "heading_deg": None, "received_at": late} for i in range(30)]  # fmt: skip
    with repo.sessions.begin() as session:
        session.execute(insert(DriverPosition), rows)
    yield World(url, repo, info.id, graph, drives, edge_s)
    engine.dispose()


@pytest.fixture(scope="module")
def trips(world: World) -> TripPaths:
    return ping_trips(world.repo.engine, world.graph, START.replace(tzinfo=None), TZ)


def _driver(trip_id: str) -> str:
    return trip_id.split("@", 1)[0]


def _start_s(paths: TripPaths) -> np.ndarray:
    """Trips' departures back in Unix seconds (``pickup_at`` is naive local time)."""
    zone = ZoneInfo(TZ)
    return np.asarray([datetime.fromisoformat(str(p)).replace(tzinfo=zone).timestamp() for p in paths.trips.pickup_at])


def test_trips_lie_on_the_driven_paths(world: World, trips: TripPaths) -> None:
    n = len(trips)
    assert n >= 25  # ~40 min of driving per driver in windows of ~5 min
    drivers = {_driver(str(t)) for t in trips.trips.trip_id}
    assert drivers == set(world.drives)  # not yesterday's pings, not the driver off the map
    assert trips.coverage.shape == (n, world.graph.network.edge_count)
    np.testing.assert_array_equal(trips.kept, np.arange(n))
    cov = trips.coverage.tocoo()
    assert np.all(cov.data > 0) and np.all(cov.data <= 3.0)  # an edge driven twice in a window counts twice
    np.testing.assert_allclose(trips.route_m, np.asarray(trips.coverage @ world.graph.edge_length_m).ravel())
    on_path = np.zeros(n)
    for r, e, share in zip(cov.row, cov.col, cov.data, strict=True):
        if int(e) in world.drives[_driver(str(trips.trips.trip_id[r]))].edges:
            on_path[r] += share * world.graph.edge_length_m[e]
    assert np.all(on_path / trips.route_m >= 0.9), np.min(on_path / trips.route_m)
    assert on_path.sum() / trips.route_m.sum() >= 0.98
    # Departures: local clock (Helsinki, UTC+2 in March), inside the driver's pings.
    start = _start_s(trips)
    for i, trip_id in enumerate(trips.trips.trip_id):
        t = world.drives[_driver(str(trip_id))].ping_t
        assert t[0] - 1.0 <= start[i] <= t[-1]
    assert str(trips.trips.pickup_at.min()).startswith("2026-03-02T08:0")
    # Ends: where the trip's first and last pieces are, on the map.
    la0, lo0, la1, lo1 = world.graph.network.bbox()
    assert np.all(trips.trips.inside((la0, lo0, la1, lo1)))


def test_durations_match_the_simulated_drive(world: World, trips: TripPaths) -> None:
    cov = trips.coverage.tocoo()
    simulated = np.bincount(cov.row, weights=cov.data * world.edge_s[cov.col], minlength=len(trips))
    ratio = trips.trips.duration_s / simulated
    # Within 15%; a short trip (the end of a trace) may be off by up to one ping interval.
    err = np.abs(trips.trips.duration_s - simulated)
    bad = (err > 0.15 * simulated) & ((simulated >= 120.0) | (err > PING_S))
    assert not bad.any(), (trips.trips.trip_id[bad], trips.trips.duration_s[bad], simulated[bad])
    long = simulated >= 120.0
    assert long.sum() >= 0.7 * len(trips) and np.all(np.abs(ratio[long] - 1.0) <= 0.15)
    assert abs(np.median(ratio) - 1.0) <= 0.03
    assert np.all(trips.trips.duration_s >= 30.0)
    assert np.median(trips.trips.duration_s) == pytest.approx(300.0, abs=60.0)  # windows of ~window_s


def test_a_delivery_stop_is_not_travel_time(world: World, trips: TripPaths) -> None:
    stopper = world.drives["driver-0"]
    assert stopper.stop is not None
    a, b = stopper.stop
    start = _start_s(trips)
    mine = [i for i, t in enumerate(trips.trips.trip_id) if _driver(str(t)) == "driver-0"]
    assert len(mine) >= 5
    for i in mine:
        s, e = start[i], start[i] + trips.trips.duration_s[i]
        overlap = max(0.0, min(e, b) - max(s, a))
        assert overlap <= PING_S, (s, e, a, b)
    # Trips both before and after the stop.
    assert any(start[i] + trips.trips.duration_s[i] <= a + PING_S for i in mine)
    assert any(start[i] >= b - PING_S for i in mine)


def test_no_pings_or_no_trips_is_an_error(world: World) -> None:
    with pytest.raises(ValueError, match="no driver pings"):
        ping_trips(world.repo.engine, world.graph, START + timedelta(days=30), TZ)
    # Only the driver off the map pinged after this: nothing matches.
    with pytest.raises(ValueError, match="no trips"):
        ping_trips(world.repo.engine, world.graph, START + timedelta(hours=2, minutes=59), TZ)
    with pytest.raises(ValueError, match="time zone"):
        ping_trips(world.repo.engine, world.graph, START, "Mars/Olympus")


def test_learn_profile_from_ping_trips(world: World, trips: TripPaths) -> None:
    result = learn_profile(world.graph, trips, max_epochs=20, source="pings")
    assert len(result.version) > 0 and len(result.onnx_model) > 0
    m = result.metrics
    assert m["source"] == "pings" and m["trips_on_map"] == len(trips) == m["trips_read"]
    assert m["holdout_trips"] >= 1 and 1 <= m["epochs"] <= 20
    assert {"base", "gnn"} <= set(m["holdout"])
    assert np.isfinite(m["holdout"]["gnn"]["mae_s"]) and np.isfinite(m["holdout"]["base"]["mape"])


def test_cli_learns_from_pings(world: World, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("ROUTING_DATABASE_URL", world.url)
    since = START.isoformat()
    assert main(["traffic", "learn", "--from-pings", "--since", since, "--timezone", TZ, "--max-epochs", "20"]) == 0
    out = capsys.readouterr().out
    profiles = world.repo.learned_profiles(world.map_id)
    assert profiles and profiles[0]["active"] is True and profiles[0]["source"] == "pings"
    assert profiles[0]["version"] in out and profiles[0]["timezone"] == TZ
    assert main(["traffic", "learn", "--from-pings", "--since", (START + timedelta(days=30)).isoformat()]) == 2
    assert "no driver pings" in capsys.readouterr().err
