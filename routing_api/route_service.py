"""A route request's three layers: ingest, model serving (through the queue), post-processing.

INGEST   validate, snap start/stops/end to roads, cache key; a hit skips serving (and the
         travel-time matrix, which only a miss computes, at the departure time).
SERVE    the problem (matrix, windows, service, start/end; never the road graph) goes
         through the queue to a batching worker; the answer's order is checked with the
         evaluator before it is used.
POST     road geometry per leg, arrival/departure/lateness per stop from the legs' durations
         (the departure time's traffic: the same for every departure of one cache key's
         time bucket), persist the request and answer, fill the cache.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from batch_worker.queue import SolveQueue
from graph_store import polyline
from graph_store.routing_graph import Phantoms, RoutingSnapshot, SnapError, Table
from graph_store.service import RoadGraphService
from graph_store.traffic import bucket_of
from route_cache import RouteCache, route_cache_key
from routing_api.metrics import ServiceMetrics
from routing_api.request_log import RequestLog
from routing_api.schemas import RouteRequestIn
from routing_api.settings import Settings
from routing_core.messages import SolveRequest
from routing_core.problem import EndKind, Problem, evaluate

log = logging.getLogger(__name__)


class RouteError(Exception):
    """A request that cannot be answered: HTTP status, error kind, message, field."""

    def __init__(self, status: int, kind: str, message: str, loc: list[str | int] | None = None,
                 retry_after_s: int | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.loc = loc
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Ingested:
    snapshot: RoutingSnapshot
    template: Problem  # windows, service times, start/end; its matrix is zeros until ``problem()``
    points: Phantoms  # start, stops..., end point (if fixed)
    stop_ids: list[str]
    depart_at: datetime
    key: str

    def problem(self) -> tuple[Problem, Table]:
        """The problem with its travel-time matrix at the departure time (a cache miss needs it), and
        the table it came from, from which the chosen route's legs are drawn without a second query."""
        table = self.snapshot.table_with_choices(self.points, self.depart_at)
        return replace(self.template, matrix=table.seconds), table

    def along(self, seq: list[int], leg_durations: list[float]) -> Problem:
        """The template with only the legs of ``seq`` filled in: enough to evaluate that route."""
        n = self.template.n_nodes
        matrix = np.zeros((n, n))
        for k, d in enumerate(leg_durations):
            matrix[seq[k], seq[k + 1]] = d
        return replace(self.template, matrix=matrix)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _sequence(problem: Problem, order: list[int]) -> list[int]:
    """Every node the route passes, in order: the start, the stops, then the end (if any)."""
    seq = [0, *order]
    if problem.end is EndKind.FIXED:
        seq.append(problem.n_nodes - 1)
    elif problem.end is EndKind.RETURN:
        seq.append(0)
    return seq


def _field_of(index: int, n_stops: int) -> list[str | int]:
    if index == 0:
        return ["body", "start"]
    if index <= n_stops:
        return ["body", "stops", index - 1]
    return ["body", "end"]


