"""The fleet evaluator and check_task: hand-made cases worked out by hand, then properties."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing_core.fleet import (
    Break,
    FleetPlan,
    FleetProblem,
    FleetRoute,
    Job,
    Shipment,
    ShipmentStep,
    Step,
    TimeWindow,
    Vehicle,
    VehicleState,
    check_task,
    evaluate_plan,
)

# Five locations on a line, 100 s apart; 1 s of driving = 10 m.
POS = np.array([0, 100, 200, 300, 400])
DUR = np.abs(POS[:, None] - POS[None, :]).astype(float)
DIST = DUR * 10.0
DAY = TimeWindow(0, 10_000)


def van(vid: str = "v", **kw: object) -> Vehicle:
    args: dict[str, object] = {"start": 0, "end": 0, "shift": DAY, "capacity": (10,)}
    args.update(kw)
    return Vehicle(vid, **args)  # type: ignore[arg-type]


def problem(vehicles: list[Vehicle], jobs: list[Job] = (), shipments: list[Shipment] = (), states=()) -> FleetProblem:  # type: ignore[assignment]
    return FleetProblem(DUR, DIST, tuple(vehicles), tuple(jobs), tuple(shipments), tuple(states))


def J(jid: str) -> Step:
    return Step("job", jid)


def route(vid: str, *steps: Step) -> FleetRoute:
    return FleetRoute(vid, steps)


def codes(p: FleetProblem, plan: FleetPlan) -> set[str]:
    return {v.code for v in evaluate_plan(p, plan).violations}


# -- the schedule and the costs ------------------------------------------------------------


def test_schedule_defers_departure_pays_setup_and_costs() -> None:
    p = problem(
        [van(cost_per_km=1.0, fixed_cost=5.0)],
        [Job("a", 1, service_s=50, setup_s=20, windows=(TimeWindow(300, 1000),), delivery=(3,)), Job("b", 1)],
    )
    ev = evaluate_plan(p, FleetPlan((route("v", J("a"), J("b")),)))
    assert ev.feasible, ev.violations
    r = ev.routes[0]
    a, b = r.steps
    # leaves at 200 so as to arrive when the window opens; setup 20, service 50
    assert r.start_time == 200
    assert (a.arrival, a.waiting, a.setup_s, a.service_start, a.departure) == (300, 0, 20, 320, 370)
    assert r.initial_load == (3,) and a.load == (0,)
    # same location: no travel, no setup
    assert (b.arrival, b.setup_s, b.departure) == (370, 0, 370)
    assert r.end_time == 470 and r.working_s == 270 and r.driving_s == 200
    assert r.distance_m == 2000
    assert r.cost == pytest.approx(5 + 270 + 2)
    assert ev.cost == pytest.approx(r.cost) and ev.unassigned == 0


def test_waits_for_the_next_of_several_windows_and_breaks_wait_for_theirs() -> None:
    windows = (TimeWindow(0, 50), TimeWindow(500, 600))
    p = problem(
        [van(breaks=(Break("lunch", (TimeWindow(700, 800),), 30),))],
        [Job("x", 2, service_s=10), Job("a", 1, windows=windows, service_s=10)],
    )
    ev = evaluate_plan(p, FleetPlan((route("v", J("x"), J("a"), Step("break", "lunch")),)))
    assert ev.feasible, ev.violations
    x, a, lunch = ev.routes[0].steps
    assert x.arrival == 200 and x.departure == 210
    assert a.arrival == 310 and a.waiting == 190 and a.service_start == 500
    assert lunch.location == 1 and lunch.arrival == 510 and lunch.service_start == 700 and lunch.departure == 730
    assert ev.routes[0].end_time == 830


def test_unused_vehicle_costs_nothing_and_needs_no_break() -> None:
    p = problem([van(fixed_cost=100, breaks=(Break("b", (), 10),)), van("w")], [Job("a", 1)])
    ev = evaluate_plan(p, FleetPlan((route("w", J("a")),)))
    assert ev.feasible and ev.routes[0].cost == 0
    assert ev.routes[1].cost == 200  # 100 s out and back


def test_open_end_and_no_start() -> None:
    p = problem([van(start=None, end=None)], [Job("a", 3, setup_s=5, service_s=10), Job("b", 4)])
    r = evaluate_plan(p, FleetPlan((route("v", J("a"), J("b")),))).routes[0]
    assert r.start_time == 0 and r.steps[0].arrival == 0 and r.steps[0].setup_s == 5
    assert r.end_time == 115 and r.working_s == 115 and r.driving_s == 100


def test_state_starts_from_position_with_load_on_board() -> None:
    p = problem(
        [van()],
        [Job("done", 1), Job("a", 2, delivery=(4,)), Job("b", 3)],
        states=[VehicleState("v", 4, 1000, done=("done",), locked=("b",), load_on_board=(4,))],
    )
    ev = evaluate_plan(p, FleetPlan((route("v", J("b"), J("a")),)))
    assert ev.feasible, ev.violations
    b, a = ev.routes[0].steps
    assert b.arrival == 1100 and a.arrival == 1200 and a.load == (0,)
    assert ev.routes[0].initial_load == (4,)


# -- one test per violation code -----------------------------------------------------------


def test_capacity() -> None:
    p = problem(
        [van(capacity=(5,))], [Job("a", 1, delivery=(3,)), Job("b", 2, delivery=(3,)), Job("c", 3, pickup=(9,))]
    )
    ev = evaluate_plan(p, FleetPlan((route("v", J("a"), J("b")),), ("c",)))
    assert [(v.code, v.step) for v in ev.violations] == [("capacity", None)]
    ev = evaluate_plan(p, FleetPlan((route("v", J("c")),), ("a", "b")))
    assert [(v.code, v.step, v.task_id) for v in ev.violations] == [("capacity", 0, "c")]


def test_capacity_negative_load_with_a_state() -> None:
    p = problem([van()], [Job("a", 1, delivery=(2,))], states=[VehicleState("v", 0, 0, load_on_board=(1,))])
    assert codes(p, FleetPlan((route("v", J("a")),))) == {"capacity"}


def test_time_window() -> None:
    p = problem([van()], [Job("a", 3, windows=(TimeWindow(0, 250),))])
    ev = evaluate_plan(p, FleetPlan((route("v", J("a")),)))
    (v,) = ev.violations
    assert (v.code, v.step, v.task_id) == ("time_window", 0, "a")
    assert ev.routes[0].steps[0].lateness == 50


def test_shift_end_and_start() -> None:
    p = problem([van(shift=TimeWindow(0, 500))], [Job("a", 3)])
    assert codes(p, FleetPlan((route("v", J("a")),))) == {"shift"}  # back at 600
    p = problem([van(shift=TimeWindow(100, 5000))], [Job("a", 0)], states=[VehicleState("v", 0, 50)])
    assert codes(p, FleetPlan((route("v", J("a")),))) == {"shift"}  # under way before the shift opens


def test_skills() -> None:
    p = problem([van(skills=frozenset({"cold"}))], [Job("a", 1, skills=frozenset({"cold", "adr"}))])
    assert codes(p, FleetPlan((route("v", J("a")),))) == {"skills"}


def test_max_working_time_counts_waiting_and_service() -> None:
    p = problem(
        [van(max_working_time_s=250)], [Job("a", 1, service_s=30), Job("b", 1, windows=(TimeWindow(500, 600),))]
    )
    # 100 drive + 30 service, b starts at 500 (the vehicle left at 0): working 600 - 0
    assert codes(p, FleetPlan((route("v", J("a"), J("b")),))) == {"max_working_time"}
    assert codes(p, FleetPlan((route("v", J("b")),), ("a",))) == set()  # leaves at 400, back at 600


def test_max_tasks() -> None:
    p = problem([van(max_tasks=1)], [Job("a", 1), Job("b", 2)])
    assert codes(p, FleetPlan((route("v", J("a"), J("b")),))) == {"max_tasks"}


def test_break_missing_and_outside_its_window() -> None:
    brk = Break("lunch", (TimeWindow(0, 150),), 30)
    p = problem([van(breaks=(brk,))], [Job("a", 2)])
    ev = evaluate_plan(p, FleetPlan((route("v", J("a")),)))
    assert [(v.code, v.task_id) for v in ev.violations] == [("break", "lunch")]
    ev = evaluate_plan(p, FleetPlan((route("v", J("a"), Step("break", "lunch")),)))
    assert [(v.code, v.step) for v in ev.violations] == [("break", 1)]
    assert codes(p, FleetPlan((route("v", Step("break", "lunch"), J("a")),))) == set()


SHIP = Shipment("s", ShipmentStep(1), ShipmentStep(3), amount=(2,), max_lag_s=250)


def test_shipment_order_and_load() -> None:
    p = problem([van()], shipments=[SHIP])
    ok = evaluate_plan(p, FleetPlan((route("v", Step("pickup", "s"), Step("delivery", "s")),)))
    assert ok.feasible and [s.load for s in ok.routes[0].steps] == [(2,), (0,)]
    bad = codes(p, FleetPlan((route("v", Step("delivery", "s"), Step("pickup", "s")),)))
    assert "shipment_order" in bad


def test_shipment_split() -> None:
    p = problem([van(), van("w")], shipments=[SHIP])
    assert "shipment_split" in codes(p, FleetPlan((route("v", Step("pickup", "s")), route("w", Step("delivery", "s")))))
    assert "shipment_split" in codes(p, FleetPlan((route("v", Step("pickup", "s")),)))


def test_max_lag() -> None:
    p = problem([van()], [Job("far", 4)], shipments=[SHIP])
    plan = FleetPlan((route("v", Step("pickup", "s"), J("far"), Step("delivery", "s")),))
    assert codes(p, plan) == {"max_lag"}  # 1 -> 4 -> 3: 400 s on board


def test_locked_prefix() -> None:
    p = problem([van()], [Job("a", 1), Job("b", 2)], states=[VehicleState("v", 0, 0, locked=("a",))])
    assert codes(p, FleetPlan((route("v", J("b"), J("a")),))) == {"locked_prefix"}
    assert codes(p, FleetPlan((), ("a", "b"))) == {"locked_prefix"}
    assert codes(p, FleetPlan((route("v", J("a"), J("b")),))) == set()


def test_unknown_and_duplicate_task_and_vehicle() -> None:
    p = problem([van(), van("w")], [Job("a", 1), Job("b", 2)])
    assert codes(p, FleetPlan((route("v", J("a"), J("zz")),), ("b",))) == {"unknown_task"}
    assert codes(p, FleetPlan((route("v", J("a"), Step("pickup", "b")),), ("b",))) == {"unknown_task"}
    assert codes(p, FleetPlan((route("v", J("a")),), ("b", "nope"))) == {"unknown_task"}
    assert codes(p, FleetPlan((route("v", J("a"), J("a")),), ("b",))) == {"duplicate_task"}
    assert codes(p, FleetPlan((route("v", J("a")), route("w", J("a"))), ("b",))) == {"duplicate_task"}
    assert codes(p, FleetPlan((route("v", J("a"), J("b")),), ("b",))) == {"duplicate_task"}
    assert codes(p, FleetPlan((route("x", J("a")),), ("a", "b"))) == {"unknown_vehicle"}
    assert codes(p, FleetPlan((route("v", J("a")), route("v", J("b"))))) == {"duplicate_vehicle", "task_missing"}


def test_task_missing_and_done_task_planned() -> None:
    p = problem([van()], [Job("a", 1), Job("b", 2)], states=[VehicleState("v", 0, 0, done=("a",))])
    assert codes(p, FleetPlan()) == {"task_missing"}
    assert codes(p, FleetPlan((), ("b",))) == set()  # a done task needs no listing
    assert codes(p, FleetPlan((route("v", J("a")),), ("b",))) == {"done_task_planned"}
    ev = evaluate_plan(p, FleetPlan((), ("b",)))
    assert ev.unassigned == 1


def test_unassigned_priority_total() -> None:
    p = problem([van()], [Job("a", 1, priority=7), Job("b", 2, priority=5)])
    ev = evaluate_plan(p, FleetPlan((), ("a", "b")))
    assert ev.feasible and ev.unassigned == 2 and ev.unassigned_priority == 12


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TimeWindow(5, 1), "TimeWindow.end"),
        (lambda: Job("a", 0, priority=101), "Job.priority"),
        (lambda: Job("a", 0, service_s=-1), "Job.service_s"),
        (lambda: Vehicle("v", 0, 0, DAY, (1,), max_tasks=-1), "Vehicle.max_tasks"),
        (lambda: Step("walk", "a"), "Step.kind"),
        (lambda: problem([van(), van()]), "vehicles ids"),
        (lambda: problem([van(), van("w", capacity=(1, 2))]), "capacity"),
        (lambda: problem([van()], [Job("a", 9)]), "location"),
        (lambda: problem([van()], [Job("a", 1, delivery=(1, 1))]), "delivery"),
        (lambda: problem([van()], [Job("a", 1), Job("a", 2)]), "jobs ids"),
        (lambda: problem([van()], [Job("s", 1)], [SHIP]), "shipments ids"),
        (lambda: problem([van()], states=[VehicleState("x", 0, 0)]), "vehicle_id"),
        (lambda: FleetProblem(np.zeros((2, 3)), None, ()), "durations"),
        (lambda: FleetProblem(DUR, np.zeros((2, 2)), ()), "distances"),
    ],
)
def test_validation_names_the_field(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        build()


# -- one test per check_task reason ----------------------------------------------------------


def test_check_task_feasible_alone() -> None:
    p = problem([van()], [Job("a", 2, windows=(TimeWindow(0, 300),))])
    assert check_task(p, "a") == []


def test_reason_no_vehicle_with_skills() -> None:
    p = problem([van(), van("w", skills=frozenset({"x"}))], [Job("a", 1, skills=frozenset({"y"}))])
    assert check_task(p, "a") == ["NO_VEHICLE_WITH_SKILLS"]


def test_reason_demand_exceeds_capacity() -> None:
    p = problem([van(capacity=(1,))], shipments=[SHIP])
    assert check_task(p, "s") == ["DEMAND_EXCEEDS_CAPACITY"]


def test_reason_time_window_unreachable() -> None:
    p = problem([van(shift=TimeWindow(100, 10_000))], [Job("a", 3, windows=(TimeWindow(0, 350),))])
    assert check_task(p, "a") == ["TIME_WINDOW_UNREACHABLE"]
    # from a state far away and late
    p = problem([van()], [Job("a", 1, windows=(TimeWindow(0, 500),))], states=[VehicleState("v", 4, 300)])
    assert check_task(p, "a") == ["TIME_WINDOW_UNREACHABLE"]


def test_reason_shift_too_short() -> None:
    p = problem([van(shift=TimeWindow(0, 700))], [Job("a", 3, service_s=200)])
    assert check_task(p, "a") == ["SHIFT_TOO_SHORT"]  # reached at 300, served until 500, home at 800


def test_reason_working_time_limit() -> None:
    p = problem([van(max_working_time_s=500)], [Job("a", 3)])
    assert check_task(p, "a") == ["WORKING_TIME_LIMIT"]


def test_reason_max_tasks_and_locked_prefix_counts() -> None:
    p = problem([van(max_tasks=1)], [Job("a", 1), Job("b", 2)], states=[VehicleState("v", 0, 0, locked=("a",))])
    assert check_task(p, "b") == ["MAX_TASKS_REACHED"]
    assert check_task(p, "a") == []


def test_check_task_takes_the_best_vehicle_and_places_breaks() -> None:
    brk = Break("lunch", (TimeWindow(250, 260),), 100)
    p = problem([van(shift=TimeWindow(0, 650), breaks=(brk,)), van("w", capacity=(0,))], [Job("a", 1, delivery=(1,))])
    # v: 0 -> 1 (100), back at 200, lunch waits till 250 -> 350: fine within 650
    assert check_task(p, "a") == []
    p2 = problem([van(shift=TimeWindow(0, 300), breaks=(brk,))], [Job("a", 1)])
    assert check_task(p2, "a") == ["SHIFT_TOO_SHORT"]
    with pytest.raises(KeyError):
        check_task(p, "zz")


# -- speed -------------------------------------------------------------------------------------


def test_hundred_jobs_evaluate_fast() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 5000, size=(121, 2))
    d = np.abs(pts[:, None, :] - pts[None, :, :]).sum(-1)
    vehicles = tuple(Vehicle(f"v{k}", 0, 0, TimeWindow(0, 1e6), (100,), breaks=(Break("b", (), 60),)) for k in range(5))
    jobs = tuple(Job(f"j{i}", i, service_s=60, delivery=(1,), windows=(TimeWindow(0, 1e5),)) for i in range(1, 121))
    p = FleetProblem(d, d, vehicles, jobs)
    routes = tuple(
        FleetRoute(f"v{k}", (*(Step("job", f"j{i}") for i in range(1 + 20 * k, 21 + 20 * k)), Step("break", "b")))
        for k in range(5)
    )
    plan = FleetPlan(routes, tuple(f"j{i}" for i in range(101, 121)))
    evaluate_plan(p, plan)
    t0 = time.perf_counter()
    ev = evaluate_plan(p, plan)
    assert time.perf_counter() - t0 < 0.05
    assert ev.feasible, ev.violations[:3]


# -- properties on random small problems and plans -------------------------------------------

GRID = st.tuples(st.integers(0, 3), st.integers(0, 3))


def windows_st(horizon: int) -> st.SearchStrategy[tuple[TimeWindow, ...]]:
    one = st.tuples(st.integers(0, horizon), st.integers(0, horizon)).map(lambda ab: TimeWindow(min(ab), max(ab)))
    return st.lists(one, max_size=2).map(tuple)


@st.composite
def problems_and_plans(draw: st.DrawFn, setup: bool = True) -> tuple[FleetProblem, FleetPlan]:
    n_loc = 5
    pts = np.array(draw(st.lists(GRID, min_size=n_loc, max_size=n_loc)))
    dur = (np.abs(pts[:, None, :] - pts[None, :, :]).sum(-1) * 60).astype(float)
    loc = st.integers(0, n_loc - 1)
    skills = st.sampled_from([frozenset(), frozenset({"a"})])
    vskills = st.sampled_from([frozenset({"a"}), frozenset({"a"}), frozenset()])
    horizon = 3000
    vehicles = []
    for k in range(draw(st.integers(1, 2))):
        brks = draw(
            st.lists(
                st.builds(Break, id=st.just("b"), windows=windows_st(horizon), duration_s=st.integers(0, 60)),
                max_size=1,
            )
        )
        vehicles.append(
            Vehicle(
                f"v{k}", draw(st.none() | loc), draw(st.none() | loc), TimeWindow(0, draw(st.integers(600, horizon))),
                (draw(st.integers(0, 10)),), draw(vskills), tuple(brks),
                draw(st.none() | st.integers(200, 3000)), draw(st.none() | st.integers(0, 6)),
            )
        )  # fmt: skip
    amt = st.integers(0, 3).map(lambda x: (x,))
    sset = st.integers(0, 30) if setup else st.just(0)
    jobs = [
        Job(f"j{i}", draw(loc), draw(st.integers(0, 60)), draw(sset), draw(amt), draw(amt), draw(skills),
            draw(st.integers(0, 100)), draw(windows_st(horizon)))
        for i in range(draw(st.integers(0, 5)))
    ]  # fmt: skip
    ships = [
        Shipment(f"s{i}", ShipmentStep(draw(loc), draw(st.integers(0, 60)), draw(sset), draw(windows_st(horizon))),
                 ShipmentStep(draw(loc), draw(st.integers(0, 60)), draw(sset), draw(windows_st(horizon))),
                 draw(amt), draw(skills), 0, draw(st.none() | st.integers(0, 1500)))
        for i in range(draw(st.integers(0, 2)))
    ]  # fmt: skip
    p = FleetProblem(dur, dur * 10, tuple(vehicles), tuple(jobs), tuple(ships))
    routes: dict[str, list[Step]] = {v.id: [] for v in vehicles}
    unassigned = []
    targets = st.sampled_from([*routes, None])
    for j in jobs:
        where = draw(targets)
        if where is None:
            unassigned.append(j.id)
        else:
            r = routes[where]
            r.insert(draw(st.integers(0, len(r))), Step("job", j.id))
    for s in ships:
        where = draw(targets)
        if where is None:
            unassigned.append(s.id)
        else:
            r = routes[where]
            i = draw(st.integers(0, len(r)))
            r.insert(i, Step("pickup", s.id))
            r.insert(draw(st.integers(i + 1, len(r))), Step("delivery", s.id))
    for v in vehicles:
        r = routes[v.id]
        keep = draw(st.integers(0, 4)) > 0  # mostly present
        if v.breaks and keep:
            r.insert(draw(st.integers(0, len(r))), Step("break", "b"))
    plan = FleetPlan(tuple(FleetRoute(vid, tuple(r)) for vid, r in routes.items()), tuple(unassigned))
    return p, plan


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(problems_and_plans())
def test_schedule_follows_its_own_definitions(case: tuple[FleetProblem, FleetPlan]) -> None:
    p, plan = case
    ev = evaluate_plan(p, plan)
    for r in ev.routes:
        v = p.vehicle_by_id[r.vehicle_id]
        prev_loc, prev_dep = v.start, r.start_time
        for s in r.steps:
            travel = DUR_OF(p, prev_loc, s.location)
            assert s.arrival == pytest.approx(prev_dep + travel)
            assert s.waiting >= 0 and s.setup_s >= 0 and s.lateness >= 0
            assert s.service_start == pytest.approx(s.arrival + s.waiting + s.setup_s)
            assert s.departure == pytest.approx(s.service_start + s.service_s)
            prev_loc, prev_dep = s.location, s.departure
        if r.steps:
            back = DUR_OF(p, prev_loc, v.end) if v.end is not None else 0.0
            assert r.end_time == pytest.approx(prev_dep + back)
            assert r.working_s == pytest.approx(r.end_time - r.start_time)
    assert ev.feasible == (not ev.violations)


def DUR_OF(p: FleetProblem, a: int | None, b: int | None) -> float:
    return 0.0 if a is None or b is None else float(p.durations[a, b])


def reference_check(p: FleetProblem, plan: FleetPlan) -> None:
    """A straightforward re-statement of every constraint, for plans the evaluator accepts."""
    seen: list[str] = []
    for r in plan.routes:
        seen += [s.id for s in r.steps if s.kind != "break" and (s.kind != "delivery")]
    seen += list(plan.unassigned)
    assert sorted(seen) == sorted(p.task_ids)
    for r in plan.routes:
        if not r.steps:
            continue
        v = p.vehicle_by_id[r.vehicle_id]
        cap = v.capacity[0]
        load = sum(p.job_by_id[s.id].delivery[0] for s in r.steps if s.kind == "job")
        assert 0 <= load <= cap
        # walk the route: leave at the shift start; waiting before the first step is excused below
        t, here, first_start = float(v.shift.start), v.start, None
        picked: dict[str, float] = {}
        tasks = 0
        for s in r.steps:
            if s.kind == "break":
                b = next(b for b in v.breaks if b.id == s.id)
                start = next((max(t, w.start) for w in b.windows if t <= w.end), None) if b.windows else t
                assert start is not None, "break outside its windows"
                first_start = start if first_start is None else first_start
                t = start + b.duration_s
                continue
            tasks += 1
            if s.kind == "job":
                job = p.job_by_id[s.id]
                spot, setup, service, wins, need = job.location, job.setup_s, job.service_s, job.windows, job.skills
                load += job.pickup[0] - job.delivery[0]
            else:
                sh = p.shipment_by_id[s.id]
                part = sh.pickup if s.kind == "pickup" else sh.delivery
                spot, setup, service, wins, need = part.location, part.setup_s, part.service_s, part.windows, sh.skills
                load += sh.amount[0] if s.kind == "pickup" else -sh.amount[0]
            assert need <= v.skills
            assert 0 <= load <= cap
            t += DUR_OF(p, here, spot)
            if s.kind == "delivery":
                assert s.id in picked
                if sh.max_lag_s is not None:
                    assert t - picked[s.id] <= sh.max_lag_s + 1e-6
            start = next((max(t, w.start) for w in wins if t <= w.end), None) if wins else t
            assert start is not None, "late"
            if first_start is None:
                first_start = start - DUR_OF(p, v.start, spot)
            t = start + (setup if here != spot or here is None else 0) + service
            if s.kind == "pickup":
                picked[s.id] = t
            here = spot
        t += DUR_OF(p, here, v.end)
        assert t <= v.shift.end + 1e-6
        assert {b.id for b in v.breaks} <= {s.id for s in r.steps if s.kind == "break"}
        if v.max_tasks is not None:
            assert tasks <= v.max_tasks
        if v.max_working_time_s is not None:
            assert first_start is not None and t - first_start <= v.max_working_time_s + 1e-6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems_and_plans())
def test_accepted_plans_satisfy_every_constraint(case: tuple[FleetProblem, FleetPlan]) -> None:
    p, plan = case
    if evaluate_plan(p, plan).feasible:
        reference_check(p, plan)


# max_lag and max_working_time are not monotone (an earlier pickup, or an earlier first
# step, can lengthen them); with setup times removing a task can also delay the next one.
NON_MONOTONE = {"max_lag", "max_working_time"}


@FAST
@given(problems_and_plans(setup=False), st.data())
def test_removing_a_task_adds_no_violation_but_task_missing(
    case: tuple[FleetProblem, FleetPlan], data: st.DataObject
) -> None:
    p, plan = case
    routed = sorted({s.id for r in plan.routes for s in r.steps if s.kind != "break"})
    if not routed:
        return
    before = evaluate_plan(p, plan)
    gone = data.draw(st.sampled_from(routed))
    smaller = FleetPlan(
        tuple(
            FleetRoute(r.vehicle_id, tuple(s for s in r.steps if s.kind == "break" or s.id != gone))
            for r in plan.routes
        ),
        plan.unassigned,
    )
    after = evaluate_plan(p, smaller)

    def keys(ev: object) -> set[tuple[str, str | None, str | None]]:
        return {(v.code, v.vehicle_id, v.task_id) for v in ev.violations if v.code not in NON_MONOTONE}  # type: ignore[attr-defined]

    assert keys(after) - keys(before) <= {("task_missing", None, gone)}
    assert ("task_missing", None, gone) in keys(after)
    relisted = evaluate_plan(p, FleetPlan(smaller.routes, (*plan.unassigned, gone)))
    assert keys(relisted) <= keys(before)
