"""OSRM-compatible ``trip`` service, answered by our optimizer through the same queue and batcher.

``roundtrip=true`` (default): a tour from the first coordinate back to it. ``roundtrip=false``
needs ``source=first``; ``destination=last`` fixes the end, ``destination=any`` leaves it
open (OSRM answers NotImplemented there; we can plan it). ``source=any`` with a round trip
is the same tour (a cycle has no first stop), reported from the first coordinate.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable
from graph_store.routing_graph import RoutingSnapshot
from routing_api import osrm
from routing_core.messages import SolveRequest
from routing_core.problem import EndKind, Problem, evaluate

router = APIRouter(tags=["osrm"])


@router.get("/trip/v1/{profile}/{coordinates}", summary="Optimised trip through the coordinates (OSRM trip)")
async def trip(profile: str, coordinates: str, request: Request) -> Response:
    container = request.app.state.container
    try:
        snapshot: RoutingSnapshot = container.graph.snapshot
        osrm._check_profile(profile)
        settings = container.settings
        opts = osrm.Options(request)
        lat, lon = osrm.parse_coordinates(coordinates)
        if lat.size < 2:
            raise osrm.OsrmError("InvalidQuery", "trip needs at least two coordinates")
        if lat.size > settings.max_stops + 1:
            raise osrm.OsrmError("TooBig", f"Too many trip coordinates: at most {settings.max_stops + 1}")
        roundtrip = opts.choice("roundtrip", "true", ("true", "false")) == "true"
        source = opts.choice("source", "any", ("any", "first"))
        destination = opts.choice("destination", "any", ("any", "last"))
        geometries = opts.choice("geometries", "polyline", ("polyline", "polyline6", "geojson"))
        overview = opts.choice("overview", "simplified", ("simplified", "full", "false"))
        radiuses = opts.radiuses(lat.size, settings.snap_max_distance_m)
        when = opts.depart_at()
        opts.finish()
        if not roundtrip and source != "first":
            raise osrm.OsrmError("NotImplemented", "roundtrip=false needs source=first", 400)
        if roundtrip and destination == "last":
            raise osrm.OsrmError("NotImplemented", "destination=last needs roundtrip=false", 400)
        ph = osrm._snap(snapshot, lat, lon, radiuses)
        table = snapshot.table_with_choices(ph, when)
        matrix = table.seconds
        n = lat.size
        if roundtrip:
            problem = Problem(matrix)
        elif destination == "last":
            problem = Problem(matrix, end=EndKind.FIXED, end_node=n - 1)
        else:
            problem = Problem(matrix, end=EndKind.OPEN)
        deadline = time.time() + settings.request_timeout_s
        try:
            reply = await container.queue.solve(SolveRequest(uuid.uuid4().hex, problem, 50.0, deadline))
        except (QueueFull, QueueUnavailable) as exc:
            raise osrm.OsrmError("ServiceUnavailable", f"optimizer busy or unreachable: {exc}", 503) from None
        except DeadlineExceeded:
            raise osrm.OsrmError("Timeout", "no answer before the deadline", 504) from None
        if reply.error or not evaluate(problem, list(reply.order)).valid:
            raise osrm.OsrmError("NoTrips", "Trip not found", 400)
        seq = [0, *reply.order] + ([n - 1] if problem.end is EndKind.FIXED else []) + ([0] if roundtrip else [])
        legs = snapshot.route_through(ph, seq, when, table)
        visit = seq[:-1] if roundtrip else seq
        waypoints = osrm._waypoints(snapshot, ph)
        for pos, idx in enumerate(visit):
            waypoints[idx]["waypoint_index"] = pos
            waypoints[idx]["trips_index"] = 0
        body_trip = osrm.route_body(legs, overview, geometries)
        return osrm.osrm_json({"code": "Ok", "waypoints": waypoints, "trips": [body_trip],
                               "backend": reply.backend, **osrm._versions(snapshot)})  # fmt: skip
    except osrm.OsrmError as exc:
        return osrm.error_response(exc)
