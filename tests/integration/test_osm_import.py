"""OSM import on reference extracts and on small hand-made files."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import osmium
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graph_store.geo import haversine_m
from graph_store.osm_import import MapImportError, RoadNetwork, read_osm
from graph_store.road_rules import DEFAULT_SPEED_KPH
from tests.synthetic_osm import grid_node, write_osm

# -- reference extracts -------------------------------------------------------------


@pytest.fixture(scope="module")
def west_oakland_path(road_networks: Path) -> Path:
    return road_networks / "west_oakland.osm.bz2"


@pytest.fixture(scope="module")
def west_oakland_network(west_oakland_path: Path) -> RoadNetwork:
    return read_osm(west_oakland_path)


@pytest.fixture(scope="module")
def helsinki_center_path(road_networks: Path) -> Path:
    return road_networks / "helsinki_center.osm.pbf"


@pytest.fixture(scope="module")
def helsinki_center_network(helsinki_center_path: Path) -> RoadNetwork:
    return read_osm(helsinki_center_path)


@pytest.fixture(params=["west_oakland", "helsinki", "helsinki_center"])
def extract(request: pytest.FixtureRequest) -> tuple[Path, RoadNetwork]:
    """(file, parsed network) of each reference extract."""
    return request.getfixturevalue(f"{request.param}_path"), request.getfixturevalue(f"{request.param}_network")


def _osm_ways(path: Path) -> dict[int, tuple[dict[str, str], list[int]]]:
    """Every highway way of the file, read independently: id -> (tags, node refs)."""
    ways: dict[int, tuple[dict[str, str], list[int]]] = {}
    for obj in osmium.FileProcessor(str(path)).with_filter(osmium.filter.KeyFilter("highway")):
        if obj.is_way():
            ways[obj.id] = ({t.k: t.v for t in obj.tags}, [n.ref for n in obj.nodes])
    return ways


def test_extract_has_nodes_and_edges(extract: tuple[Path, RoadNetwork]) -> None:
    _, net = extract
    assert net.node_count > 10
    assert net.edge_count > net.node_count
    assert net.node_osm_id.size == net.node_lat.size == net.node_lon.size
    for arr in (net.edge_target, net.edge_way_id, net.edge_length_m, net.edge_speed_kph, net.edge_road_class,
                net.edge_oneway):  # fmt: skip
        assert arr.size == net.edge_count
    assert net.geom_offsets.size == net.edge_count + 1
    assert net.geom_offsets[0] == 0 and net.geom_offsets[-1] == net.geom_lat.size == net.geom_lon.size
    assert np.all(np.diff(net.geom_offsets) >= 2)
    assert np.unique(net.node_osm_id).size == net.node_count
    assert net.edge_source.min() >= 0 and net.edge_source.max() < net.node_count
    assert net.edge_target.min() >= 0 and net.edge_target.max() < net.node_count
    assert not np.any(net.edge_source == net.edge_target)
    pairs = net.edge_source.astype(np.int64) * net.node_count + net.edge_target
    assert np.unique(pairs).size == net.edge_count, "parallel edges must be collapsed"
    assert np.all(net.edge_length_m > 0)
    assert np.all((net.edge_speed_kph >= 5) & (net.edge_speed_kph <= 130))
    assert set(net.edge_road_class.tolist()) <= set(DEFAULT_SPEED_KPH)


def test_extract_is_one_strongly_connected_component(extract: tuple[Path, RoadNetwork]) -> None:
    _, net = extract
    n = net.node_count
    matrix = coo_matrix((np.ones(net.edge_count), (net.edge_source, net.edge_target)), shape=(n, n))
    count, _ = connected_components(matrix, directed=True, connection="strong")
    assert count == 1
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip(net.edge_source.tolist(), net.edge_target.tolist(), strict=True))
    assert nx.is_strongly_connected(graph)


def test_extract_edge_geometry_runs_between_its_nodes(extract: tuple[Path, RoadNetwork]) -> None:
    _, net = extract
    starts = net.geom_offsets[:-1]
    ends = net.geom_offsets[1:] - 1
    np.testing.assert_array_equal(net.geom_lat[starts], net.node_lat[net.edge_source])
    np.testing.assert_array_equal(net.geom_lon[starts], net.node_lon[net.edge_source])
    np.testing.assert_array_equal(net.geom_lat[ends], net.node_lat[net.edge_target])
    np.testing.assert_array_equal(net.geom_lon[ends], net.node_lon[net.edge_target])
    for e in range(net.edge_count):
        lat, lon = net.edge_geometry(e)
        length = float(haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum())
        assert net.edge_length_m[e] == pytest.approx(length, rel=1e-9, abs=1e-6)


def test_extract_oneway_ways_give_one_direction(extract: tuple[Path, RoadNetwork]) -> None:
    path, net = extract
    ways = _osm_ways(path)
    osm = net.node_osm_id
    by_way: dict[int, set[tuple[int, int]]] = {}
    for u, v, w in zip(osm[net.edge_source].tolist(), osm[net.edge_target].tolist(), net.edge_way_id.tolist(),
                       strict=True):  # fmt: skip
        by_way.setdefault(w, set()).add((u, v))
    oneway_ways = [w for w in by_way if ways[w][0].get("oneway") == "yes"]
    assert oneway_ways, "the extract has one-way streets"
    for w in oneway_ways:
        refs = ways[w][1]
        for u, v in by_way[w]:
            assert (v, u) not in by_way[w], f"way {w} is oneway=yes but has edges both ways between {u} and {v}"
            assert refs.index(u) < refs.index(v), f"way {w}: edge {u}->{v} runs against the way"
    oneway_edges = np.isin(net.edge_way_id, oneway_ways)
    assert np.all(net.edge_oneway[oneway_edges])


def test_extract_edges_follow_their_way_nodes(extract: tuple[Path, RoadNetwork]) -> None:
    """An edge's geometry is a run of consecutive nodes of its way (forwards or backwards)."""
    path, net = extract
    ways = _osm_ways(path)
    node_lat: dict[int, float] = {}
    node_lon: dict[int, float] = {}
    for obj in osmium.FileProcessor(str(path), osmium.osm.NODE):
        node_lat[obj.id] = obj.location.lat
        node_lon[obj.id] = obj.location.lon
    osm = net.node_osm_id
    for e in range(net.edge_count):
        # Nodes outside the extract are skipped, as the importer clips ways there.
        refs = [r for r in ways[int(net.edge_way_id[e])][1] if r in node_lat]
        u, v = int(osm[net.edge_source[e]]), int(osm[net.edge_target[e]])
        lat, lon = net.edge_geometry(e)
        runs = []
        for i in (k for k, r in enumerate(refs) if r == u):
            for j in (k for k, r in enumerate(refs) if r == v):
                runs.append(refs[i : j + 1] if i < j else refs[j : i + 1][::-1])
        assert any(
            len(run) == lat.size
            and np.allclose(lat, [node_lat[r] for r in run], atol=1e-7)
            and np.allclose(lon, [node_lon[r] for r in run], atol=1e-7)
            for run in runs
        ), f"edge {e} ({u}->{v}) is not a run of way {int(net.edge_way_id[e])}"


