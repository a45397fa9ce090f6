"""The fleet solver (PyVRP engine + our evaluator): every constraint holds in the answer, what cannot
be served is unassigned with its reasons, the day under way keeps done and locked stops."""

from __future__ import annotations

import numpy as np
import pytest

from dispatch.solver import UnsupportedProblem, solve_fleet
from routing_core import fleet as F

HOUR = 3600.0


def _matrices(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 5000, (n, 2))
    dist = np.rint(np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1]))
    return dist / 10.0, dist  # 10 m/s


def _fleet(k: int = 3, capacity: int = 10) -> tuple[F.Vehicle, ...]:
    return tuple(F.Vehicle(f"van-{i}", 0, 0, F.TimeWindow(0, 8 * HOUR), (capacity,),
                           frozenset({"cold"}) if i == 0 else frozenset()) for i in range(k))  # fmt: skip


def _steps(route: F.FleetRoute) -> list[str]:
    return [s.id for s in route.steps]


def test_every_servable_order_is_planned_and_every_constraint_holds() -> None:
    dur, dist = _matrices(31)
    rng = np.random.default_rng(1)
    jobs = [F.Job(f"j{i}", i, service_s=120, delivery=(1,),
                  windows=(F.TimeWindow(float(rng.integers(0, 3)) * HOUR, float(rng.integers(4, 8)) * HOUR),),
                  skills=frozenset({"cold"}) if i == 5 else frozenset()) for i in range(1, 28)]  # fmt: skip
    jobs += [F.Job("needs-hazmat", 3, delivery=(1,), skills=frozenset({"hazmat"})), F.Job("too-big", 4, delivery=(50,))]
    ship = F.Shipment("s1", F.ShipmentStep(7, 60), F.ShipmentStep(9, 60), amount=(2,))
    problem = F.FleetProblem(dur, dist, _fleet(), tuple(jobs), (ship,))
    result = solve_fleet(problem, time_limit_s=0.5)
    assert result.evaluation.feasible, result.evaluation.violations
    assert set(result.plan.unassigned) == {"needs-hazmat", "too-big"}
    assert result.reasons == {"needs-hazmat": ["NO_VEHICLE_WITH_SKILLS"], "too-big": ["DEMAND_EXCEEDS_CAPACITY"]}
    routes = {r.vehicle_id: _steps(r) for r in result.plan.routes}
    assert "j5" in routes["van-0"]  # the only van with the skill
    (with_ship,) = [s for s in routes.values() if "s1" in s]
    assert with_ship.count("s1") == 2
    planned = [t for s in routes.values() for t in s]
    assert sorted(set(planned)) == sorted([f"j{i}" for i in range(1, 28)] + ["s1"])


def test_competition_leaves_the_low_priority_order_out() -> None:
    dur, dist = _matrices(4, seed=2)
    van = (F.Vehicle("van-1", 0, 0, F.TimeWindow(0, 8 * HOUR), (1,)),)
    jobs = (F.Job("low", 1, delivery=(1,), priority=0), F.Job("high", 2, delivery=(1,), priority=90))
    result = solve_fleet(F.FleetProblem(dur, dist, van, jobs), time_limit_s=0.3)
    assert result.evaluation.feasible
    assert [_steps(r) for r in result.plan.routes] == [["high"]]
    assert result.reasons == {"low": ["COMPETITION"]}


def test_the_day_under_way_keeps_done_and_locked_stops() -> None:
    dur, dist = _matrices(12, seed=3)
    jobs = tuple(F.Job(f"j{i}", i, service_s=60, delivery=(1,)) for i in range(1, 12))
    state = F.VehicleState("van-0", position=5, time_s=2 * HOUR, done=("j1",), locked=("j2", "j3"),
                           load_on_board=(8,))  # fmt: skip
    problem = F.FleetProblem(dur, dist, _fleet(2), jobs, (), (state,))
    result = solve_fleet(problem, time_limit_s=0.3)
    assert result.evaluation.feasible, result.evaluation.violations
    routes = {r.vehicle_id: _steps(r) for r in result.plan.routes}
    assert routes["van-0"][:2] == ["j2", "j3"]
    planned = [t for s in routes.values() for t in s]
    assert "j1" not in planned and "j1" not in result.plan.unassigned
    assert sorted(planned) == sorted(f"j{i}" for i in range(2, 12))


def test_an_order_with_two_windows_is_served_in_the_one_it_can_reach() -> None:
    dur, dist = _matrices(3, seed=4)
    van = (F.Vehicle("van-1", 0, 0, F.TimeWindow(0, 8 * HOUR), (5,)),)
    job = F.Job("two-windows", 1, delivery=(1,), windows=(F.TimeWindow(0, 1), F.TimeWindow(HOUR, 2 * HOUR)))
    result = solve_fleet(F.FleetProblem(dur, dist, van, (job,)), time_limit_s=0.2)
    assert result.evaluation.feasible
    (route,) = result.evaluation.routes
    assert HOUR <= route.steps[0].service_start <= 2 * HOUR


def test_breaks_are_refused_not_ignored() -> None:
    dur, dist = _matrices(3)
    van = (F.Vehicle("van-1", 0, 0, F.TimeWindow(0, 8 * HOUR), (5,),
                     breaks=(F.Break("lunch", (F.TimeWindow(4 * HOUR, 5 * HOUR),), 1800),)),)  # fmt: skip
    with pytest.raises(UnsupportedProblem, match="breaks"):
        solve_fleet(F.FleetProblem(dur, dist, van, (F.Job("a", 1),)), time_limit_s=0.1)
