"""The routing graph against independent references (networkx, brute force), and traffic updates."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from graph_store.geo import EARTH_RADIUS_M, haversine_m
from graph_store.osm_import import RoadNetwork
from graph_store.repository import MapRepository
from graph_store.routing_graph import Phantoms, RoadGraph, RoutingSnapshot, SnapError
from graph_store.service import NoActiveMap, RoadGraphService
from graph_store.traffic import DayType, LiveObservation, ProfileEntry, TrafficState, bucket_of
from graph_store.travel_model import edge_delay_s

WHEN = datetime(2025, 6, 2, 8, 30, tzinfo=UTC)  # a Monday, bucket 34


@dataclass
class Case:
    net: RoadNetwork
    graph: RoadGraph
    snapshot: RoutingSnapshot
    weights: np.ndarray  # int ms per edge at WHEN
    digraph: nx.DiGraph
    edge_of: dict[tuple[int, int], int]


@pytest.fixture(scope="module", params=["baltimore", "helsinki"])
def case(request: pytest.FixtureRequest) -> Case:
    net: RoadNetwork = request.getfixturevalue(f"{request.param}_network")
    graph = RoadGraph(net)
    snapshot = RoutingSnapshot(graph, TrafficState())
    weights = snapshot.edge_weights_ms(WHEN)
    digraph = nx.DiGraph()
    digraph.add_nodes_from(range(net.node_count))
    edge_of: dict[tuple[int, int], int] = {}
    for e, (u, v) in enumerate(zip(net.edge_source.tolist(), net.edge_target.tolist(), strict=True)):
        digraph.add_edge(u, v, weight=int(weights[e]))
        edge_of[(u, v)] = e
    return Case(net, graph, snapshot, weights, digraph, edge_of)


# -- independent references ---------------------------------------------------------


def _same_road_reverse(net: RoadNetwork, edge_of: dict[tuple[int, int], int], e: int) -> int:
    """The edge driving road e the other way (same geometry reversed), or -1."""
    r = edge_of.get((int(net.edge_target[e]), int(net.edge_source[e])), -1)
    if r < 0:
        return -1
    lat_e, lon_e = net.edge_geometry(e)
    lat_r, lon_r = net.edge_geometry(r)
    if lat_e.size == lat_r.size and np.array_equal(lat_e, lat_r[::-1]) and np.array_equal(lon_e, lon_r[::-1]):
        return r
    return -1


def _reference_table(c: Case, ph: Phantoms) -> np.ndarray:
    """Milliseconds between snapped points, by Dijkstra over the phantom combinations."""
    net, w = c.net, c.weights
    exits: list[list[tuple[int, float]]] = []
    entries: list[list[tuple[int, float]]] = []
    for e, f in zip(ph.edge.tolist(), ph.fraction.tolist(), strict=True):
        u, v = int(net.edge_source[e]), int(net.edge_target[e])
        r = _same_road_reverse(net, c.edge_of, e)
        out = [(v, (1 - f) * w[e])]
        inn = [(u, f * w[e])]
        if r >= 0:
            out.append((u, f * w[r]))
            inn.append((v, (1 - f) * w[r]))
        exits.append(out)
        entries.append(inn)
    dist_from = {
        node: nx.single_source_dijkstra_path_length(c.digraph, node, weight="weight")
        for node in {n for out in exits for n, _ in out}
    }
    n = len(ph)
    ref = np.full((n, n), math.inf)
    for i in range(n):
        for j in range(n):
            best = min(
                (cost_s + dist_from[s].get(t, math.inf) + cost_t for s, cost_s in exits[i] for t, cost_t in entries[j]),
                default=math.inf,
            )
            ei, ej = int(ph.edge[i]), int(ph.edge[j])
            fi, fj = float(ph.fraction[i]), float(ph.fraction[j])
            if ei == ej:  # both on the same road: drive straight there if the road allows it
                if fj >= fi:
                    best = min(best, (fj - fi) * w[ei])
                r = _same_road_reverse(net, c.edge_of, ei)
                if r >= 0 and fj <= fi:
                    best = min(best, (fi - fj) * w[r])
            ref[i, j] = best
    return ref


def _points_near_roads(c: Case, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points a few metres off random road positions."""
    rng = np.random.default_rng(seed)
    lat = np.empty(count)
    lon = np.empty(count)
    for k, e in enumerate(rng.integers(0, c.net.edge_count, count).tolist()):
        g_lat, g_lon = c.net.edge_geometry(e)
        i = int(rng.integers(0, g_lat.size - 1))
        t = rng.uniform()
        lat[k] = g_lat[i] + t * (g_lat[i + 1] - g_lat[i]) + rng.normal(0, 5e-5)
        lon[k] = g_lon[i] + t * (g_lon[i + 1] - g_lon[i]) + rng.normal(0, 1e-4)
    return lat, lon


