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
from graph_store.travel_model import edge_delay_s

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
    # The same path's seconds at the 10th and 90th percentiles of the learned profile; None without one.
    duration_p10_s: float | None = None
    duration_p90_s: float | None = None


@dataclass(frozen=True)
class Pieces:
    """Paths as flat edge pieces: piece i covers ``edge[i]`` from fraction ``f0[i]`` to ``f1[i]`` and
    belongs to pair/leg ``leg[i]`` (pieces of one leg are consecutive, in driving order)."""

    leg: np.ndarray
    edge: np.ndarray
    f0: np.ndarray
    f1: np.ndarray
    reachable: np.ndarray  # per pair
    paths: list[list[int]]  # node path per reachable pair


@dataclass(frozen=True)
class Table:
    """Travel times between points, and per pair how the fastest path leaves and enters the roads."""

    best_ms: np.ndarray  # [A, B], inf where unreachable
    choice: np.ndarray  # source end * 2 + target end (see ``RoutingSnapshot._ends``)
    direct: np.ndarray  # both on one road, driven straight along it

    @property
    def seconds(self) -> np.ndarray:
        return self.best_ms / 1000.0


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
        self.edge_delay_s = edge_delay_s(network)
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
        # Each geometry point's fraction of its edge's length, and a key that sorts every point of
        # every edge (edge * 2 + fraction): cutting partial edges is then a searchsorted, for all at once.
        x, y = self.projection.to_xy(network.geom_lat, network.geom_lon)
        offsets = network.geom_offsets.astype(np.int64)
        owner = np.repeat(np.arange(src.size, dtype=np.int64), np.diff(offsets))
        step = np.hypot(np.diff(x), np.diff(y))
        step[owner[1:] != owner[:-1]] = 0.0
        along = np.concatenate(([0.0], np.cumsum(step)))
        along -= along[offsets[:-1]][owner]
        total = along[offsets[1:] - 1]
        self._geom_frac = along / np.where(total > 0, total, 1.0)[owner]
        self._geom_frac[offsets[1:] - 1] = np.where(total > 0, 1.0, 0.0)
        self._geom_key = owner * 2.0 + self._geom_frac
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

    def _point_at(self, edge: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The point at fraction ``frac`` of each edge's length (its end points exactly at 0 and 1)."""
        net = self.network
        lo, hi = net.geom_offsets[edge], net.geom_offsets[edge + 1]
        k = np.clip(np.searchsorted(self._geom_key, edge * 2.0 + frac, side="right") - 1, lo, hi - 2)
        span = self._geom_frac[k + 1] - self._geom_frac[k]
        t = np.clip(np.where(span > 0, (frac - self._geom_frac[k]) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0)
        lat = net.geom_lat[k] + t * (net.geom_lat[k + 1] - net.geom_lat[k])
        lon = net.geom_lon[k] + t * (net.geom_lon[k + 1] - net.geom_lon[k])
        lat = np.where(frac <= 0.0, net.geom_lat[lo], np.where(frac >= 1.0, net.geom_lat[hi - 1], lat))
        lon = np.where(frac <= 0.0, net.geom_lon[lo], np.where(frac >= 1.0, net.geom_lon[hi - 1], lon))
        return lat, lon

    def pieces_geometry(self, edge: np.ndarray, f0: np.ndarray, f1: np.ndarray,
                        skip_first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Points of many edge pieces (edge, from fraction f0 to f1) in one pass: each piece's cut
        start point, its inner points, its cut end point; without the start point where
        ``skip_first`` (a piece that continues the one before it). Returns (lat, lon, points per piece)."""
        base = edge * 2.0
        a = np.searchsorted(self._geom_key, base + f0, side="right")
        inner = np.maximum(np.searchsorted(self._geom_key, base + f1, side="left") - a, 0)
        head = (~skip_first).astype(np.int64)
        counts = head + inner + 1
        starts = np.cumsum(counts) - counts
        lat, lon = np.empty(int(counts.sum())), np.empty(int(counts.sum()))
        s_lat, s_lon = self._point_at(edge[head > 0], f0[head > 0])
        lat[starts[head > 0]], lon[starts[head > 0]] = s_lat, s_lon
        ramp = np.arange(int(inner.sum())) - np.repeat(np.cumsum(inner) - inner, inner)
        src, dst = np.repeat(a, inner) + ramp, np.repeat(starts + head, inner) + ramp
        lat[dst], lon[dst] = self.network.geom_lat[src], self.network.geom_lon[src]
        lat[starts + counts - 1], lon[starts + counts - 1] = self._point_at(edge, f1)
        return lat, lon, counts


class RoutingSnapshot:
    """A road graph under one traffic state: immutable, safe to share between threads."""

    QUANTILES = (0.1, 0.5, 0.9)

    def __init__(self, graph: RoadGraph, traffic: TrafficState, quantile: float = 0.5) -> None:
        if quantile not in self.QUANTILES:
            raise ValueError(f"quantile must be one of {self.QUANTILES}, got {quantile}")
        self.graph = graph
        self.traffic = traffic
        self.quantile = quantile
        self._column = self.QUANTILES.index(quantile)
        self._cch: OrderedDict[tuple[object, ...], tuple[pyroutingkit.CCH, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._siblings: dict[float, RoutingSnapshot] = {quantile: self}

    def at_quantile(self, quantile: float) -> RoutingSnapshot:
        """This snapshot with routes and matrices costed at another quantile of the learned travel
        times (0.9: a cautious plan); the same one when there is no learned profile."""
        if self.traffic.learned is None:
            return self
        with self._lock:
            sib = self._siblings.get(quantile)
            if sib is None:
                sib = RoutingSnapshot(self.graph, self.traffic, quantile)
                sib._siblings = self._siblings
                self._siblings[quantile] = sib
        return sib

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
        weights = np.maximum(1, np.round(self.edge_seconds(when)[:, self._column] * 1000.0)).astype(np.int64)
        entry = (self.graph.new_cch(weights), weights)
        with self._lock:
            self._cch[key] = entry
            while len(self._cch) > _CCH_CACHE_SIZE:
                self._cch.popitem(last=False)
        return entry

    def edge_seconds(self, when: datetime) -> np.ndarray:
        """Seconds to drive each edge at ``when`` [E, 3]: p10, p50 (what routes are costed on) and p90.

        Base model (speed, time lost at controls), times the learned profile's multipliers when one
        is in force; an edge with a live observation takes its measured speed (no delay added,
        no multiplier: a measurement already holds both)."""
        speeds = self.edge_speeds(when)
        base = self.graph.edge_length_m / (speeds / 3.6) + self.graph.edge_delay_s
        live, _ = self.traffic.active_live(when)
        live = live[live < base.size]
        learned = self.traffic.learned
        out = base[:, None] * (np.ones((1, 3)) if learned is None else learned.multipliers(when))
        if live.size:
            out[live] = (self.graph.edge_length_m[live] / (speeds[live] / 3.6))[:, None]
        return out

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

    def _pair_route(self, a: Phantoms, b: Phantoms, i: int, j: int, choice: int, direct: bool,
                    when: datetime) -> tuple[tuple[int, float, float], tuple[int, float, float] | None, list[int]]:  # fmt: skip
        """The fastest way from a[i] to b[j]: (first piece, last piece or None, nodes). A piece is
        (edge, f0, f1); between the two pieces the path runs along whole edges through ``nodes``."""
        g = self.graph
        ea, eb = int(a.edge[i]), int(b.edge[j])
        fa, fb = float(a.fraction[i]), float(b.fraction[j])
        if direct:
            if ea == eb and fa <= fb:
                return (ea, fa, fb), None, [int(g.edge_source[ea]), int(g.edge_target[ea])]
            r = int(a.reverse[i])
            return (r, 1.0 - fa, 1.0 - fb), None, [int(g.edge_source[r]), int(g.edge_target[r])]
        ci, cj = divmod(choice, 2)
        first = (ea, fa, 1.0) if ci == 0 else (int(a.reverse[i]), 1.0 - fa, 1.0)
        last = (eb, 0.0, fb) if cj == 0 else (int(b.reverse[j]), 0.0, 1.0 - fb)
        return first, last, self.node_path(int(g.edge_target[first[0]]), int(g.edge_source[last[0]]), when)

    def route(self, points: Phantoms, when: datetime) -> list[Leg]:
        """Legs between consecutive points, each the fastest path under ``when``'s traffic."""
        n = len(points)
        if n < 2:
            return []
        # One many-to-many query for every leg's best combination (its diagonal), not one per leg.
        froms, tos = points.take(list(range(n - 1))), points.take(list(range(1, n)))
        best, choice, direct, _ = self._combine(froms, tos, when)
        k = np.arange(n - 1)
        return self._legs(froms, tos, best[k, k], choice[k, k], direct[k, k], when)

    def table_with_choices(self, points: Phantoms, when: datetime) -> Table:
        """Every pair's seconds, with what ``route_through`` needs to draw any leg between them later."""
        best, choice, direct, _ = self._combine(points, points, when)
        return Table(best, choice, direct)

    def route_through(self, points: Phantoms, seq: list[int], when: datetime, table: Table | None = None) -> list[Leg]:
        """Legs from ``points[seq[0]]`` to ``points[seq[1]]`` and so on. With ``table`` (from
        ``table_with_choices`` on the same points and time), no travel-time query is repeated."""
        if table is None:
            return self.route(points.take(seq), when)
        a, b = np.asarray(seq[:-1], dtype=np.int64), np.asarray(seq[1:], dtype=np.int64)
        if a.size == 0:
            return []
        return self._legs(points.take(a), points.take(b), table.best_ms[a, b], table.choice[a, b],
                          table.direct[a, b], when)  # fmt: skip

    def pair_pieces(self, froms: Phantoms, tos: Phantoms, when: datetime) -> Pieces:
        """The fastest path from each ``froms[k]`` to ``tos[k]`` as edge pieces (see ``Pieces``).
        Pairs with no route get no pieces and ``reachable[k]`` False."""
        best, choice, direct, _ = self._combine(froms, tos, when)
        k = np.arange(len(froms))
        best, choice, direct = best[k, k], choice[k, k], direct[k, k]
        ok = np.isfinite(best)
        idx = np.flatnonzero(ok)
        pieces = self._pieces(froms.take(idx), tos.take(idx), choice[idx], direct[idx], when)
        return Pieces(idx[pieces.leg], pieces.edge, pieces.f0, pieces.f1, ok, pieces.paths)

    def _pieces(self, froms: Phantoms, tos: Phantoms, choice: np.ndarray, direct: np.ndarray,
                when: datetime) -> Pieces:  # fmt: skip
        """Every leg's pieces in one flat list: first piece, whole edges along the node path, last piece."""
        g = self.graph
        n = len(froms) + 1
        firsts, lasts, paths = [], [], []
        for k in range(n - 1):
            first, last, nodes = self._pair_route(froms, tos, k, k, int(choice[k]), bool(direct[k]), when)
            firsts.append(first)
            lasts.append(last)
            paths.append(nodes)
        through = [
            np.asarray(p[:-1] if last is not None else [], np.int64) for p, last in zip(paths, lasts, strict=True)
        ]
        heads = [np.asarray(p[1:] if last is not None else [], np.int64) for p, last in zip(paths, lasts, strict=True)]
        middle = g.edges_between(np.concatenate(through), np.concatenate(heads)) if through else np.empty(0, np.int64)
        n_mid = np.asarray([t.size for t in through], dtype=np.int64)
        per_leg = 1 + n_mid + np.asarray([last is not None for last in lasts], dtype=np.int64)
        leg = np.repeat(np.arange(n - 1), per_leg)
        pos = np.cumsum(per_leg) - per_leg  # each leg's first piece
        edge, f0, f1 = np.empty(leg.size, np.int64), np.zeros(leg.size), np.ones(leg.size)
        if n > 1:
            edge[pos], f0[pos], f1[pos] = np.asarray(firsts, dtype=np.float64).T
        with_last = np.flatnonzero(per_leg > 1 + n_mid)
        lp = pos[with_last] + per_leg[with_last] - 1
        edge[lp], f0[lp], f1[lp] = np.asarray([lasts[k] for k in with_last], dtype=np.float64).reshape(-1, 3).T
        mid = np.ones(leg.size, dtype=bool)
        mid[pos] = False
        mid[lp] = False
        edge[mid] = middle
        return Pieces(leg, edge, f0, f1, np.ones(n - 1, dtype=bool), paths)

    def _legs(self, froms: Phantoms, tos: Phantoms, best: np.ndarray, choice: np.ndarray, direct: np.ndarray,
              when: datetime) -> list[Leg]:  # fmt: skip
        """Leg k from froms[k] to tos[k], given its best cost (ms), entry/exit choice and direct flag."""
        g = self.graph
        n = len(froms) + 1
        for k in range(n - 1):
            if not np.isfinite(best[k]):
                raise ValueError(f"no route between waypoints {k} and {k + 1}")
        pieces = self._pieces(froms, tos, choice, direct, when)
        leg, edge, f0, f1, paths = pieces.leg, pieces.edge, pieces.f0, pieces.f1, pieces.paths
        per_leg = np.bincount(leg, minlength=n - 1)
        distance = np.bincount(leg, weights=g.edge_length_m[edge] * (f1 - f0), minlength=n - 1)
        spread: list[list[float | None]] = [[None] * (n - 1), [None] * (n - 1)]
        if self.traffic.learned is not None:
            secs = self.edge_seconds(when)
            for row, col in ((0, 0), (1, 2)):
                spread[row] = np.bincount(leg, weights=secs[edge, col] * (f1 - f0), minlength=n - 1).tolist()
        # Zero-length end pieces (a point at an intersection) add nothing, unless the leg is only that.
        kept = (f1 > f0) | (per_leg[leg] == 1)
        k_leg = leg[kept]
        first_kept = np.ones(k_leg.size, dtype=bool)
        first_kept[1:] = k_leg[1:] != k_leg[:-1]
        lat, lon, counts = g.pieces_geometry(edge[kept], f0[kept], f1[kept], ~first_kept)
        leg_points = np.bincount(k_leg, weights=counts, minlength=n - 1).astype(np.int64)
        bounds = np.concatenate(([0], np.cumsum(leg_points))).tolist()
        legs: list[Leg] = []
        for k in range(n - 1):
            la, lo = lat[bounds[k] : bounds[k + 1]], lon[bounds[k] : bounds[k + 1]]
            if la.size == 0:
                # Both points at one intersection, reached from different roads: every piece
                # has zero length, and the leg is that one point.
                la = np.asarray([froms.lat[k], tos.lat[k]])
                lo = np.asarray([froms.lon[k], tos.lon[k]])
            legs.append(Leg(float(best[k]) / 1000.0, float(distance[k]), la, lo, tuple(paths[k]), spread[0][k],
                            spread[1][k]))  # fmt: skip
        return legs


def _sum_by_count(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of ``values`` of the given lengths (zero-length runs allowed)."""
    ends = np.cumsum(counts)
    cum = np.concatenate(([0.0], np.cumsum(values)))
    return cum[ends] - cum[ends - counts]


def _to_seconds(matrix: np.ndarray) -> np.ndarray:
    out = matrix.astype(np.float64) / 1000.0
    out[matrix >= _INF_WEIGHT] = INF
    return out
