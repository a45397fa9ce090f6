"""Map matching (graph_store.map_matching) and the candidate query it uses (SegmentIndex.within),
on small hand-made grids; one noisy trace on Manhattan midtown (../shared/data)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from graph_store.geo import haversine_m
from graph_store.map_matching import edge_traversals, match_trace
from graph_store.osm_import import read_osm
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import TrafficState
from tests.synthetic_osm import grid_node, write_osm

ROAD = {"highway": "residential", "maxspeed": "40"}
WHEN = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> RoadGraph:
    """A 4 x 4 grid of two-way streets (rows ~111 m apart, columns ~55 m); row 3 is one-way eastbound."""
    nodes = {r * 10 + c + 1: grid_node(r, c) for r in range(4) for c in range(4)}
    ways = [(100 + r, [r * 10 + c + 1 for c in range(4)], {**ROAD, **({"oneway": "yes"} if r == 3 else {})})
            for r in range(4)]  # fmt: skip
    ways += [(200 + c, [r * 10 + c + 1 for r in range(4)], ROAD) for c in range(4)]
    path = write_osm(tmp_path_factory.mktemp("town") / "grid.osm", nodes, ways)
    return RoadGraph(read_osm(path))


def _node(graph: RoadGraph, p: tuple[int, int]) -> int:
    lat, lon = grid_node(*p)
    return int(np.argmin(np.hypot(graph.network.node_lat - lat, graph.network.node_lon - lon)))


def _edge(graph: RoadGraph, a: tuple[int, int], b: tuple[int, int]) -> int:
    e = int(graph.edges_between(np.asarray([_node(graph, a)]), np.asarray([_node(graph, b)]))[0])
    assert e >= 0
    return e


def _drive(corners: list[tuple[int, int]], step_m: float = 20.0, speed_mps: float = 10.0,
           offset_m: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Fixes every ``step_m`` along straight lines through grid points (start and end included),
    ``offset_m`` metres north of the road, timestamps at ``speed_mps``."""
    lats, lons = [], []
    for a, b in itertools.pairwise(corners):
        (la, lo), (lb, lob) = grid_node(*a), grid_node(*b)
        n = max(1, round(float(haversine_m(la, lo, lb, lob)) / step_m))
        t = np.arange(n) / n
        lats.append(la + t * (lb - la))
        lons.append(lo + t * (lob - lo))
    end = grid_node(*corners[-1])
    lat = np.concatenate([*lats, [end[0]]]) + offset_m / 111_195.0
    lon = np.concatenate([*lons, [end[1]]])
    d = np.concatenate(([0.0], np.cumsum(haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]))))
    return lat, lon, 1_700_000_000.0 + d / speed_mps


def _edges(result) -> list[int]:  # type: ignore[no-untyped-def]
    return [t.edge for m in result.matchings for t in m.edges if t.covered_m > 1e-9]


# -- candidates ------------------------------------------------------------------------


def test_within_finds_every_road_in_reach_nearest_first(town: RoadGraph) -> None:
    lat, lon = grid_node(1, 1)
    lat += 5 / 111_195.0  # 5 m north of an intersection of two through roads: four road pieces meet
    cand = town._segments.within(np.asarray([lat, lat + 1.0]), np.asarray([lon, lon]), 30.0)
    assert cand.offsets.tolist() == [0, 4, 4]  # the second point is ~111 km away
    assert np.all(np.diff(cand.distance_m) >= 0)
    assert cand.distance_m[0] == pytest.approx(0.0, abs=1e-6)  # on the north-south road
    assert np.all(cand.distance_m <= 30.0)
    # The nearest candidate is what snap answers.
    snapped = town._segments.snap(np.asarray([lat]), np.asarray([lon]))
    assert cand.distance_m[0] == pytest.approx(snapped.distance_m[0])
    # Brute force: every road (one directed edge of each indexed) whose geometry comes within reach, once.
    net = town.network
    qx, qy = town.projection.to_xy(np.asarray(lat), np.asarray(lon))
    near = {}
    for e in set(town._segments.seg_edge.tolist()):
        x, y = town.projection.to_xy(*net.edge_geometry(e))
        ax, ay, dx, dy = x[:-1], y[:-1], np.diff(x), np.diff(y)
        t = np.clip(((qx - ax) * dx + (qy - ay) * dy) / (dx * dx + dy * dy), 0, 1)
        d = float(np.min(np.hypot(ax + t * dx - qx, ay + t * dy - qy)))
        if d <= 30.0:
            near[e] = d
    got = dict(zip(cand.edge[:4].tolist(), cand.distance_m[:4].tolist(), strict=True))
    assert got.keys() == near.keys()
    assert all(got[e] == pytest.approx(near[e], abs=1e-6) for e in near)
    few = town._segments.within(np.asarray([lat]), np.asarray([lon]), 30.0, max_per_point=2)
    assert few.edge.tolist() == cand.edge[:2].tolist()
    radii = town._segments.within(np.asarray([lat, lat]), np.asarray([lon, lon]), np.asarray([3.0, 30.0]))
    assert radii.offsets.tolist() == [0, 1, 5]  # within 3 m: only the road the point lies on


