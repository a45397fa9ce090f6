"""The edge fallback's local planner: straight-line estimate, the real search, provisional routes."""

from __future__ import annotations

import numpy as np
import pytest

from driver_app_stub.edge import DETOUR_FACTOR, SPEED_KPH, LocalPlanner, LocalStop, travel_time_matrix
from driver_app_stub.route_path import haversine_m


def test_travel_time_estimate_is_straight_line_times_detour_over_speed() -> None:
    pts = np.asarray([[60.17, 24.93], [60.18, 24.95], [60.16, 24.94]])
    m = travel_time_matrix(pts)
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 0) and np.allclose(m, m.T)
    expected = haversine_m(60.17, 24.93, 60.18, 24.95) * DETOUR_FACTOR / (SPEED_KPH / 3.6)
    assert m[0, 1] == pytest.approx(expected, rel=1e-9)
    assert travel_time_matrix(pts, speed_kph=60.0)[0, 1] == pytest.approx(expected / 2, rel=1e-9)


def test_plain_search_orders_stops_along_a_street_and_marks_the_route_provisional() -> None:
    planner = LocalPlanner(None, time_budget_ms=20.0)
    rng = np.random.default_rng(4)
    lons = 24.93 + np.sort(rng.random(12)) * 0.05
    shuffled = rng.permutation(12)
    stops = [LocalStop(f"s{i}", 60.17, float(lons[i]), service_s=30.0) for i in shuffled]
    route = planner.plan((60.17, 24.929), stops)
    assert route.provisional and not route.guided and "plain search" in planner.model_note
    # every stop once, in the only sensible order of an open route from the west end: west to east
    assert list(route.order) == [f"s{i}" for i in range(12)]
    assert [leg.to for leg in route.legs] == list(route.order)
    assert route.legs[0].points[0] == (60.17, 24.929)
    for prev, leg in zip(route.legs, route.legs[1:], strict=False):
        assert leg.points[0] == prev.points[1]
    # arrivals: cumulative estimated legs plus 30 s of service at each earlier stop
    legs = np.asarray([leg.duration_s for leg in route.legs])
    assert np.allclose(route.arrival_s, np.cumsum(legs) + 30.0 * np.arange(12))
    assert np.allclose(np.asarray(route.departure_s) - route.arrival_s, 30.0)


def test_no_stops_and_bad_parameters() -> None:
    assert LocalPlanner(None).plan((60.17, 24.93), []).order == ()
    with pytest.raises(ValueError, match="speed_kph"):
        LocalPlanner(None, speed_kph=0)
    with pytest.raises(ValueError, match="detour_factor"):
        LocalPlanner(None, detour_factor=0.5)


def test_missing_model_file_falls_back_to_the_plain_search(tmp_path) -> None:
    planner = LocalPlanner(tmp_path)
    route = planner.plan((60.17, 24.93), [LocalStop("a", 60.171, 24.931), LocalStop("b", 60.172, 24.932)])
    assert route.guided is False and sorted(route.order) == ["a", "b"] and "model.int8.onnx" in planner.model_note