def _same_edge_pairs(c: Case) -> Phantoms:
    """Points on the same long roads: two-way ones (both orders) and one-way ones."""
    net = c.net
    long_edges = np.flatnonzero(net.edge_length_m > 80)
    two_way = [e for e in long_edges.tolist() if _same_road_reverse(net, c.edge_of, e) > e][:2]
    one_way = [e for e in long_edges.tolist() if (int(net.edge_target[e]), int(net.edge_source[e])) not in c.edge_of]
    lat: list[float] = []
    lon: list[float] = []
    for e in two_way + one_way[:1]:
        for f in (0.25, 0.75):
            g_lat, g_lon = c.graph.edge_geometry(e, f, f)
            lat.append(float(g_lat[0]))
            lon.append(float(g_lon[0]))
    return c.graph.snap(np.asarray(lat), np.asarray(lon), 5.0)


def _projected_segments(c: Case) -> tuple[np.ndarray, ...]:
    """Every segment of every edge's geometry, in an equirectangular projection (metres)."""
    net = c.net
    lat0, lon0 = float(net.node_lat.mean()), float(net.node_lon.mean())
    kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    ky = math.radians(1) * EARTH_RADIUS_M
    x = (net.geom_lon - lon0) * kx
    y = (net.geom_lat - lat0) * ky
    is_last = np.zeros(net.geom_lat.size, dtype=bool)
    is_last[net.geom_offsets[1:] - 1] = True
    start = np.flatnonzero(~is_last)
    seg_edge = np.searchsorted(net.geom_offsets, start, side="right") - 1
    return x[start], y[start], x[start + 1], y[start + 1], seg_edge, np.array([lat0, lon0, kx, ky])


def _point_segment_distance(px: float, py: float, ax, ay, bx, by) -> np.ndarray:  # type: ignore[no-untyped-def]
    dx, dy = bx - ax, by - ay
    denom = dx * dx + dy * dy
    t = np.clip(np.where(denom > 0, ((px - ax) * dx + (py - ay) * dy) / np.where(denom > 0, denom, 1), 0), 0, 1)
    return np.hypot(ax + t * dx - px, ay + t * dy - py)


# -- node level ---------------------------------------------------------------------


def test_edge_weights_are_integer_travel_times(case: Case) -> None:
    """Drive time at the edge's speed plus the base model's time lost at its controls, in ms."""
    net = case.net
    delay = edge_delay_s(net)
    expected = np.maximum(1, np.round((net.edge_length_m / (net.edge_speed_kph / 3.6) + delay) * 1000)).astype(np.int64)
    np.testing.assert_array_equal(case.weights, expected)


def test_node_durations_equal_dijkstra(case: Case) -> None:
    rng = np.random.default_rng(11)
    sources = rng.choice(case.net.node_count, 30, replace=False)
    targets = rng.choice(case.net.node_count, 30, replace=False)
    got = case.snapshot.node_durations(sources, targets, WHEN)
    assert got.shape == (30, 30)
    for i, s in enumerate(sources.tolist()):
        lengths = nx.single_source_dijkstra_path_length(case.digraph, s, weight="weight")
        expected = [lengths[t] / 1000 for t in targets.tolist()]
        assert got[i].tolist() == expected


