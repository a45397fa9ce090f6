"""Pings to live traffic (routing_api.ping_traffic) on a small real road graph, with an in-memory graph service."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from graph_store.osm_import import read_osm
from graph_store.routing_graph import RoadGraph, RoutingSnapshot
from graph_store.traffic import LiveObservation, TrafficState
from routing_api.ping_traffic import SAMPLE_HORIZON_S, SOURCE, PingTraffic, edge_bearing
from tests.synthetic_osm import grid_node, write_osm

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ROAD = {"highway": "residential", "maxspeed": "40"}


class InMemoryTrafficGraph:
    """The graph service's traffic side in memory: each update swaps in a new snapshot with epoch + 1."""

    ready = True

    def __init__(self, graph: RoadGraph) -> None:
        self.snapshot = RoutingSnapshot(graph, TrafficState(epoch=0))
        self.updates: list[tuple[list[LiveObservation], str]] = []

    def add_observations(self, observations: Iterable[LiveObservation], source: str = "api") -> int:
        obs = list(observations)
        self.updates.append((obs, source))
        t = self.snapshot.traffic
        self.snapshot = RoutingSnapshot(self.snapshot.graph, TrafficState(t.epoch + 1, t.profile, t.live + tuple(obs)))
        return self.snapshot.epoch


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> RoadGraph:
    """A 3 x 3 grid of two-way 40 km/h streets; the top row (row 2) is one-way eastbound."""
    nodes = {r * 10 + c + 1: grid_node(r, c) for r in range(3) for c in range(3)}
    ways = [(100 + r, [r * 10 + c + 1 for c in range(3)], {**ROAD, **({"oneway": "yes"} if r == 2 else {})})
            for r in range(3)]  # fmt: skip
    ways += [(200 + c, [r * 10 + c + 1 for r in range(3)], ROAD) for c in range(3)]
    path = write_osm(tmp_path_factory.mktemp("town") / "grid.osm", nodes, ways)
    return RoadGraph(read_osm(path))


def _edge(graph: RoadGraph, a: tuple[int, int], b: tuple[int, int]) -> int:
    """The directed edge from grid point a to grid point b."""
    net = graph.network

    def node(p: tuple[int, int]) -> int:
        lat, lon = grid_node(*p)
        return int(np.argmin(np.hypot(net.node_lat - lat, net.node_lon - lon)))

    u, v = node(a), node(b)
    e = int(graph.edges_between(np.asarray([u]), np.asarray([v]))[0])
    assert e >= 0
    return e


def _mid(a: tuple[int, int], b: tuple[int, int], t: float = 0.5) -> tuple[float, float]:
    (la, lo), (lb, lob) = grid_node(*a), grid_node(*b)
    return la + t * (lb - la), lo + t * (lob - lo)


def _aggregator(graph: InMemoryTrafficGraph, clock: FakeClock, **kw: float) -> PingTraffic:
    params = {"interval_s": 10.0, "min_pings": 3, "min_change": 0.25, "ttl_s": 900.0, **kw}
    return PingTraffic(graph, clock=clock, now=lambda: NOW, **params)  # type: ignore[arg-type]


def test_bearing_of_grid_edges(town: RoadGraph) -> None:
    east = _edge(town, (0, 0), (0, 1))
    west = _edge(town, (0, 1), (0, 0))
    north = _edge(town, (0, 0), (1, 0))
    assert abs(edge_bearing(town, east, 0.5) - 90.0) < 1.0
    assert abs(edge_bearing(town, west, 0.5) - 270.0) < 1.0
    assert min(edge_bearing(town, north, 0.5), 360 - edge_bearing(town, north, 0.5)) < 1.0


