"""The fleet solver: a ``FleetProblem`` solved with PyVRP's iterated local search, checked by our
evaluator, and every order left out given its reasons.

PyVRP (MIT) is the engine: it handles capacities in several dimensions, time windows with waiting,
service times, shifts, a maximum route duration (our working-time limit: driving, service and
waiting), fixed and per-hour/per-km costs, pickups and deliveries, shipments (pickup before its
delivery on one route) and optional clients with prizes. What it lacks we add around it:

* **Skills**: each client gets a location of its own, and each distinct skill set of the fleet a
  routing profile in which the edges into clients it may not serve cost ``_FORBIDDEN``; any that
  slip through are taken out after the check.
* **Several time windows per order**: one client per window in a required-one-of group.
* **The day under way**: done orders are gone; a locked prefix is kept as it is and the solver
  plans the rest from where the prefix ends, with what is on board then.
* **Unassigned with reasons**: orders that no vehicle can serve alone (``check_task``) never reach
  the engine; every order is optional with a prize far above any route cost, so only what cannot
  fit is left out, and those orders get ``COMPETITION``.
* **Every answer is checked** by ``routing_core.fleet.evaluate_plan``; a task whose route violates a
  constraint is moved to the unassigned list (never a silent violation).

Not in this first version (refused with a clear error rather than ignored): breaks, ``max_tasks``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from routing_core import fleet as F

_FORBIDDEN = 10**9  # seconds / metres on an edge a vehicle may not take
_COST_SCALE = 1000  # PyVRP costs are integers: thousandths of a cost unit


class UnsupportedProblem(ValueError):
    """The problem uses a feature this solver does not handle yet; the message names it."""


@dataclass
class FleetResult:
    plan: F.FleetPlan
    evaluation: F.PlanEvaluation
    reasons: dict[str, list[str]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    engine: str = "pyvrp"


@dataclass
class _Item:
    """A task as the engine sees it: a client (job) or a shipment, with its task id."""

    task_id: str
    kind: str  # 'job' | 'shipment'


def solve_fleet(problem: F.FleetProblem, time_limit_s: float = 1.0, seed: int = 0) -> FleetResult:
    """Plan every vehicle's route (see the module's docstring)."""
    import pyvrp
    from pyvrp.stop import MaxRuntime

    started = time.perf_counter()
    for v in problem.vehicles:
        if v.breaks:
            raise UnsupportedProblem(f"vehicles[{v.id}].breaks: breaks are not supported by this solver yet")
        if v.max_tasks is not None:
            raise UnsupportedProblem(f"vehicles[{v.id}].max_tasks: not supported by this solver yet")
    states = {s.vehicle_id: s for s in problem.states}
    done = {t for s in problem.states for t in s.done}
    locked = {t for s in problem.states for t in s.locked}
    reasons: dict[str, list[str]] = {}
    open_jobs, open_ships = [], []
    for j in problem.jobs:
        if j.id in done or j.id in locked:
            continue
        why = F.check_task(problem, j.id)
        if why:
            reasons[j.id] = why
        else:
            open_jobs.append(j)
    for s in problem.shipments:
        if s.id in done or s.id in locked:
            continue
        why = F.check_task(problem, s.id)
        if why:
            reasons[s.id] = why
        else:
            open_ships.append(s)

    # Locations: one per vehicle start/end (and a free "anywhere" end for open routes), one per client window.
    dims = len(problem.vehicles[0].capacity) if problem.vehicles else 0
    loc_of: list[int] = []  # problem location per engine location (-1: the free end)
    depots, vehicle_types = [], []
    prefix: dict[str, tuple[list[F.Step], int, float, tuple[int, ...]]] = {}
    for v in problem.vehicles:
        steps, at, t, load = _locked_prefix(problem, v, states.get(v.id))
        prefix[v.id] = (steps, at, t, load)
    skill_sets = sorted({v.skills for v in problem.vehicles}, key=lambda s: sorted(s))
    for v in problem.vehicles:
        _, at, t, load = prefix[v.id]
        start = len(loc_of)
        loc_of.append(at if at >= 0 else -1)
        end = len(loc_of)
        loc_of.append(v.end if v.end is not None else -1)
        depots.append(pyvrp.Depot(location=start, name=f"{v.id}:start"))
        depots.append(pyvrp.Depot(location=end, name=f"{v.id}:end"))
        shift_left = v.shift.end - max(v.shift.start, t)
        working_left = (
            None if v.max_working_time_s is None else v.max_working_time_s - (t - v.shift.start if at >= 0 else 0)
        )
        duration_cap = shift_left if working_left is None else min(shift_left, working_left)
        vehicle_types.append(pyvrp.VehicleType(
            num_available=1, capacity=_amount(v.capacity, dims), start_depot=len(depots) - 2, end_depot=len(depots) - 1,
            fixed_cost=round(v.fixed_cost * _COST_SCALE), tw_early=int(max(v.shift.start, t)), tw_late=_clip(v.shift.end),
            shift_duration=_clip(max(0.0, duration_cap)), unit_distance_cost=round(v.cost_per_km * _COST_SCALE / 1000),
            unit_duration_cost=round(v.cost_per_hour * _COST_SCALE / 3600),
            profile=skill_sets.index(v.skills), initial_load=_amount(load, dims), name=v.id,
        ))  # fmt: skip
    big_prize = _prize_scale(problem)
    clients: list[pyvrp.Client] = []
    groups: list[list[int]] = []
    ships: list[pyvrp.Shipment] = []
    items: list[_Item] = []
    client_skills: list[frozenset[str]] = []
    for j in open_jobs:
        windows = j.windows or (F.TimeWindow(0.0, float(2**40)),)
        group = None
        if len(windows) > 1:
            group = len(groups)
            groups.append([])
        for w in windows:
            loc_of.append(j.location)
            clients.append(pyvrp.Client(
                location=len(loc_of) - 1, delivery=_amount(j.delivery, dims), pickup=_amount(j.pickup, dims),
                service_duration=round(j.service_s + j.setup_s), tw_early=_clip(w.start), tw_late=_clip(w.end),
                prize=big_prize + big_prize * j.priority // 100, required=False, group=group, name=j.id,
            ))  # fmt: skip
            client_skills.append(j.skills)
            items.append(_Item(j.id, "job"))
            if group is not None:
                groups[group].append(len(clients) - 1)
    ship_loc_skills = []
    for s in open_ships:
        p_loc = len(loc_of)
        loc_of.append(s.pickup.location)
        d_loc = len(loc_of)
        loc_of.append(s.delivery.location)
        pw = s.pickup.windows[0] if s.pickup.windows else F.TimeWindow(0.0, float(2**40))
        dw = s.delivery.windows[0] if s.delivery.windows else F.TimeWindow(0.0, float(2**40))
        ships.append(pyvrp.Shipment(
            pickup_location=p_loc, delivery_location=d_loc, pickup_tw_early=int(pw.start), pickup_tw_late=_clip(pw.end),
            pickup_service_duration=round(s.pickup.service_s + s.pickup.setup_s),
            delivery_tw_early=int(dw.start), delivery_tw_late=_clip(dw.end),
            delivery_service_duration=round(s.delivery.service_s + s.delivery.setup_s),
            amount=_amount(s.amount, dims), prize=big_prize + big_prize * s.priority // 100, required=False, name=s.id,
        ))  # fmt: skip
        ship_loc_skills += [(p_loc, s.skills), (d_loc, s.skills)]
    client_groups = [pyvrp.ClientGroup(clients=members, required=False) for members in groups]
    n_loc = len(loc_of)
    idx = np.asarray([max(i, 0) for i in loc_of])
    free = np.asarray([i < 0 for i in loc_of])
    dur = np.asarray(problem.durations, dtype=np.float64)[np.ix_(idx, idx)]
    dist = (np.asarray(problem.distances, dtype=np.float64) if problem.distances is not None
            else np.zeros_like(problem.durations, dtype=np.float64))[np.ix_(idx, idx)]  # fmt: skip
    for m in (dur, dist):
        m[free, :] = 0.0
        m[:, free] = 0.0
        np.fill_diagonal(m, 0.0)
    dur_i, dist_i = np.rint(dur).astype(np.int64), np.rint(dist).astype(np.int64)
    client_locs = np.arange(len(depots), len(depots) + len(clients))
    dur_ms, dist_ms = [], []
    for skills in skill_sets:
        d1, d2 = dur_i.copy(), dist_i.copy()
        barred = [int(loc) for loc, need in zip(client_locs, client_skills, strict=True) if not need <= skills]
        barred += [loc for loc, need in ship_loc_skills if not need <= skills]
        if barred:
            d1[:, barred] = _FORBIDDEN
            d2[:, barred] = _FORBIDDEN
            np.fill_diagonal(d1, 0)
            np.fill_diagonal(d2, 0)
        dur_ms.append(d1)
        dist_ms.append(d2)
    locations = [pyvrp.Location(x=0.0, y=0.0) for _ in range(n_loc)]
    data = pyvrp.ProblemData(locations, clients, depots, vehicle_types, dist_ms, dur_ms, client_groups, ships)
    plan_routes: list[F.FleetRoute] = []
    if clients or ships:
        # Penalties must be able to outgrow any prize, or the engine keeps an order by breaking a constraint.
        params = pyvrp.SolveParams(penalty=pyvrp.PenaltyParams(max_penalty=float(20 * 2 * big_prize)))
        result = pyvrp.solve(data, stop=MaxRuntime(max(0.01, time_limit_s - (time.perf_counter() - started))),
                             seed=seed, display=False, params=params)  # fmt: skip
        routes = result.best.routes()
    else:
        routes = []
    by_vehicle = {int(r.vehicle_type()): r for r in routes}
    served: set[str] = set()
    for k, v in enumerate(problem.vehicles):
        steps = list(prefix[v.id][0])
        r = by_vehicle.get(k)
        if r is not None:
            for act in r.schedule():
                steps.extend(_steps_of(act, data, items, len(depots), served))
        if steps:
            plan_routes.append(F.FleetRoute(v.id, tuple(steps)))
    open_ids = [j.id for j in open_jobs] + [s.id for s in open_ships]
    unassigned = [tid for tid in open_ids if tid not in served] + list(reasons)
    plan = F.FleetPlan(tuple(plan_routes), tuple(unassigned))
    plan, evaluation = _drop_violations(problem, plan, reasons)
    for tid in plan.unassigned:
        reasons.setdefault(tid, ["COMPETITION"])
    return FleetResult(plan, evaluation, reasons, time.perf_counter() - started)


def _clip(t: float) -> int:
    """A time for the engine: whole seconds, "never" (inf) as a far horizon."""
    return int(min(t, 2.0**50))


def _amount(values: tuple[int, ...], dims: int) -> list[int]:
    out = list(values) + [0] * (dims - len(values))
    return [int(v) for v in out[:dims]]


def _prize_scale(problem: F.FleetProblem) -> int:
    """A prize above what serving one more order can cost (a detour of two longest edges and a whole
    shift of waiting), so the engine leaves an order out only when it cannot fit; priorities raise it up
    to 2x."""
    dur = np.asarray(problem.durations, dtype=np.float64)
    dist = np.asarray(problem.distances if problem.distances is not None else np.zeros_like(dur), dtype=np.float64)
    per_s = max(v.cost_per_hour * _COST_SCALE / 3600 for v in problem.vehicles)
    per_m = max(v.cost_per_km * _COST_SCALE / 1000 for v in problem.vehicles)
    shift = max(v.shift.end - v.shift.start for v in problem.vehicles)
    shift = shift if np.isfinite(shift) else float(dur.sum())
    return int(2 * (float(dur.max(initial=0.0)) * per_s + float(dist.max(initial=0.0)) * per_m) + shift * per_s + 1)


def _locked_prefix(problem: F.FleetProblem, v: F.Vehicle, state: F.VehicleState | None
                   ) -> tuple[list[F.Step], int, float, tuple[int, ...]]:  # fmt: skip
    """The locked steps of a vehicle, and where (location), when and with what load the rest starts."""
    at = v.start if v.start is not None else -1
    t = v.shift.start
    load = tuple(0 for _ in v.capacity)
    if state is None:
        return [], at, t, load
    at, t, load = state.position, max(state.time_s, v.shift.start), tuple(state.load_on_board)
    if not state.locked:
        return [], at, t, load
    steps = [F.Step(_kind_of(problem, tid), tid) for tid in state.locked]
    probe = F.FleetProblem(problem.durations, problem.distances, (v,), problem.jobs, problem.shipments, (state,))
    ev = F.evaluate_plan(probe, F.FleetPlan((F.FleetRoute(v.id, tuple(steps)),), ()))
    last = ev.routes[0].steps[-1] if ev.routes and ev.routes[0].steps else None
    if last is not None:
        t = float(last.departure)
        at = int(last.location) if last.location is not None else at
        load = tuple(int(x) for x in last.load)
    return steps, at, t, load


def _kind_of(problem: F.FleetProblem, task_id: str) -> str:
    return "job" if any(j.id == task_id for j in problem.jobs) else "pickup"


def _steps_of(act: object, data: object, items: list[_Item], n_depots: int, served: set[str]) -> list[F.Step]:
    """Our steps for one scheduled PyVRP activity (``idx`` counts clients, or shipments, from 0)."""
    idx = int(act.idx)  # type: ignore[attr-defined]
    if act.is_client():  # type: ignore[attr-defined]
        it = items[idx]
        served.add(it.task_id)
        return [F.Step("job", it.task_id)]
    if act.is_pickup() or act.is_delivery():  # type: ignore[attr-defined]
        name = data.shipments()[idx].name  # type: ignore[attr-defined]
        served.add(name)
        return [F.Step("pickup" if act.is_pickup() else "delivery", name)]  # type: ignore[attr-defined]
    return []


def _drop_violations(problem: F.FleetProblem, plan: F.FleetPlan, reasons: dict[str, list[str]]
                     ) -> tuple[F.FleetPlan, F.PlanEvaluation]:  # fmt: skip
    """Evaluate; while a route breaks a constraint, take its offending tasks out (never the locked ones)."""
    locked = {t for s in problem.states for t in s.locked}
    for _ in range(50):
        ev = F.evaluate_plan(problem, plan)
        if ev.feasible:
            return plan, ev
        bad = {v.task_id for v in ev.violations if v.task_id and v.task_id not in locked}
        for v in ev.violations:  # a route-level violation: take out its least important open task
            route = next((r for r in plan.routes if r.vehicle_id == v.vehicle_id), None)
            if v.task_id is None and route is not None:
                open_ids = [s.id for s in route.steps if s.id not in locked and s.kind != "break"]
                if open_ids:
                    bad.add(min(reversed(open_ids), key=problem.priority))
        if not bad:
            return plan, ev
        routes = tuple(F.FleetRoute(r.vehicle_id, tuple(s for s in r.steps if s.id not in bad)) for r in plan.routes)
        plan = F.FleetPlan(tuple(r for r in routes if r.steps), tuple(plan.unassigned) + tuple(sorted(bad)))
    return plan, F.evaluate_plan(problem, plan)