def test_node_duration_to_itself_is_zero(case: Case) -> None:
    nodes = np.arange(0, case.net.node_count, max(1, case.net.node_count // 20))
    got = case.snapshot.node_durations(nodes, nodes, WHEN)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    assert np.all(got[~np.eye(nodes.size, dtype=bool)] > 0)


def test_node_path_is_connected_and_costs_the_duration(case: Case) -> None:
    rng = np.random.default_rng(12)
    pairs = rng.choice(case.net.node_count, (30, 2), replace=False)
    for s, t in pairs.tolist():
        path = case.snapshot.node_path(s, t, WHEN)
        assert path[0] == s and path[-1] == t
        assert len(set(path)) == len(path), "a shortest path visits no node twice"
        edges = [case.edge_of[(u, v)] for u, v in itertools.pairwise(path)]  # KeyError: no such edge
        total = sum(int(case.weights[e]) for e in edges)
        assert total / 1000 == case.snapshot.node_durations(np.array([s]), np.array([t]), WHEN)[0, 0]
        assert total == nx.dijkstra_path_length(case.digraph, s, t, weight="weight")
    assert case.snapshot.node_path(5, 5, WHEN) == [5]


# -- phantom level ------------------------------------------------------------------


def test_table_equals_phantom_reference(case: Case) -> None:
    lat, lon = _points_near_roads(case, 30, seed=21)
    ph = case.graph.snap(lat, lon, 1000.0)
    got = case.snapshot.durations(ph, ph, WHEN)
    ref = _reference_table(case, ph) / 1000
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.diag(got), 0.0)


def test_table_on_the_same_road_equals_phantom_reference(case: Case) -> None:
    ph = _same_edge_pairs(case)
    assert len(ph) >= 4
    got = case.snapshot.durations(ph, ph, WHEN)
    ref = _reference_table(case, ph) / 1000
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)


def test_table_sources_and_destinations_subsets(case: Case) -> None:
    lat, lon = _points_near_roads(case, 8, seed=22)
    ph = case.graph.snap(lat, lon, 1000.0)
    full, full_dist = case.snapshot.table(ph, ph, WHEN, with_distance=True)
    assert full_dist is not None
    src, dst = [1, 5, 6], [0, 2]
    part, part_dist = case.snapshot.table(ph.take(src), ph.take(dst), WHEN, with_distance=True)
    assert part.shape == (3, 2)
    np.testing.assert_array_equal(part, full[np.ix_(src, dst)])
    np.testing.assert_allclose(part_dist, full_dist[np.ix_(src, dst)], atol=1e-9)
    no_dist, none = case.snapshot.table(ph, ph, WHEN, with_distance=False)
    assert none is None
    np.testing.assert_array_equal(no_dist, full)


def test_route_legs_match_table(case: Case) -> None:
    lat, lon = _points_near_roads(case, 6, seed=23)
    same = _same_edge_pairs(case)
    lat = np.concatenate((lat, same.lat[:2][::-1]))  # a last leg backwards along one road
    lon = np.concatenate((lon, same.lon[:2][::-1]))
    ph = case.graph.snap(lat, lon, 1000.0)
    legs = case.snapshot.route(ph, WHEN)
    assert len(legs) == len(ph) - 1
    durations, distances = case.snapshot.table(ph, ph, WHEN, with_distance=True)
    assert distances is not None
    for k, leg in enumerate(legs):
        assert leg.lat.size == leg.lon.size >= 2
        assert leg.lat[0] == pytest.approx(ph.lat[k], abs=1e-7)
        assert leg.lon[0] == pytest.approx(ph.lon[k], abs=1e-7)
        assert leg.lat[-1] == pytest.approx(ph.lat[k + 1], abs=1e-7)
        assert leg.lon[-1] == pytest.approx(ph.lon[k + 1], abs=1e-7)
        assert leg.duration_s == pytest.approx(durations[k, k + 1], abs=1e-9)
        assert leg.distance_m == pytest.approx(distances[k, k + 1], abs=0.01)
        drawn = float(haversine_m(leg.lat[:-1], leg.lon[:-1], leg.lat[1:], leg.lon[1:]).sum())
        assert drawn == pytest.approx(leg.distance_m, rel=2e-3, abs=0.5)


def test_route_of_many_points_equals_its_legs_one_by_one(case: Case) -> None:
    lat, lon = _points_near_roads(case, 9, seed=31)
    ph = case.graph.snap(lat, lon, 1000.0)
    legs = case.snapshot.route(ph, WHEN)
    for k, leg in enumerate(legs):
        (alone,) = case.snapshot.route(ph.take([k, k + 1]), WHEN)
        assert leg.duration_s == alone.duration_s and leg.distance_m == pytest.approx(alone.distance_m, abs=1e-9)
        np.testing.assert_array_equal(leg.lat, alone.lat)
        np.testing.assert_array_equal(leg.lon, alone.lon)


