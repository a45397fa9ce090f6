"""The route search: every answer is a valid route, windows built around a route are met, runs repeat.

hypothesis is not a dependency, so the property tests loop over seeded random problems.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from gnn_model.features import build_features, edge_labels, local_scores
from gnn_model.policy import guided_solve
from gnn_model.search import (
    SearchParams,
    SearchResult,
    candidate_lists,
    localize,
    nearest_neighbour,
    solve,
    warm_up,
)
from routing_core.problem import EndKind, Problem, evaluate

ENDS = (EndKind.RETURN, EndKind.OPEN, EndKind.FIXED)
# Enough kicks to exercise the iterated local search, few enough to stay fast.
FAST = SearchParams(time_limit_ms=1e7, max_iterations=64)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> Iterator[None]:
    warm_up()
    yield


def random_problem(
    rng: np.random.Generator, n_stops: int, end: EndKind, service: bool = True, windows: bool = False
) -> Problem:
    """Points in a 1000 s square, travel times distorted per direction (asymmetric), random start/end."""
    n = n_stops + (2 if end is EndKind.FIXED else 1)
    xy = rng.random((n, 2)) * 1000.0
    base = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    matrix = base * rng.uniform(0.8, 1.6, size=(n, n)) + rng.uniform(1.0, 30.0, size=(n, n))
    np.fill_diagonal(matrix, 0.0)
    nodes = rng.permutation(n)
    start = int(nodes[0])
    end_node = int(nodes[1]) if end is EndKind.FIXED else None
    service_s = rng.uniform(0.0, 120.0, size=n) if service else None
    p = Problem(matrix, service_s=service_s, start=start, end=end, end_node=end_node, coords=xy)
    if windows:
        p = with_windows_around(p, solve(p, FAST))
    return p


def with_windows_around(problem: Problem, result: SearchResult, slack: float = 600.0) -> Problem:
    """Windows [t - slack, t + slack] around the service start times of ``result``: that route meets them."""
    earliest = np.zeros(problem.n_nodes)
    latest = np.full(problem.n_nodes, math.inf)
    order = np.asarray(result.order, dtype=np.int64)
    if order.size:
        earliest[order] = np.maximum(0.0, result.evaluation.start_service - slack)
        latest[order] = result.evaluation.start_service + slack
    p = Problem(problem.matrix, earliest=earliest, latest=latest, service_s=problem.service_s, start=problem.start,
                end=problem.end, end_node=problem.end_node, coords=problem.coords)  # fmt: skip
    assert evaluate(p, result.order).feasible  # the witness route
    return p


def assert_valid_route(problem: Problem, result: SearchResult) -> None:
    ev = result.evaluation
    assert ev.valid, ev.problems
    assert sorted(result.order) == sorted(problem.stops.tolist())
    assert ev.order == result.order
    assert problem.start not in result.order
    assert math.isfinite(ev.travel_s)
    again = evaluate(problem, result.order)
    assert again.travel_s == ev.travel_s
    assert again.total_lateness == ev.total_lateness
    assert isinstance(result.elapsed_ms, float) and result.elapsed_ms >= 0
    assert result.iterations >= 0


def _cases() -> list[tuple[int, int, EndKind]]:
    """40 (seed, stops, end) cases: sizes 1..60 with the small and the ILS-sized ones well covered."""
    rng = np.random.default_rng(2024)
    sizes = [1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 60, 59, *rng.integers(1, 61, size=28).tolist()]
    return [(seed, int(size), ENDS[seed % 3]) for seed, size in enumerate(sizes)]


CASES = _cases()


# -- validity on random problems -------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_stops", "end"), CASES)
def test_search_returns_a_valid_route_no_worse_than_nearest_neighbour(seed: int, n_stops: int, end: EndKind) -> None:
    rng = np.random.default_rng(seed)
    p = random_problem(rng, n_stops, end)
    result = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=64, seed=seed))
    assert_valid_route(p, result)
    assert result.evaluation.feasible
    nn = nearest_neighbour(p)
    assert_valid_route(p, nn)
    assert result.evaluation.travel_s <= nn.evaluation.travel_s + 1e-6
    # The reported construction cost is the nearest-neighbour route's (the unguided construction).
    if n_stops >= 2:
        assert result.construction_cost == pytest.approx(nn.evaluation.travel_s)


@pytest.mark.parametrize(("seed", "n_stops", "end"), CASES[::2])
def test_windows_around_a_route_are_met(seed: int, n_stops: int, end: EndKind) -> None:
    rng = np.random.default_rng(1000 + seed)
    p = random_problem(rng, n_stops, end, windows=True)
    assert p.has_windows
    result = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=64, seed=seed))
    assert_valid_route(p, result)
    assert result.evaluation.feasible, (result.evaluation.late_stops, result.evaluation.total_lateness)
    assert result.evaluation.late_stops == ()


@pytest.mark.parametrize("end", ENDS)
def test_tight_windows_force_the_only_feasible_order(end: EndKind) -> None:
    # With zero slack around a deliberately bad route (reverse of the nearest-neighbour one), and no
    # waiting allowed, only that route (or one that reaches every stop at exactly those times) is on time.
    rng = np.random.default_rng(7)
    p = random_problem(rng, 12, end)
    nn = nearest_neighbour(p)
    reverse = tuple(reversed(nn.order))
    witness = SearchResult(reverse, evaluate(p, reverse), 0.0, 0, 0.0)
    tight = with_windows_around(p, witness, slack=0.0)
    result = solve(tight, FAST)
    assert_valid_route(tight, result)
    assert result.evaluation.feasible
    assert result.order == reverse


def test_infeasible_windows_give_a_valid_route_with_the_late_stops_named() -> None:
    rng = np.random.default_rng(3)
    base = random_problem(rng, 10, EndKind.RETURN)
    latest = np.full(base.n_nodes, 1.0)  # nothing can be reached within 1 s
    p = Problem(base.matrix, latest=latest, service_s=base.service_s, start=base.start)
    result = solve(p, FAST)
    assert_valid_route(p, result)
    assert not result.evaluation.feasible
    assert set(result.evaluation.late_stops) == set(p.stops.tolist())


def test_search_avoids_missing_legs_when_a_route_exists() -> None:
    # A ring 0 -> 1 -> ... -> 9 -> 0 of cheap legs; most other pairs have no path at all.
    n = 10
    m = np.full((n, n), math.inf)
    rng = np.random.default_rng(5)
    for i in range(n):
        m[i, (i + 1) % n] = 10.0
        m[i, (i + 3) % n] = 200.0
    np.fill_diagonal(m, 0.0)
    p = Problem(m)
    for seed in rng.integers(0, 1000, size=3).tolist():
        result = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=32, seed=seed))
        assert_valid_route(p, result)
        assert result.order == tuple(range(1, n))
        assert result.evaluation.travel_s == 100.0


@pytest.mark.parametrize("n_stops", [1, 2, 5, 12])
def test_an_unreachable_stop_gives_a_route_that_says_so(n_stops: int) -> None:
    # No leg leads into the last node: every route must use a leg with no path. The search still
    # answers with a permutation of the stops, and the evaluation marks it invalid (cost inf).
    rng = np.random.default_rng(n_stops)
    base = random_problem(rng, n_stops, EndKind.RETURN, service=False)
    m = base.matrix.copy()
    unreachable = base.n_nodes - 1 if base.start != base.n_nodes - 1 else 0
    m[:, unreachable] = math.inf
    m[unreachable, unreachable] = 0.0
    p = Problem(m, start=base.start)
    for result in (solve(p, FAST), nearest_neighbour(p)):
        assert sorted(result.order) == p.stops.tolist()
        assert not result.evaluation.valid
        assert any("no path" in msg for msg in result.evaluation.problems)
        assert result.evaluation.cost() == (math.inf, math.inf)


# -- determinism -----------------------------------------------------------------------


@pytest.mark.parametrize("windows", [False, True])
def test_same_seed_and_iterations_give_the_same_route(windows: bool) -> None:
    rng = np.random.default_rng(11)
    p = random_problem(rng, 40, EndKind.RETURN, windows=windows)
    params = SearchParams(time_limit_ms=1e7, max_iterations=200, seed=5)
    first = solve(p, params)
    second = solve(p, params)
    assert first.order == second.order
    assert first.iterations == second.iterations == 200
    assert first.evaluation.travel_s == second.evaluation.travel_s
    # Another seed in between does not disturb the stream of the next run.
    solve(p, SearchParams(time_limit_ms=1e7, max_iterations=50, seed=6))
    assert solve(p, params).order == first.order


def test_iterations_stop_the_search() -> None:
    rng = np.random.default_rng(12)
    p = random_problem(rng, 30, EndKind.OPEN)
    assert solve(p, SearchParams(time_limit_ms=1e7, max_iterations=0)).iterations == 0
    assert solve(p, SearchParams(time_limit_ms=1e7, max_iterations=17)).iterations == 17
    # A zero time limit skips the iterated local search but still returns a local optimum.
    result = solve(p, SearchParams(time_limit_ms=0))
    assert result.iterations == 0
    assert_valid_route(p, result)


def test_more_iterations_are_never_worse_for_the_same_seed() -> None:
    # Kicks only ever replace the route by one that costs no more, and the random stream is the same.
    rng = np.random.default_rng(13)
    p = random_problem(rng, 50, EndKind.RETURN, service=False)
    short = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=32, seed=1))
    longer = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=320, seed=1))
    assert longer.evaluation.travel_s <= short.evaluation.travel_s + 1e-6


# -- tiny problems ---------------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("n_stops", [0, 1, 2])
def test_tiny_problems(n_stops: int, end: EndKind) -> None:
    rng = np.random.default_rng(n_stops)
    p = random_problem(rng, n_stops, end)
    for result in (solve(p, FAST), solve(p, SearchParams(time_limit_ms=0)), nearest_neighbour(p)):
        assert_valid_route(p, result)
        assert len(result.order) == n_stops
        assert result.evaluation.feasible


def test_two_stops_take_the_cheaper_direction() -> None:
    # 0->1 = 1, 1->2 = 1, 2->0 = 1; the other way round costs 100 each.
    m = np.array([[0, 1, 100], [100, 0, 1], [1, 100, 0]], dtype=float)
    result = solve(Problem(m), FAST)
    assert result.order == (1, 2)
    assert result.evaluation.travel_s == 3.0
    # Node 2 first from the nearest-neighbour start would be worse; the search must turn it round.
    m2 = np.array([[0, 5, 4], [100, 0, 1], [1, 100, 0]], dtype=float)
    result2 = solve(Problem(m2), FAST)
    assert result2.order == (1, 2)
    assert result2.evaluation.travel_s == 7.0
    assert nearest_neighbour(Problem(m2)).order == (2, 1)


def test_single_node_problem() -> None:
    p = Problem(np.zeros((1, 1)))
    result = solve(p, FAST)
    assert result.order == ()
    assert result.evaluation.valid
    assert result.evaluation.travel_s == 0.0
    assert nearest_neighbour(p).order == ()


# -- guided by scores ------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_stops", "end"), CASES[1::3])
def test_arbitrary_scores_still_give_a_valid_route(seed: int, n_stops: int, end: EndKind) -> None:
    rng = np.random.default_rng(500 + seed)
    p = random_problem(rng, n_stops, end, windows=seed % 2 == 0)
    L = localize(p).D.shape[0]
    for scores in (rng.normal(size=(L, L)), np.full((L, L), -1.0e9), -rng.random((L, L)) * 1e10):
        result = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=32, seed=seed), scores=scores)
        assert_valid_route(p, result)
        if p.has_windows:
            assert result.evaluation.feasible


@pytest.mark.parametrize("end", ENDS)
def test_scores_from_the_feature_graph_give_a_valid_route(end: EndKind) -> None:
    rng = np.random.default_rng(21)
    p = random_problem(rng, 25, end)
    features = build_features(p)
    assert features.n_local == localize(p).D.shape[0]
    # An "oracle" scorer: the edges of a good route score high, the rest low.
    good = solve(p, FAST)
    labels = edge_labels(features, p, good.order)
    scores = local_scores(features, labels * 10.0 - 5.0)
    assert scores.shape == localize(p).D.shape
    result = solve(p, FAST, scores=scores)
    assert_valid_route(p, result)
    guided = guided_solve(p, FAST, lambda f: rng.normal(size=f.edge_index.shape[1]))
    assert_valid_route(p, guided)


def test_candidate_lists_shape_and_no_self_candidates() -> None:
    rng = np.random.default_rng(31)
    p = random_problem(rng, 20, EndKind.FIXED)
    D = localize(p).D
    L = D.shape[0]
    for k, scores in ((10, None), (3, None), (50, None), (10, rng.normal(size=(L, L)))):
        cand = candidate_lists(D, k, scores)
        assert cand.shape == (L, min(k, L - 1))
        assert cand.dtype == np.int64
        assert np.all((cand >= 0) & (cand < L))
        assert not np.any(cand == np.arange(L)[:, None])
        for row in cand:
            assert len(set(row.tolist())) == row.size


def test_candidate_lists_are_the_nearest_either_way() -> None:
    # Travel times 0 -> j = j and j -> 0 = 10 * j, so 0's nearest partners are 1, 2, 3 in that order.
    n = 6
    D = np.full((n, n), 50.0)
    for j in range(1, n):
        D[0, j] = j
        D[j, 0] = 10 * j
    np.fill_diagonal(D, 0.0)
    D[4, 5] = 0.5  # 4 and 5 are each other's nearest (one direction is enough)
    cand = candidate_lists(D, 3)
    assert cand[0].tolist() == [1, 2, 3]
    assert cand[4, 0] == 5
    assert cand[5, 0] == 4
    # With scores the best-scored partners come first, either direction counting.
    scores = np.full((n, n), -1.0e9)
    scores[2, 0] = 5.0
    scores[0, 5] = 3.0
    cand = candidate_lists(D, 3, scores)
    assert cand[0].tolist() == [2, 5, 1]  # scored first (best first), then nearest unscored


def test_candidate_lists_keep_the_order_of_a_stable_sort_with_ties() -> None:
    # Integer travel times (TSPLIB's rounded distances) tie often: equal partners come by index.
    rng = np.random.default_rng(32)
    for trial in range(40):
        L = int(rng.integers(3, 40))
        D = rng.integers(1, 6, size=(L, L)).astype(float) if trial % 2 else rng.random((L, L))
        np.fill_diagonal(D, 0.0)
        k = int(rng.integers(1, L))
        key = np.minimum(D, D.T)
        np.fill_diagonal(key, np.inf)
        expected = np.argsort(key, axis=1, kind="stable")[:, : min(k, L - 1)]
        assert np.array_equal(candidate_lists(D, k), expected)


def test_candidate_lists_for_one_stop() -> None:
    D = localize(Problem(np.array([[0.0, 1.0], [2.0, 0.0]]))).D
    cand = candidate_lists(D, 10)
    assert cand.shape == (3, 2)
    assert not np.any(cand == np.arange(3)[:, None])


# -- the local layout --------------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
def test_localize_puts_the_start_first_and_the_end_last(end: EndKind) -> None:
    rng = np.random.default_rng(41)
    p = random_problem(rng, 6, end)
    lp = localize(p)
    L = lp.D.shape[0]
    assert lp.D.shape == (p.stops.size + 2, p.stops.size + 2)
    assert lp.nodes[0] == p.start
    assert lp.nodes[1 : L - 1].tolist() == p.stops.tolist()
    expected_end = {EndKind.RETURN: p.start, EndKind.FIXED: p.end_node, EndKind.OPEN: -1}[end]
    assert lp.nodes[L - 1] == expected_end
    # A local route 0, stops..., L-1 costs what the evaluator says.
    tour = np.arange(L)
    local_travel = sum(lp.D[tour[k], tour[k + 1]] for k in range(L - 1))
    assert local_travel == pytest.approx(evaluate(p, lp.nodes[1 : L - 1]).travel_s)


def test_search_params_are_validated() -> None:
    with pytest.raises(ValueError, match="time_limit_ms"):
        SearchParams(time_limit_ms=-1)
    with pytest.raises(ValueError, match="time_limit_ms"):
        SearchParams(time_limit_ms=math.nan)
    with pytest.raises(ValueError, match="max_iterations"):
        SearchParams(max_iterations=-1)
    with pytest.raises(ValueError, match="n_candidates"):
        SearchParams(n_candidates=0)


def test_stall_limit_stops_the_search_before_its_budget() -> None:
    p = random_problem(np.random.default_rng(7), 30, EndKind.RETURN)
    stalled = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=1_000_000, stall_iterations=64))
    assert 64 <= stalled.iterations < 1_000_000  # stopped by the stall rule, not by the other two bounds
    again = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=1_000_000, stall_iterations=64))
    assert again.order == stalled.order and again.iterations == stalled.iterations  # deterministic for a seed
    capped = solve(p, SearchParams(time_limit_ms=1e7, max_iterations=5_000, stall_iterations=None))
    assert capped.iterations == 5_000  # without a stall limit, the iteration cap rules
    assert capped.evaluation.travel_s <= stalled.evaluation.travel_s + 1e-6  # ran longer from the same start


@pytest.mark.parametrize("bad", [0, -5])
def test_stall_limit_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="stall_iterations"):
        SearchParams(stall_iterations=bad)
