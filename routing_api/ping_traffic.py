"""Live traffic from driver pings: observed speeds become live speed observations, in batches.

A ping (``POST /v1/drivers/{id}/positions``) that carries ``speed_mps`` says how fast that
driver moves on the road under it. This module turns many pings into a few live speed
observations (``graph_store.traffic.LiveObservation``), so that the next routes are costed
with what drivers see, without one traffic update per ping.

Per ping (``PingTraffic.observe``, in the request's thread, tens of microseconds):

1. It is kept only if it says something about a road: ``speed_mps`` given and at least
   ``MIN_MOVING_MPS`` (a van standing at a stop or a red light is not traffic), a timestamp
   no older than ``SAMPLE_HORIZON_S`` by the server's clock (a late or replayed ping is
   history; a timestamp ahead of the clock, as an accelerated simulation sends, is accepted)
   and a position within ``MAX_SNAP_M`` of a road.
2. The road edge: the nearest road position (``RoadGraph.snap``), and which direction of
   the road from ``heading_deg``: the directed edge whose bearing at that point is within
   ``MAX_HEADING_DIFF_DEG`` of the heading. No such edge (a cross street at an
   intersection, a U-turn): dropped. Without a heading only a one-way road can be placed.
3. A sample (km/h, when) joins that edge's buffer; samples older than ``SAMPLE_HORIZON_S``
   fall out.

Flush: at most once per ``ROUTING_PING_TRAFFIC_INTERVAL_S`` per API process, done by the
first ping after the interval (one flusher at a time, the others do not wait). Each edge
with at least ``ROUTING_PING_TRAFFIC_MIN_PINGS`` samples is evaluated: its observed speed
is the median of the samples, capped at the edge's free-flow speed (a plan never assumes
speeding). When it differs from the speed in force now (profile and live observations)
by more than ``ROUTING_PING_TRAFFIC_MIN_CHANGE`` (relative), it becomes a live observation
valid for ``ROUTING_TRAFFIC_OBSERVATION_TTL_S``. All observations of one flush are written
together: one traffic epoch bump per flush (a new snapshot, so new route cache keys), none
when nothing changed. An evaluated edge starts a new buffer.

Scope: one API process. Replicas aggregate the pings they receive; their observations
meet in SQL and each epoch bump reaches every replica through the epoch poll. A flush
only happens when pings arrive. The ping's answer carries the current traffic epoch, so
drivers learn about changes without polling.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from graph_store.routing_graph import RoadGraph, RoutingSnapshot, SnapError
from graph_store.traffic import LiveObservation

log = logging.getLogger(__name__)

MIN_MOVING_MPS = 1.0  # slower than this: standing, not driving
MAX_SNAP_M = 30.0  # farther from a road than GPS error explains: a yard, a car park
MAX_HEADING_DIFF_DEG = 60.0
SAMPLE_HORIZON_S = 300.0  # seconds a sample counts for
MAX_SAMPLES_PER_EDGE = 64
SOURCE = "pings"  # the ``source`` column of the observations written here
_create_lock = threading.Lock()


class TrafficGraph(Protocol):
    """What the aggregator needs of the graph service (``graph_store.service.RoadGraphService``)."""

    @property
    def ready(self) -> bool: ...

    @property
    def snapshot(self) -> RoutingSnapshot: ...

    def add_observations(self, observations: Iterable[LiveObservation], source: str = "api") -> int: ...


@dataclass
class PingStats:
    """Counters since start (for logs and tests)."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    observations: int = 0
    failures: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def edge_bearing(graph: RoadGraph, edge: int, fraction: float) -> float:
    """Compass bearing (degrees, 0 = north, clockwise) of ``edge``'s geometry at ``fraction`` of its length."""
    lat, lon = graph.network.edge_geometry(edge)
    x, y = graph.projection.to_xy(lat, lon)
    seg = np.hypot(np.diff(x), np.diff(y))
    if seg.size == 0 or seg.sum() <= 0:
        return math.nan
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    i = int(np.clip(np.searchsorted(cum, fraction * cum[-1], side="right") - 1, 0, seg.size - 1))
    if seg[i] <= 0:  # a repeated point: use the whole edge's direction
        dx, dy = x[-1] - x[0], y[-1] - y[0]
    else:
        dx, dy = x[i + 1] - x[i], y[i + 1] - y[i]
    return math.degrees(math.atan2(float(dx), float(dy))) % 360.0