def test_route_geometry_follows_allowed_edges(case: Case) -> None:
    lat, lon = _points_near_roads(case, 2, seed=24)
    ph = case.graph.snap(lat, lon, 1000.0)
    (leg,) = case.snapshot.route(ph, WHEN)
    nodes = list(leg.nodes)
    for u, v in itertools.pairwise(nodes):
        assert (u, v) in case.edge_of
    if len(nodes) > 1:
        # Every node of the path is on the drawn geometry.
        coords = set(zip(np.round(leg.lat, 9).tolist(), np.round(leg.lon, 9).tolist(), strict=True))
        for node in nodes:
            assert (round(float(case.net.node_lat[node]), 9), round(float(case.net.node_lon[node]), 9)) in coords


def test_route_through_a_table_equals_routing_the_points_again(case: Case) -> None:
    """The driver API draws the chosen order's legs from the table the problem's matrix came from:
    the same legs as a fresh query over those points, and durations equal to the matrix entries."""
    lat, lon = _points_near_roads(case, 12, seed=27)
    ph = case.graph.snap(lat, lon, 1000.0)
    table = case.snapshot.table_with_choices(ph, WHEN)
    assert table.seconds == pytest.approx(case.snapshot.durations(ph, ph, WHEN))
    seq = [0, 5, 3, 3, 11, 1, 7, 0]  # a repeated point and a return to the start included
    fresh = case.snapshot.route(ph.take(seq), WHEN)
    drawn = case.snapshot.route_through(ph, seq, WHEN, table)
    assert len(drawn) == len(fresh) == len(seq) - 1
    for k, (a, b) in enumerate(zip(drawn, fresh, strict=True)):
        assert a.duration_s == pytest.approx(b.duration_s) == pytest.approx(table.seconds[seq[k], seq[k + 1]])
        assert a.distance_m == pytest.approx(b.distance_m) and a.nodes == b.nodes
        np.testing.assert_allclose(a.lat, b.lat, atol=1e-12)
        np.testing.assert_allclose(a.lon, b.lon, atol=1e-12)


def test_cutting_many_pieces_at_once_equals_cutting_each_edge(case: Case) -> None:
    """``pieces_geometry`` (one vectorised pass, used for whole routes) against ``edge_geometry``
    (one edge at a time, by interpolation along its projected length), on random cuts."""
    rng = np.random.default_rng(26)
    m = 300
    edge = rng.integers(0, case.net.edge_source.size, m)
    f = np.sort(rng.uniform(0, 1, (m, 2)), axis=1)
    f[::7] = [0.0, 1.0]  # whole edges
    f[3::7, 1] = f[3::7, 0]  # zero-length cuts
    skip = rng.uniform(0, 1, m) < 0.5
    lat, lon, counts = case.graph.pieces_geometry(edge, f[:, 0].copy(), f[:, 1].copy(), skip)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    for k in range(m):
        want_lat, want_lon = case.graph.edge_geometry(int(edge[k]), float(f[k, 0]), float(f[k, 1]))
        got_lat, got_lon = lat[bounds[k] : bounds[k + 1]], lon[bounds[k] : bounds[k + 1]]
        if skip[k]:
            want_lat, want_lon = want_lat[1:], want_lon[1:]

        # A vertex within rounding of a cut may appear once or twice: compare without repeats.
        def distinct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            keep = np.ones(a.size, dtype=bool)
            keep[1:] = (np.abs(np.diff(a)) > 1e-9) | (np.abs(np.diff(b)) > 1e-9)
            return np.column_stack((a[keep], b[keep]))

        assert distinct(got_lat, got_lon) == pytest.approx(distinct(want_lat, want_lon), abs=1e-9), k


def test_route_to_the_same_point(case: Case) -> None:
    lat, lon = _points_near_roads(case, 1, seed=25)
    ph = case.graph.snap(np.repeat(lat, 2), np.repeat(lon, 2), 1000.0)
    (leg,) = case.snapshot.route(ph, WHEN)
    assert leg.duration_s == 0 and leg.distance_m == 0
    assert leg.lat[0] == pytest.approx(ph.lat[0], abs=1e-9) and leg.lat[-1] == pytest.approx(ph.lat[0], abs=1e-9)


# -- snapping -----------------------------------------------------------------------


