"""Snap (lat, lon) to the nearest position on a road.

Road geometry is cut into straight segments in a local metric projection; a KD-tree
over points sampled along each segment (at most ``SAMPLE_SPACING_M`` apart) finds
candidates, and the exact point-to-segment distance decides. The nearest segment's
closest point is within ``d + SAMPLE_SPACING_M / 2`` of one of its samples, which
bounds the candidate search, so the answer is exact, not approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from graph_store.geo import LocalProjection

SAMPLE_SPACING_M = 20.0
_K = 16


@dataclass(frozen=True)
class SnapResult:
    """Where points landed on the road network (arrays, one row per input point).

    ``edge`` is a directed edge whose geometry holds the point; ``fraction`` in [0, 1]
    is the position along it by length; ``distance_m`` the straight-line distance from
    the input to the road.
    """

    edge: np.ndarray  # int64
    fraction: np.ndarray  # float64
    lat: np.ndarray
    lon: np.ndarray
    distance_m: np.ndarray


@dataclass(frozen=True)
class Candidates:
    """Road positions near each of several points (``SegmentIndex.within``): one row per
    (point, indexed edge), sorted by point then distance. ``edge``, ``fraction``, ``lat``,
    ``lon`` and ``distance_m`` mean what they mean in ``SnapResult``; ``point`` is the row's
    input point, and ``offsets`` (one more than there are points) delimits each point's rows."""

    point: np.ndarray  # int64
    edge: np.ndarray  # int64
    fraction: np.ndarray  # float64
    lat: np.ndarray
    lon: np.ndarray
    distance_m: np.ndarray
    offsets: np.ndarray  # int64[n + 1]