class PingTraffic:
    """Aggregates pings per road edge and writes live observations in rate-limited batches.

    ``interval_s`` 0 turns it off (pings are only stored). ``clock`` (monotonic seconds) and
    ``now`` (wall clock) are injectable for tests.
    """

    def __init__(self, graph: TrafficGraph, *, interval_s: float, min_pings: int, min_change: float, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        if interval_s < 0 or min_pings < 1 or min_change <= 0 or ttl_s <= 0:
            raise ValueError("interval_s >= 0, min_pings >= 1, min_change > 0 and ttl_s > 0 are required")
        self.graph = graph
        self.interval_s = interval_s
        self.min_pings = min_pings
        self.min_change = min_change
        self.ttl_s = ttl_s
        self._clock = clock
        self._now = now
        self._samples: dict[int, deque[tuple[float, float]]] = {}  # edge -> (monotonic s, km/h)
        self._map_version: int | None = None
        self._last_flush = clock()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.stats = PingStats()

    @classmethod
    def from_settings(cls, settings: object, graph: TrafficGraph) -> PingTraffic:
        return cls(graph, interval_s=settings.ping_traffic_interval_s,  # type: ignore[attr-defined]
                   min_pings=settings.ping_traffic_min_pings,  # type: ignore[attr-defined]
                   min_change=settings.ping_traffic_min_change,  # type: ignore[attr-defined]
                   ttl_s=settings.traffic_observation_ttl_s)  # type: ignore[attr-defined]  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def observe(self, lat: float, lon: float, timestamp: datetime, speed_mps: float | None,
                heading_deg: float | None) -> int | None:  # fmt: skip
        """Take one ping into account; returns the traffic epoch in force (None: no map loaded)."""
        if not self.graph.ready:
            return None
        if self.enabled:
            self._sample(lat, lon, timestamp, speed_mps, heading_deg)
            self._maybe_flush()
        return self.graph.snapshot.epoch

    # -- sampling ------------------------------------------------------------------------------

    def _sample(self, lat: float, lon: float, timestamp: datetime, speed_mps: float | None,
                heading_deg: float | None) -> None:  # fmt: skip
        stats = self.stats
        if speed_mps is None or speed_mps < MIN_MOVING_MPS:
            stats.drop("not_moving")
            return
        when = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=UTC)
        if (self._now() - when).total_seconds() > SAMPLE_HORIZON_S:
            stats.drop("stale")
            return
        snapshot = self.graph.snapshot
        graph = snapshot.graph
        try:
            ph = graph.snap(np.asarray([lat]), np.asarray([lon]), MAX_SNAP_M)
        except SnapError:
            stats.drop("off_road")
            return
        directed = self._directed_edge(graph, int(ph.edge[0]), int(ph.reverse[0]), float(ph.fraction[0]), heading_deg)
        if directed is None:
            stats.drop("direction")
            return
        t = self._clock()
        with self._lock:
            if self._map_version != graph.map_version:  # another map became active: old edges mean nothing
                self._samples.clear()
                self._map_version = graph.map_version
            buf = self._samples.get(directed)
            if buf is None:
                buf = self._samples[directed] = deque(maxlen=MAX_SAMPLES_PER_EDGE)
            buf.append((t, speed_mps * 3.6))
            stats.kept += 1

    @staticmethod
    def _directed_edge(graph: RoadGraph, edge: int, reverse: int, fraction: float,
                       heading_deg: float | None) -> int | None:  # fmt: skip
        if heading_deg is None:
            return edge if reverse < 0 else None
        bearing = edge_bearing(graph, edge, fraction)
        if math.isnan(bearing):
            return None
        if _angle_diff(heading_deg, bearing) <= MAX_HEADING_DIFF_DEG:
            return edge
        if reverse >= 0 and _angle_diff(heading_deg, bearing + 180.0) <= MAX_HEADING_DIFF_DEG:
            return reverse
        return None

    # -- flushing ------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if self._clock() - self._last_flush < self.interval_s:
            return
        if not self._flush_lock.acquire(blocking=False):
            return  # another ping is flushing
        try:
            self._flush()
        finally:
            self._flush_lock.release()

    def _flush(self) -> None:
        t = self._clock()
        with self._lock:
            if t - self._last_flush < self.interval_s:
                return
            self._last_flush = t
            horizon = t - SAMPLE_HORIZON_S
            due: dict[int, list[float]] = {}
            for edge in list(self._samples):
                buf = self._samples[edge]
                while buf and buf[0][0] < horizon:
                    buf.popleft()
                if not buf:
                    del self._samples[edge]
                elif len(buf) >= self.min_pings:
                    due[edge] = [kph for _, kph in buf]
                    del self._samples[edge]  # evaluated: the next evaluation needs fresh pings
            map_version = self._map_version
        if not due:
            return
        snapshot = self.graph.snapshot
        if snapshot.graph.map_version != map_version:
            return
        when = self._now()
        in_force = snapshot.edge_speeds(when)
        free_flow = snapshot.graph.network.edge_speed_kph
        observations = []
        for edge, speeds in due.items():
            observed = min(float(np.median(speeds)), float(free_flow[edge]))
            current = float(in_force[edge])
            if abs(observed - current) > self.min_change * current:
                observations.append(LiveObservation(edge, float(np.clip(observed, 0.5, 200.0)), when,
                                                    when + timedelta(seconds=self.ttl_s)))  # fmt: skip
        self.stats.flushes += 1
        if not observations:
            return
        try:
            epoch = self.graph.add_observations(observations, source=SOURCE)
        except Exception:  # a database blip must not fail the ping; the next flush tries again with new pings
            self.stats.failures += 1
            log.warning("could not store %d live observations from pings", len(observations), exc_info=True)
            return
        self.stats.observations += len(observations)
        log.info("pings: %d live observations from %d evaluated edges, traffic epoch %d",
                 len(observations), len(due), epoch)  # fmt: skip


def observe_ping(app: Any, ping: Any) -> int | None:
    """Feed one accepted ping (``schemas.PositionIn``) to ``app``'s aggregator, made on first use
    from the app's container; returns the traffic epoch in force (None: no map loaded).

    Never fails the ping: the position is already stored, traffic is a by-product."""
    aggregator: PingTraffic | None = getattr(app.state, "ping_traffic", None)
    if aggregator is None:
        with _create_lock:
            aggregator = getattr(app.state, "ping_traffic", None)
            if aggregator is None:
                container = app.state.container
                aggregator = PingTraffic.from_settings(container.settings, container.graph)
                app.state.ping_traffic = aggregator
    try:
        return aggregator.observe(ping.lat, ping.lon, ping.timestamp, ping.speed_mps, ping.heading_deg)
    except Exception:
        log.exception("ping not taken into traffic")
        graph = aggregator.graph
        return graph.snapshot.epoch if graph.ready else None