def test_snapping_lands_on_the_nearest_road(case: Case) -> None:
    ax, ay, bx, by, seg_edge, (lat0, lon0, kx, ky) = _projected_segments(case)
    min_lat, min_lon, max_lat, max_lon = case.net.bbox()
    rng = np.random.default_rng(31)
    lat = rng.uniform(min_lat, max_lat, 200)
    lon = rng.uniform(min_lon, max_lon, 200)
    ph = case.graph.snap(lat, lon, 1e7)
    for k in range(200):
        px, py = (lon[k] - lon0) * kx, (lat[k] - lat0) * ky
        dist = _point_segment_distance(px, py, ax, ay, bx, by)
        assert ph.distance_m[k] == pytest.approx(float(dist.min()), abs=0.01), k
        # The snapped position is on the reported edge, at the reported distance.
        sx, sy = (ph.lon[k] - lon0) * kx, (ph.lat[k] - lat0) * ky
        on_edge = seg_edge == ph.edge[k]
        assert float(_point_segment_distance(sx, sy, ax[on_edge], ay[on_edge], bx[on_edge], by[on_edge]).min()) < 1e-3
        assert math.hypot(sx - px, sy - py) == pytest.approx(ph.distance_m[k], abs=1e-3)
        assert 0.0 <= ph.fraction[k] <= 1.0


def test_snap_fraction_is_position_along_the_edge(case: Case) -> None:
    lat, lon = _points_near_roads(case, 20, seed=32)
    ph = case.graph.snap(lat, lon, 1000.0)
    for k in range(20):
        g_lat, g_lon = case.graph.edge_geometry(int(ph.edge[k]), float(ph.fraction[k]), float(ph.fraction[k]))
        assert g_lat[0] == pytest.approx(ph.lat[k], abs=1e-8)
        assert g_lon[0] == pytest.approx(ph.lon[k], abs=1e-8)
        r = int(ph.reverse[k])
        assert r == _same_road_reverse(case.net, case.edge_of, int(ph.edge[k]))


def test_snap_error_names_the_coordinate(case: Case) -> None:
    lat, lon = _points_near_roads(case, 3, seed=33)
    lat[1] += 0.5  # about 55 km north
    with pytest.raises(SnapError) as info:
        case.graph.snap(lat, lon, 500.0)
    assert info.value.index == 1
    assert info.value.distance_m > 500.0 and info.value.limit_m == 500.0
    assert "coordinate 1" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_snap_error_reports_the_first_bad_coordinate(case: Case) -> None:
    lat, lon = _points_near_roads(case, 4, seed=34)
    lat[2] -= 0.5
    lat[3] += 0.5
    with pytest.raises(SnapError) as info:
        case.graph.snap(lat, lon, 500.0)
    assert info.value.index == 2


# -- hand-made networks ---------------------------------------------------------------


def _network(coords: list[tuple[float, float]], edges: list[tuple[int, int]], speed_kph: float = 36.0,
             via: dict[tuple[int, int], list[tuple[float, float]]] | None = None) -> RoadNetwork:  # fmt: skip
    """A RoadNetwork by hand: ``via`` gives intermediate geometry points of some edges."""
    via = via or {}
    g_lat: list[float] = []
    g_lon: list[float] = []
    offsets = [0]
    lengths = []
    for u, v in edges:
        pts = [coords[u], *via.get((u, v), []), coords[v]]
        la = np.array([p[0] for p in pts])
        lo = np.array([p[1] for p in pts])
        lengths.append(float(haversine_m(la[:-1], lo[:-1], la[1:], lo[1:]).sum()))
        g_lat.extend(la.tolist())
        g_lon.extend(lo.tolist())
        offsets.append(len(g_lat))
    pairs = {(u, v) for u, v in edges}
    return RoadNetwork(
        node_osm_id=np.arange(100, 100 + len(coords), dtype=np.int64),
        node_lat=np.array([c[0] for c in coords]),
        node_lon=np.array([c[1] for c in coords]),
        edge_source=np.array([e[0] for e in edges], dtype=np.int32),
        edge_target=np.array([e[1] for e in edges], dtype=np.int32),
        edge_way_id=np.arange(len(edges), dtype=np.int64),
        edge_length_m=np.array(lengths),
        edge_speed_kph=np.full(len(edges), speed_kph),
        edge_road_class=np.array(["residential"] * len(edges), dtype=object),
        edge_oneway=np.array([(v, u) not in pairs for u, v in edges]),
        geom_offsets=np.array(offsets, dtype=np.int64),
        geom_lat=np.array(g_lat),
        geom_lon=np.array(g_lon),
    )