class SegmentIndex:
    """Nearest-segment lookup over a set of polylines (one per indexed edge)."""

    def __init__(self, projection: LocalProjection, edge_ids: np.ndarray, geom_offsets: np.ndarray,
                 geom_lat: np.ndarray, geom_lon: np.ndarray) -> None:  # fmt: skip
        self.projection = projection
        x, y = projection.to_xy(geom_lat, geom_lon)
        starts = []
        seg_edge = []
        seg_cum = []  # metres along the edge where the segment starts
        edge_len = np.zeros(int(edge_ids.max()) + 1 if edge_ids.size else 0)
        for e in edge_ids.tolist():
            lo, hi = int(geom_offsets[e]), int(geom_offsets[e + 1])
            idx = np.arange(lo, hi - 1)
            lengths = np.hypot(x[idx + 1] - x[idx], y[idx + 1] - y[idx])
            cum = np.concatenate(([0.0], np.cumsum(lengths)[:-1]))
            starts.append(idx)
            seg_edge.append(np.full(idx.size, e))
            seg_cum.append(cum)
            edge_len[e] = lengths.sum()
        start = np.concatenate(starts)
        self.seg_edge = np.concatenate(seg_edge)
        self.seg_cum = np.concatenate(seg_cum)
        self.edge_len = edge_len
        self.ax, self.ay = x[start], y[start]
        self.bx, self.by = x[start + 1], y[start + 1]
        seg_len = np.hypot(self.bx - self.ax, self.by - self.ay)
        self.seg_len = seg_len
        # Sample points along each segment, ends included.
        counts = np.maximum(1, np.ceil(seg_len / SAMPLE_SPACING_M).astype(np.int64)) + 1
        owner = np.repeat(np.arange(seg_len.size), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        t = (np.arange(owner.size) - first) / (counts[owner] - 1)
        px = self.ax[owner] + t * (self.bx[owner] - self.ax[owner])
        py = self.ay[owner] + t * (self.by[owner] - self.ay[owner])
        self.sample_owner = owner
        self.tree = cKDTree(np.column_stack((px, py)))
        self._slack = SAMPLE_SPACING_M / 2 + 1e-6

    def _project(self, qx: float, qy: float, segs: np.ndarray) -> tuple[int, float, float]:
        ax, ay = self.ax[segs], self.ay[segs]
        dx, dy = self.bx[segs] - ax, self.by[segs] - ay
        denom = dx * dx + dy * dy
        t = np.where(denom > 0, ((qx - ax) * dx + (qy - ay) * dy) / np.where(denom > 0, denom, 1), 0.0)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(ax + t * dx - qx, ay + t * dy - qy)
        # Ties (a point at a shared node) go to the lowest segment id: deterministic.
        best = int(np.lexsort((segs, dist))[0])
        return int(segs[best]), float(t[best]), float(dist[best])

    def snap(self, lat: np.ndarray, lon: np.ndarray) -> SnapResult:
        qx, qy = self.projection.to_xy(np.asarray(lat, float), np.asarray(lon, float))
        qx = np.atleast_1d(qx)
        qy = np.atleast_1d(qy)
        k = min(_K, self.sample_owner.size)
        dists, idx = self.tree.query(np.column_stack((qx, qy)), k=k)
        dists = dists.reshape(qx.size, k)
        idx = idx.reshape(qx.size, k)
        n = qx.size
        # All points at once over their k nearest samples' segments ...
        segs = self.sample_owner[idx]  # [n, k]
        ax, ay = self.ax[segs], self.ay[segs]
        dx, dy = self.bx[segs] - ax, self.by[segs] - ay
        denom = dx * dx + dy * dy
        safe = np.where(denom > 0, denom, 1.0)
        t = np.clip(np.where(denom > 0, ((qx[:, None] - ax) * dx + (qy[:, None] - ay) * dy) / safe, 0.0), 0.0, 1.0)
        dist = np.hypot(ax + t * dx - qx[:, None], ay + t * dy - qy[:, None])
        # ties (a point at a shared node) go to the lowest segment id, as in _project
        best_d = dist.min(axis=1)
        tied = np.where(dist <= best_d[:, None], segs, np.iinfo(np.int64).max)
        col = np.argmin(tied, axis=1)
        rows = np.arange(n)
        out_seg = segs[rows, col].astype(np.int64)
        out_t = t[rows, col]
        out_d = dist[rows, col]
        # ... then, where a closer segment could hide beyond the k samples, search wider.
        if k < self.sample_owner.size:
            for i in np.flatnonzero(out_d + self._slack > dists[:, -1]).tolist():
                wider = self.tree.query_ball_point((qx[i], qy[i]), r=out_d[i] + self._slack)
                cand = np.unique(self.sample_owner[np.asarray(wider, dtype=np.int64)])
                out_seg[i], out_t[i], out_d[i] = self._project(qx[i], qy[i], cand)
        edge = self.seg_edge[out_seg]
        along = self.seg_cum[out_seg] + out_t * self.seg_len[out_seg]
        total = self.edge_len[edge]
        fraction = np.where(total > 0, along / np.where(total > 0, total, 1), 0.0)
        px = self.ax[out_seg] + out_t * (self.bx[out_seg] - self.ax[out_seg])
        py = self.ay[out_seg] + out_t * (self.by[out_seg] - self.ay[out_seg])
        slat, slon = self.projection.to_latlon(px, py)
        return SnapResult(edge=edge, fraction=np.clip(fraction, 0.0, 1.0), lat=slat, lon=slon, distance_m=out_d)

    def within(self, lat: np.ndarray, lon: np.ndarray, radius_m: np.ndarray | float,
               max_per_point: int | None = None) -> Candidates:  # fmt: skip
        """Every indexed edge that passes within ``radius_m`` (one value, or one per point) of
        each point, at its closest position to the point (one row per edge, however often its
        polyline comes near); only the ``max_per_point`` nearest per point when given. Exact, as
        ``snap`` is: the ball query over samples is widened by half the sample spacing, then
        true point-to-segment distances decide."""
        qx, qy = self.projection.to_xy(np.asarray(lat, float), np.asarray(lon, float))
        qx, qy = np.atleast_1d(qx), np.atleast_1d(qy)
        n = qx.size
        radius = np.broadcast_to(np.asarray(radius_m, dtype=np.float64), (n,))
        hits = self.tree.query_ball_point(np.column_stack((qx, qy)), r=radius + self._slack)
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=n)
        samples = np.fromiter((s for h in hits for s in h), dtype=np.int64, count=int(counts.sum()))
        # One row per distinct (point, segment) ...
        seg_count = self.seg_len.size
        key = np.unique(np.repeat(np.arange(n, dtype=np.int64), counts) * seg_count + self.sample_owner[samples])
        pt, seg = np.divmod(key, seg_count)
        ax, ay = self.ax[seg], self.ay[seg]
        dx, dy = self.bx[seg] - ax, self.by[seg] - ay
        denom = dx * dx + dy * dy
        safe = np.where(denom > 0, denom, 1.0)
        t = np.clip(np.where(denom > 0, ((qx[pt] - ax) * dx + (qy[pt] - ay) * dy) / safe, 0.0), 0.0, 1.0)
        px, py = ax + t * dx, ay + t * dy
        dist = np.hypot(px - qx[pt], py - qy[pt])
        inside = dist <= radius[pt]
        pt, seg, t, px, py, dist = pt[inside], seg[inside], t[inside], px[inside], py[inside], dist[inside]
        # ... then per (point, edge) its closest segment (ties: lowest segment id), nearest first.
        edge = self.seg_edge[seg]
        order = np.lexsort((seg, dist, edge, pt))
        pair = pt[order] * (int(self.edge_len.size) + 1) + edge[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = pair[1:] != pair[:-1]
        keep = order[first]
        keep = keep[np.lexsort((edge[keep], dist[keep], pt[keep]))]
        if max_per_point is not None:
            rank = np.arange(keep.size) - np.searchsorted(pt[keep], pt[keep], side="left")
            keep = keep[rank < max_per_point]
        pt, seg, t, px, py, dist, edge = pt[keep], seg[keep], t[keep], px[keep], py[keep], dist[keep], edge[keep]
        along = self.seg_cum[seg] + t * self.seg_len[seg]
        total = self.edge_len[edge]
        fraction = np.clip(np.where(total > 0, along / np.where(total > 0, total, 1), 0.0), 0.0, 1.0)
        slat, slon = self.projection.to_latlon(px, py)
        offsets = np.searchsorted(pt, np.arange(n + 1), side="left").astype(np.int64)
        return Candidates(pt, edge.astype(np.int64), fraction, np.atleast_1d(slat), np.atleast_1d(slon), dist, offsets)