# -- matching --------------------------------------------------------------------------


def test_straight_trace_matches_its_road_in_driving_order(town: RoadGraph) -> None:
    lat, lon, ts = _drive([(0, 0), (0, 3)], offset_m=4.0)
    res = match_trace(town, lat, lon, ts)
    assert len(res.matchings) == 1
    m = res.matchings[0]
    assert _edges(res) == [_edge(town, (0, c), (0, c + 1)) for c in range(3)]
    assert all(tp is not None for tp in res.tracepoints)
    assert [p.index for p in m.points] == list(range(lat.size))
    first, last = m.edges[0], m.edges[-1]
    assert first.enter_fraction == pytest.approx(0.0, abs=1e-3) and last.exit_fraction == pytest.approx(1.0, abs=1e-3)
    assert first.enter_ts == pytest.approx(ts[0]) and last.exit_ts == pytest.approx(ts[-1])
    assert m.distance_m == pytest.approx(sum(t.covered_m for t in m.edges))
    assert m.distance_m == pytest.approx(float(np.sum(town.edge_length_m[_edges(res)])), rel=1e-6)
    assert 0.9 < m.confidence <= 1.0
    # Entered when the previous edge was left; time runs forward.
    for a, b in zip(m.edges[:-1], m.edges[1:], strict=True):
        assert b.enter_ts == pytest.approx(a.exit_ts)
        assert a.enter_ts <= a.exit_ts
    travs = edge_traversals(res)
    assert [t[0] for t in travs] == _edges(res)
    assert all(0.0 <= t[3] <= 1.0 for t in travs)
    # Same trace, other way: the opposite directed edges.
    back = match_trace(town, lat[::-1], lon[::-1], ts[-1] + ts[0] - ts[::-1])
    assert _edges(back) == [_edge(town, (0, c + 1), (0, c)) for c in (2, 1, 0)]


def test_trace_round_a_corner_and_partial_end_edges(town: RoadGraph) -> None:
    lat, lon, ts = _drive([(0, 0), (0, 2), (2, 2)])
    # Start a third of the way along the first edge, stop half way up the last one.
    keep = slice(1, -3)
    res = match_trace(
        RoutingSnapshot(town, TrafficState()), lat[keep], lon[keep], ts[keep], radiuses=np.full(lat[keep].size, 5.0)
    )
    assert _edges(res) == [_edge(town, (0, 0), (0, 1)), _edge(town, (0, 1), (0, 2)), _edge(town, (0, 2), (1, 2)),
                           _edge(town, (1, 2), (2, 2))]  # fmt: skip
    m = res.matchings[0]
    assert 0.2 < m.edges[0].enter_fraction < 0.5
    assert 0.2 < m.edges[-1].exit_fraction < 0.8
    assert m.edges[0].enter_ts == pytest.approx(ts[1])


def test_one_way_street_is_matched_in_its_direction_only(town: RoadGraph) -> None:
    lat, lon, ts = _drive([(3, 0), (3, 3)])
    assert _edges(match_trace(town, lat, lon, ts)) == [_edge(town, (3, c), (3, c + 1)) for c in range(3)]
    # Driven the wrong way, the fixes cannot follow row 3: no edge of row 3 runs westbound.
    res = match_trace(town, lat[::-1], lon[::-1], ts[-1] + ts[0] - ts[::-1])
    westbound = set(town.edges_between(np.asarray([_node(town, (3, c + 1)) for c in range(3)]),
                                       np.asarray([_node(town, (3, c)) for c in range(3)])).tolist())  # fmt: skip
    assert westbound == {-1}
    assert all(town.edge_target[e] != town.edge_source[e] for e in _edges(res))


def test_gps_jitter_of_a_standing_vehicle_does_not_loop(town: RoadGraph) -> None:
    lat0, lon0 = grid_node(0, 1)
    lat1, lon1 = grid_node(0, 2)
    t = np.asarray([0.4, 0.5, 0.47, 0.52, 0.49, 0.6, 0.7])  # along the edge, back and forth by a few metres
    lat = lat0 + t * (lat1 - lat0)
    lon = lon0 + t * (lon1 - lon0)
    res = match_trace(town, lat, lon, np.arange(t.size) * 5.0)
    assert len(res.matchings) == 1
    assert _edges(res) == [_edge(town, (0, 1), (0, 2))]
    trav = res.matchings[0].edges
    assert len(trav) == 1
    assert trav[0].enter_fraction == pytest.approx(0.4, abs=0.02) and trav[0].exit_fraction == pytest.approx(
        0.7, abs=0.02
    )


