"""Trips on a map: each trip's road path as edge pieces, the sparse trip x edge coverage matrix
that a trip's predicted duration is a product with, and the trip's time bucket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from gnn_model.eta.trips import Trips
from graph_store.routing_graph import RoutingSnapshot

SNAP_LIMIT_M = 100.0
_CHUNK = 400


@dataclass(frozen=True)
class TripPaths:
    """Trips that snapped and have a route, with their paths.

    ``coverage[i, e]`` is the share of edge e's length that trip i drives (1 for a whole edge,
    a fraction at the ends); ``route_m`` the path length; ``trips`` only the kept trips;
    ``kept`` the indices of the kept trips in the input.
    """

    trips: Trips
    kept: np.ndarray
    coverage: sp.csr_matrix
    route_m: np.ndarray

    def __len__(self) -> int:
        return len(self.trips)

    def take(self, idx: np.ndarray) -> TripPaths:
        return TripPaths(self.trips.take(idx), self.kept[idx], self.coverage[idx], self.route_m[idx])


def trip_paths(
    snapshot: RoutingSnapshot, trips: Trips, when: datetime, snap_limit_m: float = SNAP_LIMIT_M
) -> TripPaths:
    """Snap both ends of each trip and take the fastest path under ``when``'s travel times
    (the paths a driver would take are fixed before any learning; the learner then fits times)."""
    g = snapshot.graph
    inside = trips.inside(g.bbox)
    idx = np.flatnonzero(inside)
    a = g.snap(trips.pickup_lat[idx], trips.pickup_lon[idx], float("inf"))
    b = g.snap(trips.dropoff_lat[idx], trips.dropoff_lon[idx], float("inf"))
    near = (a.distance_m <= snap_limit_m) & (b.distance_m <= snap_limit_m)
    idx, a, b = idx[near], a.take(np.flatnonzero(near)), b.take(np.flatnonzero(near))
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    reach = np.zeros(idx.size, dtype=bool)
    for s in range(0, idx.size, _CHUNK):
        k = np.arange(s, min(s + _CHUNK, idx.size))
        p = snapshot.pair_pieces(a.take(k), b.take(k), when)
        reach[k] = p.reachable
        rows.append(k[p.leg])
        cols.append(p.edge)
        vals.append(p.f1 - p.f0)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    cov = sp.csr_matrix((v, (r, c)), shape=(idx.size, g.network.edge_count))
    route_m = np.asarray(cov @ g.edge_length_m).ravel()
    keep = reach & (route_m > 0)
    cov = cov[np.flatnonzero(keep)]
    return TripPaths(trips.take(idx[keep]), idx[keep], cov.tocsr(), route_m[keep])