def test_unreachable_is_infinite_not_zero() -> None:
    # 0 <-> 1 two-way, 1 -> 2 one-way: nothing leaves 2.
    coords = [(60.0, 25.0), (60.0, 25.002), (60.0, 25.004)]
    net = _network(coords, [(0, 1), (1, 0), (1, 2)])
    snap = RoutingSnapshot(RoadGraph(net), TrafficState())
    d = snap.node_durations(np.array([0, 1, 2]), np.array([0, 1, 2]), WHEN)
    assert d[0, 2] > 0 and math.isfinite(d[0, 2])
    assert d[2, 0] == math.inf and d[2, 1] == math.inf
    assert d[2, 2] == 0
    assert snap.node_path(2, 0, WHEN) == []
    assert snap.node_path(0, 2, WHEN) == [0, 1, 2]
    # Points on 0-1 and on 1->2.
    ph = snap.graph.snap(np.array([60.0001, 60.0001]), np.array([25.001, 25.003]), 100.0)
    assert ph.edge.tolist() in ([0, 2], [1, 2])
    durations, distances = snap.table(ph, ph, WHEN, with_distance=True)
    assert distances is not None
    assert math.isfinite(durations[0, 1]) and durations[0, 1] > 0
    assert durations[1, 0] == math.inf and distances[1, 0] == math.inf
    with pytest.raises(ValueError, match="no route"):
        snap.route(ph.take([1, 0]), WHEN)


def test_point_on_one_way_road_must_go_around() -> None:
    # A one-way ring 0 -> 1 -> 2 -> 3 -> 0 (100 m sides at 10 m/s).
    d = 0.0009
    coords = [(60.0, 25.0), (60.0, 25.0 + 2 * d), (60.0 + d, 25.0 + 2 * d), (60.0 + d, 25.0)]
    net = _network(coords, [(0, 1), (1, 2), (2, 3), (3, 0)])
    snap = RoutingSnapshot(RoadGraph(net), TrafficState())
    w = snap.edge_weights_ms(WHEN)
    lat = np.array([60.0, 60.0])
    lon = np.array([25.0 + 1.5 * d, 25.0 + 0.5 * d])  # 3/4 and 1/4 along edge 0
    ph = snap.graph.snap(lat, lon, 10.0)
    assert ph.edge.tolist() == [0, 0] and ph.reverse.tolist() == [-1, -1]
    got = snap.durations(ph, ph, WHEN)
    assert got[1, 0] == pytest.approx(0.5 * w[0] / 1000, abs=1e-3)
    assert got[0, 1] == pytest.approx((0.25 * w[0] + w[1] + w[2] + w[3] + 0.25 * w[0]) / 1000, abs=1e-3)


def test_point_on_two_way_road_drives_back_directly() -> None:
    d = 0.0009
    coords = [(60.0, 25.0), (60.0, 25.0 + 2 * d), (60.0 + d, 25.0 + d)]
    net = _network(coords, [(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2)])
    snap = RoutingSnapshot(RoadGraph(net), TrafficState())
    w = snap.edge_weights_ms(WHEN)
    ph = snap.graph.snap(np.array([60.0, 60.0]), np.array([25.0 + 1.5 * d, 25.0 + 0.5 * d]), 10.0)
    assert ph.edge[0] == ph.edge[1]
    e, r = int(ph.edge[0]), int(ph.reverse[0])
    assert r >= 0
    fa, fb = float(ph.fraction[0]), float(ph.fraction[1])
    forward = fb > fa
    ahead, behind = (0, 1) if forward else (1, 0)
    got = snap.durations(ph, ph, WHEN)
    assert got[ahead, behind] == pytest.approx(abs(fb - fa) * w[e] / 1000, abs=1e-3)
    assert got[behind, ahead] == pytest.approx(abs(fb - fa) * w[r] / 1000, abs=1e-3)
    durations, distances = snap.table(ph, ph, WHEN, with_distance=True)
    assert distances is not None
    assert distances[1, 0] == pytest.approx(abs(fb - fa) * net.edge_length_m[e], abs=0.01)
    (leg,) = snap.route(ph.take([behind, ahead]), WHEN)
    assert leg.duration_s == pytest.approx(durations[behind, ahead], abs=1e-9)
    assert leg.distance_m == pytest.approx(abs(fb - fa) * net.edge_length_m[e], abs=0.01)
    assert leg.lat[0] == pytest.approx(ph.lat[behind], abs=1e-9)
    assert leg.lon[-1] == pytest.approx(ph.lon[ahead], abs=1e-9)


