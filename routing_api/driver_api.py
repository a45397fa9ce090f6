"""Driver-facing endpoints: plan a route, read it back, report positions, list drivers."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from routing_api.auth import Caller, check_driver, require_dispatcher, require_driver
from routing_api.osrm import osrm_json
from routing_api.ping_traffic import observe_ping
from routing_api.route_service import RouteError, RouteService
from routing_api.schemas import DriverPublic, PositionIn, RoutePublic, RouteRequestIn

router = APIRouter(prefix="/v1", tags=["driver"])


def _service(request: Request) -> RouteService:
    return request.app.state.container.routes  # type: ignore[no-any-return]


def error_body(exc: RouteError) -> Response:
    # "type" too: every error item is a superset of FastAPI's ValidationError (loc, msg, type).
    detail: dict[str, Any] = {"kind": exc.kind, "type": exc.kind, "msg": exc.message}
    if exc.loc is not None:
        detail["loc"] = exc.loc
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    resp = osrm_json({"detail": [detail]}, exc.status)
    if headers:
        resp.headers.update(headers)
    return resp


@router.post(
    "/routes",
    response_model=RoutePublic,
    summary="Plan a route: visiting order, road path per leg, arrival time per stop",
    responses={422: {"description": "Invalid request; `detail[].loc` names the field"},
               401: {"description": "Missing, unknown or revoked bearer token"},
               403: {"description": "A driver token asking for another driver"},
               429: {"description": "Rate limit of the token exceeded; see Retry-After"},
               503: {"description": "Queue full or workers unreachable; see Retry-After"},
               504: {"description": "No answer before the deadline"}},
)  # fmt: skip
async def plan_route(body: RouteRequestIn, request: Request, principal: Caller) -> Response:
    check_driver(principal, body.driver_id, ["body", "driver_id"])
    result = await plan_counted(_service(request), body, "routes")
    return result if isinstance(result, Response) else osrm_json(result)


async def plan_counted(service: RouteService, body: RouteRequestIn, endpoint: str) -> dict[str, Any] | Response:
    """``service.plan`` with the request metrics (in flight, status, latency of ``endpoint``); a route
    error comes back as its HTTP response."""
    metrics = service.metrics
    t0 = time.perf_counter()
    metrics.in_flight.inc()
    try:
        result = await service.plan(body)
        metrics.requests.labels(status="200").inc()
        return result
    except RouteError as exc:
        metrics.requests.labels(status=str(exc.status)).inc()
        return error_body(exc)
    finally:
        metrics.in_flight.dec()
        metrics.request_latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)


@router.get("/routes/{route_id}", response_model=RoutePublic, summary="A planned route, as it was answered")
def get_route(route_id: str, request: Request, principal: Caller) -> Response:
    logged = _service(request).request_log.get(route_id)
    # Another driver's route is "not found" to a driver token: its existence is not disclosed.
    if logged is None or logged.response is None or not principal.may_act_for(logged.driver_id):
        return osrm_json({"detail": [{"kind": "not_found", "msg": f"no route {route_id}", "loc": ["path", "route_id"]}]},
                         404)  # fmt: skip
    return osrm_json(logged.response)


@router.post("/drivers/{driver_id}/positions", status_code=202, summary="Report a GPS position",
             dependencies=[Depends(require_driver)])  # fmt: skip
def post_position(driver_id: str, body: PositionIn, request: Request) -> Response:
    if not 1 <= len(driver_id) <= 128:
        return osrm_json({"detail": [{"kind": "invalid", "type": "invalid", "msg": "driver_id must be 1..128 characters",
                                      "loc": ["path", "driver_id"]}]}, 422)  # fmt: skip
    _service(request).request_log.record_position(driver_id, body.lat, body.lon, body.timestamp, body.speed_mps,
                                                 body.heading_deg)  # fmt: skip
    return osrm_json({"status": "accepted", "traffic_epoch": observe_ping(request.app, body)}, 202)


@router.get("/drivers", response_model=list[DriverPublic], summary="Every driver: last position and current route",
            dependencies=[Depends(require_dispatcher)])  # fmt: skip
def list_drivers(request: Request) -> Response:
    return osrm_json(_service(request).request_log.drivers())
