"""OSRM-compatible HTTP services: ``nearest``, ``route`` and ``table`` (API v1).

Request and response shapes, and error codes, follow OSRM's HTTP API so a client
written for OSRM works unchanged. Differences, all additive: ``depart_at`` (ISO 8601,
default now) picks the traffic bucket; responses carry ``traffic_epoch`` and
``graph_version``. Options OSRM has that do not change our answer (``hints``,
``generate_hints``, ``alternatives=false``, ``steps=false``, ``continue_straight``,
``bearings``, ``approaches``, ``exclude``, ``snapping``, ``skip_waypoints``) are
accepted; unknown options are refused with ``InvalidOptions``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from graph_store import polyline
from graph_store.routing_graph import Leg, Phantoms, RoutingSnapshot, SnapError
from graph_store.service import NoActiveMap, RoadGraphService
from routing_api.settings import Settings

router = APIRouter(tags=["osrm"])

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR_RE = re.compile(rf"^({_NUM}),({_NUM})$")
_IGNORED_OPTIONS = {
    "hints", "generate_hints", "alternatives", "steps", "continue_straight", "bearings",
    "approaches", "exclude", "snapping", "skip_waypoints", "annotations_route", "fallback_speed",
    "fallback_coordinate", "scale_factor",
}  # fmt: skip


class OsrmError(Exception):
    """An OSRM-style error: ``code`` as OSRM names it, HTTP 400 unless said otherwise."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def osrm_json(body: dict[str, Any] | list[Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")  # fmt: skip


RETRY_AFTER_S = 2  # what a 503 (optimizer busy or unreachable) asks the client to wait


def error_response(exc: OsrmError) -> Response:
    resp = osrm_json({"code": exc.code, "message": exc.message}, exc.status)
    if exc.status == 503:
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


