"""The iterated local search kernels: every move's cost change is exact on asymmetric matrices,
the bookkeeping (positions, prefix sums, saved routes) stays consistent, runs repeat."""

from __future__ import annotations

import numpy as np
import pytest

from gnn_model import ils
from gnn_model.search import candidate_lists

MOVES = {"or-opt": ils.MOVE_OR_OPT, "2-opt": ils.MOVE_TWO_OPT, "or-3opt": ils.MOVE_OR_3OPT}


def random_matrix(rng: np.random.Generator, n: int, symmetric: bool = False) -> np.ndarray:
    """A local-layout matrix (position 0 = start, n-1 = end): nothing enters the start or leaves the
    end; legs distorted per direction (one-way streets) unless ``symmetric``."""
    xy = rng.random((n, 2)) * 1000.0
    D = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    one_way = D * rng.uniform(0.6, 2.5, size=(n, n)) + rng.uniform(0.0, 60.0, size=(n, n))
    D = np.floor(D + 0.5) if symmetric else one_way
    D[:, 0] = 1.0e9
    D[n - 1, :] = 1.0e9
    np.fill_diagonal(D, 0.0)
    return D


def path_cost(D: np.ndarray, tour: np.ndarray) -> float:
    return float(D[tour[:-1], tour[1:]].sum())