class RouteService:
    def __init__(self, settings: Settings, graph: RoadGraphService, queue: SolveQueue, cache: RouteCache,
                 request_log: RequestLog, metrics: ServiceMetrics) -> None:  # fmt: skip
        self.settings = settings
        self.graph = graph
        self.queue = queue
        self.cache = cache
        self.request_log = request_log
        self.metrics = metrics
        self.model_version = "none"
        self.backend_name = "none"

    # -- INGEST ---------------------------------------------------------------------------

    def ingest(self, req: RouteRequestIn, depart_at: datetime) -> Ingested:
        if len(req.stops) > self.settings.max_stops:
            raise RouteError(422, "too_many_stops", f"at most {self.settings.max_stops} stops per request",
                             ["body", "stops"])  # fmt: skip
        # A cautious plan (options.eta_quantile 0.9) costs everything at that quantile of the learned times.
        snapshot = self.graph.snapshot.at_quantile(req.options.eta_quantile)
        lat = [req.start.lat] + [s.lat for s in req.stops]
        lon = [req.start.lon] + [s.lon for s in req.stops]
        fixed_end = not isinstance(req.end, str)
        if fixed_end:
            lat.append(req.end.lat)  # type: ignore[union-attr]
            lon.append(req.end.lon)  # type: ignore[union-attr]
        try:
            points = snapshot.graph.snap(np.asarray(lat), np.asarray(lon), self.settings.snap_max_distance_m)
        except SnapError as exc:
            raise RouteError(422, "outside_map", f"{exc}: outside the map or too far from a road",
                             _field_of(exc.index, len(req.stops))) from None  # fmt: skip
        n = len(lat)
        earliest = np.zeros(n)
        latest = np.full(n, math.inf)
        service = np.zeros(n)
        for i, s in enumerate(req.stops, start=1):
            service[i] = s.service_s
            if s.window is not None:
                earliest[i] = max(0.0, (s.window.earliest - depart_at).total_seconds())
                latest[i] = (s.window.latest - depart_at).total_seconds()
        end = EndKind(req.end) if isinstance(req.end, str) else EndKind.FIXED
        try:
            template = Problem(matrix=np.zeros((n, n)), earliest=earliest, latest=np.maximum(latest, earliest), service_s=service,
                              end=end, end_node=n - 1 if fixed_end else None,
                              coords=np.column_stack(snapshot.graph.projection.to_xy(points.lat, points.lon)))  # fmt: skip
        except ValueError as exc:
            raise RouteError(422, "invalid_problem", str(exc), ["body"]) from None
        day, bucket = bucket_of(depart_at)
        learned = snapshot.traffic.learned
        depart_bucket = int(day) * 100 + bucket if learned is None else 1000 + learned.bucket_of(depart_at)
        descriptors = [
            (s.id, int(points.edge[i]), round(float(points.fraction[i]) * 1e4), round(service[i], 1),
             round(earliest[i], 1), None if math.isinf(latest[i]) else round(latest[i], 1))
            for i, s in enumerate(req.stops, start=1)
        ]  # fmt: skip
        end_desc: tuple[Any, ...] | str = (
            (int(points.edge[-1]), round(float(points.fraction[-1]) * 1e4)) if fixed_end else str(req.end)
        )
        key = route_cache_key(
            snapped_stops=descriptors, start=(int(points.edge[0]), round(float(points.fraction[0]) * 1e4)),
            end=end_desc, depart_bucket=depart_bucket, options=req.options.model_dump(),
            graph_version=snapshot.graph.map_version, traffic_epoch=snapshot.epoch, model_version=self.model_version,
            travel_profile=snapshot.traffic.learned_version,
        )  # fmt: skip
        return Ingested(snapshot, template, points, [s.id for s in req.stops], depart_at, key)

    # -- SERVE ----------------------------------------------------------------------------

    async def serve(
        self, ing: Ingested, route_id: str, budget_ms: float, deadline: float | None = None
    ) -> dict[str, Any]:
        """Solve through the queue, check, draw the legs; the cacheable part of an answer.

        ``deadline`` (Unix time; default ``request_timeout_s`` from now) bounds the wait for the answer."""
        if deadline is None:
            deadline = time.time() + self.settings.request_timeout_s
        problem, table = await asyncio.to_thread(ing.problem)
        request = SolveRequest(route_id, problem, budget_ms, deadline, seed=0)
        try:
            reply = await self.queue.solve(request)
        except QueueFull:
            raise RouteError(503, "queue_full", "too many requests waiting; retry shortly", retry_after_s=1) from None
        except QueueUnavailable as exc:
            raise RouteError(503, "queue_unavailable", f"route workers unreachable: {exc}", retry_after_s=2) from None
        except DeadlineExceeded:
            raise RouteError(504, "deadline", "no answer before the deadline") from None
        if reply.error:
            status = 504 if reply.error == "deadline" else 500
            raise RouteError(status, reply.error.split(":")[0], f"worker error: {reply.error}")
        order = list(reply.order)
        if not evaluate(problem, order).valid:
            # Never trust the answer blindly: an invalid one is an error, not a route.
            raise RouteError(500, "invalid_answer", "the optimizer returned an invalid route")
        t_geo = time.perf_counter()
        legs = await asyncio.to_thread(ing.snapshot.route_through, ing.points, _sequence(problem, order), ing.depart_at,
                                       table)  # fmt: skip
        # The model failed and the plain k-nearest search answered (batch_worker.solver.FALLBACK_BACKEND).
        degraded = reply.backend.startswith("fallback:")
        if degraded:
            self.metrics.model_fallbacks.inc()
        geometry = polyline.encode_many(np.concatenate([leg.lat for leg in legs]), np.concatenate([leg.lon for leg in legs]),
                                        np.asarray([leg.lat.size for leg in legs]), 6)  # fmt: skip
        return {
            "order": order,
            "legs": [{"duration_s": leg.duration_s, "distance_m": leg.distance_m, "geometry": text,
                      "duration_p10_s": leg.duration_p10_s, "duration_p90_s": leg.duration_p90_s}
                     for leg, text in zip(legs, geometry, strict=True)],
            "served_by": {"worker": reply.worker, "batch_size": reply.batch_size, "backend": reply.backend},
            "guided": reply.guided, "degraded": degraded,
            "model": reply.model_version or self.model_version,
            "timings_ms": {**reply.timings_ms, "geometry": (time.perf_counter() - t_geo) * 1e3},
        }  # fmt: skip

    # -- POST -----------------------------------------------------------------------------

    def post(self, ing: Ingested, route_id: str, driver_id: str, solved: dict[str, Any], cache: str,
             timings: dict[str, float]) -> dict[str, Any]:  # fmt: skip
        order: list[int] = solved["order"]
        seq = _sequence(ing.template, order)
        ev = evaluate(ing.along(seq, [leg["duration_s"] for leg in solved["legs"]]), order)
        t0 = ing.depart_at
        names = ["start", *ing.stop_ids, "end"]
        seq_names = ["start"] + [names[i] for i in order] + ([] if ing.template.end is EndKind.OPEN else ["end"])
        legs = [
            {"from": seq_names[k], "to": seq_names[k + 1], "duration_s": round(leg["duration_s"], 1),
             "duration_p10_s": _round(leg.get("duration_p10_s")), "duration_p90_s": _round(leg.get("duration_p90_s")),
             "distance_m": round(leg["distance_m"], 1), "geometry": leg["geometry"]}
            for k, leg in enumerate(solved["legs"])
        ]  # fmt: skip
        # Arrival intervals: the same route driven with every leg at its 10th (90th) percentile. Delays
        # on one route share one day's traffic, so legs are taken as moving together (quantiles add up).
        spread: dict[str, Any] = {"p10": None, "p90": None}
        if solved["legs"] and all(leg.get("duration_p10_s") is not None for leg in solved["legs"]):
            for q in spread:
                spread[q] = evaluate(ing.along(seq, [leg[f"duration_{q}_s"] for leg in solved["legs"]]), order)
        stops = [
            {"id": names[node], "arrival": (t0 + timedelta(seconds=float(ev.arrival[k]))).isoformat(),
             "departure": (t0 + timedelta(seconds=float(ev.departure[k]))).isoformat(),
             "late_s": round(float(ev.lateness[k]), 1),
             **{f"arrival_{q}": None if e is None else (t0 + timedelta(seconds=float(e.arrival[k]))).isoformat()
                for q, e in spread.items()}}
            for k, node in enumerate(order)
        ]  # fmt: skip
        snap = ing.snapshot
        return {
            "route_id": route_id, "driver_id": driver_id, "order": [names[i] for i in order], "stops": stops,
            "legs": legs, "total_duration_s": round(ev.end_arrival, 1),
            "total_distance_m": round(sum(leg["distance_m"] for leg in solved["legs"]), 1),
            "feasible": ev.feasible, "late_stops": [names[i] for i in ev.late_stops], "guided": solved["guided"],
            "degraded": solved.get("degraded", False),
            "versions": {"graph": snap.graph.map_version, "traffic_epoch": snap.epoch, "model": solved["model"],
                         "backend": solved["served_by"]["backend"], "travel_profile": snap.traffic.learned_version},
            "eta_quantile": snap.quantile,
            "cache": cache, "served_by": solved["served_by"], "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }  # fmt: skip

    # -- the whole request ----------------------------------------------------------------

    async def plan(self, req: RouteRequestIn) -> dict[str, Any]:
        t_start = time.perf_counter()
        received = datetime.now(UTC)
        # The deadline runs from the request's arrival: time queued for ingest under load counts too.
        deadline = time.time() + self.settings.request_timeout_s
        route_id = uuid.uuid4().hex
        depart_at = req.depart_at or received
        if depart_at.tzinfo is None:
            depart_at = depart_at.replace(tzinfo=UTC)
        raw = req.model_dump(mode="json", by_alias=True)
        try:
            ing = await asyncio.to_thread(self.ingest, req, depart_at)
            t_ingest = time.perf_counter()

            degraded = False

            async def compute() -> bytes:
                nonlocal degraded
                solved = await self.serve(ing, route_id, req.options.time_budget_ms, deadline)
                degraded = solved["degraded"]
                return orjson.dumps(solved)

            # A degraded answer (model fallback) is not cached: the next request gets the model again.
            blob, cache = await self.cache.aget_or_compute(ing.key, compute, self.settings.cache_ttl_s,
                                                           store_if=lambda _: not degraded)  # fmt: skip
            t_served = time.perf_counter()
            solved = orjson.loads(blob)
            self.metrics.cache.labels(result=cache).inc()
            st = solved["timings_ms"] if cache == "miss" else {}
            serve_ms = (t_served - t_ingest) * 1e3
            layer = {
                "ingest": (t_ingest - t_start) * 1e3,
                "queue_wait": st.get("queue_wait", 0.0),
                "inference": st.get("inference", 0.0),
                "search": st.get("search", 0.0),
            }
            body = self.post(ing, route_id, req.driver_id, solved, cache, layer)
            layer["post"] = (time.perf_counter() - t_served) * 1e3 + st.get("geometry", 0.0)
            layer["total"] = (time.perf_counter() - t_start) * 1e3
            layer["serve"] = serve_ms
            body["timings_ms"] = {k: round(v, 3) for k, v in layer.items()}
            for name in ("ingest", "queue_wait", "inference", "search", "post"):
                self.metrics.layer_latency.labels(layer=name).observe(layer[name] / 1e3)
            if cache == "miss":
                self.metrics.batch_size.observe(solved["served_by"]["batch_size"])
        except RouteError as exc:
            self.metrics.errors.labels(kind=exc.kind).inc()
            self._persist(route_id, req.driver_id, received, raw, None, exc.status, exc.kind)
            raise
        self._persist(route_id, req.driver_id, received, raw, body, 200, None)
        return body

    def _persist(self, route_id: str, driver_id: str, received: datetime, request: dict[str, Any],
                 response: dict[str, Any] | None, status: int, error_kind: str | None) -> None:  # fmt: skip
        """Queue the request log row: written off the request path, retried while the database is
        down (``RequestLog``; counted as ``routing_persist_*``)."""
        try:
            self.request_log.record(route_id=route_id, driver_id=driver_id, received_at=received, request=request,
                                    response=response, status=status, error_kind=error_kind)  # fmt: skip
        except Exception:  # the answer matters more than its log line
            log.warning("could not queue the log row of route %s", route_id, exc_info=True)
