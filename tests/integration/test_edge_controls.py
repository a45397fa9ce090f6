"""Traffic controls, lanes and tagged maxspeed per directed edge: import, SQL round trip, migration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, inspect, update

import migrations
from graph_store.models import RoadEdge
from graph_store.osm_import import CROSSING, GIVE_WAY, SIGNAL, STOP, RoadNetwork, node_control, read_osm
from graph_store.repository import MapRepository, make_engine
from tests.synthetic_osm import grid_node, write_osm

FEATURES = ("signals", "stops", "give_way", "crossings", "lanes", "maxspeed_tagged")
NEW_COLUMNS = set(FEATURES)

# Graph nodes A, B, C, D, E; the others are interior nodes of one way each.
A, B, C, D, E = 1, 2, 3, 4, 5
S, M, N, P, T, R, Q, G, H = 11, 12, 13, 14, 15, 16, 17, 18, 19


def _pos(row: int, col: int) -> tuple[float, float]:
    return grid_node(row, col, step=0.0005)


NODES = {
    A: _pos(0, 0), S: _pos(0, 1), M: _pos(0, 2), B: _pos(0, 4), N: _pos(0, 6), C: _pos(0, 8),
    P: _pos(2, 4), T: _pos(3, 4), D: _pos(4, 4), R: _pos(4, 6), Q: _pos(4, 8),
    E: _pos(-4, 0), G: _pos(-2, -1), H: _pos(-2, 1),
}  # fmt: skip
NODE_TAGS = {
    B: {"highway": "traffic_signals"},  # at an intersection: counts for the edges arriving at B
    M: {"highway": "traffic_signals"},  # mid-way: counts both ways
    S: {"crossing": "uncontrolled"},  # a crossing without highway=*
    N: {"highway": "stop", "direction": "forward"},  # only along way 100's node order
    C: {"highway": "give_way"},
    P: {"highway": "crossing", "crossing": "marked"},
    T: {"highway": "street_lamp"},  # not a control
    R: {"highway": "traffic_signals", "traffic_signals:direction": "backward"},  # against one-way 300
    Q: {"railway": "level_crossing"},
    G: {"highway": "traffic_signals"},  # on the slow parallel road, which is dropped
    H: {"highway": "stop", "stop": "all", "direction": "forward"},  # all-way stop: both directions
}
WAYS = [
    (100, [A, S, M, B, N, C], {"highway": "residential", "lanes": "2", "maxspeed": "30"}),
    (200, [B, P, T, D], {"highway": "residential", "lanes": "4", "lanes:forward": "3"}),
    (300, [D, R, Q, C], {"highway": "residential", "oneway": "yes", "lanes": "3", "maxspeed": "fast"}),
    (400, [A, G, E], {"highway": "residential", "maxspeed": "10"}),
    (410, [A, H, E], {"highway": "primary", "maxspeed": "50"}),
]
NAN = float("nan")
# (source, target): (way, signals, stops, give_way, crossings, lanes, maxspeed_tagged)
EXPECTED = {
    (A, B): (100, 2, 0, 0, 1, 1.0, True),
    (B, A): (100, 1, 0, 0, 1, 1.0, True),
    (B, C): (100, 0, 1, 1, 0, 1.0, True),
    (C, B): (100, 1, 0, 0, 0, 1.0, True),
    (B, D): (200, 0, 0, 0, 1, 3.0, False),
    (D, B): (200, 1, 0, 0, 1, 2.0, False),
    (D, C): (300, 0, 0, 1, 1, 3.0, False),
    (A, E): (410, 0, 1, 0, 0, NAN, True),
    (E, A): (410, 0, 1, 0, 0, NAN, True),
}


@pytest.fixture
def controls_path(tmp_path: Path) -> Path:
    return write_osm(tmp_path / "controls.osm", NODES, WAYS, NODE_TAGS)


def _edges(net: RoadNetwork) -> dict[tuple[int, int], int]:
    osm = net.node_osm_id
    return {
        (int(osm[s]), int(osm[t])): e for e, (s, t) in enumerate(zip(net.edge_source, net.edge_target, strict=True))
    }


def _assert_same_controls(a: RoadNetwork, b: RoadNetwork) -> None:
    ca, cb = a.controls(), b.controls()
    for key in FEATURES:
        assert ca[key].dtype == cb[key].dtype, key
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)


def test_node_control_codes() -> None:
    assert node_control({"highway": "traffic_signals"}) == SIGNAL
    assert node_control({"highway": "stop"}) == STOP
    assert node_control({"highway": "give_way"}) == GIVE_WAY
    assert node_control({"highway": "crossing"}) == CROSSING
    assert node_control({"crossing": "zebra"}) == CROSSING
    assert node_control({"crossing": "no"}) == 0
    assert node_control({"highway": "bus_stop", "crossing": "zebra"}) == 0  # crossing=* counts without highway
    assert node_control({"highway": "traffic_signals", "railway": "level_crossing"}) == SIGNAL | CROSSING
    assert node_control({"railway": "level_crossing"}) == CROSSING
    assert node_control({"highway": "street_lamp"}) == 0
    assert node_control({}) == 0


def test_controls_counted_per_directed_edge(controls_path: Path) -> None:
    net = read_osm(controls_path)
    edges = _edges(net)
    assert set(edges) == set(EXPECTED)
    c = net.controls()
    assert c["signals"].dtype == np.int16 and c["stops"].dtype == np.int16
    assert c["give_way"].dtype == np.int16 and c["crossings"].dtype == np.int16
    assert c["lanes"].dtype == np.float32 and c["maxspeed_tagged"].dtype == bool
    for (u, v), (way, signals, stops, give_way, crossings, lanes, tagged) in EXPECTED.items():
        e = edges[(u, v)]
        got = (int(net.edge_way_id[e]), int(c["signals"][e]), int(c["stops"][e]), int(c["give_way"][e]),
               int(c["crossings"][e]), bool(c["maxspeed_tagged"][e]))  # fmt: skip
        assert got == (way, signals, stops, give_way, crossings, tagged), (u, v)
        if np.isnan(lanes):
            assert np.isnan(c["lanes"][e]), (u, v)
        else:
            assert c["lanes"][e] == lanes, (u, v)
    # The fields themselves are set on a fresh import.
    assert net.edge_signals is not None and net.edge_lanes is not None and net.edge_maxspeed_tagged is not None


def test_network_without_controls_reads_as_zeros(controls_path: Path) -> None:
    net = read_osm(controls_path)
    bare = replace(net, **{f"edge_{k}": None for k in FEATURES})
    c = bare.controls()
    for key in ("signals", "stops", "give_way", "crossings"):
        assert c[key].dtype == np.int16 and c[key].shape == (net.edge_count,) and not c[key].any()
    assert c["lanes"].dtype == np.float32 and np.isnan(c["lanes"]).all() and c["lanes"].shape == (net.edge_count,)
    assert c["maxspeed_tagged"].dtype == bool and not c["maxspeed_tagged"].any()


def test_controls_round_trip_through_sql(repository: MapRepository, controls_path: Path) -> None:
    net = read_osm(controls_path)
    info = repository.import_map(controls_path).map
    loaded = repository.load_network(info.id)
    assert loaded.edge_signals is not None
    _assert_same_controls(net, loaded)


@pytest.mark.shared_data
def test_real_map_controls_round_trip_through_sql(repository: MapRepository, road_networks: Path) -> None:
    path = road_networks / "manhattan_midtown.osm.pbf"
    info = repository.import_map(path).map
    _assert_same_controls(read_osm(path), repository.load_network(info.id))


def test_map_stored_without_controls_loads_as_none(repository: MapRepository, controls_path: Path) -> None:
    info = repository.import_map(controls_path).map
    with repository.sessions.begin() as session:  # as a map imported before revision 0004
        session.execute(update(RoadEdge).values(**dict.fromkeys(FEATURES)))
    loaded = repository.load_network(info.id)
    assert loaded.edge_signals is None and loaded.edge_lanes is None and loaded.edge_maxspeed_tagged is None
    c = loaded.controls()
    assert not c["signals"].any() and np.isnan(c["lanes"]).all() and c["signals"].size == loaded.edge_count


def _edge_columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("road_edges")}


def test_downgrade_0004_to_0003_and_back(database_url: str, controls_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        migrations.upgrade(engine)
        map_id = MapRepository(engine).import_map(controls_path).map.id
        assert _edge_columns(engine) >= NEW_COLUMNS
        migrations.downgrade(engine, "0003_api_tokens")
        assert not _edge_columns(engine) & NEW_COLUMNS
        migrations.upgrade(engine)
        assert _edge_columns(engine) >= NEW_COLUMNS
        # The rows survive; their features are unknown now.
        loaded = MapRepository(engine).load_network(map_id)
        assert loaded.edge_count == len(EXPECTED) and loaded.edge_signals is None
    finally:
        engine.dispose()


def _shares(net: RoadNetwork) -> dict[str, float]:
    c = net.controls()
    shares = {k: float(np.mean(c[k] > 0)) for k in ("signals", "stops", "give_way", "crossings")}
    shares["lanes_known"] = float(np.mean(~np.isnan(c["lanes"])))
    shares["maxspeed_tagged"] = float(np.mean(c["maxspeed_tagged"]))
    return shares


# Loose floors under the shares measured at writing (Manhattan midtown: 41% of edges with a
# signal, 65% a crossing, 67% lanes known; Baltimore 5.9% / 0.9% / 12%; Helsinki 11% / 31% / 55%).
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "min_signals", "min_crossings", "min_lanes"),
    [
        ("manhattan_midtown.osm.pbf", 0.30, 0.40, 0.40),
        ("baltimore.osm.pbf", 0.02, 0.002, 0.05),
        ("helsinki_center.osm.pbf", 0.05, 0.15, 0.30),
    ],
)
def test_real_maps_have_controls(road_networks: Path, name: str, min_signals: float, min_crossings: float,
                                 min_lanes: float) -> None:  # fmt: skip
    net = read_osm(road_networks / name)
    shares = _shares(net)
    print(f"{name}: {net.edge_count} edges, " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    assert shares["signals"] > min_signals
    assert shares["crossings"] > min_crossings
    assert shares["lanes_known"] > min_lanes
    c = net.controls()
    # Counts are small: a city block rarely has more than a few signals.
    assert int(c["signals"].max()) <= 10
    lanes = c["lanes"][~np.isnan(c["lanes"])]
    assert lanes.min() >= 1.0 and lanes.max() <= 12.0