def test_read_osm_is_deterministic(west_oakland_path: Path, west_oakland_network: RoadNetwork) -> None:
    again = read_osm(west_oakland_path)
    for name in ("node_osm_id", "node_lat", "edge_source", "edge_target", "edge_way_id", "geom_offsets", "geom_lat"):
        np.testing.assert_array_equal(getattr(again, name), getattr(west_oakland_network, name))


# -- hand-made maps -----------------------------------------------------------------
#
#   20 --(roundabout 106 via 22)-- 21
#    |                              |
#   107                            108
#    |                              |
#    4 ----------- 103 ------------ 5 ---- 103 ---- 6
#    |                              |               ^ 101 (oneway=-1, drawn 6 -> 50 -> 3)
#   104       (105 footway 1-5)    102              |
#    |                              |               |
#    1 ----------- 100 ------------ 2 ---- 100 ---- 3
#    |
#   110 (oneway=yes 1 -> 40: a dead end, not strongly connected)
#   40
#
# plus an island 30 - 31 far away and a private road 2 - 6.

RES = {"highway": "residential"}
TOWN_NODES = {
    1: grid_node(0, 0), 2: grid_node(0, 1), 3: grid_node(0, 2),
    4: grid_node(1, 0), 5: grid_node(1, 1), 6: grid_node(1, 2),
    50: grid_node(0.5, 2.2),
    20: grid_node(2, 0), 21: grid_node(2, 1), 22: grid_node(3, 0.5),
    30: grid_node(10, 10), 31: grid_node(10, 11),
    40: grid_node(-1, 0),
}  # fmt: skip
TOWN_WAYS = [
    (100, [1, 2, 3], {"highway": "residential", "maxspeed": "40"}),
    (101, [6, 50, 3], {"highway": "residential", "oneway": "-1"}),
    (102, [2, 5], {"highway": "tertiary", "maxspeed": "20 mph"}),
    (103, [4, 5, 6], RES),
    (104, [1, 4], {"highway": "unclassified"}),
    (105, [1, 5], {"highway": "footway"}),
    (106, [20, 21, 22, 20], {"highway": "tertiary", "junction": "roundabout"}),
    (107, [4, 20], RES),
    (108, [5, 21], RES),
    (109, [30, 31], RES),
    (110, [1, 40], {"highway": "residential", "oneway": "yes"}),
    (111, [2, 6], {"highway": "residential", "access": "private"}),
]
TOWN_EDGES = {
    (1, 2, 100), (2, 1, 100), (2, 3, 100), (3, 2, 100),
    (3, 6, 101),
    (2, 5, 102), (5, 2, 102),
    (4, 5, 103), (5, 4, 103), (5, 6, 103), (6, 5, 103),
    (1, 4, 104), (4, 1, 104),
    (20, 21, 106), (21, 20, 106),
    (4, 20, 107), (20, 4, 107),
    (5, 21, 108), (21, 5, 108),
}  # fmt: skip


