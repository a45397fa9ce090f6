"""Training labels from PyVRP (MIT licence), a strong solver we are allowed to ship with.

The problem is handed to PyVRP as a one-vehicle VRP(TW): a start depot, an end depot
(the start again, the fixed end, or a free virtual location for open routes), times
scaled to integer deciseconds, windows hard (feasibility is guaranteed by how the
training problems are built).
"""

from __future__ import annotations

import numpy as np

from routing_core.problem import EndKind, Problem

_SCALE = 10.0  # seconds -> deciseconds
_BIG = 10**9


def pyvrp_order(problem: Problem, max_iterations: int = 1000, time_limit_s: float = 30.0,
                seed: int = 0) -> tuple[int, ...]:  # fmt: skip
    """PyVRP's best visiting order of the stops.

    Stops after ``max_iterations`` (deterministic for a seed) or ``time_limit_s``
    (a safety cap), whichever comes first.
    """
    from pyvrp import Model
    from pyvrp.stop import MaxIterations, MaxRuntime, MultipleCriteria

    stops = problem.stops.tolist()
    model = Model()
    coords = problem.coords if problem.coords is not None else np.zeros((problem.n_nodes, 2))
    locations = {}
    locations[problem.start] = model.add_location(float(coords[problem.start, 0]), float(coords[problem.start, 1]))
    start_depot = model.add_depot(locations[problem.start])
    if problem.end is EndKind.FIXED and problem.end_node is not None:
        locations[problem.end_node] = model.add_location(*map(float, coords[problem.end_node]))
        end_depot = model.add_depot(locations[problem.end_node])
    elif problem.end is EndKind.OPEN:
        open_end = model.add_location(0.0, 0.0)
        end_depot = model.add_depot(open_end)
    else:
        end_depot = start_depot
    clients = {}
    for s in stops:
        locations[s] = model.add_location(*map(float, coords[s]))
        late = problem.latest[s]
        clients[s] = model.add_client(
            locations[s], service_duration=round(problem.service_s[s] * _SCALE),
            tw_early=round(problem.earliest[s] * _SCALE),
            tw_late=round(late * _SCALE) if np.isfinite(late) else _BIG,
        )  # fmt: skip
    model.add_vehicle_type(1, start_depot=start_depot, end_depot=end_depot, unit_distance_cost=1, unit_duration_cost=0)
    m = problem.matrix
    for a, loc_a in locations.items():
        for b, loc_b in locations.items():
            if a == b:
                continue
            cost = round(min(m[a, b], _BIG / _SCALE) * _SCALE)
            model.add_edge(loc_a, loc_b, distance=cost, duration=cost)
    if problem.end is EndKind.OPEN:
        for loc_a in locations.values():
            model.add_edge(loc_a, open_end, distance=0, duration=0)
            model.add_edge(open_end, loc_a, distance=_BIG, duration=_BIG)
    stop = MultipleCriteria([MaxIterations(max_iterations), MaxRuntime(time_limit_s)])
    result = model.solve(stop=stop, seed=seed, display=False)
    routes = result.best.routes()
    if len(routes) != 1:
        raise RuntimeError("PyVRP returned no single route")
    client_nodes = list(clients)  # PyVRP numbers clients in the order they were added
    visits = [act.idx for act in routes[0] if _is_client(act)]
    return tuple(client_nodes[i] for i in visits)


def _is_client(activity: object) -> bool:
    flag = activity.is_client  # type: ignore[attr-defined]
    return bool(flag() if callable(flag) else flag)
