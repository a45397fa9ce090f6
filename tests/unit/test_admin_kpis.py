"""Admin UI figures: histogram quantiles, the rolling KPI window over real Prometheus metrics, stop progress."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from routing_api.admin.kpis import KpiWindow, histogram_quantile
from routing_api.admin.queries import DriverRoute, on_time_status, route_progress
from routing_api.metrics import ServiceMetrics

INF = math.inf


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    bounds = (0.01, 0.1, 1.0, INF)
    # 10 observations <= 10 ms, 10 more in (10 ms, 100 ms], none slower
    counts = (10.0, 20.0, 20.0, 20.0)
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.01)
    assert histogram_quantile(0.25, bounds, counts) == pytest.approx(0.005)
    assert histogram_quantile(0.75, bounds, counts) == pytest.approx(0.01 + 0.09 * 0.5)
    assert histogram_quantile(1.0, bounds, counts) == pytest.approx(0.1)


def test_histogram_quantile_in_the_overflow_bucket_is_the_largest_bound() -> None:
    assert histogram_quantile(0.99, (0.01, 0.1, INF), (0.0, 1.0, 10.0)) == pytest.approx(0.1)


def test_histogram_quantile_of_nothing_is_none() -> None:
    assert histogram_quantile(0.5, (0.1, INF), (0.0, 0.0)) is None
    assert histogram_quantile(0.5, (), ()) is None


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _answer(m: ServiceMetrics, latency_s: float, cache: str, batch: int | None = None) -> None:
    """What the route path records for one answered request."""
    m.requests.labels(status="200").inc()
    m.request_latency.labels(endpoint="routes").observe(latency_s)
    m.cache.labels(result=cache).inc()
    if batch is not None:
        m.batch_size.observe(batch)


def test_kpi_window_rates_quantiles_cache_and_batches_over_the_window() -> None:
    m = ServiceMetrics()
    clock = Clock()
    window = KpiWindow(m, clock)  # first sample: nothing yet
    # 90 s ago (outside the window): 30 slow requests
    for _ in range(30):
        _answer(m, 2.0, "miss", 8)
    clock.t += 30
    window.sample()
    # then 60 s with 12 fast requests: 9 hits (no batch) and 3 misses in batches of 4
    for k in range(12):
        _answer(m, 0.004, "hit" if k < 9 else "miss", None if k < 9 else 4)
    m.requests.labels(status="422").inc()
    clock.t += 60
    window.sample()
    s = window.summary(60.0)
    assert s["span_s"] == pytest.approx(60.0)
    assert s["requests"] == 13 and s["errors"] == 1
    assert s["requests_per_s"] == pytest.approx(13 / 60, abs=1e-3)
    assert 2.5 < s["latency_p50_ms"] <= 5.0 and s["latency_p99_ms"] <= 5.0  # the slow ones are out of the window
    assert s["cache_lookups"] == 12 and s["cache_hit_ratio"] == pytest.approx(0.75)
    assert s["batches_reported"] == 3 and s["mean_batch_size"] == pytest.approx(4.0)
    assert s["total_requests"] == 43
    # a longer window takes the slow ones in
    assert window.summary(120.0)["latency_p99_ms"] > 1000


def test_kpi_window_with_no_traffic_says_none_not_zero_latency() -> None:
    clock = Clock()
    window = KpiWindow(ServiceMetrics(), clock)
    clock.t += 10
    window.sample()
    s = window.summary(60.0)
    assert s["requests_per_s"] == 0 and s["latency_p99_ms"] is None
    assert s["cache_hit_ratio"] is None and s["mean_batch_size"] is None


def test_kpi_series_counts_the_first_step_from_the_first_sample() -> None:
    m = ServiceMetrics()
    clock = Clock()
    window = KpiWindow(m, clock)
    clock.t += 4
    _answer(m, 0.02, "miss", 1)
    clock.t += 1
    window.sample()
    points = window.series(10.0, 600.0)
    assert len(points) == 1 and points[0]["t"] == 0 and points[0]["p50_ms"] is not None


def test_kpi_series_has_a_point_per_step_with_traffic() -> None:
    m = ServiceMetrics()
    clock = Clock()
    window = KpiWindow(m, clock)
    for step in range(6):  # 6 steps of 10 s; requests only in steps 2 and 5
        if step in (2, 5):
            for _ in range(5):
                _answer(m, 0.02, "miss", 1)
        clock.t += 10
        window.sample()
    points = window.series(10.0, 60.0)
    assert [p["t"] for p in points] == [-50, -40, -30, -20, -10, 0]
    with_traffic = [p for p in points if p["p50_ms"] is not None]
    assert [p["t"] for p in with_traffic] == [-30, 0]
    assert all(10 < p["p50_ms"] <= 25 and p["requests_per_s"] == pytest.approx(0.5) for p in with_traffic)


def _route(now: datetime) -> DriverRoute:
    def at(minutes: float) -> str:
        return (now + timedelta(minutes=minutes)).isoformat()

    request = {"start": {"lat": 60.17, "lon": 24.94}, "end": "return", "stops": [
        {"id": "a", "lat": 60.171, "lon": 24.941, "service_s": 60},
        {"id": "b", "lat": 60.172, "lon": 24.942, "service_s": 60,
         "window": {"earliest": at(-60), "latest": at(-30)}},
        {"id": "c", "lat": 60.173, "lon": 24.943, "service_s": 60},
    ]}  # fmt: skip
    response = {"stops": [
        {"id": "a", "arrival": at(-10), "departure": at(-9), "late_s": 0.0},
        {"id": "b", "arrival": at(5), "departure": at(6), "late_s": 2100.0},
        {"id": "c", "arrival": at(12), "departure": at(13), "late_s": 0.0},
    ]}  # fmt: skip
    return DriverRoute("r1", now - timedelta(minutes=15), request, response)


def test_route_progress_counts_passed_left_and_late_stops() -> None:
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    p = route_progress(_route(now), now)
    assert [(s["seq"], s["id"], s["passed"]) for s in p["stops"]] == [(1, "a", True), (2, "b", False), (3, "c", False)]
    assert p["stops"][1]["window"] is not None and p["stops"][1]["lat"] == 60.172
    assert (p["stops_total"], p["stops_left"], p["late_total"], p["late_left"]) == (3, 2, 1, 1)
    assert p["next_stop"] == "b" and p["next_eta"] == (now + timedelta(minutes=5)).isoformat()
    assert on_time_status(p) == "late"
    later = route_progress(_route(now), now + timedelta(minutes=7))
    assert later["stops_left"] == 1 and later["late_left"] == 0 and on_time_status(later) == "on time"
    done = route_progress(_route(now), now + timedelta(hours=1))
    assert done["stops_left"] == 0 and done["next_eta"] is None and on_time_status(done) == "done"
    assert on_time_status(None) == "no route"
