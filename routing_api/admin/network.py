"""The active road network as compact polylines the admin page draws itself (no tile server)."""

from __future__ import annotations

from typing import Any

import numpy as np

from graph_store import polyline
from graph_store.routing_graph import RoadGraph

PRECISION = 5  # about 1 m: plenty for drawing
MAX_DETAILED_ROADS = 60_000  # past this, roads are drawn straight between intersections to keep the payload small


def drawable_network(graph: RoadGraph) -> dict[str, Any]:
    """One polyline per road (a two-way road's two edges share one): its edges, class and geometry.

    ``roads`` rows are ``[edge, reverse_edge or -1, class index, polyline]`` with the polyline encoded
    at precision ``PRECISION``, from the edge's source to its target.
    """
    net = graph.network
    reverse = np.asarray(graph.reverse_edge)
    edges = np.arange(net.edge_count)
    canonical = np.flatnonzero((reverse < 0) | (edges < reverse))
    classes = sorted({str(c) for c in net.edge_road_class})
    class_index = {c: i for i, c in enumerate(classes)}
    straight = canonical.size > MAX_DETAILED_ROADS
    roads = []
    offsets = net.geom_offsets
    for e in canonical.tolist():
        lo, hi = int(offsets[e]), int(offsets[e + 1])
        idx = [lo, hi - 1] if straight else slice(lo, hi)
        roads.append([e, int(reverse[e]), class_index[str(net.edge_road_class[e])],
                      polyline.encode(net.geom_lat[idx], net.geom_lon[idx], PRECISION)])  # fmt: skip
    min_lat, min_lon, max_lat, max_lon = net.bbox()
    return {
        "map_id": graph.map_version, "name": graph.name, "precision": PRECISION,
        "bbox": [min_lat, min_lon, max_lat, max_lon], "classes": classes, "roads": roads,
        "simplified": straight, "nodes": net.node_count, "edges": net.edge_count,
    }  # fmt: skip


def edges_in_bbox(graph: RoadGraph, min_lat: float, min_lon: float, max_lat: float, max_lon: float) -> np.ndarray:
    """Directed edges with at least one geometry point inside the box (degrees), ascending."""
    net = graph.network
    inside = (
        (net.geom_lat >= min_lat) & (net.geom_lat <= max_lat) & (net.geom_lon >= min_lon) & (net.geom_lon <= max_lon)
    )
    counts = np.add.reduceat(inside.astype(np.int64), net.geom_offsets[:-1])
    return np.flatnonzero(counts > 0)
