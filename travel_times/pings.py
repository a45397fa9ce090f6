"""Trips from stored driver pings: each driver's GPS trace map-matched onto the road graph, the
matched driving cut into pseudo-trips of a few minutes that the travel-time learner trains on.

A driver's pings (``driver_positions``), in time order, split into traces where two pings are more
than ``GAP_S`` apart (the app was off, or the driver parked); pings at a time already seen are
dropped. Each trace is matched (``graph_store.map_matching.match_trace``) and its matched path, in
driving order, becomes edge traversals. Standing still is not travel time: a stretch between two
fixes driven slower than ``STOP_SPEED_MPS`` (a delivery stop, a parked car with GPS jitter) ends
the pseudo-trip being built and is left out, with the stretches just before and after it (part
driving, part standing, in proportions the fixes do not tell); so does any traversal that slow. Traversals are then
grouped into windows of about ``window_s`` seconds of driving; a window with ``min_edges`` edge
pieces or more and ``MIN_TRIP_S`` seconds or more is a trip: its coverage row holds the share of
each edge it drove, its duration the time from entering the first piece to leaving the last, its
departure the first entry on the local clock of ``tz`` (naive, like trip files' times).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import scipy.sparse as sp
from sqlalchemy import Engine, select

from gnn_model.eta.trips import Trips
from graph_store.map_matching import SubMatching, match_trace
from graph_store.models import DriverPosition
from graph_store.routing_graph import RoadGraph
from travel_times.cli import LearnError
from travel_times.dataset import TripPaths

GAP_S = 120.0
STOP_SPEED_MPS = 1.0
MIN_TRIP_S = 30.0
_CONTINUES = 1e-9


@dataclass(frozen=True)
class _Traversal:
    """One directed edge driven from fraction ``f0`` to ``f1``, between times ``t0`` and ``t1``."""

    edge: int
    f0: float
    f1: float
    t0: float
    t1: float
    length_m: float  # the whole edge

    @property
    def speed_mps(self) -> float:
        dt = self.t1 - self.t0
        return (self.f1 - self.f0) * self.length_m / dt if dt > 0 else float("inf")


@dataclass(frozen=True)
class _Window:
    driver: str
    pieces: list[_Traversal]

    @property
    def duration_s(self) -> float:
        return self.pieces[-1].t1 - self.pieces[0].t0


def ping_trips(engine: Engine, graph: RoadGraph, since: datetime, tz: str, *, min_edges: int = 3,
               window_s: float = 300.0) -> TripPaths:  # fmt: skip
    """Pseudo-trips from the pings at or after ``since`` (naive: UTC) on ``graph`` (see the module's
    docstring); departure times on the local clock of ``tz``. Raises ``LearnError`` (a ValueError)
    when there are no pings since then or none of them gives a trip."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise LearnError(f"unknown time zone: {tz!r}") from None
    if min_edges < 1 or window_s <= 0:
        raise ValueError("min_edges must be >= 1 and window_s > 0")
    since_utc = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    windows: list[_Window] = []
    pings = traces = matched = 0
    for driver, ts, lat, lon in _driver_pings(engine, since_utc):
        pings += ts.size
        for a, b in _trace_bounds(ts):
            if b - a < 2:
                continue
            traces += 1
            result = match_trace(graph, lat[a:b], lon[a:b], ts[a:b], gaps="ignore")
            for m in result.matchings:
                matched += len(m.points)
                windows += [_Window(driver, w) for w in _windows(_moving_traversals(graph, m), window_s)]
    if pings == 0:
        raise LearnError(f"no driver pings since {since_utc.isoformat()}")
    trips = [w for w in windows if len(w.pieces) >= min_edges and w.duration_s >= MIN_TRIP_S]
    if not trips:
        raise LearnError(f"no trips from {pings} driver pings since {since_utc.isoformat()} ({traces} traces, "
                         f"{matched} pings matched to roads): no stretch of {min_edges}+ roads driven for "
                         f"{MIN_TRIP_S:.0f}+ s")  # fmt: skip
    return _trip_paths(graph, trips, zone)


def _driver_pings(engine: Engine, since_utc: datetime) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(driver id, Unix seconds, lat, lon) per driver, in time order, duplicates in time dropped."""
    # SQLite keeps the wall clock of a stored datetime and drops its offset; pings are stored in UTC.
    bound = since_utc if engine.dialect.name != "sqlite" else since_utc.replace(tzinfo=None)
    query = (
        select(DriverPosition.driver_id, DriverPosition.timestamp, DriverPosition.lat, DriverPosition.lon)
        .where(DriverPosition.timestamp >= bound)
        .order_by(DriverPosition.driver_id, DriverPosition.timestamp, DriverPosition.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    start = 0
    for i in range(1, len(rows) + 1):
        if i < len(rows) and rows[i][0] == rows[start][0]:
            continue
        chunk = rows[start:i]
        start = i
        ts = np.asarray([_unix(r[1]) for r in chunk], dtype=np.float64)
        lat = np.asarray([r[2] for r in chunk], dtype=np.float64)
        lon = np.asarray([r[3] for r in chunk], dtype=np.float64)
        order = np.argsort(ts, kind="stable")  # a driver's clock, not the database's string order
        ts, lat, lon = ts[order], lat[order], lon[order]
        keep = np.concatenate(([True], np.diff(ts) > 0)) & np.isfinite(lat) & np.isfinite(lon)
        yield str(chunk[0][0]), ts[keep], lat[keep], lon[keep]


def _unix(when: datetime) -> float:
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def _trace_bounds(ts: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) ranges of the pings split where two are more than ``GAP_S`` apart."""
    cuts = np.flatnonzero(np.diff(ts) > GAP_S) + 1
    edges = [0, *cuts.tolist(), int(ts.size)]
    return list(itertools.pairwise(edges))


