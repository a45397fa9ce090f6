"""The admin UI's read queries over the request log, on SQLite and on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from graph_store.repository import MapRepository
from routing_api.admin.queries import AdminQueries
from routing_api.request_log import RequestLog

NOW = datetime.now(UTC)


def _request(driver: str, stops: list[str]) -> dict[str, Any]:
    return {"driver_id": driver, "start": {"lat": 60.17, "lon": 24.94}, "end": "return",
            "stops": [{"id": s, "lat": 60.171, "lon": 24.941, "service_s": 60.0, "window": None} for s in stops]}  # fmt: skip


def _answer(route_id: str, driver: str, stops: list[str], worker: str, cache: str = "miss") -> dict[str, Any]:
    return {
        "route_id": route_id, "driver_id": driver, "order": stops, "cache": cache,
        "stops": [{"id": s, "arrival": (NOW + timedelta(minutes=5 * k)).isoformat(),
                   "departure": (NOW + timedelta(minutes=5 * k + 1)).isoformat(), "late_s": 0.0}
                  for k, s in enumerate(stops, start=1)],
        "legs": [], "total_duration_s": 600.0, "versions": {"graph": 1, "traffic_epoch": 3, "model": "m", "backend": "b"},
        "served_by": {"worker": worker, "batch_size": 2, "backend": "b"},
        "timings_ms": {"ingest": 1.0, "queue_wait": 2.0, "inference": 3.0, "search": 4.0, "post": 5.0, "total": 15.0},
    }  # fmt: skip


def _log(log: RequestLog, route_id: str, driver: str, stops: list[str], worker: str, at: datetime,
         cache: str = "miss", status: int = 200) -> None:  # fmt: skip
    log.record(route_id=route_id, driver_id=driver, received_at=at, request=_request(driver, stops),
               response=_answer(route_id, driver, stops, worker, cache) if status == 200 else None, status=status,
               error_kind=None if status == 200 else "outside_map")  # fmt: skip


def test_fleet_requests_and_workers(repository: MapRepository) -> None:
    log = RequestLog(repository.engine)
    _log(log, "r1", "van-a", ["a1", "a2"], "w1", NOW - timedelta(minutes=5))
    _log(log, "r2", "van-a", ["a1"], "w2", NOW - timedelta(seconds=30))  # van-a's current route
    _log(log, "r3", "van-a", ["a9"], "w9", NOW - timedelta(seconds=20), status=422)  # an error is not a route
    _log(log, "r4", "van-b", ["b1"], "w3", NOW - timedelta(seconds=10), cache="hit")  # a hit: no worker ran
    log.record_position("van-a", 60.1, 24.9, NOW - timedelta(seconds=40), None, None)
    log.record_position("van-a", 60.2, 24.8, NOW - timedelta(seconds=5), 7.5, 90.0)
    log.record_position("van-c", 60.3, 24.7, NOW - timedelta(seconds=50), None, None)
    log.flush()
    q = AdminQueries(repository.engine)

    fleet = {d.driver_id: d for d in q.fleet()}
    assert sorted(fleet) == ["van-a", "van-b", "van-c"]
    a = fleet["van-a"]
    assert a.route is not None and a.route.route_id == "r2" and a.route.request["stops"][0]["id"] == "a1"
    assert a.position is not None and (a.position["lat"], a.position["speed_mps"]) == (60.2, 7.5)
    assert a.position["timestamp"] == NOW - timedelta(seconds=5)
    assert fleet["van-c"].route is None and fleet["van-b"].position is None
    assert q.driver("van-b") is not None and q.driver("nobody") is None

    recent = q.recent_requests(3)
    assert [r["route_id"] for r in recent] == ["r4", "r3", "r2"]
    assert recent[1]["status"] == 422 and recent[1]["timings_ms"] is None and recent[1]["cache"] is None
    assert recent[2]["timings_ms"]["search"] == 4.0 and recent[2]["versions"]["traffic_epoch"] == 3
    assert [r["route_id"] for r in q.recent_requests(10, "van-a")] == ["r3", "r2", "r1"]
    detail = q.request_detail("r2")
    assert detail is not None and detail["response"]["served_by"]["worker"] == "w2"
    assert detail["request"]["driver_id"] == "van-a" and q.request_detail("nope") is None

    # workers that computed an answer (a miss) in the window
    assert q.workers_seen(NOW - timedelta(minutes=1)) == ["w2"]
    assert q.workers_seen(NOW - timedelta(minutes=10)) == ["w1", "w2"]