def _edges_by_osm(net: RoadNetwork) -> dict[tuple[int, int], int]:
    """(source OSM id, target OSM id) -> edge index."""
    osm = net.node_osm_id
    return {
        (int(osm[u]), int(osm[v])): e
        for e, (u, v) in enumerate(zip(net.edge_source.tolist(), net.edge_target.tolist(), strict=True))
    }


def _geometry_osm_ids(net: RoadNetwork, edge: int) -> list[int]:
    """The hand-made node ids along an edge's geometry (matched by coordinates)."""
    by_coord = {(round(lat, 7), round(lon, 7)): node for node, (lat, lon) in TOWN_NODES.items()}
    lat, lon = net.edge_geometry(edge)
    return [by_coord[(round(a, 7), round(b, 7))] for a, b in zip(lat.tolist(), lon.tolist(), strict=True)]


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> RoadNetwork:
    path = write_osm(tmp_path_factory.mktemp("town") / "town.osm", TOWN_NODES, TOWN_WAYS)
    return read_osm(path)


def test_town_edges(town: RoadNetwork) -> None:
    osm = town.node_osm_id
    got = {
        (int(osm[u]), int(osm[v]), int(w))
        for u, v, w in zip(town.edge_source, town.edge_target, town.edge_way_id, strict=True)
    }
    assert got == TOWN_EDGES
    assert sorted(osm.tolist()) == [1, 2, 3, 4, 5, 6, 20, 21]


def test_oneway_minus_one_is_reversed(town: RoadNetwork) -> None:
    edges = _edges_by_osm(town)
    assert (3, 6) in edges and (6, 3) not in edges
    e = edges[(3, 6)]
    assert _geometry_osm_ids(town, e) == [3, 50, 6]
    assert bool(town.edge_oneway[e])


def test_roundabout_is_one_way_along_the_way(town: RoadNetwork) -> None:
    edges = _edges_by_osm(town)
    assert _geometry_osm_ids(town, edges[(20, 21)]) == [20, 21]
    # The way back from 21 to 20 is the rest of the ring, not the same street driven backwards.
    assert _geometry_osm_ids(town, edges[(21, 20)]) == [21, 22, 20]
    assert bool(town.edge_oneway[edges[(20, 21)]]) and bool(town.edge_oneway[edges[(21, 20)]])


def test_two_way_streets_are_not_oneway(town: RoadNetwork) -> None:
    edges = _edges_by_osm(town)
    for pair in ((1, 2), (2, 1), (4, 5), (5, 4), (1, 4)):
        assert not bool(town.edge_oneway[edges[pair]])
    assert _geometry_osm_ids(town, edges[(3, 2)]) == [3, 2]


def test_footway_and_private_road_excluded(town: RoadNetwork) -> None:
    assert 105 not in town.edge_way_id.tolist()
    assert 111 not in town.edge_way_id.tolist()


def test_largest_strongly_connected_component_kept(town: RoadNetwork) -> None:
    # The island 30-31 and the one-way dead end to 40 are dropped.
    assert not set(town.node_osm_id.tolist()) & {30, 31, 40}
    assert not set(town.edge_way_id.tolist()) & {109, 110}


def test_maxspeed_used_for_speed(town: RoadNetwork) -> None:
    edges = _edges_by_osm(town)
    assert town.edge_speed_kph[edges[(1, 2)]] == pytest.approx(40.0)
    assert town.edge_speed_kph[edges[(2, 5)]] == pytest.approx(20 * 1.609344)
    assert town.edge_speed_kph[edges[(4, 5)]] == pytest.approx(DEFAULT_SPEED_KPH["residential"])
    assert town.edge_speed_kph[edges[(1, 4)]] == pytest.approx(DEFAULT_SPEED_KPH["unclassified"])
    assert town.edge_road_class[edges[(2, 5)]] == "tertiary"