def test_ring_road_back_is_not_the_same_road() -> None:
    """A street 0 -> 1 and the way back 1 -> 0 along another road (like the rest of a roundabout)."""
    d = 0.0009
    coords = [(60.0, 25.0), (60.0, 25.0 + 2 * d)]
    arc = [(60.0 + d, 25.0 + 2 * d), (60.0 + d, 25.0)]
    net = _network(coords, [(0, 1), (1, 0)], via={(1, 0): arc})
    graph = RoadGraph(net)
    snap = RoutingSnapshot(graph, TrafficState())
    w = snap.edge_weights_ms(WHEN)
    # A point on the arc snaps to the arc, not to the straight street 110 m away.
    ph = graph.snap(np.array([60.0 + d, 60.0]), np.array([25.0 + d, 25.0 + d]), 500.0)
    assert ph.edge.tolist() == [1, 0]
    assert ph.distance_m[0] == pytest.approx(0.0, abs=1e-6)
    # Neither road may be driven backwards.
    assert ph.reverse.tolist() == [-1, -1]
    got = snap.durations(ph, ph, WHEN)
    # From the middle of the arc (fraction 1/2 of 1 -> 0) to the middle of 0 -> 1.
    assert got[0, 1] == pytest.approx((0.5 * w[1] + 0.5 * w[0]) / 1000, abs=1e-3)
    assert got[1, 0] == pytest.approx((0.5 * w[0] + 0.5 * w[1]) / 1000, abs=1e-3)


# -- traffic updates through the service ----------------------------------------------


@pytest.fixture
def service(repository: MapRepository, helsinki_path: Path) -> RoadGraphService:
    repository.import_map(helsinki_path)
    svc = RoadGraphService(repository)
    svc.load_active()
    return svc


def test_service_without_map(repository: MapRepository) -> None:
    svc = RoadGraphService(repository)
    assert not svc.ready
    with pytest.raises(NoActiveMap):
        svc.load_active()
    with pytest.raises(NoActiveMap):
        _ = svc.snapshot


def _free_flow_ms(net: RoadNetwork, speed: np.ndarray | None = None) -> np.ndarray:
    """Base-model weights: drive time at ``speed`` (the free-flow speed by default) plus time lost at controls."""
    s = net.edge_speed_kph if speed is None else speed
    return np.maximum(1, np.round((net.edge_length_m / (s / 3.6) + edge_delay_s(net)) * 1000)).astype(np.int64)


def test_live_observation_slows_one_edge(service: RoadGraphService) -> None:
    before = service.snapshot
    net = before.graph.network
    now = datetime.now(UTC)
    soon = now + timedelta(minutes=1)
    # A route long enough to cross several edges.
    i, j = int(np.argmin(net.node_lat)), int(np.argmax(net.node_lat))
    ph = before.graph.snap(net.node_lat[[i, j]] + 1e-5, net.node_lon[[i, j]], 500.0)
    (old_leg,) = before.route(ph, soon)
    path = list(old_leg.nodes)
    assert len(path) >= 4
    k = len(path) // 2
    edge = before.graph.edges_between(np.array([path[k]]), np.array([path[k + 1]]))[0]
    assert edge >= 0
    w0 = before.edge_weights_ms(soon)
    np.testing.assert_array_equal(w0, _free_flow_ms(net))
    slow = float(net.edge_speed_kph[edge]) / 10

    epoch = service.add_observations([LiveObservation(int(edge), slow, now, now + timedelta(minutes=15))])
    assert epoch == before.epoch + 1
    after = service.snapshot
    assert after is not before and after.epoch == epoch
    assert service.repository.active_map().traffic_epoch == epoch  # type: ignore[union-attr]
    w1 = after.edge_weights_ms(soon)
    others = np.arange(w0.size) != edge
    np.testing.assert_array_equal(w1[others], w0[others])
    assert w1[edge] == max(1, round(net.edge_length_m[edge] / (slow / 3.6) * 1000))
    drive_ms = net.edge_length_m[edge] / (net.edge_speed_kph[edge] / 3.6) * 1000
    assert w1[edge] / drive_ms == pytest.approx(10.0, rel=1e-3 + 1.0 / w0[edge])

    (new_leg,) = after.route(ph, soon)
    new_path = list(new_leg.nodes)
    uses = any((a, b) == (path[k], path[k + 1]) for a, b in itertools.pairwise(new_path))
    assert new_leg.duration_s >= old_leg.duration_s
    assert new_leg.duration_s <= old_leg.duration_s + (w1[edge] - w0[edge]) / 1000 + 1e-6
    if uses:
        assert new_leg.duration_s == pytest.approx(old_leg.duration_s + (w1[edge] - w0[edge]) / 1000, abs=2e-3)
    else:
        assert new_path != path
    # The snapshot taken before the update is unchanged.
    np.testing.assert_array_equal(before.edge_weights_ms(soon), w0)
    assert before.route(ph, soon)[0].duration_s == old_leg.duration_s


