"""Read an OSM extract into a compact, routable road network.

Reads ``.osm.pbf``, ``.osm``, ``.osm.gz`` and ``.osm.bz2`` with pyosmium. Ways a car may
use are split at intersections (a node shared by two ways, or a way's end), one
directed edge per allowed direction, parallel edges collapsed to the fastest, and only
the largest strongly connected component kept, so every node reaches every other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import osmium
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graph_store.geo import haversine_m
from graph_store.road_rules import Direction, direction, is_drivable, speed_kph

SUPPORTED_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.gz", ".osm.bz2")


class MapImportError(Exception):
    """The file cannot become a road map; the message says why."""


@dataclass(frozen=True)
class RoadNetwork:
    """A directed road graph in flat arrays (index = node or edge id).

    Units: degrees, metres, km/h. Edge ``geometry`` is given by ``geom_offsets``:
    the coordinates of edge e are ``geom_lat[geom_offsets[e]:geom_offsets[e+1]]``,
    from its source node to its target node inclusive.
    """

    node_osm_id: np.ndarray  # int64[N]
    node_lat: np.ndarray  # float64[N]
    node_lon: np.ndarray  # float64[N]
    edge_source: np.ndarray  # int32[E]
    edge_target: np.ndarray  # int32[E]
    edge_way_id: np.ndarray  # int64[E]
    edge_length_m: np.ndarray  # float64[E]
    edge_speed_kph: np.ndarray  # float64[E]
    edge_road_class: np.ndarray  # object[E] of str
    edge_oneway: np.ndarray  # bool[E]: the way allows only this direction
    geom_offsets: np.ndarray  # int64[E+1]
    geom_lat: np.ndarray  # float64
    geom_lon: np.ndarray  # float64

    @property
    def node_count(self) -> int:
        return int(self.node_lat.size)

    @property
    def edge_count(self) -> int:
        return int(self.edge_source.size)

    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lat, min_lon, max_lat, max_lon) in degrees."""
        return (
            float(self.node_lat.min()),
            float(self.node_lon.min()),
            float(self.node_lat.max()),
            float(self.node_lon.max()),
        )

    def edge_geometry(self, edge: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.geom_offsets[edge], self.geom_offsets[edge + 1]
        return self.geom_lat[lo:hi], self.geom_lon[lo:hi]


_TAG_KEYS = (
    "highway", "oneway", "junction", "maxspeed", "service", "area",
    "access", "vehicle", "motor_vehicle", "motorcar",
)  # fmt: skip


class _WayCollector(osmium.SimpleHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.ways: list[tuple[int, dict[str, str], list[int], list[float], list[float]]] = []
        self.ways_seen = 0

    def way(self, w: osmium.osm.Way) -> None:
        self.ways_seen += 1
        if "highway" not in w.tags:
            return
        tags = {k: w.tags[k] for k in _TAG_KEYS if k in w.tags}
        if not is_drivable(tags):
            return
        refs: list[int] = []
        lats: list[float] = []
        lons: list[float] = []
        for n in w.nodes:
            loc = n.location
            if not loc.valid():
                continue  # node outside the extract: the way is clipped here
            refs.append(n.ref)
            lats.append(loc.lat)
            lons.append(loc.lon)
        if len(refs) >= 2:
            self.ways.append((w.id, tags, refs, lats, lons))


def file_checksum(path: Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_map_file(path: Path) -> None:
    """Refuse, before any parsing, a file that is missing, empty or of an unknown format."""
    if not path.is_file():
        raise MapImportError(f"map file not found: {path}")
    if path.stat().st_size == 0:
        raise MapImportError(f"map file is empty: {path}")
    if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
        raise MapImportError(f"unsupported map format {path.name!r}: expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def read_osm(path: Path) -> RoadNetwork:
    """Parse an OSM file into the largest strongly connected drivable network.

    Raises MapImportError for a missing, empty, corrupt or road-less file.
    """
    check_map_file(path)
    collector = _WayCollector()
    try:
        collector.apply_file(str(path), locations=True)
    except Exception as exc:  # pyosmium raises RuntimeError/ValueError subclasses for bad input
        raise MapImportError(f"cannot read OSM data from {path.name}: {exc}") from exc
    if not collector.ways:
        raise MapImportError(f"no drivable roads in {path.name} ({collector.ways_seen} ways read)")
    return _build_network(collector.ways, path.name)


def _build_network(
    ways: list[tuple[int, dict[str, str], list[int], list[float], list[float]]], label: str
) -> RoadNetwork:
    # A node is an intersection when several ways use it, or it is a way's end.
    usage: dict[int, int] = {}
    for _, _, refs, _, _ in ways:
        for ref in refs:
            usage[ref] = usage.get(ref, 0) + 1
        usage[refs[0]] += 1
        usage[refs[-1]] += 1

    node_index: dict[int, int] = {}
    node_lat: list[float] = []
    node_lon: list[float] = []

    def intern(ref: int, lat: float, lon: float) -> int:
        idx = node_index.get(ref)
        if idx is None:
            idx = node_index[ref] = len(node_lat)
            node_lat.append(lat)
            node_lon.append(lon)
        return idx

    # best[(u, v)] = (time_s, way_id, length_m, speed, class, oneway, lats, lons)
    best: dict[tuple[int, int], tuple[float, int, float, float, str, bool, list[float], list[float]]] = {}

    def add_edge(u: int, v: int, way_id: int, length: float, speed: float, cls: str, oneway: bool,
                 lats: list[float], lons: list[float]) -> None:  # fmt: skip
        if u == v or length <= 0.0:
            return
        time_s = length / (speed / 3.6)
        current = best.get((u, v))
        if current is None or time_s < current[0]:
            best[(u, v)] = (time_s, way_id, length, speed, cls, oneway, lats, lons)

    for way_id, tags, refs, lats, lons in ways:
        dirn = direction(tags)
        speed = speed_kph(tags)
        cls = tags["highway"]
        oneway = dirn != Direction.BOTH
        seg_lat = np.asarray(lats)
        seg_lon = np.asarray(lons)
        step = haversine_m(seg_lat[:-1], seg_lon[:-1], seg_lat[1:], seg_lon[1:])
        start = 0
        for i in range(1, len(refs)):
            if usage[refs[i]] < 2 and i != len(refs) - 1:
                continue
            u = intern(refs[start], lats[start], lons[start])
            v = intern(refs[i], lats[i], lons[i])
            length = float(step[start:i].sum())
            g_lat, g_lon = lats[start : i + 1], lons[start : i + 1]
            if dirn in (Direction.BOTH, Direction.FORWARD):
                add_edge(u, v, way_id, length, speed, cls, oneway, g_lat, g_lon)
            if dirn in (Direction.BOTH, Direction.BACKWARD):
                add_edge(v, u, way_id, length, speed, cls, oneway, g_lat[::-1], g_lon[::-1])
            start = i

    if not best:
        raise MapImportError(f"no drivable road segments in {label}")

    keys = np.asarray(list(best.keys()), dtype=np.int64)
    n_all = len(node_lat)
    graph = coo_matrix((np.ones(len(keys)), (keys[:, 0], keys[:, 1])), shape=(n_all, n_all)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="strong")
    largest = np.bincount(labels).argmax()
    keep = labels == largest
    remap = np.full(n_all, -1, dtype=np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    if keep.sum() < 2:
        raise MapImportError(f"no connected road network in {label}")

    osm_ids = np.empty(n_all, dtype=np.int64)
    for ref, idx in node_index.items():
        osm_ids[idx] = ref

    # Deterministic edge order: by (source, target) after re-indexing.
    kept = [(int(remap[u]), int(remap[v]), rec) for (u, v), rec in best.items() if keep[u] and keep[v]]
    kept.sort(key=lambda item: (item[0], item[1]))
    offsets = [0]
    g_lat_all: list[float] = []
    g_lon_all: list[float] = []
    for _, _, rec in kept:
        g_lat_all.extend(rec[6])
        g_lon_all.extend(rec[7])
        offsets.append(len(g_lat_all))

    return RoadNetwork(
        node_osm_id=osm_ids[keep],
        node_lat=np.asarray(node_lat)[keep],
        node_lon=np.asarray(node_lon)[keep],
        edge_source=np.asarray([k[0] for k in kept], dtype=np.int32),
        edge_target=np.asarray([k[1] for k in kept], dtype=np.int32),
        edge_way_id=np.asarray([k[2][1] for k in kept], dtype=np.int64),
        edge_length_m=np.asarray([k[2][2] for k in kept], dtype=np.float64),
        edge_speed_kph=np.asarray([k[2][3] for k in kept], dtype=np.float64),
        edge_road_class=np.asarray([k[2][4] for k in kept], dtype=object),
        edge_oneway=np.asarray([k[2][5] for k in kept], dtype=bool),
        geom_offsets=np.asarray(offsets, dtype=np.int64),
        geom_lat=np.asarray(g_lat_all, dtype=np.float64),
        geom_lon=np.asarray(g_lon_all, dtype=np.float64),
    )