def parse_coordinates(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``lon,lat;lon,lat`` or ``polyline(...)``/``polyline6(...)`` into (lat, lon) arrays."""
    for name, precision in (("polyline6(", 6), ("polyline(", 5)):
        if text.startswith(name) and text.endswith(")"):
            try:
                lat, lon = polyline.decode(text[len(name) : -1], precision)
            except ValueError as exc:
                raise OsrmError("InvalidQuery", f"Query string malformed: {exc}") from None
            break
    else:
        lats, lons = [], []
        position = 0
        for part in text.split(";"):
            match = _PAIR_RE.match(part)
            if not match:
                raise OsrmError("InvalidQuery", f"Query string malformed close to position {position}")
            lons.append(float(match.group(1)))
            lats.append(float(match.group(2)))
            position += len(part) + 1
        lat, lon = np.asarray(lats), np.asarray(lons)
    if lat.size == 0:
        raise OsrmError("InvalidQuery", "Query string malformed: no coordinates")
    bad = np.flatnonzero(~((np.abs(lat) <= 90) & (np.abs(lon) <= 180)))
    if bad.size:
        raise OsrmError("InvalidValue", f"Invalid coordinate value at index {int(bad[0])}: "
                        "longitude must be in [-180, 180] and latitude in [-90, 90]")  # fmt: skip
    return lat, lon


class Options:
    """Query options of one request; each read is checked, and leftovers are refused."""

    def __init__(self, request: Request) -> None:
        self._params = dict(request.query_params)
        self._used: set[str] = set()

    def get(self, name: str, default: str) -> str:
        self._used.add(name)
        return self._params.get(name, default)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise OsrmError("InvalidOptions", f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def depart_at(self) -> datetime:
        raw = self.get("depart_at", "")
        if not raw:
            return datetime.now(UTC)
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise OsrmError("InvalidOptions", f"depart_at must be an ISO 8601 time, got {raw!r}") from None

    def radiuses(self, count: int, default_m: float) -> np.ndarray:
        raw = self.get("radiuses", "")
        if not raw:
            return np.full(count, default_m)
        parts = raw.split(";")
        if len(parts) != count:
            raise OsrmError("InvalidOptions", "Number of radiuses does not match number of coordinates")
        out = np.empty(count)
        for i, part in enumerate(parts):
            if part in ("", "unlimited"):
                out[i] = default_m
                continue
            try:
                out[i] = float(part)
            except ValueError:
                raise OsrmError("InvalidOptions", f"radiuses[{i}] must be a number or 'unlimited'") from None
            if out[i] < 0:
                raise OsrmError("InvalidOptions", f"radiuses[{i}] must be >= 0")
        return np.minimum(out, default_m)

    def indices(self, name: str, count: int) -> np.ndarray:
        raw = self.get(name, "all")
        if raw == "all":
            return np.arange(count)
        try:
            idx = np.asarray([int(p) for p in raw.split(";")], dtype=np.int64)
        except ValueError:
            raise OsrmError("InvalidOptions", f"{name} must be 'all' or indices separated by ';'") from None
        if idx.size == 0 or idx.min() < 0 or idx.max() >= count:
            raise OsrmError("InvalidOptions", f"{name} indices must be in 0..{count - 1}")
        return idx

    def finish(self) -> None:
        unknown = sorted(set(self._params) - self._used - _IGNORED_OPTIONS)
        if unknown:
            raise OsrmError("InvalidOptions", f"unknown option(s): {', '.join(unknown)}")


def _graph(request: Request) -> RoadGraphService:
    return request.app.state.container.graph


def _settings(request: Request) -> Settings:
    return request.app.state.container.settings


def _check_profile(profile: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", profile):
        raise OsrmError("InvalidUrl", f"URL string malformed: bad profile {profile!r}")


def _snap(snapshot: RoutingSnapshot, lat: np.ndarray, lon: np.ndarray, radiuses: np.ndarray) -> Phantoms:
    try:
        ph = snapshot.graph.snap(lat, lon, float(radiuses.max()))
    except SnapError as exc:
        raise OsrmError("NoSegment", f"Could not find a matching segment for coordinate {exc.index}") from None
    too_far = np.flatnonzero(ph.distance_m > radiuses)
    if too_far.size:
        raise OsrmError("NoSegment", f"Could not find a matching segment for coordinate {int(too_far[0])}")
    return ph


def _waypoints(snapshot: RoutingSnapshot, ph: Phantoms, idx: np.ndarray | None = None) -> list[dict[str, Any]]:
    rows = range(len(ph)) if idx is None else idx.tolist()
    return [
        {"hint": "", "distance": round(float(ph.distance_m[i]), 3), "name": "",
         "location": [round(float(ph.lon[i]), 6), round(float(ph.lat[i]), 6)]}
        for i in rows
    ]  # fmt: skip


def _geometry(lat: np.ndarray, lon: np.ndarray, kind: str) -> Any:
    if kind == "geojson":
        return {"type": "LineString", "coordinates": np.column_stack((np.round(lon, 6), np.round(lat, 6)))}
    return polyline.encode(lat, lon, 6 if kind == "polyline6" else 5)


def route_body(legs: list[Leg], overview: str, geometries: str) -> dict[str, Any]:
    """One OSRM route object (``routes[i]`` of route, ``trips[i]`` of trip) from our legs."""
    duration = sum(leg.duration_s for leg in legs)
    distance = sum(leg.distance_m for leg in legs)
    body: dict[str, Any] = {
        "legs": [
            {"steps": [], "summary": "", "weight": round(leg.duration_s, 1),
             "duration": round(leg.duration_s, 1), "distance": round(leg.distance_m, 1)}
            for leg in legs
        ],
        "weight_name": "duration", "weight": round(duration, 1),
        "duration": round(duration, 1), "distance": round(distance, 1),
    }  # fmt: skip
    if overview != "false":
        # "simplified" returns the full geometry: city routes are short enough.
        lat_all = np.concatenate([legs[0].lat] + [leg.lat[1:] for leg in legs[1:]])
        lon_all = np.concatenate([legs[0].lon] + [leg.lon[1:] for leg in legs[1:]])
        body["geometry"] = _geometry(lat_all, lon_all, geometries)
    return body


def _versions(snapshot: RoutingSnapshot) -> dict[str, Any]:
    return {"graph_version": snapshot.graph.map_version, "traffic_epoch": snapshot.epoch,
            "travel_profile": snapshot.traffic.learned_version}  # fmt: skip


def _run(handler, request: Request, *args: Any) -> Response:  # type: ignore[no-untyped-def]
    try:
        snapshot = _graph(request).snapshot
        return handler(request, snapshot, *args)
    except OsrmError as exc:
        return error_response(exc)
    except NoActiveMap as exc:
        return error_response(OsrmError("NoMap", str(exc), 503))


@router.get("/nearest/v1/{profile}/{coordinates}", summary="Snap a coordinate to the nearest road (OSRM nearest)")
def nearest(profile: str, coordinates: str, request: Request) -> Response:
    def handle(request: Request, snapshot: RoutingSnapshot) -> Response:
        _check_profile(profile)
        opts = Options(request)
        lat, lon = parse_coordinates(coordinates)
        if lat.size != 1:
            raise OsrmError("InvalidQuery", "nearest takes exactly one coordinate")
        number = opts.get("number", "1")
        if number != "1":
            raise OsrmError("InvalidOptions", "number must be 1 (only the nearest road is returned)")
        radiuses = opts.radiuses(1, _settings(request).snap_max_distance_m)
        opts.finish()
        ph = _snap(snapshot, lat, lon, radiuses)
        net = snapshot.graph.network
        e = int(ph.edge[0])
        wp = _waypoints(snapshot, ph)[0]
        wp["nodes"] = [int(net.node_osm_id[net.edge_source[e]]), int(net.node_osm_id[net.edge_target[e]])]
        return osrm_json({"code": "Ok", "waypoints": [wp], **_versions(snapshot)})

    return _run(handle, request)


@router.get("/route/v1/{profile}/{coordinates}", summary="Fastest route through the coordinates (OSRM route)")
def route(profile: str, coordinates: str, request: Request) -> Response:
    def handle(request: Request, snapshot: RoutingSnapshot) -> Response:
        _check_profile(profile)
        settings = _settings(request)
        opts = Options(request)
        lat, lon = parse_coordinates(coordinates)
        if lat.size < 2:
            raise OsrmError("InvalidQuery", "route needs at least two coordinates")
        if lat.size > settings.route_max_locations:
            raise OsrmError("TooBig", f"Too many coordinates: at most {settings.route_max_locations}")
        geometries = opts.choice("geometries", "polyline", ("polyline", "polyline6", "geojson"))
        overview = opts.choice("overview", "simplified", ("simplified", "full", "false"))
        opts.choice("annotations", "false", ("false",))
        # Not supported: refused, not ignored (see README).
        opts.choice("steps", "false", ("false",))
        opts.choice("alternatives", "false", ("false",))
        radiuses = opts.radiuses(lat.size, settings.snap_max_distance_m)
        when = opts.depart_at()
        opts.finish()
        ph = _snap(snapshot, lat, lon, radiuses)
        try:
            legs = snapshot.route(ph, when)
        except ValueError:
            raise OsrmError("NoRoute", "Impossible route between points") from None
        body_route = route_body(legs, overview, geometries)
        return osrm_json({"code": "Ok", "routes": [body_route], "waypoints": _waypoints(snapshot, ph),
                          **_versions(snapshot)})  # fmt: skip

    return _run(handle, request)


@router.get("/table/v1/{profile}/{coordinates}", summary="Travel-time and distance matrix (OSRM table)")
def table(profile: str, coordinates: str, request: Request) -> Response:
    def handle(request: Request, snapshot: RoutingSnapshot) -> Response:
        _check_profile(profile)
        settings = _settings(request)
        opts = Options(request)
        lat, lon = parse_coordinates(coordinates)
        if lat.size > settings.table_max_locations:
            raise OsrmError("TooBig", f"Too many table coordinates: at most {settings.table_max_locations}")
        sources = opts.indices("sources", lat.size)
        destinations = opts.indices("destinations", lat.size)
        annotations = set(opts.get("annotations", "duration").split(","))
        if not annotations or not annotations <= {"duration", "distance"}:
            raise OsrmError("InvalidOptions", "annotations must be duration, distance or duration,distance")
        radiuses = opts.radiuses(lat.size, settings.snap_max_distance_m)
        when = opts.depart_at()
        opts.finish()
        ph = _snap(snapshot, lat, lon, radiuses)
        src, dst = ph.take(sources), ph.take(destinations)
        durations, distances = snapshot.table(src, dst, when, with_distance="distance" in annotations)
        body: dict[str, Any] = {"code": "Ok"}
        if "duration" in annotations:
            body["durations"] = _matrix(durations)
        if distances is not None:
            body["distances"] = _matrix(distances)
        body["sources"] = _waypoints(snapshot, ph, sources)
        body["destinations"] = _waypoints(snapshot, ph, destinations)
        body.update(_versions(snapshot))
        return osrm_json(body)

    return _run(handle, request)


def _matrix(values: np.ndarray) -> np.ndarray:
    # OSRM reports 0.1 s / 0.1 m resolution and null for unreachable pairs (orjson: nan -> null).
    out = np.round(values, 1)
    out[~np.isfinite(out)] = np.nan
    return out
