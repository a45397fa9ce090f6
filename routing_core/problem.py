"""The single-vehicle routing problem, its routes, and the evaluator every answer passes.

Problem (one vehicle):
    nodes ``0..n-1`` of an asymmetric travel-time matrix (seconds, ``inf`` where there is
    no path). Node ``start`` is where the vehicle is at time 0. Every other node is a
    stop to visit exactly once, except the end node when the end is ``fixed``.
Constraints:
    a stop may have a time window ``[earliest, latest]`` (seconds after departure) and a
    service duration (seconds). Arriving early means waiting until ``earliest``;
    arriving after ``latest`` is lateness. Windows are hard when some route meets them
    all; otherwise the route with least total lateness is best.
End:
    ``return`` (back to the start), ``fixed`` (at ``end_node``, after every stop) or
    ``open`` (the route ends at its last stop).
Objective:
    lexicographic (total lateness, total travel time): travel time alone when feasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

LATE_EPS_S = 1e-6


class EndKind(StrEnum):
    RETURN = "return"
    FIXED = "fixed"
    OPEN = "open"


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated single-vehicle problem; see the module docstring for the semantics.

    ``earliest``/``latest`` are per node (seconds; ``0``/``inf`` for no window) and
    ``service_s`` per node; the start's entries are ignored.
    """

    matrix: np.ndarray
    earliest: np.ndarray = field(default=None)  # type: ignore[assignment,arg-type]
    latest: np.ndarray = field(default=None)  # type: ignore[assignment,arg-type]
    service_s: np.ndarray = field(default=None)  # type: ignore[assignment,arg-type]
    start: int = 0
    end: EndKind = EndKind.RETURN
    end_node: int | None = None
    coords: np.ndarray | None = None  # (n, 2) positions when known (any planar unit, or lat/lon)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix must be square, got shape {m.shape}")
        n = m.shape[0]
        if n < 1:
            raise ValueError("matrix must have at least one node")
        if np.isnan(m).any():
            raise ValueError("matrix must not contain NaN (use inf for no path)")
        if (m < 0).any():
            raise ValueError("matrix entries must be >= 0 seconds")
        object.__setattr__(self, "matrix", m)
        for name, default in (("earliest", 0.0), ("latest", math.inf), ("service_s", 0.0)):
            value = getattr(self, name)
            arr = np.full(n, default) if value is None else np.asarray(value, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have one value per node ({n}), got shape {arr.shape}")
            if np.isnan(arr).any():
                raise ValueError(f"{name} must not contain NaN")
            object.__setattr__(self, name, arr)
        if (self.service_s < 0).any() or np.isinf(self.service_s).any():
            raise ValueError("service_s must be finite and >= 0")
        bad = np.flatnonzero(self.latest < self.earliest)
        if bad.size:
            raise ValueError(f"window of node {int(bad[0])} ends before it starts")
        if not 0 <= self.start < n:
            raise ValueError(f"start must be a node index in 0..{n - 1}, got {self.start}")
        end = EndKind(self.end)
        object.__setattr__(self, "end", end)
        if end is EndKind.FIXED:
            if self.end_node is None or not 0 <= self.end_node < n:
                raise ValueError(f"end_node must be a node index in 0..{n - 1} when end is 'fixed'")
            if self.end_node == self.start:
                raise ValueError("end_node equals start: use end='return'")
        elif self.end_node is not None:
            raise ValueError("end_node is only allowed when end is 'fixed'")
        if self.coords is not None:
            c = np.asarray(self.coords, dtype=np.float64)
            if c.shape != (n, 2):
                raise ValueError(f"coords must have shape ({n}, 2), got {c.shape}")
            object.__setattr__(self, "coords", c)

    @property
    def n_nodes(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def stops(self) -> np.ndarray:
        """Node indices to visit, in index order."""
        skip = {self.start} | ({self.end_node} if self.end is EndKind.FIXED else set())
        return np.asarray([i for i in range(self.n_nodes) if i not in skip], dtype=np.int64)

    @property
    def has_windows(self) -> bool:
        stops = self.stops
        return bool(np.any(self.earliest[stops] > 0) or np.any(np.isfinite(self.latest[stops])))


@dataclass(frozen=True)
class Evaluation:
    """What a route costs. Times in seconds after departure, per visited stop in order."""

    order: tuple[int, ...]
    arrival: np.ndarray
    start_service: np.ndarray
    departure: np.ndarray
    lateness: np.ndarray
    travel_s: float  # driving time only, the end leg included
    end_arrival: float  # arrival at the end (the last departure for open routes)
    total_lateness: float
    valid: bool  # every stop exactly once, nothing else
    problems: tuple[str, ...]  # why not valid

    @property
    def feasible(self) -> bool:
        return self.valid and self.total_lateness <= LATE_EPS_S and math.isfinite(self.travel_s)

    @property
    def late_stops(self) -> tuple[int, ...]:
        return tuple(int(s) for s, late in zip(self.order, self.lateness, strict=True) if late > LATE_EPS_S)

    def cost(self) -> tuple[float, float]:
        """(total lateness, travel seconds): smaller is better; inf for an invalid route."""
        if not self.valid:
            return (math.inf, math.inf)
        return (self.total_lateness, self.travel_s)


def evaluate(problem: Problem, order: list[int] | tuple[int, ...] | np.ndarray) -> Evaluation:
    """Cost, arrival/departure per stop, lateness and validity of visiting ``order``.

    ``order`` lists the stops only (not the start, not a fixed end).
    """
    seq = [int(x) for x in np.asarray(order, dtype=np.int64).ravel()]
    problems: list[str] = []
    expected = set(problem.stops.tolist())
    seen: set[int] = set()
    for s in seq:
        if s not in expected:
            problems.append(f"node {s} is not a stop of this problem")
        elif s in seen:
            problems.append(f"stop {s} visited twice")
        seen.add(s)
    missing = expected - seen
    if missing:
        problems.append(f"stops not visited: {sorted(missing)[:10]}")
    m = problem.matrix
    k = len(seq)
    arrival = np.zeros(k)
    start_service = np.zeros(k)
    departure = np.zeros(k)
    lateness = np.zeros(k)
    t = 0.0
    travel = 0.0
    prev = problem.start
    for i, s in enumerate(seq):
        if not 0 <= s < problem.n_nodes:
            arrival[i:] = departure[i:] = start_service[i:] = math.inf
            break
        leg = m[prev, s]
        travel += leg
        t += leg
        arrival[i] = t
        start_service[i] = max(t, problem.earliest[s])
        # (compared first: inf - inf would be NaN after a leg with no path to a stop without a window)
        lateness[i] = start_service[i] - problem.latest[s] if start_service[i] > problem.latest[s] else 0.0
        t = start_service[i] + problem.service_s[s]
        departure[i] = t
        prev = s
    end_arrival = t
    if problem.end is EndKind.RETURN:
        travel += m[prev, problem.start]
        end_arrival = t + m[prev, problem.start]
    elif problem.end is EndKind.FIXED and problem.end_node is not None:
        travel += m[prev, problem.end_node]
        end_arrival = t + m[prev, problem.end_node]
    if not math.isfinite(travel):
        problems.append("route uses a leg with no path")
    return Evaluation(
        order=tuple(seq), arrival=arrival, start_service=start_service, departure=departure, lateness=lateness,
        travel_s=float(travel), end_arrival=float(end_arrival), total_lateness=float(lateness.sum()),
        valid=not problems, problems=tuple(problems),
    )  # fmt: skip
