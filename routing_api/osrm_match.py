"""OSRM-compatible ``match`` service: a GPS trace snapped to the roads it was driven on.

``GET /match/v1/{profile}/{coordinates}`` with OSRM's options: ``timestamps`` (UNIX seconds,
strictly increasing), ``radiuses`` (GPS standard deviation per fix, metres, in (0, 100];
default 5 m), ``geometries``, ``overview``, ``annotations`` (``true`` or a comma list of
``nodes``, ``duration``, ``distance``, ``speed``, ``weight``; per road edge of a leg, not per
geometry segment), ``gaps`` (``split``: a gap over 60 s between timestamps splits the trace;
``ignore``), ``tidy=false``, ``steps=false``. The matcher is ``graph_store.map_matching``
(an HMM after Newson & Krumm). Durations are the matched path's travel time under the traffic
at ``depart_at``, else at the first timestamp, else now. Errors as OSRM: a malformed or
miscounted option 400 ``InvalidOptions``/``InvalidQuery``, a value out of range (decreasing
timestamps, a radius) 400 ``InvalidValue``, a trace that matches nowhere 400 ``NoMatch``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from graph_store.map_matching import DEFAULT_SIGMA_M, SubMatching, match_trace
from graph_store.routing_graph import RoutingSnapshot
from routing_api import osrm

router = APIRouter(tags=["osrm"])

MAX_RADIUS_M = 100.0
_ANNOTATIONS = ("nodes", "duration", "distance", "speed", "weight")


def _numbers(opts: osrm.Options, name: str, count: int) -> np.ndarray | None:
    """``a;b;c`` as floats (NaN for an empty entry), one per coordinate; None when absent."""
    raw = opts.get(name, "")
    if not raw:
        return None
    parts = raw.split(";")
    if len(parts) != count:
        raise osrm.OsrmError("InvalidOptions", f"Number of {name} ({len(parts)}) does not match number of "
                             f"coordinates ({count})")  # fmt: skip
    out = np.full(count, np.nan)
    for i, part in enumerate(parts):
        if part == "":
            continue
        try:
            out[i] = float(part)
        except ValueError:
            raise osrm.OsrmError("InvalidQuery", f"{name}[{i}] must be a number, got {part!r}") from None
        if not np.isfinite(out[i]):
            raise osrm.OsrmError("InvalidValue", f"{name}[{i}] must be finite")
    return out


def _timestamps(opts: osrm.Options, count: int) -> np.ndarray | None:
    ts = _numbers(opts, "timestamps", count)
    if ts is None:
        return None
    missing = np.flatnonzero(np.isnan(ts))
    if missing.size:
        raise osrm.OsrmError("InvalidQuery", f"timestamps[{int(missing[0])}] is empty")
    back = np.flatnonzero(np.diff(ts) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise osrm.OsrmError("InvalidValue", f"timestamps must increase: timestamps[{i}] = {ts[i]:g} is not "
                             f"after timestamps[{i - 1}] = {ts[i - 1]:g}")  # fmt: skip
    return ts


def _radiuses(opts: osrm.Options, count: int) -> np.ndarray | None:
    r = _numbers(opts, "radiuses", count)
    if r is None:
        return None
    bad = np.flatnonzero(~np.isnan(r) & ~((r > 0) & (r <= MAX_RADIUS_M)))
    if bad.size:
        i = int(bad[0])
        raise osrm.OsrmError("InvalidValue", f"radiuses[{i}] = {r[i]:g} is out of range: a GPS standard deviation "
                             f"in metres, > 0 and <= {MAX_RADIUS_M:g}")  # fmt: skip
    return r


def _annotations(opts: osrm.Options) -> set[str]:
    raw = opts.get("annotations", "false")
    if raw == "false":
        return set()
    if raw == "true":
        return set(_ANNOTATIONS)
    names = set(raw.split(","))
    if not names <= set(_ANNOTATIONS):
        raise osrm.OsrmError("InvalidOptions", f"annotations must be true, false or a comma list of "
                             f"{', '.join(_ANNOTATIONS)}, got {raw!r}")  # fmt: skip
    return names


def _matching_body(snapshot: RoutingSnapshot, m: SubMatching, w_s: np.ndarray, overview: str, geometries: str,
                   annotations: set[str]) -> dict[str, Any]:  # fmt: skip
    g = snapshot.graph
    p = m.pieces
    legs_n = len(m.points) - 1
    piece_s = w_s[p.edge] * (p.f1 - p.f0)
    leg_m = np.bincount(p.leg, weights=p.length_m, minlength=legs_n)
    leg_s = np.bincount(p.leg, weights=piece_s, minlength=legs_n)
    starts = np.searchsorted(p.leg, np.arange(legs_n + 1), side="left")
    osm_id = g.network.node_osm_id
    legs = []
    for k in range(legs_n):
        leg: dict[str, Any] = {"steps": [], "summary": "", "weight": round(float(leg_s[k]), 1),
                               "duration": round(float(leg_s[k]), 1), "distance": round(float(leg_m[k]), 1)}  # fmt: skip
        if annotations:
            a, b = int(starts[k]), int(starts[k + 1])
            e = p.edge[a:b]
            dist, dur = p.length_m[a:b], piece_s[a:b]
            ann: dict[str, Any] = {}
            if "nodes" in annotations:
                nodes = np.concatenate(([g.edge_source[e[0]]], g.edge_target[e]))
                ann["nodes"] = [int(x) for x in osm_id[nodes]]
            if "distance" in annotations:
                ann["distance"] = [round(float(x), 1) for x in dist]
            if "duration" in annotations:
                ann["duration"] = [round(float(x), 1) for x in dur]
            if "weight" in annotations:
                ann["weight"] = [round(float(x), 1) for x in dur]
            if "speed" in annotations:
                ann["speed"] = [round(float(d / t), 1) if t > 0 else 0.0 for d, t in zip(dist, dur, strict=True)]
            leg["annotation"] = ann
        legs.append(leg)
    duration = float(leg_s.sum())
    body: dict[str, Any] = {"confidence": round(m.confidence, 4), "legs": legs, "weight_name": "duration",
                            "weight": round(duration, 1), "duration": round(duration, 1),
                            "distance": round(m.distance_m, 1)}  # fmt: skip
    if overview != "false":
        moving = p.f1 > p.f0
        if moving.any():
            skip = np.ones(int(moving.sum()), dtype=bool)
            skip[0] = False
            lat, lon, _ = g.pieces_geometry(p.edge[moving], p.f0[moving], p.f1[moving], skip)
        else:  # stood still: the one matched position, twice
            lat = np.asarray([m.points[0].lat, m.points[-1].lat])
            lon = np.asarray([m.points[0].lon, m.points[-1].lon])
        body["geometry"] = osrm._geometry(lat, lon, geometries)
    return body


@router.get("/match/v1/{profile}/{coordinates}", summary="Snap a GPS trace to the roads driven (OSRM match)")
def match(profile: str, coordinates: str, request: Request) -> Response:
    def handle(request: Request, snapshot: RoutingSnapshot) -> Response:
        osrm._check_profile(profile)
        settings = osrm._settings(request)
        opts = osrm.Options(request)
        lat, lon = osrm.parse_coordinates(coordinates)
        if lat.size < 2:
            raise osrm.OsrmError("InvalidQuery", "match needs at least two coordinates")
        if lat.size > settings.route_max_locations:
            raise osrm.OsrmError("TooBig", f"Too many trace coordinates: at most {settings.route_max_locations}")
        timestamps = _timestamps(opts, lat.size)
        radiuses = _radiuses(opts, lat.size)
        geometries = opts.choice("geometries", "polyline", ("polyline", "polyline6", "geojson"))
        overview = opts.choice("overview", "simplified", ("simplified", "full", "false"))
        annotations = _annotations(opts)
        gaps = opts.choice("gaps", "split", ("split", "ignore"))
        # Not supported: refused, not ignored.
        opts.choice("tidy", "false", ("false",))
        opts.choice("steps", "false", ("false",))
        explicit_when = "depart_at" in request.query_params
        when = opts.depart_at()
        opts.finish()
        if not explicit_when and timestamps is not None:
            when = datetime.fromtimestamp(float(timestamps[0]), UTC)
        result = match_trace(snapshot, lat, lon, timestamps, radiuses, gaps=gaps)
        if not result.matchings:
            raise osrm.OsrmError("NoMatch", "Could not match the trace: no two consecutive coordinates lie "
                                 f"within reach of connected roads (default GPS accuracy {DEFAULT_SIGMA_M:g} m; "
                                 "see radiuses)")  # fmt: skip
        w_s = snapshot.edge_weights_ms(when) / 1000.0
        matchings = [_matching_body(snapshot, m, w_s, overview, geometries, annotations) for m in result.matchings]
        tracepoints: list[dict[str, Any] | None] = []
        for tp in result.tracepoints:
            if tp is None:
                tracepoints.append(None)
                continue
            pt = result.matchings[tp[0]].points[tp[1]]
            tracepoints.append({"hint": "", "distance": round(pt.distance_m, 3), "name": "",
                                "location": [round(pt.lon, 6), round(pt.lat, 6)], "matchings_index": tp[0],
                                "waypoint_index": tp[1], "alternatives_count": pt.alternatives})  # fmt: skip
        return osrm.osrm_json({"code": "Ok", "matchings": matchings, "tracepoints": tracepoints,
                               **osrm._versions(snapshot)})  # fmt: skip

    return osrm._run(handle, request)