def test_departure_after_expiry_uses_free_flow(service: RoadGraphService) -> None:
    net = service.snapshot.graph.network
    now = datetime.now(UTC)
    edges = [0, 1, 2]
    service.add_observations([LiveObservation(e, 1.0, now, now + timedelta(minutes=10)) for e in edges])
    snap = service.snapshot
    during = snap.edge_weights_ms(now + timedelta(minutes=9))
    assert np.all(during[edges] > _free_flow_ms(net)[edges])
    np.testing.assert_array_equal(snap.edge_weights_ms(now + timedelta(minutes=11)), _free_flow_ms(net))
    np.testing.assert_array_equal(snap.edge_weights_ms(now + timedelta(hours=3)), _free_flow_ms(net))
    # The cheaper weights do not replace the live ones for a departure inside the window.
    np.testing.assert_array_equal(snap.edge_weights_ms(now + timedelta(minutes=9)), during)


def test_profile_changes_only_its_class_in_its_bucket(service: RoadGraphService) -> None:
    net = service.snapshot.graph.network
    epoch0 = service.snapshot.epoch
    day, bucket = bucket_of(WHEN)
    assert day == DayType.WEEKDAY
    cls = "residential"
    assert np.any(net.edge_road_class == cls) and np.any(net.edge_road_class != cls)
    epoch = service.set_profile([ProfileEntry(day, bucket, 0.5, road_class=cls)])
    assert epoch == epoch0 + 1 and service.snapshot.epoch == epoch
    snap = service.snapshot
    w = snap.edge_weights_ms(WHEN)
    free = _free_flow_ms(net)
    in_class = net.edge_road_class == cls
    np.testing.assert_array_equal(w[~in_class], free[~in_class])
    np.testing.assert_array_equal(w[in_class], _free_flow_ms(net, net.edge_speed_kph * 0.5)[in_class])
    # The next bucket, the previous one and the weekend are free flow.
    for other in (WHEN + timedelta(minutes=15), WHEN - timedelta(minutes=1), WHEN + timedelta(days=5)):
        np.testing.assert_array_equal(snap.edge_weights_ms(other), free)
    # Slower residential streets make the node-level durations no shorter.
    nodes = np.arange(0, net.node_count, 40)
    assert np.all(
        snap.node_durations(nodes, nodes, WHEN) >= snap.node_durations(nodes, nodes, WHEN + timedelta(minutes=15))
    )


def test_refresh_picks_up_updates_of_other_processes(service: RoadGraphService) -> None:
    other = RoadGraphService(service.repository)
    other.load_active()
    now = datetime.now(UTC)
    epoch = other.add_observations([LiveObservation(3, 2.0, now, now + timedelta(minutes=10))])
    assert service.snapshot.epoch == epoch - 1
    assert service.refresh() == epoch
    assert (
        service.snapshot.edge_weights_ms(now + timedelta(minutes=1))[3]
        > _free_flow_ms(service.snapshot.graph.network)[3]
    )
    assert service.refresh() == epoch


def test_observation_on_unknown_edge_is_refused(service: RoadGraphService) -> None:
    now = datetime.now(UTC)
    n = service.snapshot.graph.network.edge_count
    epoch = service.snapshot.epoch
    for bad in (n, -1):
        with pytest.raises(ValueError):
            service.add_observations([LiveObservation(bad, 20.0, now, now + timedelta(minutes=5))])
    assert service.snapshot.epoch == epoch
    assert service.repository.counts()["live_traffic_observations"] == 0