def random_tour(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate(([0], 1 + rng.permutation(n - 2), [n - 1])).astype(np.int64)


def assert_consistent(D: np.ndarray, st: ils.IlsState) -> None:
    n = st.tour.size
    for route in (st.tour, st.cur, st.best):
        assert route[0] == 0 and route[-1] == n - 1
        assert sorted(route.tolist()) == list(range(n))
    assert np.array_equal(st.pos[st.tour], np.arange(n))
    assert np.array_equal(st.tour, st.cur)  # between calls the walk stands on its saved route
    assert st.st_f[0] == pytest.approx(path_cost(D, st.cur), rel=1e-12, abs=1e-6)
    assert st.best_cost == pytest.approx(path_cost(D, st.best), rel=1e-12, abs=1e-6)
    assert st.best_cost <= st.st_f[0] + 1e-6
    if not st.sym:
        legs = D[st.tour[:-1], st.tour[1:]]
        assert np.allclose(st.fwd, np.concatenate(([0.0], np.cumsum(legs))))


def test_swap_delta_is_the_cost_difference_for_every_cut() -> None:
    rng = np.random.default_rng(1)
    n = 11
    D = random_matrix(rng, n)
    tour = random_tour(rng, n)
    buf = np.empty(n, np.int64)
    before = path_cost(D, tour)
    for p in range(1, n - 1):
        for q in range(p + 1, n - 1):
            for r in range(q + 1, n):
                after = tour.copy()
                ils._apply_swap(after, buf, p, q, r)
                expected = np.concatenate((tour[:p], tour[q:r], tour[p:q], tour[r:]))
                assert np.array_equal(after, expected)
                assert ils._swap_delta(D, tour, p, q, r) == pytest.approx(path_cost(D, after) - before, abs=1e-9)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("move", list(MOVES))
def test_each_move_alone_changes_the_cost_by_its_deltas(move: str, symmetric: bool) -> None:
    """The local search with one kind of move, from random routes on random asymmetric (or
    symmetric) matrices: the summed deltas of the moves it applied equal the recomputed change
    (one wrong delta among them would show), and only the stretch it reports was rewritten."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        n = int(rng.integers(12, 60))
        D = random_matrix(rng, n, symmetric)
        cand = candidate_lists(D, int(rng.integers(3, 15)))
        options = ils.IlsOptions(moves=MOVES[move], third_cut_candidates=int(rng.integers(1, 9)))
        st = ils.new_state(D, random_tour(rng, n), cand, 0, options)
        assert st.sym == symmetric
        assert_consistent(D, st)
        # Run the kernel again from a fresh random route, everything queued.
        start = random_tour(rng, n)
        st.tour[:] = start
        ils._refresh(D, st.tour, st.pos, st.fwd, st.bwd, 0, n - 1, st.sym)
        st.queue[:n] = np.arange(n)
        st.active[:] = True
        st.st_i[2], st.st_i[3] = n, -1
        applied = st.st_i[4]
        total = ils._local_search(D, st.tour, st.pos, st.fwd, st.bwd, cand, st.active, st.queue, n, st.buf, st.st_i,
                                  st.opts, st.sym, 1e-9)  # fmt: skip
        assert st.st_i[4] > applied and total < 0.0  # moves were applied
        assert total == pytest.approx(path_cost(D, st.tour) - path_cost(D, start), abs=1e-6)
        lo, hi = st.st_i[2], st.st_i[3]  # outside the rewritten stretch nothing changed
        assert np.array_equal(st.tour[:lo], start[:lo]) and np.array_equal(st.tour[hi + 1 :], start[hi + 1 :])
        assert np.array_equal(st.pos[st.tour], np.arange(n))


@pytest.mark.parametrize("symmetric", [False, True])
def test_kicks_keep_the_walk_and_the_best_route_consistent(symmetric: bool) -> None:
    rng = np.random.default_rng(3)
    for n in (10, 11, 25, 80):
        D = random_matrix(rng, n, symmetric)
        cand = candidate_lists(D, 10)
        st = ils.new_state(D, random_tour(rng, n), cand, 5)
        start_cost = st.best_cost
        for _ in range(6):
            assert ils.run_kicks(D, cand, st, 37, 10**9, 0.01) == 37
            assert_consistent(D, st)
        assert st.best_cost <= start_cost


def test_runs_depend_on_seed_and_kicks_only_not_on_how_they_are_split() -> None:
    rng = np.random.default_rng(4)
    n = 60
    D = random_matrix(rng, n)
    cand = candidate_lists(D, 10)
    tour = random_tour(rng, n)
    one = ils.new_state(D, tour, cand, 9)
    ils.run_kicks(D, cand, one, 300, 10**9, 0.003)
    split = ils.new_state(D, tour, cand, 9)
    sizes = [1, 2, 7, 50, 3, 100, 137]
    assert sum(sizes) == 300
    for k in sizes:
        assert ils.run_kicks(D, cand, split, k, 10**9, 0.003) == k
    assert np.array_equal(one.best, split.best)
    assert np.array_equal(one.cur, split.cur)
    assert one.best_cost == split.best_cost
    other = ils.new_state(D, tour, cand, 10)
    ils.run_kicks(D, cand, other, 300, 10**9, 0.003)
    assert not np.array_equal(one.cur, other.cur)  # another seed walks elsewhere


def test_stall_limit_stops_the_kicks() -> None:
    rng = np.random.default_rng(5)
    n = 14
    D = random_matrix(rng, n)
    cand = candidate_lists(D, 6)
    st = ils.new_state(D, random_tour(rng, n), cand, 1)
    done = ils.run_kicks(D, cand, st, 100_000, 50, 0.0)
    assert done < 100_000  # a 12-stop route is solved long before: the stall limit ends the run
    assert st.stalled == 50
    assert ils.run_kicks(D, cand, st, 100, 50, 0.0) == 0


def test_small_routes_are_left_to_the_local_search() -> None:
    rng = np.random.default_rng(6)
    D = random_matrix(rng, 9)  # 7 stops: too few to kick
    cand = candidate_lists(D, 4)
    st = ils.new_state(D, random_tour(rng, 9), cand, 0)
    assert ils.run_kicks(D, cand, st, 10, 10**9, 0.0) == 0
    assert_consistent(D, st)


def test_swaps_per_kick_grow_with_the_route() -> None:
    options = ils.IlsOptions()
    assert options.as_array(10)[4] == 2
    assert options.as_array(50)[4] == 6
    assert options.as_array(1000)[4] == 10
    assert ils.IlsOptions(swaps_per_kick=3).as_array(1000)[4] == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("third_cut_candidates", -1), ("kick_span", 2), ("restart_every", 0), ("swaps_per_kick", 0),
     ("near_kicks_per_mille", 1001), ("moves", 8)],
)  # fmt: skip
def test_options_are_validated(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        ils.IlsOptions(**{field: value})  # type: ignore[arg-type]


def test_symmetry_is_read_from_the_stops_only() -> None:
    rng = np.random.default_rng(8)
    D = random_matrix(rng, 12, symmetric=True)
    assert ils.is_symmetric(D)  # the forbidden legs into the start / out of the end do not count
    D[3, 4] += 1.0
    assert not ils.is_symmetric(D)