def test_ways_split_at_intersections(town: RoadNetwork) -> None:
    edges = _edges_by_osm(town)
    # Way 100 (1-2-3) is cut at 2, where way 102 meets it.
    assert _geometry_osm_ids(town, edges[(1, 2)]) == [1, 2]
    assert _geometry_osm_ids(town, edges[(2, 3)]) == [2, 3]
    assert (1, 3) not in edges
    lat1, lon1 = TOWN_NODES[1]
    lat2, lon2 = TOWN_NODES[2]
    assert town.edge_length_m[edges[(1, 2)]] == pytest.approx(float(haversine_m(lat1, lon1, lat2, lon2)))


@pytest.mark.parametrize("suffix", [".osm", ".osm.gz", ".osm.bz2"])
def test_compressed_variants_read_the_same(tmp_path: Path, town: RoadNetwork, suffix: str) -> None:
    path = write_osm(tmp_path / f"town_copy{suffix}", TOWN_NODES, TOWN_WAYS)
    net = read_osm(path)
    for name in ("node_osm_id", "node_lat", "node_lon", "edge_source", "edge_target", "edge_way_id",
                 "edge_length_m", "edge_speed_kph", "edge_oneway", "geom_offsets", "geom_lat", "geom_lon"):  # fmt: skip
        np.testing.assert_array_equal(getattr(net, name), getattr(town, name), err_msg=name)


def test_parallel_roads_keep_the_fastest(tmp_path: Path) -> None:
    nodes = {1: grid_node(0, 0), 2: grid_node(0, 1), 3: grid_node(0.4, 0.5)}
    ways = [
        (1, [1, 2], {"highway": "residential", "maxspeed": "20"}),  # short and slow
        (2, [1, 3, 2], {"highway": "primary", "maxspeed": "60"}),  # longer and fast
    ]
    net = read_osm(write_osm(tmp_path / "parallel.osm", nodes, ways))
    assert net.edge_count == 2
    assert set(net.edge_way_id.tolist()) == {2}
    assert np.all(net.edge_speed_kph == 60.0)


def test_oneway_ring_is_split_only_at_way_ends(tmp_path: Path) -> None:
    nodes = {1: grid_node(0, 0), 2: grid_node(0, 1), 3: grid_node(1, 1), 4: grid_node(1, 0)}
    ways = [
        (1, [1, 2, 3], {"highway": "residential", "oneway": "yes"}),
        (2, [3, 4, 1], {"highway": "residential", "oneway": "yes"}),
    ]
    net = read_osm(write_osm(tmp_path / "loop.osm", nodes, ways))
    edges = _edges_by_osm(net)
    # Only the way ends are intersections: 1 -> 3 -> 1 around the loop.
    assert set(edges) == {(1, 3), (3, 1)}


def test_map_without_roads_is_refused(tmp_path: Path) -> None:
    path = write_osm(tmp_path / "paths_only.osm", {1: grid_node(0, 0), 2: grid_node(0, 1)},
                     [(1, [1, 2], {"highway": "footway"})])  # fmt: skip
    with pytest.raises(MapImportError, match="no drivable roads"):
        read_osm(path)


def test_single_oneway_road_is_refused(tmp_path: Path) -> None:
    path = write_osm(tmp_path / "dead_end.osm", {1: grid_node(0, 0), 2: grid_node(0, 1)},
                     [(1, [1, 2], {"highway": "residential", "oneway": "yes"})])  # fmt: skip
    with pytest.raises(MapImportError):
        read_osm(path)


def test_missing_empty_and_unknown_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MapImportError, match="not found"):
        read_osm(tmp_path / "nothing.osm.pbf")
    empty = tmp_path / "empty.osm.pbf"
    empty.write_bytes(b"")
    with pytest.raises(MapImportError, match="empty"):
        read_osm(empty)
    other = write_osm(tmp_path / "town.xml", TOWN_NODES, TOWN_WAYS)
    with pytest.raises(MapImportError, match="unsupported"):
        read_osm(other)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.osm"
    path.write_text("this is not xml <<<")
    with pytest.raises(MapImportError):
        read_osm(path)


def test_truncated_pbf_is_refused(tmp_path: Path, helsinki_path: Path) -> None:
    path = tmp_path / "truncated.osm.pbf"
    path.write_bytes(helsinki_path.read_bytes()[:5000])
    with pytest.raises(MapImportError):
        read_osm(path)
