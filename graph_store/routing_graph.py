"""The in-memory routing graph: snapping, travel-time matrices and road paths.

Shortest paths use a customizable contraction hierarchy (RoutingKit's CCH through
``pyroutingkit``): the node order is computed once per map, and each set of edge
weights (a traffic bucket, a live update) is applied by a ~1 ms customization into
its own CCH object, so queries never see half-updated weights.

Points are snapped onto edges, not nodes ("phantom" positions, as OSRM does): a trip
from a point in the middle of a street pays the rest of that street, in the directions
the street allows.

Units: seconds, metres, degrees. Internally edge weights are integer milliseconds.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyroutingkit

from graph_store.geo import LocalProjection
from graph_store.osm_import import RoadNetwork
from graph_store.snapping import SegmentIndex
from graph_store.traffic import TrafficState

INF = float("inf")
_INF_WEIGHT = int(pyroutingkit.INF_WEIGHT)
_CCH_CACHE_SIZE = 8


class SnapError(ValueError):
    """A coordinate is too far from any road; ``index`` is its position in the input."""

    def __init__(self, index: int, distance_m: float, limit_m: float) -> None:
        super().__init__(f"coordinate {index} is {distance_m:.0f} m from the nearest road (limit {limit_m:.0f} m)")
        self.index = index
        self.distance_m = distance_m
        self.limit_m = limit_m


@dataclass(frozen=True)
class Phantoms:
    """Snapped positions, one row per input point (see ``SnapResult``).

    ``edge`` is the directed edge the point lies on, ``reverse`` the opposite
    directed edge of the same road or -1 for a one-way road.
    """

    edge: np.ndarray
    reverse: np.ndarray
    fraction: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    distance_m: np.ndarray

    def __len__(self) -> int:
        return int(self.edge.size)

    def take(self, idx: np.ndarray | list[int]) -> Phantoms:
        i = np.asarray(idx, dtype=np.int64)
        return Phantoms(self.edge[i], self.reverse[i], self.fraction[i], self.lat[i], self.lon[i], self.distance_m[i])


@dataclass(frozen=True)
class Leg:
    """One leg of a route: seconds, metres, geometry from start to end (degrees)."""

    duration_s: float
    distance_m: float
    lat: np.ndarray
    lon: np.ndarray
    nodes: tuple[int, ...]


class RoadGraph:
    """Static part of a map: topology, lengths, geometry, spatial index."""

    def __init__(self, network: RoadNetwork, *, map_version: int = 0, name: str = "") -> None:
        self.network = network
        self.map_version = map_version
        self.name = name
        n = network.node_count
        src = network.edge_source.astype(np.int64)
        dst = network.edge_target.astype(np.int64)
        self.node_count = n
        self.edge_source = src
        self.edge_target = dst
        self.edge_length_m = network.edge_length_m
        keys = src * n + dst
        order = np.argsort(keys, kind="stable")
        self._edge_keys = keys[order]
        self._edge_by_key = order
        self.reverse_edge = self._same_road_reverse(network, self.edges_between(dst, src))
        # Index one geometry per road: a two-way road's two edges share it.
        canonical = (self.reverse_edge < 0) | (np.arange(src.size) < self.reverse_edge)
        lat0 = float(network.node_lat.mean())
        lon0 = float(network.node_lon.mean())
        self.projection = LocalProjection(lat0, lon0)
        self._segments = SegmentIndex(
            self.projection, np.flatnonzero(canonical), network.geom_offsets, network.geom_lat, network.geom_lon
        )
        topology = pyroutingkit.CCH()
        topology.build_topology(
            src.astype(np.uint32), dst.astype(np.uint32),
            network.node_lat.astype(np.float32), network.node_lon.astype(np.float32), node_count=n,
        )  # fmt: skip
        # Loading a saved node order takes ~2 ms where building it takes ~60 ms.
        self._topology_dir = tempfile.TemporaryDirectory(prefix="routing-cch-")
        topology.save_topology(self._topology_dir.name)
        self.bbox = network.bbox()

    @staticmethod
    def _same_road_reverse(network: RoadNetwork, opposite: np.ndarray) -> np.ndarray:
        """``opposite`` (edge v->u of each edge u->v, or -1) where it is the same road driven
        back, i.e. its geometry is this edge's reversed; -1 where it is another road between
        the same two nodes (say a one-way street and the rest of a roundabout)."""
        size = np.diff(network.geom_offsets)
        cand = np.flatnonzero((opposite >= 0) & (size == size[np.maximum(opposite, 0)]))
        counts = size[cand]
        owner = np.repeat(cand, counts)
        k = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
        i = network.geom_offsets[owner] + k
        j = network.geom_offsets[opposite[owner] + 1] - 1 - k
        differs = (network.geom_lat[i] != network.geom_lat[j]) | (network.geom_lon[i] != network.geom_lon[j])
        same = np.zeros(opposite.size, dtype=bool)
        same[cand] = True
        same[owner[differs]] = False
        return np.where(same, opposite, -1)

    def edges_between(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Edge index for each (u, v) pair, -1 where there is no such edge."""
        keys = np.asarray(u, dtype=np.int64) * self.node_count + np.asarray(v, dtype=np.int64)
        pos = np.searchsorted(self._edge_keys, keys)
        pos_c = np.minimum(pos, self._edge_keys.size - 1)
        found = self._edge_keys[pos_c] == keys
        return np.where(found, self._edge_by_key[pos_c], -1)

    def new_cch(self, weights_ms: np.ndarray) -> pyroutingkit.CCH:
        """A CCH customized with these weights (integer ms per edge)."""
        cch = pyroutingkit.CCH()
        cch.load_topology(self._topology_dir.name)
        cch.customize_weights(weights_ms.astype(np.uint32))
        return cch

    def snap(self, lat: np.ndarray, lon: np.ndarray, max_distance_m: float) -> Phantoms:
        """Snap points to the nearest road position; SnapError past ``max_distance_m``."""
        res = self._segments.snap(np.atleast_1d(lat), np.atleast_1d(lon))
        too_far = np.flatnonzero(~(res.distance_m <= max_distance_m))
        if too_far.size:
            i = int(too_far[0])
            raise SnapError(i, float(res.distance_m[i]), max_distance_m)
        return Phantoms(res.edge, self.reverse_edge[res.edge], res.fraction, res.lat, res.lon, res.distance_m)

    def edge_geometry(self, edge: int, f0: float = 0.0, f1: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The part of an edge's geometry between fractions f0 <= f1 of its length."""
        lat, lon = self.network.edge_geometry(edge)
        if f0 <= 0.0 and f1 >= 1.0:
            return lat, lon
        x, y = self.projection.to_xy(lat, lon)
        cum = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))))
        total = cum[-1] if cum[-1] > 0 else 1.0
        d0, d1 = f0 * total, f1 * total
        inner = (cum > d0) & (cum < d1)
        xs = np.concatenate(([np.interp(d0, cum, x)], x[inner], [np.interp(d1, cum, x)]))
        ys = np.concatenate(([np.interp(d0, cum, y)], y[inner], [np.interp(d1, cum, y)]))
        return self.projection.to_latlon(xs, ys)


