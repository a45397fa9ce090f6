"""Property tests (hypothesis) of the evaluator (``routing_core.problem.evaluate``) and the route search
(``gnn_model.search.solve``): any valid problem (asymmetric matrices, missing legs, time windows,
service times, every end kind, any start) gives a valid route, consistently evaluated, the same
for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gnn_model.search import SearchParams, localize, solve, warm_up
from routing_core.problem import EndKind, Problem, evaluate

# CI-sized: every example runs the compiled search; no deadline (the first call per shape may compile).
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIXED_ITERATIONS = SearchParams(time_limit_ms=1e7, max_iterations=48)  # stops on iterations, not on the clock
TIMES = st.floats(0.0, 5000.0, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> Iterator[None]:
    warm_up()
    yield


@st.composite
def problems(draw: st.DrawFn, max_nodes: int = 14) -> Problem:
    """A valid problem: asymmetric matrix (some legs missing = inf), optional windows (some
    impossible), service times, any start, return / open / fixed end."""
    n = draw(st.integers(1, max_nodes))
    matrix = draw(arrays(np.float64, (n, n), elements=TIMES))
    for i, j in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3)):
        matrix[i, j] = math.inf  # no path on this leg
    np.fill_diagonal(matrix, 0.0)
    start = draw(st.integers(0, n - 1))
    ends = [EndKind.RETURN, EndKind.OPEN] + ([EndKind.FIXED] if n >= 2 else [])
    end = draw(st.sampled_from(ends))
    end_node = draw(st.sampled_from([i for i in range(n) if i != start])) if end is EndKind.FIXED else None
    service = draw(arrays(np.float64, (n,), elements=st.floats(0.0, 600.0)))
    earliest = np.zeros(n)
    latest = np.full(n, math.inf)
    if draw(st.booleans()):  # windows on some stops
        for i in draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True)):
            earliest[i] = draw(st.floats(0.0, 4000.0))
            latest[i] = earliest[i] + draw(st.floats(0.0, 3000.0))
    return Problem(matrix, earliest=earliest, latest=latest, service_s=service, start=start, end=end,
                   end_node=end_node)  # fmt: skip


def _objective(problem: Problem, order: tuple[int, ...]) -> tuple[float, float]:
    return evaluate(problem, order).cost()


@PROPERTY_SETTINGS
@given(problem=problems(), seed=st.integers(0, 2**31 - 1))
def test_any_valid_problem_gets_a_route_visiting_every_stop_once(problem: Problem, seed: int) -> None:
    result = solve(problem, SearchParams(time_limit_ms=1e7, max_iterations=48, seed=seed))
    assert sorted(result.order) == problem.stops.tolist()
    assert problem.start not in result.order
    if problem.end is EndKind.FIXED:
        assert problem.end_node not in result.order
    # The evaluation returned is the evaluator's, of the order returned.
    again = evaluate(problem, result.order)
    assert result.evaluation.order == result.order == again.order
    assert result.evaluation.cost() == again.cost()
    np.testing.assert_array_equal(result.evaluation.arrival, again.arrival)
    # Valid unless some stop (or the end) cannot be reached on any route the matrix allows.
    if all(math.isfinite(v) for v in problem.matrix.ravel()):
        assert again.valid, again.problems


@PROPERTY_SETTINGS
@given(problem=problems(), seed=st.integers(0, 2**31 - 1))
def test_the_same_seed_and_iterations_give_the_same_route(problem: Problem, seed: int) -> None:
    params = SearchParams(time_limit_ms=1e7, max_iterations=48, seed=seed)
    assert solve(problem, params).order == solve(problem, params).order


@PROPERTY_SETTINGS
@given(problem=problems(max_nodes=10), data=st.data())
def test_any_scores_still_give_a_route_no_worse_than_its_construction(problem: Problem, data: st.DataObject) -> None:
    size = localize(problem).D.shape[0]
    scores = data.draw(arrays(np.float64, (size, size), elements=st.floats(-50.0, 50.0)))
    result = solve(problem, FIXED_ITERATIONS, scores=scores)
    assert sorted(result.order) == problem.stops.tolist()
    ev = result.evaluation
    if ev.valid and math.isfinite(result.construction_cost):
        # The search keeps its best route: never worse than where it started.
        objective = ev.travel_s + 1.0e6 * ev.total_lateness if problem.has_windows else ev.travel_s
        assert objective <= result.construction_cost * (1 + 1e-9) + 1e-6


@PROPERTY_SETTINGS
@given(problem=problems(), data=st.data())
def test_the_evaluator_is_consistent_for_any_visiting_order(problem: Problem, data: st.DataObject) -> None:
    order = data.draw(st.permutations(problem.stops.tolist()))
    ev = evaluate(problem, order)
    assert ev.order == tuple(order) and ev.valid == all(math.isfinite(x) for x in _legs(problem, order))
    m = problem.matrix
    t, prev = 0.0, problem.start
    for k, stop in enumerate(order):
        t += m[prev, stop]
        assert ev.arrival[k] == t
        start_service = max(t, problem.earliest[stop])
        assert ev.start_service[k] == start_service
        late = start_service - problem.latest[stop] if start_service > problem.latest[stop] else 0.0
        assert ev.lateness[k] == late >= 0.0
        t = start_service + problem.service_s[stop]
        assert ev.departure[k] == t
        prev = stop
    assert ev.total_lateness == pytest.approx(float(np.sum(ev.lateness)))
    assert ev.travel_s == pytest.approx(sum(_legs(problem, order)))
    assert ev.late_stops == tuple(s for s, late in zip(order, ev.lateness, strict=True) if late > 1e-6)
    if ev.valid and not problem.has_windows:
        assert ev.feasible


@PROPERTY_SETTINGS
@given(problem=problems(), data=st.data())
def test_the_evaluator_refuses_orders_that_are_not_a_permutation_of_the_stops(
    problem: Problem, data: st.DataObject
) -> None:
    stops = problem.stops.tolist()
    order = data.draw(st.lists(st.integers(-2, problem.n_nodes + 1), max_size=problem.n_nodes + 2))
    ev = evaluate(problem, order)
    assert ev.valid == (sorted(order) == stops and all(math.isfinite(x) for x in _legs(problem, order)))
    if not ev.valid:
        assert ev.problems and ev.cost() == (math.inf, math.inf)


def _legs(problem: Problem, order: list[int]) -> list[float]:
    """Travel time of every leg the route drives (inf where there is no path), end leg included."""
    m = problem.matrix
    seq = [problem.start, *order]
    if problem.end is EndKind.RETURN:
        seq.append(problem.start)
    elif problem.end is EndKind.FIXED:
        seq.append(problem.end_node)  # type: ignore[arg-type]
    n = problem.n_nodes
    return [float(m[a, b]) if 0 <= a < n and 0 <= b < n else math.inf for a, b in pairwise(seq)]
