"""The fleet problem (many vehicles, jobs, shipments, a day under way) and its one evaluator.

Everything here is pure (numpy only). ``evaluate_plan`` is the only judge of feasibility:
a solver proposes, the evaluator decides.

Units and conventions:
    times are seconds from the plan's start; locations are integer indices into
    ``durations`` (seconds) and ``distances`` (metres); amounts are integer vectors with
    one entry per capacity dimension (``()`` means all zeros).
Schedule of one route (earliest feasible times):
    the vehicle leaves its origin (its ``start``, or its state's ``position``) no earlier
    than its origin time (shift start, or the state's ``time_s``), and as late as it can
    without delaying its first step (nobody leaves the depot to wait at a customer).
    Without a start the vehicle appears at its first location with no travel.
    At each task step: ``arrival`` = previous departure + travel; the task starts at the
    earliest time >= arrival inside one of its windows (several windows: wait for the next
    one to open; after the last one closes it starts at arrival and is late by the
    difference); ``waiting`` = task start - arrival; ``setup_s`` is paid when the location
    differs from the previous one (always on the first task of a vehicle without a start);
    ``service_start`` = task start + setup; ``departure`` = service start + service.
    So the windows constrain the start of a task (setup included), as in VROOM.
    A break happens where the vehicle is (no travel, no location change), waits for one
    of its windows and lasts its duration.
    The route ends on arrival at ``end`` (or at the last departure when ``end`` is None).
    Working time = end time - departure from the origin: driving, waiting, setup, service
    and breaks. With a state, only the rest of the day (from the state) is counted.
Loads:
    without a state the vehicle leaves with the deliveries of every job on its route;
    with a state it carries exactly ``load_on_board`` (which must hold the deliveries still
    to make). A job delivery unloads, a job pickup loads; a shipment's amount is on board
    from its pickup to its delivery. Any dimension above capacity, or below zero, is a
    ``capacity`` violation.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Violation codes reported by evaluate_plan.
CAPACITY = "capacity"
TIME_WINDOW = "time_window"
SHIFT = "shift"
SKILLS = "skills"
MAX_WORKING_TIME = "max_working_time"
MAX_TASKS = "max_tasks"
BREAK = "break"
SHIPMENT_ORDER = "shipment_order"
SHIPMENT_SPLIT = "shipment_split"
MAX_LAG = "max_lag"
LOCKED_PREFIX = "locked_prefix"
UNKNOWN_TASK = "unknown_task"
DUPLICATE_TASK = "duplicate_task"
TASK_MISSING = "task_missing"
DONE_TASK_PLANNED = "done_task_planned"
UNKNOWN_VEHICLE = "unknown_vehicle"
DUPLICATE_VEHICLE = "duplicate_vehicle"

# Reason codes reported by check_task, in the order they are tested.
NO_VEHICLE_WITH_SKILLS = "NO_VEHICLE_WITH_SKILLS"
DEMAND_EXCEEDS_CAPACITY = "DEMAND_EXCEEDS_CAPACITY"
TIME_WINDOW_UNREACHABLE = "TIME_WINDOW_UNREACHABLE"
SHIFT_TOO_SHORT = "SHIFT_TOO_SHORT"
WORKING_TIME_LIMIT = "WORKING_TIME_LIMIT"
MAX_TASKS_REACHED = "MAX_TASKS_REACHED"

STEP_KINDS = ("job", "pickup", "delivery", "break")
EPS = 1e-6


def _finite_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _amount(name: str, value: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(x) for x in value)
    if any(x < 0 for x in out):
        raise ValueError(f"{name} must be >= 0 in every dimension, got {out}")
    return out


def _windows(name: str, value: Iterable[TimeWindow]) -> tuple[TimeWindow, ...]:
    ws = tuple(value)
    for w in ws:
        if not isinstance(w, TimeWindow):
            raise ValueError(f"{name} must hold TimeWindow values, got {w!r}")
    return tuple(sorted(ws, key=lambda w: (w.start, w.end)))


@dataclass(frozen=True)
class TimeWindow:
    start: float
    end: float

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int | float) and math.isfinite(self.start)):
            raise ValueError(f"TimeWindow.start must be a finite number, got {self.start!r}")
        if not isinstance(self.end, int | float) or math.isnan(self.end) or self.end < self.start:
            raise ValueError(f"TimeWindow.end must be >= start ({self.start}), got {self.end!r}")


@dataclass(frozen=True)
class Break:
    id: str
    windows: tuple[TimeWindow, ...] = ()
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Break.id must be a non-empty string")
        object.__setattr__(self, "windows", _windows("Break.windows", self.windows))
        _finite_nonneg("Break.duration_s", self.duration_s)


@dataclass(frozen=True)
class Vehicle:
    id: str
    start: int | None
    end: int | None
    shift: TimeWindow
    capacity: tuple[int, ...]
    skills: frozenset[str] = frozenset()
    breaks: tuple[Break, ...] = ()
    max_working_time_s: float | None = None
    max_tasks: int | None = None
    fixed_cost: float = 0.0
    cost_per_hour: float = 3600.0
    cost_per_km: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Vehicle.id must be a non-empty string")
        if not isinstance(self.shift, TimeWindow):
            raise ValueError("Vehicle.shift must be a TimeWindow")
        object.__setattr__(self, "capacity", _amount("Vehicle.capacity", self.capacity))
        object.__setattr__(self, "skills", frozenset(self.skills))
        object.__setattr__(self, "breaks", tuple(self.breaks))
        ids = [b.id for b in self.breaks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Vehicle.breaks ids must be unique for vehicle {self.id!r}")
        if self.max_working_time_s is not None:
            _finite_nonneg("Vehicle.max_working_time_s", self.max_working_time_s)
        if self.max_tasks is not None and (not isinstance(self.max_tasks, int) or self.max_tasks < 0):
            raise ValueError(f"Vehicle.max_tasks must be an int >= 0, got {self.max_tasks!r}")
        for name in ("fixed_cost", "cost_per_hour", "cost_per_km"):
            _finite_nonneg(f"Vehicle.{name}", getattr(self, name))


@dataclass(frozen=True)
class Job:
    id: str
    location: int
    service_s: float = 0.0
    setup_s: float = 0.0
    delivery: tuple[int, ...] = ()
    pickup: tuple[int, ...] = ()
    skills: frozenset[str] = frozenset()
    priority: int = 0
    windows: tuple[TimeWindow, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Job.id must be a non-empty string")
        _finite_nonneg("Job.service_s", self.service_s)
        _finite_nonneg("Job.setup_s", self.setup_s)
        object.__setattr__(self, "delivery", _amount("Job.delivery", self.delivery))
        object.__setattr__(self, "pickup", _amount("Job.pickup", self.pickup))
        object.__setattr__(self, "skills", frozenset(self.skills))
        if not isinstance(self.priority, int) or not 0 <= self.priority <= 100:
            raise ValueError(f"Job.priority must be an int in 0..100, got {self.priority!r}")
        object.__setattr__(self, "windows", _windows("Job.windows", self.windows))


@dataclass(frozen=True)
class ShipmentStep:
    location: int
    service_s: float = 0.0
    setup_s: float = 0.0
    windows: tuple[TimeWindow, ...] = ()

    def __post_init__(self) -> None:
        _finite_nonneg("ShipmentStep.service_s", self.service_s)
        _finite_nonneg("ShipmentStep.setup_s", self.setup_s)
        object.__setattr__(self, "windows", _windows("ShipmentStep.windows", self.windows))


@dataclass(frozen=True)
class Shipment:
    id: str
    pickup: ShipmentStep
    delivery: ShipmentStep
    amount: tuple[int, ...] = ()
    skills: frozenset[str] = frozenset()
    priority: int = 0
    max_lag_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Shipment.id must be a non-empty string")
        for name in ("pickup", "delivery"):
            if not isinstance(getattr(self, name), ShipmentStep):
                raise ValueError(f"Shipment.{name} must be a ShipmentStep")
        object.__setattr__(self, "amount", _amount("Shipment.amount", self.amount))
        object.__setattr__(self, "skills", frozenset(self.skills))
        if not isinstance(self.priority, int) or not 0 <= self.priority <= 100:
            raise ValueError(f"Shipment.priority must be an int in 0..100, got {self.priority!r}")
        if self.max_lag_s is not None:
            _finite_nonneg("Shipment.max_lag_s", self.max_lag_s)


@dataclass(frozen=True)
class VehicleState:
    """A day under way: the vehicle is at ``position`` at ``time_s``.

    ``done`` tasks are gone; ``locked`` task ids must begin the vehicle's route in this
    order (breaks aside; a shipment id stands for its next step, so ``("s", "s")`` locks
    both its pickup and its delivery); ``load_on_board`` is everything on board now.
    """

    vehicle_id: str
    position: int
    time_s: float
    done: tuple[str, ...] = ()
    locked: tuple[str, ...] = ()
    load_on_board: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.time_s, int | float) and math.isfinite(self.time_s)):
            raise ValueError(f"VehicleState.time_s must be a finite number, got {self.time_s!r}")
        object.__setattr__(self, "done", tuple(self.done))
        object.__setattr__(self, "locked", tuple(self.locked))
        object.__setattr__(self, "load_on_board", _amount("VehicleState.load_on_board", self.load_on_board))


@dataclass(frozen=True)
class Step:
    kind: str
    id: str

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"Step.kind must be one of {STEP_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class FleetRoute:
    vehicle_id: str
    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))


@dataclass(frozen=True)
class FleetPlan:
    routes: tuple[FleetRoute, ...] = ()
    unassigned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(self.routes))
        object.__setattr__(self, "unassigned", tuple(self.unassigned))


@dataclass(frozen=True, eq=False)
class FleetProblem:
    durations: np.ndarray
    distances: np.ndarray | None
    vehicles: tuple[Vehicle, ...]
    jobs: tuple[Job, ...] = ()
    shipments: tuple[Shipment, ...] = ()
    states: tuple[VehicleState, ...] = ()
    vehicle_by_id: dict[str, Vehicle] = field(init=False, repr=False)
    job_by_id: dict[str, Job] = field(init=False, repr=False)
    shipment_by_id: dict[str, Shipment] = field(init=False, repr=False)
    state_by_vehicle: dict[str, VehicleState] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = np.asarray(self.durations, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 1:
            raise ValueError(f"durations must be a square [L, L] matrix, got shape {d.shape}")
        if not np.isfinite(d).all() or (d < 0).any():
            raise ValueError("durations must be finite and >= 0 seconds")
        object.__setattr__(self, "durations", d)
        n = d.shape[0]
        if self.distances is not None:
            m = np.asarray(self.distances, dtype=np.float64)
            if m.shape != d.shape:
                raise ValueError(f"distances must have the shape of durations {d.shape}, got {m.shape}")
            if not np.isfinite(m).all() or (m < 0).any():
                raise ValueError("distances must be finite and >= 0 metres")
            object.__setattr__(self, "distances", m)
        for name in ("vehicles", "jobs", "shipments", "states"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

        def loc(name: str, value: int | None, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int | np.integer) or not 0 <= value < n:
                raise ValueError(f"{name} must be a location index in 0..{n - 1}, got {value!r}")

        dims = {len(v.capacity) for v in self.vehicles}
        if len(dims) > 1:
            raise ValueError(f"vehicles capacity must have the same length for every vehicle, got {sorted(dims)}")
        dim = dims.pop() if dims else None

        def amount(name: str, value: tuple[int, ...]) -> None:
            if value and dim is not None and len(value) != dim:
                raise ValueError(f"{name} must have {dim} dimensions like vehicle capacity, got {len(value)}")

        vehicles: dict[str, Vehicle] = {}
        for v in self.vehicles:
            if v.id in vehicles:
                raise ValueError(f"vehicles ids must be unique, {v.id!r} repeats")
            loc(f"vehicle {v.id!r} start", v.start, allow_none=True)
            loc(f"vehicle {v.id!r} end", v.end, allow_none=True)
            vehicles[v.id] = v
        jobs: dict[str, Job] = {}
        shipments: dict[str, Shipment] = {}
        for j in self.jobs:
            if j.id in jobs:
                raise ValueError(f"jobs ids must be unique, {j.id!r} repeats")
            loc(f"job {j.id!r} location", j.location)
            amount(f"job {j.id!r} delivery", j.delivery)
            amount(f"job {j.id!r} pickup", j.pickup)
            jobs[j.id] = j
        for s in self.shipments:
            if s.id in shipments or s.id in jobs:
                raise ValueError(f"shipments ids must be unique among jobs and shipments, {s.id!r} repeats")
            loc(f"shipment {s.id!r} pickup.location", s.pickup.location)
            loc(f"shipment {s.id!r} delivery.location", s.delivery.location)
            amount(f"shipment {s.id!r} amount", s.amount)
            shipments[s.id] = s
        states: dict[str, VehicleState] = {}
        locked_by: dict[str, str] = {}
        for st in self.states:
            if st.vehicle_id not in vehicles:
                raise ValueError(f"states vehicle_id {st.vehicle_id!r} is not a vehicle")
            if st.vehicle_id in states:
                raise ValueError(f"states must hold one state per vehicle, {st.vehicle_id!r} repeats")
            loc(f"state {st.vehicle_id!r} position", st.position)
            amount(f"state {st.vehicle_id!r} load_on_board", st.load_on_board)
            for tid in st.done + st.locked:
                if tid not in jobs and tid not in shipments:
                    raise ValueError(f"state {st.vehicle_id!r} done/locked id {tid!r} is not a job or shipment")
            counts = Counter(st.locked)
            for tid, c in counts.items():
                if c > (2 if tid in shipments else 1):
                    raise ValueError(f"state {st.vehicle_id!r} locked lists {tid!r} too often")
                if tid in st.done:
                    raise ValueError(f"state {st.vehicle_id!r} locked id {tid!r} is also done")
                if locked_by.setdefault(tid, st.vehicle_id) != st.vehicle_id:
                    raise ValueError(f"states locked id {tid!r} is locked on two vehicles")
            states[st.vehicle_id] = st
        object.__setattr__(self, "vehicle_by_id", vehicles)
        object.__setattr__(self, "job_by_id", jobs)
        object.__setattr__(self, "shipment_by_id", shipments)
        object.__setattr__(self, "state_by_vehicle", states)

    @property
    def dims(self) -> int:
        """Number of capacity dimensions (0 without vehicles)."""
        return len(self.vehicles[0].capacity) if self.vehicles else 0

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(j.id for j in self.jobs) + tuple(s.id for s in self.shipments)

    @property
    def done_ids(self) -> frozenset[str]:
        return frozenset(t for st in self.states for t in st.done)

    def priority(self, task_id: str) -> int:
        task = self.job_by_id.get(task_id) or self.shipment_by_id.get(task_id)
        return task.priority if task is not None else 0


# -- evaluation results ------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    code: str
    vehicle_id: str | None = None  # the route it applies to (None: the plan)
    step: int | None = None  # index into the route's steps (None: the whole route)
    task_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class StepSchedule:
    kind: str
    id: str
    location: int | None
    arrival: float
    waiting: float
    setup_s: float
    service_start: float
    service_s: float
    departure: float
    lateness: float
    load: tuple[int, ...]  # after the step


@dataclass(frozen=True)
class RouteEvaluation:
    vehicle_id: str
    steps: tuple[StepSchedule, ...]
    start_time: float  # departure from the origin
    end_time: float  # arrival at the end (last departure without an end)
    initial_load: tuple[int, ...]
    distance_m: float
    driving_s: float
    waiting_s: float
    working_s: float
    cost: float
    violations: tuple[Violation, ...]


@dataclass(frozen=True)
class PlanEvaluation:
    routes: tuple[RouteEvaluation, ...]
    violations: tuple[Violation, ...]  # every violation, route ones included
    cost: float
    distance_m: float
    driving_s: float
    working_s: float  # the plan's duration: working time summed over routes
    unassigned: int
    unassigned_priority: int

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(v.code for v in self.violations)


# -- scheduling ----------------------------------------------------------------------------


def _window_start(t: float, windows: tuple[TimeWindow, ...]) -> tuple[float, float]:
    """(earliest start >= t inside a window, lateness); no windows = any time."""
    if not windows:
        return t, 0.0
    for w in windows:  # sorted by start
        if t <= w.end:
            return max(t, w.start), 0.0
    return t, t - max(w.end for w in windows)


@dataclass(frozen=True)
class _Action:
    """What one step asks for, resolved from the problem."""

    location: int | None  # None for a break (where the vehicle is)
    setup_s: float
    service_s: float
    windows: tuple[TimeWindow, ...]
    delta: tuple[int, ...]  # load change
    skills: frozenset[str]


def _vec(value: tuple[int, ...], dims: int) -> tuple[int, ...]:
    return value if value else (0,) * dims


def _resolve(problem: FleetProblem, vehicle: Vehicle, step: Step) -> _Action | None:
    dims = len(vehicle.capacity)
    if step.kind == "break":
        b = next((b for b in vehicle.breaks if b.id == step.id), None)
        return None if b is None else _Action(None, 0.0, b.duration_s, b.windows, (0,) * dims, frozenset())
    if step.kind == "job":
        j = problem.job_by_id.get(step.id)
        if j is None:
            return None
        delta = tuple(p - d for p, d in zip(_vec(j.pickup, dims), _vec(j.delivery, dims), strict=True))
        return _Action(j.location, j.setup_s, j.service_s, j.windows, delta, j.skills)
    s = problem.shipment_by_id.get(step.id)
    if s is None:
        return None
    amt = _vec(s.amount, dims)
    ss = s.pickup if step.kind == "pickup" else s.delivery
    delta = amt if step.kind == "pickup" else tuple(-a for a in amt)
    return _Action(ss.location, ss.setup_s, ss.service_s, ss.windows, delta, s.skills)


def _evaluate_route(problem: FleetProblem, vehicle: Vehicle, steps: tuple[Step, ...]) -> RouteEvaluation:
    vid = vehicle.id
    state = problem.state_by_vehicle.get(vid)
    dims = len(vehicle.capacity)
    violations: list[Violation] = []

    def flag(code: str, step: int | None = None, task: str | None = None, detail: str = "") -> None:
        violations.append(Violation(code, vid, step, task, detail))

    actions: list[_Action | None] = []
    seen: set[tuple[str, str]] = set()
    for i, st in enumerate(steps):
        act = _resolve(problem, vehicle, st)
        key = ("break" if st.kind == "break" else "task", f"{st.kind}:{st.id}")
        if act is None:
            flag(UNKNOWN_TASK, i, st.id, f"{st.kind} {st.id!r} is not known for this vehicle")
        elif key in seen:
            flag(DUPLICATE_TASK, i, st.id, f"{st.kind} {st.id!r} appears twice on the route")
            act = None
        seen.add(key)
        actions.append(act)

    # origin
    if state is not None:
        origin: int | None = state.position
        origin_time = float(state.time_s)
        load = list(_vec(state.load_on_board, dims))
    else:
        origin = vehicle.start
        origin_time = float(vehicle.shift.start)
        load = [0] * dims
        for st, act in zip(steps, actions, strict=True):
            if act is not None and st.kind == "job":
                load = [x + d for x, d in zip(load, _vec(problem.job_by_id[st.id].delivery, dims), strict=True)]
    initial_load = tuple(load)
    cap = vehicle.capacity
    if any(x > c for x, c in zip(load, cap, strict=True)):
        flag(CAPACITY, None, None, f"initial load {initial_load} exceeds capacity {cap}")

    dur = problem.durations
    dist = problem.distances
    prev = origin
    t = origin_time
    start_time: float | None = None
    driving = distance = waiting_total = 0.0
    sched: list[StepSchedule] = []
    for i, (st, act) in enumerate(zip(steps, actions, strict=True)):
        if act is None:
            sched.append(StepSchedule(st.kind, st.id, prev, t, 0.0, 0.0, t, 0.0, t, 0.0, tuple(load)))
            continue
        loc = prev if act.location is None else act.location
        travel = float(dur[prev, loc]) if prev is not None and loc is not None else 0.0
        if dist is not None and prev is not None and loc is not None:
            distance += float(dist[prev, loc])
        arrival = t + travel
        begin, late = _window_start(arrival, act.windows)
        if start_time is None:  # leave as late as the first step allows
            start_time = begin - travel
            arrival = begin
        setup = act.setup_s if act.location is not None and (prev is None or prev != loc) else 0.0
        service_start = begin + setup
        departure = service_start + act.service_s
        load = [x + d for x, d in zip(load, act.delta, strict=True)]
        driving += travel
        waiting_total += begin - arrival
        sched.append(
            StepSchedule(st.kind, st.id, loc, arrival, begin - arrival, setup, service_start, act.service_s,
                         departure, late, tuple(load))
        )  # fmt: skip
        if late > EPS:
            code = BREAK if st.kind == "break" else TIME_WINDOW
            flag(code, i, st.id, f"starts {late:g} s after its last window closes")
        if st.kind != "break" and not act.skills <= vehicle.skills:
            flag(SKILLS, i, st.id, f"needs skills {sorted(act.skills - vehicle.skills)}")
        if any(x > c or x < 0 for x, c in zip(load, cap, strict=True)):
            flag(CAPACITY, i, st.id, f"load {tuple(load)} outside 0..{cap}")
        t = departure
        prev = loc
    if start_time is None:
        start_time = origin_time
    end_time = t
    if vehicle.end is not None and prev is not None:
        leg = float(dur[prev, vehicle.end])
        driving += leg
        end_time = t + leg
        if dist is not None:
            distance += float(dist[prev, vehicle.end])
    working = end_time - start_time

    if start_time < vehicle.shift.start - EPS:
        flag(SHIFT, None, None, f"starts at {start_time:g}, before the shift opens at {vehicle.shift.start:g}")
    if end_time > vehicle.shift.end + EPS:
        flag(SHIFT, None, None, f"ends at {end_time:g}, after the shift ends at {vehicle.shift.end:g}")
    if vehicle.max_working_time_s is not None and working > vehicle.max_working_time_s + EPS:
        flag(MAX_WORKING_TIME, None, None, f"works {working:g} s > {vehicle.max_working_time_s:g}")
    task_steps = [i for i, st in enumerate(steps) if st.kind != "break"]
    n_tasks = len(task_steps)  # every job, pickup and delivery step counts, as in VROOM
    if vehicle.max_tasks is not None and n_tasks > vehicle.max_tasks:
        flag(MAX_TASKS, None, None, f"{n_tasks} tasks > max_tasks {vehicle.max_tasks}")
    present_breaks = {st.id for st in steps if st.kind == "break"}
    for b in vehicle.breaks:
        if b.id not in present_breaks:
            flag(BREAK, None, b.id, f"break {b.id!r} is missing")

    # shipments on this route: order and lag
    pos: dict[str, dict[str, int]] = {}
    for i, st in enumerate(steps):
        if st.kind in ("pickup", "delivery") and actions[i] is not None:
            pos.setdefault(st.id, {}).setdefault(st.kind, i)
    for sid, where in pos.items():
        if "pickup" in where and "delivery" in where:
            p, d = where["pickup"], where["delivery"]
            if d < p:
                flag(SHIPMENT_ORDER, d, sid, "delivery before its pickup")
            else:
                lag = sched[d].arrival - sched[p].departure
                max_lag = problem.shipment_by_id[sid].max_lag_s
                if max_lag is not None and lag > max_lag + EPS:
                    flag(MAX_LAG, d, sid, f"{lag:g} s from pickup to delivery > {max_lag:g}")

    # locked prefix and done tasks
    done = state.done if state is not None else ()
    for i, st in enumerate(steps):
        if st.kind != "break" and st.id in done:
            flag(DONE_TASK_PLANNED, i, st.id, "already done")
    if state is not None and state.locked:
        head = [steps[i].id for i in task_steps[: len(state.locked)]]
        if tuple(head) != state.locked:
            flag(LOCKED_PREFIX, None, None, f"route must begin with {state.locked}, begins with {tuple(head)}")

    used = bool(steps)
    cost = (
        vehicle.fixed_cost + vehicle.cost_per_hour * working / 3600.0 + vehicle.cost_per_km * distance / 1000.0
        if used
        else 0.0
    )
    return RouteEvaluation(
        vehicle_id=vid, steps=tuple(sched), start_time=start_time, end_time=end_time, initial_load=initial_load,
        distance_m=distance, driving_s=driving, waiting_s=waiting_total, working_s=working, cost=cost,
        violations=tuple(violations),
    )  # fmt: skip


def _empty_route(problem: FleetProblem, vehicle: Vehicle) -> RouteEvaluation:
    """An unused vehicle: no cost, no violation unless it has locked tasks."""
    state = problem.state_by_vehicle.get(vehicle.id)
    t = float(state.time_s) if state is not None else float(vehicle.shift.start)
    load = _vec(state.load_on_board, len(vehicle.capacity)) if state is not None else (0,) * len(vehicle.capacity)
    violations: tuple[Violation, ...] = ()
    if state is not None and state.locked:
        violations = (Violation(LOCKED_PREFIX, vehicle.id, None, None, f"route must begin with {state.locked}"),)
    return RouteEvaluation(vehicle.id, (), t, t, load, 0.0, 0.0, 0.0, 0.0, 0.0, violations)


def evaluate_plan(problem: FleetProblem, plan: FleetPlan) -> PlanEvaluation:
    """Schedule every route of ``plan`` and report every violated constraint.

    A vehicle without a route, or with an empty one, is unused: it costs nothing and needs
    no break. Every known task that is not done must be routed exactly once (a shipment:
    its pickup then its delivery, on one route) or listed once in ``plan.unassigned``.
    """
    violations: list[Violation] = []
    routes: list[RouteEvaluation] = []
    by_vehicle: dict[str, FleetRoute] = {}
    for r in plan.routes:
        if r.vehicle_id not in problem.vehicle_by_id:
            violations.append(Violation(UNKNOWN_VEHICLE, r.vehicle_id, None, None, "no such vehicle"))
        elif r.vehicle_id in by_vehicle:
            violations.append(Violation(DUPLICATE_VEHICLE, r.vehicle_id, None, None, "two routes for one vehicle"))
        else:
            by_vehicle[r.vehicle_id] = r
    for v in problem.vehicles:
        steps = by_vehicle[v.id].steps if v.id in by_vehicle else ()
        ev = _evaluate_route(problem, v, steps) if steps else _empty_route(problem, v)
        routes.append(ev)
        violations.extend(ev.violations)

    # where each task is routed (known tasks only; unknown ones were flagged per route)
    routed: dict[str, list[tuple[str, str]]] = {}
    for r in by_vehicle.values():
        for st in r.steps:
            table = problem.job_by_id if st.kind == "job" else problem.shipment_by_id
            if st.kind != "break" and st.id in table:
                routed.setdefault(st.id, []).append((r.vehicle_id, st.kind))
    for sid, where in routed.items():
        if sid in problem.job_by_id:
            if len({vid for vid, _ in where}) > 1:
                violations.append(Violation(DUPLICATE_TASK, None, None, sid, "job on several routes"))
            continue
        vids = {vid for vid, _ in where}
        kinds = Counter(kind for _, kind in where)
        if len(vids) > 1 and kinds["pickup"] <= 1 and kinds["delivery"] <= 1:
            violations.append(Violation(SHIPMENT_SPLIT, None, None, sid, f"pickup and delivery on {sorted(vids)}"))
        elif len(vids) > 1:
            violations.append(Violation(DUPLICATE_TASK, None, None, sid, "shipment on several routes"))
        elif kinds["pickup"] == 0 or kinds["delivery"] == 0:
            missing = "pickup" if kinds["pickup"] == 0 else "delivery"
            violations.append(Violation(SHIPMENT_SPLIT, next(iter(vids)), None, sid, f"its {missing} is not routed"))

    unassigned_counts = Counter(plan.unassigned)
    known = set(problem.task_ids)
    for tid, c in unassigned_counts.items():
        if tid not in known:
            violations.append(Violation(UNKNOWN_TASK, None, None, tid, "unassigned id is not a task"))
        elif c > 1 or tid in routed:
            violations.append(Violation(DUPLICATE_TASK, None, None, tid, "both routed and unassigned, or listed twice"))
    done = problem.done_ids
    for tid in problem.task_ids:
        if tid not in routed and tid not in unassigned_counts and tid not in done:
            violations.append(Violation(TASK_MISSING, None, None, tid, "neither routed nor unassigned"))
    unassigned_ids = [t for t in unassigned_counts if t in known and t not in routed and t not in done]
    return PlanEvaluation(
        routes=tuple(routes), violations=tuple(violations),
        cost=sum(r.cost for r in routes), distance_m=sum(r.distance_m for r in routes),
        driving_s=sum(r.driving_s for r in routes), working_s=sum(r.working_s for r in routes),
        unassigned=len(unassigned_ids), unassigned_priority=sum(problem.priority(t) for t in unassigned_ids),
    )  # fmt: skip


# -- why a task cannot be served -------------------------------------------------------------

_STAGES: tuple[tuple[str, frozenset[str]], ...] = (
    (NO_VEHICLE_WITH_SKILLS, frozenset({SKILLS})),
    (DEMAND_EXCEEDS_CAPACITY, frozenset({CAPACITY})),
    (TIME_WINDOW_UNREACHABLE, frozenset({TIME_WINDOW, MAX_LAG})),
    (SHIFT_TOO_SHORT, frozenset({SHIFT, BREAK})),
    (WORKING_TIME_LIMIT, frozenset({MAX_WORKING_TIME})),
    (MAX_TASKS_REACHED, frozenset({MAX_TASKS})),
)


def _candidate_routes(problem: FleetProblem, vehicle: Vehicle, task_id: str) -> Iterable[tuple[Step, ...]]:
    """The vehicle's locked prefix, then the task, with its breaks placed every possible way."""
    state = problem.state_by_vehicle.get(vehicle.id)
    locked = state.locked if state is not None else ()
    prefix: list[Step] = []
    open_pickups: set[str] = set()
    for tid in locked:
        if tid in problem.job_by_id:
            prefix.append(Step("job", tid))
        elif tid in open_pickups:
            prefix.append(Step("delivery", tid))
            open_pickups.discard(tid)
        else:
            prefix.append(Step("pickup", tid))
            open_pickups.add(tid)
    tail: list[Step] = []
    if task_id in problem.job_by_id:
        if task_id not in locked:
            tail = [Step("job", task_id)]
    elif task_id in open_pickups:
        tail = [Step("delivery", task_id)]
    elif task_id not in locked:
        tail = [Step("pickup", task_id), Step("delivery", task_id)]
    for tid in open_pickups - {task_id}:  # a locked pickup needs its delivery somewhere
        tail.append(Step("delivery", tid))
    base = prefix + tail
    slots = range(len(prefix), len(base) + 1)
    breaks = [Step("break", b.id) for b in vehicle.breaks]
    for places in itertools.combinations_with_replacement(slots, len(breaks)):
        route = list(base)
        for k, (where, b) in enumerate(zip(places, breaks, strict=True)):
            route.insert(where + k, b)
        yield tuple(route)


