"""Routing problems drawn on a real road map: random intersections, real travel times."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from graph_store.routing_graph import RoutingSnapshot
from routing_core.problem import Problem


def sample_road_problem(snapshot: RoutingSnapshot, n: int, rng: np.random.Generator, when: datetime) -> Problem:
    """n distinct random intersections; the matrix is the road travel time in seconds.

    Coordinates are the intersections' positions in metres (local projection), so
    features see the real geometry.
    """
    graph = snapshot.graph
    if n > graph.node_count:
        raise ValueError(f"n={n} exceeds the map's {graph.node_count} intersections")
    nodes = rng.choice(graph.node_count, size=n, replace=False)
    matrix = snapshot.node_durations(nodes, nodes, when)
    np.fill_diagonal(matrix, 0.0)
    net = graph.network
    x, y = graph.projection.to_xy(net.node_lat[nodes], net.node_lon[nodes])
    return Problem(matrix=matrix, coords=np.column_stack((x, y)))
