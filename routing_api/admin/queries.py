"""Read-only queries of the request log for the admin UI: the fleet (each driver's last ping and
current route), recent requests, and the workers seen replying.

"Current route" is a driver's latest route request answered with 200. There are no delivery
confirmations in this system, so a stop counts as *passed* once its planned departure time is
behind us; the stops left are the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from graph_store.models import RouteRequestLog
from routing_api.request_log import last_position_per_driver, last_route_per_driver

LIST_COLUMNS = (
    RouteRequestLog.route_id, RouteRequestLog.driver_id, RouteRequestLog.received_at, RouteRequestLog.status,
    RouteRequestLog.error_kind, RouteRequestLog.cache, RouteRequestLog.n_stops, RouteRequestLog.total_duration_s,
    RouteRequestLog.timings_json, RouteRequestLog.graph_version, RouteRequestLog.traffic_epoch,
    RouteRequestLog.model_version, RouteRequestLog.backend,
)  # fmt: skip


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else _utc(when).isoformat()


@dataclass(frozen=True)
class DriverRoute:
    """A driver's current route as logged: the request and its answer."""

    route_id: str
    received_at: datetime
    request: dict[str, Any]
    response: dict[str, Any]


@dataclass(frozen=True)
class DriverState:
    driver_id: str
    position: dict[str, Any] | None  # lat, lon (degrees), timestamp, speed_mps, heading_deg
    route: DriverRoute | None


def route_progress(route: DriverRoute, now: datetime) -> dict[str, Any]:
    """The current route's stops in planned order with windows and lateness, and what is left of it.

    Each stop: ``seq`` (1-based), ``id``, ``lat``/``lon``, ``arrival``/``departure`` (planned, ISO 8601),
    ``late_s`` (seconds past its window, 0 when on time), ``window`` (or None), ``service_s``, ``passed``.
    """
    requested = {s["id"]: s for s in route.request.get("stops", [])}
    stops = []
    for seq, planned in enumerate(route.response.get("stops", []), start=1):
        asked = requested.get(planned["id"], {})
        passed = datetime.fromisoformat(planned["departure"]) <= now
        stops.append({
            "seq": seq, "id": planned["id"], "lat": asked.get("lat"), "lon": asked.get("lon"),
            "arrival": planned["arrival"], "departure": planned["departure"], "late_s": planned["late_s"],
            "window": asked.get("window"), "service_s": asked.get("service_s", 0.0), "passed": passed,
        })  # fmt: skip
    left = [s for s in stops if not s["passed"]]
    return {
        "stops": stops,
        "stops_total": len(stops),
        "stops_left": len(left),
        "late_total": sum(1 for s in stops if s["late_s"] > 0),
        "late_left": sum(1 for s in left if s["late_s"] > 0),
        "next_stop": left[0]["id"] if left else None,
        "next_eta": left[0]["arrival"] if left else None,
    }


def on_time_status(progress: dict[str, Any] | None) -> str:
    """``no route``, ``done`` (every stop passed), ``late`` (a stop left is late) or ``on time``."""
    if progress is None:
        return "no route"
    if progress["stops_left"] == 0:
        return "done"
    return "late" if progress["late_left"] else "on time"


class AdminQueries:
    def __init__(self, engine: Engine) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def fleet(self) -> list[DriverState]:
        """Every driver seen (a ping or a route request), sorted by id."""
        with self.sessions() as session:
            positions = {
                p.driver_id: {
                    "lat": p.lat,
                    "lon": p.lon,
                    "timestamp": _utc(p.timestamp),
                    "speed_mps": p.speed_mps,
                    "heading_deg": p.heading_deg,
                }
                for p in session.scalars(last_position_per_driver())
            }
            rows = session.execute(
                last_route_per_driver(RouteRequestLog.driver_id, RouteRequestLog.route_id,
                                      RouteRequestLog.received_at, RouteRequestLog.request_json,
                                      RouteRequestLog.response_json)
            ).all()  # fmt: skip
        routes = {
            r.driver_id: DriverRoute(
                r.route_id, _utc(r.received_at), json.loads(r.request_json), json.loads(r.response_json)
            )
            for r in rows
            if r.response_json
        }
        return [DriverState(d, positions.get(d), routes.get(d)) for d in sorted(set(positions) | set(routes))]

    def driver(self, driver_id: str) -> DriverState | None:
        for state in self.fleet():
            if state.driver_id == driver_id:
                return state
        return None

    def recent_requests(self, limit: int, driver_id: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` route requests (newest first), without their request and answer bodies."""
        query = select(*LIST_COLUMNS).order_by(RouteRequestLog.received_at.desc()).limit(limit)
        if driver_id is not None:
            query = query.where(RouteRequestLog.driver_id == driver_id)
        with self.sessions() as session:
            rows = session.execute(query).all()
        return [_summary(r) for r in rows]

    def request_detail(self, route_id: str) -> dict[str, Any] | None:
        """One logged request: the summary plus the request and answer bodies as stored."""
        with self.sessions() as session:
            row = session.get(RouteRequestLog, route_id)
            if row is None:
                return None
            out = _summary(row)
            out["request"] = json.loads(row.request_json)
            out["response"] = json.loads(row.response_json) if row.response_json else None
        return out

    def workers_seen(self, since: datetime, limit: int = 500) -> list[str]:
        """Distinct ``served_by.worker`` of the answers computed (cache misses) since ``since``."""
        with self.sessions() as session:
            bodies = session.scalars(
                select(RouteRequestLog.response_json)
                .where(RouteRequestLog.received_at >= since, RouteRequestLog.status == 200,
                       RouteRequestLog.cache == "miss")
                .order_by(RouteRequestLog.received_at.desc()).limit(limit)
            ).all()  # fmt: skip
        workers = {json.loads(b).get("served_by", {}).get("worker") for b in bodies if b}
        return sorted(w for w in workers if w)


def _summary(row: Any) -> dict[str, Any]:
    return {
        "route_id": row.route_id, "driver_id": row.driver_id, "received_at": _iso(row.received_at),
        "status": row.status, "error_kind": row.error_kind, "cache": row.cache, "n_stops": row.n_stops,
        "total_duration_s": row.total_duration_s,
        "timings_ms": json.loads(row.timings_json) if row.timings_json else None,
        "versions": {"graph": row.graph_version, "traffic_epoch": row.traffic_epoch, "model": row.model_version,
                     "backend": row.backend},
    }  # fmt: skip