def check_task(problem: FleetProblem, task_id: str) -> list[str]:
    """Why ``task_id`` can never be served by any vehicle on its own; ``[]`` when some can.

    For each vehicle the task is tried alone after the vehicle's locked prefix, with the
    vehicle's breaks placed every possible way, and judged by the evaluator (violations at
    locked steps are not held against the task). The stages are, in order: skills,
    capacity, time windows (and max lag), shift (and breaks), working time, max tasks. The
    answer is the one code of the first stage that no vehicle passes. A task that is done
    needs nothing: ``[]``. Unknown ids raise KeyError.
    """
    if task_id not in problem.job_by_id and task_id not in problem.shipment_by_id:
        raise KeyError(f"unknown task {task_id!r}")
    if task_id in problem.done_ids:
        return []
    owner = next((st.vehicle_id for st in problem.states if task_id in st.locked), None)
    vehicles = [problem.vehicle_by_id[owner]] if owner is not None else list(problem.vehicles)
    best_stage = -1  # the furthest stage any vehicle gets through
    for v in vehicles:
        state = problem.state_by_vehicle.get(v.id)
        n_locked = len(state.locked) if state is not None else 0
        for route in _candidate_routes(problem, v, task_id):
            plan = FleetPlan((FleetRoute(v.id, route),))
            ev = _evaluate_route(problem, v, plan.routes[0].steps)
            task_positions = [i for i, st in enumerate(route) if st.kind != "break"]
            locked_steps = set(task_positions[:n_locked]) if owner is None else set()
            codes = {x.code for x in ev.violations if x.step is None or x.step not in locked_steps}
            passed = len(_STAGES)
            for k, (_, stage_codes) in enumerate(_STAGES):
                if codes & stage_codes:
                    passed = k
                    break
            if passed == len(_STAGES):
                return []
            best_stage = max(best_stage, passed - 1)
    return [_STAGES[best_stage + 1][0]]
