"""Dispatcher endpoints behind the admin UI: overview and KPIs, the road network, the fleet, recent
requests, live traffic updates, re-planning a driver's remaining stops and the learned travel-time
profiles (which one is in force, how each did on held-back trips, switching). Dispatcher tokens only.

(Flushing the route cache and activating another model are ``POST /v1/admin/cache/flush`` and
``POST /v1/admin/model`` in ``routing_api.app``.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graph_store.traffic import LiveObservation
from routing_api.admin.kpis import KpiWindow
from routing_api.admin.network import drawable_network, edges_in_bbox
from routing_api.admin.queries import AdminQueries, DriverState, on_time_status, route_progress
from routing_api.auth import require_dispatcher
from routing_api.bootstrap import Container
from routing_api.driver_api import plan_counted
from routing_api.osrm import osrm_json
from routing_api.schemas import RouteRequestIn

log = logging.getLogger(__name__)

WORKERS_WINDOW_S = 60.0
MAX_TRAFFIC_EDGES = 20_000
HOLDOUT_METHODS = ("base", "global_factor", "class_least_squares", "edge_means", "gnn")
HOLDOUT_FIELDS = ("trips", "mape", "median_ape", "mae_s", "bias", "p10_p90_coverage")
PROFILE_FACTS = ("trips_on_map", "trained_from", "trained_until", "holdout_from", "holdout_trips", "epochs", "fit_s")
BACKENDS = ("auto", "onnxruntime", "onnxruntime-int8", "torch", "tensorrt", "none")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's own lifespan, so the container is there already.
    c: Container = app.state.container
    window = KpiWindow(c.metrics)
    app.state.admin_kpis = window
    app.state.admin_network = {}
    sampler = asyncio.create_task(window.run())
    try:
        yield
    finally:
        sampler.cancel()


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_dispatcher)], lifespan=_lifespan)


def _container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


def _queries(request: Request) -> AdminQueries:
    """Read queries over the request log, after writing what its buffer still holds (reads see every answer)."""
    c = _container(request)
    c.request_log.flush()
    return AdminQueries(c.engine)


def _error(status: int, kind: str, msg: str, loc: list[str | int] | None = None) -> Response:
    detail: dict[str, Any] = {"kind": kind, "type": kind, "msg": msg}  # "type": as FastAPI's ValidationError
    if loc is not None:
        detail["loc"] = loc
    return osrm_json({"detail": [detail]}, status)


def _map_not_loaded() -> Response:
    return _error(503, "no_map", "no active map: run `routing import-map` first")


# -- overview -------------------------------------------------------------------------------


def _live_traffic(c: Container, now: datetime) -> list[dict[str, Any]]:
    """Live observations in force now, one per edge (the latest wins, as in routing)."""
    snap = c.graph.snapshot
    free_flow = snap.graph.network.edge_speed_kph
    latest: dict[int, LiveObservation] = {}
    for o in snap.traffic.live:
        if o.expires_at > now:
            latest[o.edge] = o
    return [{"edge": e, "speed_kph": round(o.speed_kph, 1), "free_flow_kph": round(float(free_flow[e]), 1),
             "expires_at": o.expires_at.isoformat()} for e, o in sorted(latest.items())]  # fmt: skip


def _workers(c: Container, queries: AdminQueries, now: datetime) -> dict[str, Any]:
    if c.solver is not None:
        return {"online": 1, "ids": [c.solver.worker_id], "basis": "monolith: the in-process batcher"}
    seen = queries.workers_seen(now - timedelta(seconds=WORKERS_WINDOW_S))
    return {
        "online": len(seen),
        "ids": seen,
        "basis": f"distinct workers that answered in the last {WORKERS_WINDOW_S:g} s",
    }


def _on_time(fleet: list[DriverState], now: datetime) -> dict[str, Any]:
    planned = late = 0
    for d in fleet:
        if d.route is not None:
            p = route_progress(d.route, now)
            planned += p["stops_total"]
            late += p["late_total"]
    return {"stops": planned, "late": late, "share": round((planned - late) / planned, 4) if planned else None}


@router.get("/overview", summary="Map, traffic epoch, model, queue, workers and live KPIs (poll every few seconds)")
def overview(request: Request) -> Response:
    c = _container(request)
    now = datetime.now(UTC)
    queries = _queries(request)
    window: KpiWindow = request.app.state.admin_kpis
    window.sample()  # figures up to this very moment
    stats = c.queue.stats()
    body: dict[str, Any] = {
        "now": now.isoformat(),
        "mode": c.settings.mode,
        "model": {"version": c.model.version, "backend": c.model.name, "ready": c.model_ready},
        "queue": {"adapter": stats.get("adapter"), "depth": stats.get("queue_depth")},
        "workers": _workers(c, queries, now),
        "kpis": window.summary(60.0),
        "latency_series": {"step_s": 10, "points": window.series(10.0, 600.0)},
        "on_time": _on_time(queries.fleet(), now),
        "map": None,
        "traffic": None,
    }
    if c.graph.ready:
        snap = c.graph.snapshot
        body["map"] = {"id": snap.graph.map_version, "name": snap.graph.name, "nodes": snap.graph.node_count,
                       "edges": snap.graph.network.edge_count}  # fmt: skip
        body["traffic"] = {"epoch": snap.epoch, "live": _live_traffic(c, now)}
    return osrm_json(body)


@router.get("/network", summary="The active map's roads as encoded polylines, for drawing")
def network(request: Request) -> Response:
    c = _container(request)
    if not c.graph.ready:
        return _map_not_loaded()
    graph = c.graph.snapshot.graph
    cache: dict[int, bytes] = request.app.state.admin_network
    if graph.map_version not in cache:
        cache.clear()
        cache[graph.map_version] = orjson.dumps(drawable_network(graph))
    return Response(cache[graph.map_version], media_type="application/json")


# -- fleet and requests ---------------------------------------------------------------------


def _driver_row(d: DriverState, now: datetime) -> dict[str, Any]:
    progress = route_progress(d.route, now) if d.route else None
    position = None
    if d.position is not None:
        ts = d.position["timestamp"]
        position = {**d.position, "timestamp": ts.isoformat(), "age_s": round((now - ts).total_seconds(), 1)}
    route = None
    if d.route is not None and progress is not None:
        resp = d.route.response
        route = {
            "route_id": d.route.route_id, "received_at": d.route.received_at.isoformat(),
            "traffic_epoch": resp.get("versions", {}).get("traffic_epoch"), "cache": resp.get("cache"),
            "feasible": resp.get("feasible"), "total_duration_s": resp.get("total_duration_s"),
            "total_distance_m": resp.get("total_distance_m"), "start": d.route.request.get("start"),
            "end": d.route.request.get("end"), **progress,
        }  # fmt: skip
    return {"driver_id": d.driver_id, "position": position, "route": route, "status": on_time_status(progress)}


@router.get("/drivers", summary="Every driver: last ping (with age), current route's stops, next ETA, on-time status")
def drivers(request: Request) -> Response:
    now = datetime.now(UTC)
    return osrm_json({"now": now.isoformat(), "drivers": [_driver_row(d, now) for d in _queries(request).fleet()]})


@router.get("/requests", summary="The latest route requests, newest first: status, cache, timings per layer")
def recent_requests(request: Request, limit: int = Query(50, ge=1, le=500),
                    driver_id: str | None = Query(None, min_length=1, max_length=128)) -> Response:  # fmt: skip
    return osrm_json({"requests": _queries(request).recent_requests(limit, driver_id)})


@router.get("/requests/{route_id}", summary="One logged route request: its body, its answer, timings")
def request_detail(route_id: str, request: Request) -> Response:
    detail = _queries(request).request_detail(route_id)
    if detail is None:
        return _error(404, "not_found", f"no route request {route_id}", ["path", "route_id"])
    return osrm_json(detail)


# -- actions --------------------------------------------------------------------------------


class BBox(BaseModel):
    min_lat: float = Field(ge=-90, le=90)
    min_lon: float = Field(ge=-180, le=180)
    max_lat: float = Field(ge=-90, le=90)
    max_lon: float = Field(ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self) -> BBox:
        if self.max_lat <= self.min_lat or self.max_lon <= self.min_lon:
            raise ValueError("bbox needs min_lat < max_lat and min_lon < max_lon")
        return self


class TrafficUpdateIn(BaseModel):
    edge: int | None = Field(None, ge=0, description="One directed edge id of the active map")
    bbox: BBox | None = Field(None, description="Every road with a point inside this box (degrees)")
    speed_factor: float = Field(gt=0, le=2, description="Multiplier of each edge's free-flow speed (0.3 = 30 %)")
    ttl_s: int | None = Field(None, gt=0, le=7 * 86_400, description="Lifetime, seconds; default the setting")
    both_directions: bool = Field(True, description="Also the opposite direction of each two-way road")

    @model_validator(mode="after")
    def _one_target(self) -> TrafficUpdateIn:
        if (self.edge is None) == (self.bbox is None):
            raise ValueError("give exactly one of edge or bbox")
        return self


@router.post("/traffic", summary="Slow down (or speed up) a road or an area: live observations, new traffic epoch")
async def update_traffic(body: TrafficUpdateIn, request: Request) -> Response:
    c = _container(request)
    if not c.graph.ready:
        return _map_not_loaded()
    graph = c.graph.snapshot.graph
    n_edges = graph.network.edge_count
    if body.edge is not None:
        if body.edge >= n_edges:
            return _error(422, "invalid", f"edge must be in 0..{n_edges - 1}", ["body", "edge"])
        edges = {body.edge}
    elif (b := body.bbox) is not None:
        edges = set(edges_in_bbox(graph, b.min_lat, b.min_lon, b.max_lat, b.max_lon).tolist())
        if not edges:
            return _error(422, "invalid", "no road has a point inside the box", ["body", "bbox"])
    else:  # the schema requires one of the two
        return _error(422, "invalid", "give exactly one of edge or bbox", ["body"])
    if body.both_directions:
        edges |= {int(graph.reverse_edge[e]) for e in edges if graph.reverse_edge[e] >= 0}
    if len(edges) > MAX_TRAFFIC_EDGES:
        return _error(
            422, "invalid", f"the box holds {len(edges)} edges; at most {MAX_TRAFFIC_EDGES}", ["body", "bbox"]
        )
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=body.ttl_s or c.settings.traffic_observation_ttl_s)
    free_flow = graph.network.edge_speed_kph
    observations = [
        LiveObservation(e, min(200.0, max(0.5, float(free_flow[e]) * body.speed_factor)), now, expires)
        for e in sorted(edges)
    ]
    before = c.graph.snapshot.epoch
    epoch = await asyncio.to_thread(c.graph.add_observations, observations, "admin")
    log.info("admin traffic update: %d edges at x%.2f until %s, epoch %d -> %d", len(edges), body.speed_factor,
             expires.isoformat(), before, epoch)  # fmt: skip
    return osrm_json({"previous_epoch": before, "traffic_epoch": epoch, "edges": len(edges),
                      "edge_ids": sorted(edges)[:1000], "speed_factor": body.speed_factor,
                      "expires_at": expires.isoformat()})  # fmt: skip


class ReplanIn(BaseModel):
    done: list[str] = Field(default_factory=list, description="Stop ids already served: left out")
    drop_passed: bool = Field(True, description="Also leave out stops whose planned departure is past")


@router.post("/drivers/{driver_id}/replan",
             summary="Plan the driver's remaining stops again from its last position, now, with current traffic")  # fmt: skip
async def replan(driver_id: str, request: Request, body: ReplanIn | None = None) -> Response:
    body = body or ReplanIn()
    c = _container(request)
    now = datetime.now(UTC)
    state = await asyncio.to_thread(lambda: _queries(request).driver(driver_id))
    if state is None or state.route is None:
        return _error(404, "not_found", f"driver {driver_id} has no planned route", ["path", "driver_id"])
    previous = state.route
    progress = route_progress(previous, now)
    planned = [s["id"] for s in progress["stops"]]
    unknown = sorted(set(body.done) - set(planned))
    if unknown:
        return _error(422, "invalid", f"not stops of the current route: {', '.join(unknown)}", ["body", "done"])
    dropped = [s["id"] for s in progress["stops"] if s["id"] in body.done or (body.drop_passed and s["passed"])]
    remaining = [sid for sid in planned if sid not in dropped]
    if not remaining:
        return _error(409, "nothing_left", "no stops left to plan", ["body", "done"])
    asked = previous.request
    by_id = {s["id"]: s for s in asked["stops"]}
    start = ({"lat": state.position["lat"], "lon": state.position["lon"]} if state.position is not None
             else asked["start"])  # fmt: skip
    # "return" meant back to where the route started, not to wherever the driver is now.
    end = asked["start"] if asked.get("end", "return") == "return" else asked.get("end")
    try:
        req = RouteRequestIn.model_validate({
            "driver_id": driver_id, "start": start, "end": end, "stops": [by_id[sid] for sid in remaining],
            "options": asked.get("options") or {},
        })  # fmt: skip
    except ValidationError as exc:
        return _error(422, "invalid", f"the logged request cannot be re-planned: {exc.errors()[0]['msg']}",
                      ["path", "driver_id"])  # fmt: skip
    route = await plan_counted(c.routes, req, "replan")
    if isinstance(route, Response):
        return route
    return osrm_json({"previous_route_id": previous.route_id, "dropped": dropped, "planned": remaining,
                      "route": route})  # fmt: skip


@router.get("/models", summary="The model in use and what can be activated (POST /v1/admin/model)")
def models(request: Request) -> Response:
    from routing_api.model_training import CHECKPOINT

    c = _container(request)
    found = {p.resolve() for p in CHECKPOINT.parent.glob("*.pt")}
    model_dir = Path(c.settings.model_dir)
    if model_dir.is_dir():
        found |= {p.resolve() for p in model_dir.glob("*.pt")}
    return osrm_json({
        "current": {"version": c.model.version, "backend": c.model.name},
        "backends": list(BACKENDS), "default_checkpoint": str(CHECKPOINT.resolve()),
        "checkpoints": sorted(str(p) for p in found), "hot_swap": c.solver is not None,
    })  # fmt: skip


# -- learned travel-time profiles -------------------------------------------------------------


def _holdout(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's figures on the held-back trips, the known methods first (GNN last), others after."""
    raw = metrics.get("holdout")
    if not isinstance(raw, dict):
        return {}
    order = [m for m in HOLDOUT_METHODS if m in raw] + sorted(m for m in raw if m not in HOLDOUT_METHODS)
    return {m: {f: raw[m].get(f) for f in HOLDOUT_FIELDS} for m in order if isinstance(raw[m], dict)}


