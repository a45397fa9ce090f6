"""Read an OSM extract into a compact, routable road network.

Reads ``.osm.pbf``, ``.osm``, ``.osm.gz`` and ``.osm.bz2`` with pyosmium. Ways a car may
use are split at intersections (a node shared by two ways, or a way's end), one
directed edge per allowed direction, parallel edges collapsed to the fastest, and only
the largest strongly connected component kept, so every node reaches every other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import osmium
import osmium.filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graph_store.geo import haversine_m
from graph_store.road_rules import Direction, direction, is_drivable, parse_maxspeed, speed_kph

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
    # Travel-time features; None for a network stored before they existed (use ``controls()``).
    edge_signals: np.ndarray | None = None  # int16[E]: traffic signals met along the edge
    edge_stops: np.ndarray | None = None  # int16[E]: stop signs
    edge_give_way: np.ndarray | None = None  # int16[E]: give-way signs
    edge_crossings: np.ndarray | None = None  # int16[E]: pedestrian and level crossings
    edge_lanes: np.ndarray | None = None  # float32[E]: lanes in the edge's direction, NaN unknown
    edge_maxspeed_tagged: np.ndarray | None = None  # bool[E]: speed from a maxspeed tag

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

    def controls(self) -> dict[str, np.ndarray]:
        """Per-edge travel-time features, never None: ``signals``, ``stops``, ``give_way``,
        ``crossings`` (int16, zeros when not stored), ``lanes`` (float32, NaN when unknown
        or not stored) and ``maxspeed_tagged`` (bool, False when not stored)."""
        e = self.edge_count

        def counts(values: np.ndarray | None) -> np.ndarray:
            return np.zeros(e, dtype=np.int16) if values is None else values

        return {
            "signals": counts(self.edge_signals),
            "stops": counts(self.edge_stops),
            "give_way": counts(self.edge_give_way),
            "crossings": counts(self.edge_crossings),
            "lanes": np.full(e, np.nan, dtype=np.float32) if self.edge_lanes is None else self.edge_lanes,
            "maxspeed_tagged": (
                np.zeros(e, dtype=bool) if self.edge_maxspeed_tagged is None else self.edge_maxspeed_tagged
            ),
        }


_TAG_KEYS = (
    "highway", "oneway", "junction", "maxspeed", "service", "area",
    "access", "vehicle", "motor_vehicle", "motorcar",
    "lanes", "lanes:forward", "lanes:backward",
)  # fmt: skip

# A control node's code: kind bits, and which way along a way's node order it applies to
# (signals, stop and give-way signs only; crossings apply both ways).
SIGNAL, STOP, GIVE_WAY, CROSSING = 1, 2, 4, 8
_ONLY_FORWARD, _ONLY_BACKWARD = 16, 32
_DIRECTED = SIGNAL | STOP | GIVE_WAY
_HIGHWAY_CONTROLS = {"traffic_signals": SIGNAL, "stop": STOP, "give_way": GIVE_WAY, "crossing": CROSSING}
_DIRECTION_BITS = {"forward": _ONLY_FORWARD, "backward": _ONLY_BACKWARD}
_NODE_TAG_KEYS = ("highway", "crossing", "railway", "stop", "direction", "traffic_signals:direction")


def node_control(tags: Mapping[str, str]) -> int:
    """The control code of a node with these tags (0: no control a car meets)."""
    highway = tags.get("highway")
    code = _HIGHWAY_CONTROLS.get(highway, 0) if highway is not None else 0
    if highway is None and tags.get("crossing", "no") != "no":
        code |= CROSSING
    if tags.get("railway") == "level_crossing":
        code |= CROSSING
    if code & _DIRECTED and not (code & STOP and tags.get("stop") == "all"):
        dirn = tags.get("traffic_signals:direction") if code & SIGNAL else None
        code |= _DIRECTION_BITS.get((dirn or tags.get("direction") or "").strip().lower(), 0)
    return code


class _WayCollector(osmium.SimpleHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.ways: list[tuple[int, dict[str, str], list[int], list[float], list[float]]] = []
        self.ways_seen = 0
        self.controls: dict[int, int] = {}  # node osm id -> control code, only nodes with a control

    def node(self, n: osmium.osm.Node) -> None:
        tags = n.tags
        code = node_control({k: tags[k] for k in _NODE_TAG_KEYS if k in tags})
        if code:
            self.controls[n.id] = code

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
    # Only nodes that may carry a control reach Python; every node's location is still stored.
    node_filter = osmium.filter.KeyFilter("highway", "crossing", "railway")
    node_filter.enable_for(osmium.osm.NODE)
    try:
        collector.apply_file(str(path), locations=True, filters=[node_filter])
    except Exception as exc:  # pyosmium raises RuntimeError/ValueError subclasses for bad input
        raise MapImportError(f"cannot read OSM data from {path.name}: {exc}") from exc
    if not collector.ways:
        raise MapImportError(f"no drivable roads in {path.name} ({collector.ways_seen} ways read)")
    return _build_network(collector.ways, path.name, collector.controls)


def _parse_lanes(value: str | None) -> float:
    """A ``lanes`` value as a number (the first of a ``;`` list), NaN when absent or unparseable."""
    if not value:
        return math.nan
    try:
        lanes = float(value.split(";", 1)[0].strip())
    except ValueError:
        return math.nan
    return lanes if 0 < lanes < 100 else math.nan


def _lanes(tags: Mapping[str, str], dirn: Direction, forward: bool) -> float:
    """Lanes of a way in one travel direction (NaN unknown)."""
    own = _parse_lanes(tags.get("lanes:forward" if forward else "lanes:backward"))
    if not math.isnan(own):
        return own
    total = _parse_lanes(tags.get("lanes"))
    if math.isnan(total) or dirn != Direction.BOTH:
        return total
    return max(1.0, total / 2)


# Per directed edge: (signals, stops, give_way, crossings, lanes, maxspeed_tagged).
_Features = tuple[int, int, int, int, float, bool]


def _segment_features(codes: list[int], lanes: float, tagged: bool, forward: bool) -> _Features:
    """Features of one direction of a way segment; ``codes`` are the control codes of the
    nodes met driving it (target and interior nodes, in any order)."""
    wrong_way = _ONLY_BACKWARD if forward else _ONLY_FORWARD
    signals = stops = give_way = crossings = 0
    for code in codes:
        if not code:
            continue
        if code & CROSSING:
            crossings += 1
        if code & wrong_way:
            continue
        signals += bool(code & SIGNAL)
        stops += bool(code & STOP)
        give_way += bool(code & GIVE_WAY)
    return (signals, stops, give_way, crossings, lanes, tagged)


def _build_network(
    ways: list[tuple[int, dict[str, str], list[int], list[float], list[float]]], label: str,
    node_controls: Mapping[int, int] | None = None,
) -> RoadNetwork:  # fmt: skip
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

    # best[(u, v)] = (time_s, way_id, length_m, speed, class, oneway, lats, lons, features)
    best: dict[tuple[int, int], tuple[float, int, float, float, str, bool, list[float], list[float], _Features]] = {}

    def add_edge(u: int, v: int, way_id: int, length: float, speed: float, cls: str, oneway: bool,
                 lats: list[float], lons: list[float], features: _Features) -> None:  # fmt: skip
        if u == v or length <= 0.0:
            return
        time_s = length / (speed / 3.6)
        current = best.get((u, v))
        if current is None or time_s < current[0]:
            best[(u, v)] = (time_s, way_id, length, speed, cls, oneway, lats, lons, features)

    controls = node_controls or {}
    for way_id, tags, refs, lats, lons in ways:
        dirn = direction(tags)
        speed = speed_kph(tags)
        cls = tags["highway"]
        oneway = dirn != Direction.BOTH
        tagged = parse_maxspeed(tags.get("maxspeed")) is not None
        lanes_fwd = _lanes(tags, dirn, forward=True)
        lanes_bwd = _lanes(tags, dirn, forward=False)
        codes = [controls.get(ref, 0) for ref in refs] if controls else [0] * len(refs)
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
                # Driving start -> i meets refs[start+1 .. i]; the reverse meets refs[i-1 .. start].
                fwd = _segment_features(codes[start + 1 : i + 1], lanes_fwd, tagged, forward=True)
                add_edge(u, v, way_id, length, speed, cls, oneway, g_lat, g_lon, fwd)
            if dirn in (Direction.BOTH, Direction.BACKWARD):
                bwd = _segment_features(codes[start:i], lanes_bwd, tagged, forward=False)
                add_edge(v, u, way_id, length, speed, cls, oneway, g_lat[::-1], g_lon[::-1], bwd)
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

    features = [k[2][8] for k in kept]
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
        edge_signals=np.asarray([f[0] for f in features], dtype=np.int16),
        edge_stops=np.asarray([f[1] for f in features], dtype=np.int16),
        edge_give_way=np.asarray([f[2] for f in features], dtype=np.int16),
        edge_crossings=np.asarray([f[3] for f in features], dtype=np.int16),
        edge_lanes=np.asarray([f[4] for f in features], dtype=np.float32),
        edge_maxspeed_tagged=np.asarray([f[5] for f in features], dtype=bool),
    )
