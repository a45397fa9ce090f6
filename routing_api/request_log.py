"""The request log (every route request and its answer) and driver positions, in SQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from graph_store.models import DriverPosition, RouteRequestLog


@dataclass(frozen=True)
class LoggedRoute:
    route_id: str
    driver_id: str
    received_at: datetime
    request: dict[str, Any]
    response: dict[str, Any] | None
    status: int


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class RequestLog:
    def __init__(self, engine: Engine) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def record(self, *, route_id: str, driver_id: str, received_at: datetime, request: dict[str, Any],
               response: dict[str, Any] | None, status: int, error_kind: str | None = None) -> None:  # fmt: skip
        resp = response or {}
        versions = resp.get("versions") or {}
        row = RouteRequestLog(
            route_id=route_id, driver_id=driver_id, received_at=_utc(received_at),
            request_json=json.dumps(request, default=str), response_json=json.dumps(response) if response else None,
            status=status, error_kind=error_kind, cache=resp.get("cache"), n_stops=len(request.get("stops", [])),
            total_duration_s=resp.get("total_duration_s"),
            timings_json=json.dumps(resp["timings_ms"]) if "timings_ms" in resp else None,
            graph_version=versions.get("graph"), traffic_epoch=versions.get("traffic_epoch"),
            model_version=versions.get("model"), backend=versions.get("backend"),
        )  # fmt: skip
        with self.sessions.begin() as session:
            session.add(row)

    def get(self, route_id: str) -> LoggedRoute | None:
        with self.sessions() as session:
            row = session.get(RouteRequestLog, route_id)
            if row is None:
                return None
            return LoggedRoute(row.route_id, row.driver_id, _utc(row.received_at), json.loads(row.request_json),
                               json.loads(row.response_json) if row.response_json else None, row.status)  # fmt: skip

    def record_position(self, driver_id: str, lat: float, lon: float, timestamp: datetime,
                        speed_mps: float | None, heading_deg: float | None) -> None:  # fmt: skip
        with self.sessions.begin() as session:
            session.add(DriverPosition(driver_id=driver_id, lat=lat, lon=lon, timestamp=_utc(timestamp),
                                       speed_mps=speed_mps, heading_deg=heading_deg,
                                       received_at=datetime.now(UTC)))  # fmt: skip

    def drivers(self) -> list[dict[str, Any]]:
        """Every driver seen: last position and latest successful route."""
        with self.sessions() as session:
            last_ping = (
                select(DriverPosition.driver_id, func.max(DriverPosition.id).label("pid"))
                .group_by(DriverPosition.driver_id).subquery()
            )  # fmt: skip
            positions = {
                p.driver_id: p
                for p in session.scalars(select(DriverPosition).join(last_ping, DriverPosition.id == last_ping.c.pid))
            }
            last_route = (
                select(RouteRequestLog.driver_id, func.max(RouteRequestLog.received_at).label("at"))
                .where(RouteRequestLog.status == 200).group_by(RouteRequestLog.driver_id).subquery()
            )  # fmt: skip
            routes = {
                r.driver_id: r
                for r in session.scalars(
                    select(RouteRequestLog).join(
                        last_route,
                        (RouteRequestLog.driver_id == last_route.c.driver_id)
                        & (RouteRequestLog.received_at == last_route.c.at),
                    )
                )
            }
        out = []
        for driver in sorted(set(positions) | set(routes)):
            p = positions.get(driver)
            r = routes.get(driver)
            out.append({
                "driver_id": driver,
                "last_position": None if p is None else {
                    "lat": p.lat, "lon": p.lon, "timestamp": _utc(p.timestamp),
                    "speed_mps": p.speed_mps, "heading_deg": p.heading_deg},
                "current_route_id": r.route_id if r else None,
                "route_received_at": _utc(r.received_at) if r else None,
            })  # fmt: skip
        return out