def _profile_row(p: dict[str, Any]) -> dict[str, Any]:
    metrics = p.get("metrics") or {}
    return {"version": p["version"], "created_at": p["created_at"], "source": p["source"], "active": p["active"],
            "timezone": p.get("timezone"), **{k: metrics.get(k) for k in PROFILE_FACTS},
            "holdout": _holdout(metrics)}  # fmt: skip


def _travel_profiles(c: Container) -> dict[str, Any]:
    snap = c.graph.snapshot
    return {"map_id": snap.graph.map_version, "in_force": snap.traffic.learned_version, "traffic_epoch": snap.epoch,
            "profiles": [_profile_row(p) for p in c.maps.learned_profiles(snap.graph.map_version)]}  # fmt: skip


@router.get("/travel-profile", summary="Learned travel-time profiles of the map, newest first, and the one in force")
async def travel_profiles(request: Request) -> Response:
    c = _container(request)
    if not c.graph.ready:
        return _map_not_loaded()
    return osrm_json(await asyncio.to_thread(_travel_profiles, c))


class ProfileActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        description="A stored profile's version; null: none, travel times from the base model", min_length=1,
        max_length=64,
    )  # fmt: skip


@router.post("/travel-profile/activate",
             summary="Put another stored learned profile in force (null: the base model); new traffic epoch")  # fmt: skip
async def activate_travel_profile(body: ProfileActivateIn, request: Request) -> Response:
    c = _container(request)
    if not c.graph.ready:
        return _map_not_loaded()
    map_id = c.graph.snapshot.graph.map_version
    before = c.graph.snapshot.traffic.learned_version
    try:
        epoch = await asyncio.to_thread(c.maps.activate_learned_profile, map_id, body.version)
    except LookupError:
        return _error(404, "not_found", f"no learned travel-time profile {body.version!r} for this map",
                      ["body", "version"])  # fmt: skip
    await asyncio.to_thread(c.graph.refresh)  # this process routes with it from now on
    log.info("admin travel-time profile: %s -> %s, epoch %d", before, body.version, epoch)
    out = await asyncio.to_thread(_travel_profiles, c)
    return osrm_json({"previous": before, **out, "traffic_epoch": epoch})