def test_a_u_turn_the_trace_shows_is_kept(town: RoadGraph) -> None:
    lat, lon, ts = _drive([(1, 0), (1, 3), (1, 0)], offset_m=3.0)
    edges = _edges(match_trace(town, lat, lon, ts))
    east = [_edge(town, (1, c), (1, c + 1)) for c in range(3)]
    west = [_edge(town, (1, c + 1), (1, c)) for c in (2, 1, 0)]
    assert edges == east + west


def test_unreachable_fix_is_skipped_and_time_gaps_split(town: RoadGraph) -> None:
    lat, lon, ts = _drive([(0, 0), (0, 3)])
    lat, lon = lat.copy(), lon.copy()
    k = lat.size // 2
    lat[k] += 0.01  # ~1.1 km off the grid: no road in reach
    res = match_trace(town, lat, lon, ts)
    assert len(res.matchings) == 1
    assert res.tracepoints[k] is None
    assert sum(tp is None for tp in res.tracepoints) == 1
    assert res.tracepoints[k + 1] == (0, k)  # the waypoint index skips the unmatched fix
    # A 10-minute gap in the timestamps: two sub-matchings with gaps=split, one with ignore.
    lat, lon, ts = _drive([(0, 0), (0, 3)])
    ts = ts + np.where(np.arange(ts.size) >= k, 600.0, 0.0)
    split = match_trace(town, lat, lon, ts)
    assert len(split.matchings) == 2
    assert split.tracepoints[k] == (1, 0)
    assert len(match_trace(town, lat, lon, ts, gaps="ignore").matchings) == 1
    # Half a second to jump ~330 m to another street: faster than any car, a break.
    far_lat, far_lon, _ = _drive([(3, 0), (3, 3)])
    lat2 = np.concatenate((lat[:3], far_lat[:3]))
    lon2 = np.concatenate((lon[:3], far_lon[:3]))
    ts2 = np.asarray([0.0, 2.0, 4.0, 4.5, 6.5, 8.5])
    assert len(match_trace(town, lat2, lon2, ts2).matchings) == 2
    assert len(match_trace(town, lat2, lon2, ts2 * 10).matchings) == 1


def test_single_fix_sub_matchings_are_dropped_and_bad_input_refused(town: RoadGraph) -> None:
    lat, lon = grid_node(0, 0)
    res = match_trace(town, np.asarray([lat, lat + 0.01]), np.asarray([lon, lon]), np.asarray([0.0, 1.0]))
    assert res.matchings == () and res.tracepoints == (None, None)
    with pytest.raises(ValueError, match="timestamps"):
        match_trace(town, np.asarray([lat, lat]), np.asarray([lon, lon]), np.asarray([1.0, 1.0]))
    with pytest.raises(ValueError, match="radiuses"):
        match_trace(town, np.asarray([lat, lat]), np.asarray([lon, lon]), radiuses=np.asarray([5.0, 0.0]))
    with pytest.raises(ValueError, match="gaps"):
        match_trace(town, np.asarray([lat, lat]), np.asarray([lon, lon]), gaps="sometimes")


# -- a real map --------------------------------------------------------------------------


@pytest.mark.shared_data
def test_noisy_trace_on_manhattan_recovers_the_driven_edges(road_networks: Path) -> None:
    graph = RoadGraph(read_osm(road_networks / "manhattan_midtown.osm.pbf"))
    snap = RoutingSnapshot(graph, TrafficState())
    w_s = snap.edge_weights_ms(WHEN) / 1000.0
    rng = np.random.default_rng(20261201)
    hit = total = matched_n = 0
    traces = 0
    while traces < 10:
        u, v = (int(x) for x in rng.integers(0, graph.node_count, 2))
        nodes = np.asarray(snap.node_path(u, v, WHEN), dtype=np.int64)
        if nodes.size < 8:
            continue
        edges = graph.edges_between(nodes[:-1], nodes[1:])
        t_end = np.cumsum(w_s[edges])
        times = np.arange(0.0, t_end[-1], 10.0)
        k = np.searchsorted(t_end, times, side="right")
        frac = 1.0 - (t_end[k] - times) / w_s[edges[k]]
        lat, lon = graph._point_at(edges[k], frac)
        x, y = graph.projection.to_xy(lat, lon)
        lat, lon = graph.projection.to_latlon(x + rng.normal(0, 15.0, x.size), y + rng.normal(0, 15.0, y.size))
        res = match_trace(snap, lat, lon, times + 1_700_000_000.0, np.full(lat.size, 15.0))
        truth = set(edges[: int(k[-1]) + 1].tolist())
        got = set(_edges(res))
        hit += len(truth & got)
        total += len(truth)
        matched_n += len(got)
        traces += 1
    assert hit / total >= 0.9
    assert hit / matched_n >= 0.8