def test_slow_pings_become_one_observation_after_the_interval(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    east = _edge(town, (0, 0), (0, 1))
    lat, lon = _mid((0, 0), (0, 1))
    for k, speed_mps in enumerate((3.0, 2.0, 4.0)):  # 10.8, 7.2, 14.4 km/h on a 40 km/h street
        clock.t = 1.0 + k
        assert pings.observe(lat, lon, NOW, speed_mps, 91.0) == 0
    assert graph.updates == []  # not before the interval
    clock.t = 10.5
    epoch = pings.observe(lat, lon + 0.0001, NOW, 2.5, 89.0)
    assert epoch == 1
    [(obs, source)] = graph.updates
    assert source == SOURCE
    assert [o.edge for o in obs] == [east]
    assert obs[0].speed_kph == pytest.approx(np.median([10.8, 7.2, 14.4, 9.0]))
    assert obs[0].expires_at == NOW + timedelta(seconds=900)
    # the new speed is in force: the same edge is now slower in the snapshot, the others are not
    speeds = graph.snapshot.edge_speeds(NOW)
    assert speeds[east] == pytest.approx(obs[0].speed_kph)
    assert speeds[_edge(town, (0, 1), (0, 0))] == pytest.approx(40.0)


def test_one_epoch_bump_per_interval_for_many_edges(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    streets = [((0, 0), (0, 1), 90.0), ((1, 1), (1, 0), 270.0), ((0, 2), (1, 2), 0.0)]
    for a, b, heading in streets:
        for k in range(3):
            pings.observe(*_mid(a, b, 0.3 + 0.2 * k), NOW, 2.0, heading)
    clock.t = 11.0
    pings.observe(*_mid((0, 0), (0, 1)), NOW, 2.0, 90.0)
    assert len(graph.updates) == 1 and graph.snapshot.epoch == 1
    assert sorted(o.edge for o in graph.updates[0][0]) == sorted(_edge(town, a, b) for a, b, _ in streets)
    # more slow pings right away: evaluated only after the next interval
    for k in range(3):
        clock.t = 12.0 + k
        pings.observe(*_mid((0, 1), (0, 2)), NOW, 1.5, 90.0)
    assert len(graph.updates) == 1
    clock.t = 21.5
    pings.observe(*_mid((0, 1), (0, 2)), NOW, 1.5, 90.0)
    assert len(graph.updates) == 2 and graph.snapshot.epoch == 2


def test_small_differences_and_speeding_change_nothing(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    for speed_kph in (35.0, 33.0, 36.0):  # within 25 % of 40 km/h
        pings.observe(*_mid((0, 0), (0, 1)), NOW, speed_kph / 3.6, 90.0)
    for speed_kph in (70.0, 80.0, 90.0):  # faster than the limit: capped at free flow, no change
        pings.observe(*_mid((1, 0), (1, 1)), NOW, speed_kph / 3.6, 90.0)
    clock.t = 11.0
    assert pings.observe(*_mid((0, 0), (0, 1)), NOW, 9.0, 90.0) == 0
    assert graph.updates == [] and pings.stats.flushes == 1


def test_direction_comes_from_the_heading(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    for _ in range(3):
        pings.observe(*_mid((1, 0), (1, 1)), NOW, 2.0, 265.0)  # westbound on a two-way street
    clock.t = 11.0
    pings.observe(*_mid((1, 0), (1, 1)), NOW, 2.0, 265.0)
    assert [o.edge for o in graph.updates[0][0]] == [_edge(town, (1, 1), (1, 0))]


@pytest.mark.parametrize(
    ("lat_lon", "speed_mps", "heading", "when", "reason"),
    [
        (_mid((1, 0), (1, 1)), 0.3, 90.0, NOW, "not_moving"),
        (_mid((1, 0), (1, 1)), None, 90.0, NOW, "not_moving"),
        (_mid((1, 0), (1, 1)), 5.0, 90.0, NOW - timedelta(seconds=SAMPLE_HORIZON_S + 1), "stale"),
        ((60.20, 24.93), 5.0, 90.0, NOW, "off_road"),
        (_mid((1, 0), (1, 1)), 5.0, 0.0, NOW, "direction"),  # across the street: a cross street, not this one
        (_mid((1, 0), (1, 1)), 5.0, None, NOW, "direction"),  # two-way street without a heading
        (_mid((2, 0), (2, 1)), 5.0, 270.0, NOW, "direction"),  # the wrong way up a one-way street
    ],
)
def test_pings_that_say_nothing_about_a_road_are_dropped(town, lat_lon, speed_mps, heading, when, reason) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    pings.observe(*lat_lon, when, speed_mps, heading)
    assert pings.stats.dropped == {reason: 1} and pings.stats.kept == 0


def test_one_way_street_without_heading_and_accelerated_timestamps_count(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    for k in range(3):  # a simulation running ahead of the clock sends future timestamps
        pings.observe(*_mid((2, 0), (2, 1)), NOW + timedelta(minutes=10 * k), 2.0, None)
    assert pings.stats.kept == 3


def test_old_samples_fall_out_and_zero_interval_turns_it_off(town: RoadGraph) -> None:
    graph, clock = InMemoryTrafficGraph(town), FakeClock()
    pings = _aggregator(graph, clock)
    for _ in range(3):
        pings.observe(*_mid((0, 0), (0, 1)), NOW, 2.0, 90.0)
    clock.t = SAMPLE_HORIZON_S + 20.0  # the three samples are too old by the time of the flush
    pings.observe(*_mid((1, 1), (1, 2)), NOW, 2.0, 90.0)
    assert graph.updates == []
    off = _aggregator(graph, clock, interval_s=0.0)
    for _ in range(5):
        clock.t += 100.0
        assert off.observe(*_mid((0, 0), (0, 1)), NOW, 2.0, 90.0) == 0
    assert graph.updates == [] and off.stats.kept == 0


def test_bad_parameters_are_refused(town: RoadGraph) -> None:
    with pytest.raises(ValueError, match="min_pings"):
        PingTraffic(InMemoryTrafficGraph(town), interval_s=1, min_pings=0, min_change=0.2, ttl_s=10)