class RoutingSnapshot:
    """A road graph under one traffic state: immutable, safe to share between threads."""

    def __init__(self, graph: RoadGraph, traffic: TrafficState) -> None:
        self.graph = graph
        self.traffic = traffic
        self._cch: OrderedDict[tuple[object, ...], tuple[pyroutingkit.CCH, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def epoch(self) -> int:
        return self.traffic.epoch

    def edge_speeds(self, when: datetime) -> np.ndarray:
        net = self.graph.network
        return self.traffic.edge_speeds(net.edge_speed_kph, net.edge_road_class, when)

    def _weights(self, when: datetime) -> tuple[pyroutingkit.CCH, np.ndarray]:
        """(customized CCH, weights in ms per edge) for a departure time."""
        key = self.traffic.weight_key(when)
        with self._lock:
            hit = self._cch.get(key)
            if hit is not None:
                self._cch.move_to_end(key)
                return hit
        speeds = self.edge_speeds(when)
        weights = np.maximum(1, np.round(self.graph.edge_length_m / (speeds / 3.6) * 1000.0)).astype(np.int64)
        entry = (self.graph.new_cch(weights), weights)
        with self._lock:
            self._cch[key] = entry
            while len(self._cch) > _CCH_CACHE_SIZE:
                self._cch.popitem(last=False)
        return entry

    def edge_weights_ms(self, when: datetime) -> np.ndarray:
        return self._weights(when)[1]

    # -- node level ---------------------------------------------------------------

    def node_durations(self, sources: np.ndarray, targets: np.ndarray, when: datetime) -> np.ndarray:
        """Seconds between graph nodes (float64, inf where unreachable)."""
        cch, _ = self._weights(when)
        return _to_seconds(cch.distances_many_to_many(np.asarray(sources, np.uint32), np.asarray(targets, np.uint32)))

    def node_path(self, source: int, target: int, when: datetime) -> list[int]:
        """Nodes of the fastest path, source and target included; [] if unreachable."""
        if source == target:
            return [int(source)]
        cch, _ = self._weights(when)
        dist, path = cch.query(int(source), int(target))
        if int(dist) >= _INF_WEIGHT:
            return []
        return [int(p) for p in path]

    # -- phantom level --------------------------------------------------------------

    def _ends(self, ph: Phantoms, w: np.ndarray, as_source: bool) -> tuple[np.ndarray, np.ndarray]:
        """For each phantom, the two graph nodes it connects to and the cost (ms) to/from them."""
        e, r, f = ph.edge, ph.reverse, ph.fraction
        has_r = r >= 0
        wr = np.where(has_r, w[np.where(has_r, r, 0)], 0)
        src, dst = self.graph.edge_source[e], self.graph.edge_target[e]
        if as_source:  # leave forward along e to its target, or backward along r to e's source
            nodes = np.column_stack((dst, src))
            cost = np.column_stack(((1.0 - f) * w[e], np.where(has_r, f * wr, INF)))
        else:  # arrive along e from its source, or along r from e's target
            nodes = np.column_stack((src, dst))
            cost = np.column_stack((f * w[e], np.where(has_r, (1.0 - f) * wr, INF)))
        return nodes, cost

    def _combine(
        self, a: Phantoms, b: Phantoms, when: datetime
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Best (ms, source choice, target choice, direct-on-edge flag) per pair."""
        cch, w = self._weights(when)
        s_nodes, s_cost = self._ends(a, w, as_source=True)
        t_nodes, t_cost = self._ends(b, w, as_source=False)
        us, s_inv = np.unique(s_nodes, return_inverse=True)
        ut, t_inv = np.unique(t_nodes, return_inverse=True)
        core = cch.distances_many_to_many(us.astype(np.uint32), ut.astype(np.uint32)).astype(np.float64)
        core[core >= _INF_WEIGHT] = INF
        s_inv = s_inv.reshape(s_nodes.shape)
        t_inv = t_inv.reshape(t_nodes.shape)
        best = np.full((len(a), len(b)), INF)
        choice = np.zeros((len(a), len(b)), dtype=np.int8)
        for ci in range(2):
            for cj in range(2):
                total = s_cost[:, ci, None] + core[np.ix_(s_inv[:, ci], t_inv[:, cj])] + t_cost[None, :, cj]
                better = total < best
                best = np.where(better, total, best)
                choice = np.where(better, ci * 2 + cj, choice)
        # Both points on the same road, the second ahead of the first: drive straight there.
        direct = np.zeros_like(best, dtype=bool)
        fa, fb = a.fraction[:, None], b.fraction[None, :]
        same_fwd = (a.edge[:, None] == b.edge[None, :]) & (fa <= fb)
        cost_fwd = (fb - fa) * w[a.edge][:, None]
        has_r = a.reverse >= 0
        # Snapping puts both points of one road on the same edge: driving back is along its reverse.
        same_rev = (a.edge[:, None] == b.edge[None, :]) & has_r[:, None] & (fa >= fb)
        cost_rev = (fa - fb) * np.where(has_r, w[np.where(has_r, a.reverse, 0)], 0)[:, None]
        for mask, cost in ((same_fwd, cost_fwd), (same_rev, cost_rev)):
            take = mask & (cost <= best)
            best = np.where(take, cost, best)
            direct |= take
        return best, choice, direct, core

    def durations(self, a: Phantoms, b: Phantoms, when: datetime) -> np.ndarray:
        """Seconds from each phantom of ``a`` to each of ``b`` (inf where unreachable)."""
        best, _, _, _ = self._combine(a, b, when)
        return best / 1000.0

    def table(
        self, a: Phantoms, b: Phantoms, when: datetime, *, with_distance: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(seconds, metres along the fastest path or None) for every pair."""
        best, choice, direct, _ = self._combine(a, b, when)
        if not with_distance:
            return best / 1000.0, None
        return best / 1000.0, self._fastest_path_lengths(a, b, best, choice, direct, when)

    def _fastest_path_lengths(self, a: Phantoms, b: Phantoms, best: np.ndarray, choice: np.ndarray,
                              direct: np.ndarray, when: datetime) -> np.ndarray:  # fmt: skip
        """Metres along each pair's fastest path: unpack each distinct node path once."""
        g = self.graph
        cch, _ = self._weights(when)
        lengths = g.edge_length_m
        fa, fb = a.fraction[:, None], b.fraction[None, :]
        ci, cj = np.divmod(choice, 2)
        # Partial edges at both ends, by the choice of exit and entry.
        first_len = np.where(ci == 0, (1.0 - fa) * lengths[a.edge][:, None], fa * lengths[a.edge][:, None])
        last_len = np.where(cj == 0, fb * lengths[b.edge][None, :], (1.0 - fb) * lengths[b.edge][None, :])
        src_node = np.where(ci == 0, g.edge_target[a.edge][:, None], g.edge_source[a.edge][:, None])
        dst_node = np.where(cj == 0, g.edge_source[b.edge][None, :], g.edge_target[b.edge][None, :])
        reachable = np.isfinite(best) & ~direct
        pairs = np.unique(np.column_stack((src_node[reachable], dst_node[reachable])), axis=0)
        path_u: list[np.ndarray] = []
        path_v: list[np.ndarray] = []
        counts = np.zeros(len(pairs), dtype=np.int64)
        for k, (u, v) in enumerate(pairs.tolist()):
            if u == v:
                continue
            _, path = cch.query(u, v)
            nodes = np.asarray(path, dtype=np.int64)
            path_u.append(nodes[:-1])
            path_v.append(nodes[1:])
            counts[k] = nodes.size - 1
        core = np.zeros(len(pairs))
        if path_u:
            edge_len = lengths[g.edges_between(np.concatenate(path_u), np.concatenate(path_v))]
            core = _sum_by_count(edge_len, counts)
        dist = np.full(best.shape, INF)
        if len(pairs):
            pair_key = pairs[:, 0] * g.node_count + pairs[:, 1]
            idx = np.searchsorted(pair_key, src_node * g.node_count + dst_node)
            idx = np.minimum(idx, len(pairs) - 1)
            dist = np.where(reachable, first_len + core[idx] + last_len, dist)
        direct_len = np.abs(fb - fa) * lengths[a.edge][:, None]
        return np.where(direct, direct_len, dist)

    def _pair_route(self, a: Phantoms, b: Phantoms, i: int, j: int, choice: int, direct: bool, when: datetime):
        """(edges in order with (f0, f1) per edge, nodes) of the fastest way from a[i] to b[j]."""
        g = self.graph
        ea, eb = int(a.edge[i]), int(b.edge[j])
        fa, fb = float(a.fraction[i]), float(b.fraction[j])
        if direct:
            if ea == eb and fa <= fb:
                return [(ea, fa, fb)], (int(g.edge_source[ea]), int(g.edge_target[ea]))
            r = int(a.reverse[i])
            return [(r, 1.0 - fa, 1.0 - fb)], (int(g.edge_source[r]), int(g.edge_target[r]))
        ci, cj = divmod(choice, 2)
        first = (ea, fa, 1.0) if ci == 0 else (int(a.reverse[i]), 1.0 - fa, 1.0)
        last = (eb, 0.0, fb) if cj == 0 else (int(b.reverse[j]), 0.0, 1.0 - fb)
        u = int(g.edge_target[first[0]])
        v = int(g.edge_source[last[0]])
        nodes = self.node_path(u, v, when)
        middle = (
            g.edges_between(np.asarray(nodes[:-1]), np.asarray(nodes[1:])) if len(nodes) > 1 else np.empty(0, np.int64)
        )
        pieces = [first] + [(int(e), 0.0, 1.0) for e in middle] + [last]
        return pieces, tuple(nodes)

    def route(self, points: Phantoms, when: datetime) -> list[Leg]:
        """Legs between consecutive points, each the fastest path under ``when``'s traffic."""
        legs: list[Leg] = []
        lengths = self.graph.edge_length_m
        n = len(points)
        if n < 2:
            return legs
        # One many-to-many query for every leg's best combination (its diagonal), not one per leg.
        froms, tos = points.take(list(range(n - 1))), points.take(list(range(1, n)))
        best, choice, direct, _ = self._combine(froms, tos, when)
        for k in range(n - 1):
            if not np.isfinite(best[k, k]):
                raise ValueError(f"no route between waypoints {k} and {k + 1}")
            pieces, nodes = self._pair_route(froms, tos, k, k, int(choice[k, k]), bool(direct[k, k]), when)
            lat, lon = self._pieces_geometry(pieces)
            if lat.size == 0:
                # Both points at one intersection, reached from different roads: every piece
                # has zero length, and the leg is that one point.
                lat = np.asarray([froms.lat[k], tos.lat[k]])
                lon = np.asarray([froms.lon[k], tos.lon[k]])
            distance = float(sum(lengths[e] * (f1 - f0) for e, f0, f1 in pieces))
            legs.append(Leg(float(best[k, k]) / 1000.0, distance, lat, lon, nodes))
        return legs

    def _pieces_geometry(self, pieces: list[tuple[int, float, float]]) -> tuple[np.ndarray, np.ndarray]:
        """The polyline of consecutive edge pieces, each shared point once. The whole edges in the
        middle are gathered in one step; only the partial first and last pieces are cut."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        (e, f0, f1), middle, last = pieces[0], pieces[1:-1], pieces[1:][-1:]
        if f1 > f0 or len(pieces) == 1:
            parts.append(self.graph.edge_geometry(e, f0, f1))
        if middle:
            parts.append(self._edges_geometry(np.fromiter((e for e, _, _ in middle), np.int64, len(middle))))
        for e, f0, f1 in last:
            if f1 > f0:
                parts.append(self.graph.edge_geometry(e, f0, f1))
        if not parts:
            return np.empty(0), np.empty(0)
        lats = [parts[0][0]] + [la[1:] for la, _ in parts[1:]]
        lons = [parts[0][1]] + [lo[1:] for _, lo in parts[1:]]
        return np.concatenate(lats), np.concatenate(lons)

    def _edges_geometry(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole geometries of consecutive edges, the point each shares with the one before it once."""
        net = self.graph.network
        lo = net.geom_offsets[edges].astype(np.int64)
        hi = net.geom_offsets[edges + 1].astype(np.int64)
        lo[1:] += 1  # an edge starts where the previous one ended
        counts = hi - lo
        idx = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(int(counts.sum()))
        return net.geom_lat[idx], net.geom_lon[idx]


def _sum_by_count(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of ``values`` of the given lengths (zero-length runs allowed)."""
    ends = np.cumsum(counts)
    cum = np.concatenate(([0.0], np.cumsum(values)))
    return cum[ends] - cum[ends - counts]


def _to_seconds(matrix: np.ndarray) -> np.ndarray:
    out = matrix.astype(np.float64) / 1000.0
    out[matrix >= _INF_WEIGHT] = INF
    return out