def _moving_traversals(graph: RoadGraph, m: SubMatching) -> list[_Traversal | None]:
    """The matched path as edge traversals in driving order, ``None`` where the vehicle stood still.

    Built from the matching's pieces (one per edge between two consecutive fixes) rather than its
    merged traversals, so that a stop in the middle of an edge does not hide inside that edge's
    traversal: a stretch between two fixes driven slower than ``STOP_SPEED_MPS`` is a stop, and the
    stretches just before and after it are left out with it."""
    p = m.pieces
    n_legs = len(m.points) - 1
    if p.edge.size == 0 or n_legs < 1:
        return []
    fix_t = np.asarray([pt.time for pt in m.points], dtype=np.float64)
    leg_m = np.bincount(p.leg, weights=p.length_m, minlength=n_legs)
    leg_s = np.diff(fix_t)
    stopped = leg_m < STOP_SPEED_MPS * leg_s
    # The stretches next to a stop hold part of it (the vehicle stopped, or left, between the fixes):
    # their time cannot be split between driving and standing, so they are left out as well.
    near = stopped.copy()
    near[1:] |= stopped[:-1]
    near[:-1] |= stopped[1:]
    lengths = graph.edge_length_m.tolist()
    out: list[_Traversal | None] = []
    for leg, e, f0, f1, t0, t1, part_m in zip(p.leg.tolist(), p.edge.tolist(), p.f0.tolist(), p.f1.tolist(),
                                              p.t0.tolist(), p.t1.tolist(), p.length_m.tolist(), strict=True):  # fmt: skip
        if near[leg]:
            if out and out[-1] is not None:
                out.append(None)
            continue
        if part_m <= 0:
            continue
        last = out[-1] if out else None
        if last is not None and last.edge == e and abs(last.f1 - f0) < _CONTINUES:
            out[-1] = _Traversal(e, last.f0, f1, last.t0, t1, last.length_m)
        else:
            out.append(_Traversal(e, f0, f1, t0, t1, lengths[e]))
    return out


def _windows(traversals: list[_Traversal | None], window_s: float) -> list[list[_Traversal]]:
    """Consecutive traversals grouped into windows of about ``window_s`` seconds; a stop (``None``)
    or a traversal slower than ``STOP_SPEED_MPS`` ends the window and is left out."""
    out: list[list[_Traversal]] = []
    cur: list[_Traversal] = []
    for t in traversals:
        if t is None or t.speed_mps < STOP_SPEED_MPS:
            if cur:
                out.append(cur)
            cur = []
            continue
        cur.append(t)
        if cur[-1].t1 - cur[0].t0 >= window_s:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _trip_paths(graph: RoadGraph, windows: list[_Window], zone: ZoneInfo) -> TripPaths:
    n = len(windows)
    rows = np.repeat(np.arange(n), [len(w.pieces) for w in windows])
    cols = np.asarray([t.edge for w in windows for t in w.pieces], dtype=np.int64)
    vals = np.asarray([t.f1 - t.f0 for w in windows for t in w.pieces], dtype=np.float64)
    cov = sp.csr_matrix((vals, (rows, cols)), shape=(n, graph.network.edge_count))
    route_m = np.asarray(cov @ graph.edge_length_m).ravel()
    first = np.asarray([w.pieces[0].edge for w in windows], dtype=np.int64)
    last = np.asarray([w.pieces[-1].edge for w in windows], dtype=np.int64)
    lat0, lon0 = graph._point_at(first, np.asarray([w.pieces[0].f0 for w in windows]))
    lat1, lon1 = graph._point_at(last, np.asarray([w.pieces[-1].f1 for w in windows]))
    t0 = [w.pieces[0].t0 for w in windows]
    local = [datetime.fromtimestamp(t, zone).replace(tzinfo=None) for t in t0]
    trips = Trips(
        trip_id=np.asarray([f"{w.driver}@{t:.0f}" for w, t in zip(windows, t0, strict=True)]),
        pickup_at=np.asarray(local, dtype="datetime64[s]"),
        pickup_lat=np.asarray(lat0, dtype=np.float64),
        pickup_lon=np.asarray(lon0, dtype=np.float64),
        dropoff_lat=np.asarray(lat1, dtype=np.float64),
        dropoff_lon=np.asarray(lon1, dtype=np.float64),
        duration_s=np.asarray([w.duration_s for w in windows], dtype=np.float64),
    )
    return TripPaths(trips, np.arange(n), cov, route_m)
