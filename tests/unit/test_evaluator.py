"""The route evaluator and Problem validation, on hand-made cases with numbers worked out by hand."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from routing_core.problem import EndKind, Problem, evaluate

# An asymmetric 4-node matrix (seconds). Row = from, column = to.
#        to: 0   1   2   3
M = np.array(
    [
        [0, 10, 20, 30],  # from 0
        [11, 0, 5, 25],  # from 1
        [21, 6, 0, 7],  # from 2
        [31, 26, 8, 0],  # from 3
    ],
    dtype=float,
)


# -- (a) return route ------------------------------------------------------------------


def test_return_route_counts_the_leg_back_to_the_start() -> None:
    p = Problem(M)
    ev = evaluate(p, [1, 2, 3])
    # 0->1 = 10, 1->2 = 5, 2->3 = 7, back 3->0 = 31: travel 53.
    assert ev.valid
    assert ev.problems == ()
    assert ev.order == (1, 2, 3)
    assert ev.travel_s == 53.0
    assert ev.arrival.tolist() == [10.0, 15.0, 22.0]
    assert ev.start_service.tolist() == [10.0, 15.0, 22.0]
    assert ev.departure.tolist() == [10.0, 15.0, 22.0]
    assert ev.end_arrival == 53.0  # 22 + 31
    assert ev.total_lateness == 0.0
    assert ev.feasible
    assert ev.late_stops == ()
    assert ev.cost() == (0.0, 53.0)


def test_return_route_reads_the_matrix_in_the_driving_direction() -> None:
    p = Problem(M)
    ev = evaluate(p, [3, 2, 1])
    # 0->3 = 30, 3->2 = 8, 2->1 = 6, back 1->0 = 11: travel 55 (the forward route costs 53).
    assert ev.travel_s == 55.0
    assert ev.arrival.tolist() == [30.0, 38.0, 44.0]
    assert ev.end_arrival == 55.0


def test_return_route_from_a_start_other_than_node_zero() -> None:
    p = Problem(M, start=2)
    assert p.stops.tolist() == [0, 1, 3]
    ev = evaluate(p, [3, 0, 1])
    # 2->3 = 7, 3->0 = 31, 0->1 = 10, back 1->2 = 5: travel 53.
    assert ev.valid
    assert ev.travel_s == 53.0
    assert ev.arrival.tolist() == [7.0, 38.0, 48.0]
    assert ev.end_arrival == 53.0


def test_accepts_numpy_and_tuple_orders() -> None:
    p = Problem(M)
    assert evaluate(p, np.array([1, 2, 3])).travel_s == 53.0
    assert evaluate(p, (1, 2, 3)).order == (1, 2, 3)


# -- (b) open end ----------------------------------------------------------------------


def test_open_route_has_no_return_leg() -> None:
    p = Problem(M, end=EndKind.OPEN)
    ev = evaluate(p, [1, 2, 3])
    # 10 + 5 + 7 = 22; nothing after stop 3.
    assert ev.valid
    assert ev.travel_s == 22.0
    assert ev.end_arrival == 22.0


def test_open_route_ends_at_the_last_departure() -> None:
    p = Problem(M, end="open", service_s=[0, 0, 0, 4])
    ev = evaluate(p, [1, 2, 3])
    # arrive at 3 at 22, serve 4 s, leave at 26: the route ends there; travel stays 22.
    assert p.end is EndKind.OPEN
    assert ev.departure.tolist() == [10.0, 15.0, 26.0]
    assert ev.end_arrival == 26.0
    assert ev.travel_s == 22.0


# -- (c) fixed end ---------------------------------------------------------------------


def test_fixed_end_counts_the_leg_to_the_end_node() -> None:
    p = Problem(M, end=EndKind.FIXED, end_node=3)
    assert p.stops.tolist() == [1, 2]
    ev = evaluate(p, [1, 2])
    # 0->1 = 10, 1->2 = 5, then to the end 2->3 = 7: travel 22.
    assert ev.valid
    assert ev.travel_s == 22.0
    assert ev.end_arrival == 22.0
    assert ev.arrival.tolist() == [10.0, 15.0]
    ev2 = evaluate(p, [2, 1])
    # 0->2 = 20, 2->1 = 6, 1->3 = 25: travel 51.
    assert ev2.travel_s == 51.0
    assert ev2.end_arrival == 51.0


def test_fixed_end_arrival_includes_service_before_the_last_leg() -> None:
    p = Problem(M, end="fixed", end_node=1, service_s=[0, 0, 10, 1])
    ev = evaluate(p, [3, 2])
    # 0->3 = 30, serve 1 -> leave 31; 3->2 = 8 -> arrive 39, serve 10 -> leave 49; 2->1 = 6 -> 55.
    assert ev.travel_s == 44.0  # 30 + 8 + 6
    assert ev.departure.tolist() == [31.0, 49.0]
    assert ev.end_arrival == 55.0


# -- (d) time windows ------------------------------------------------------------------


def test_early_arrival_waits_and_late_arrival_is_lateness() -> None:
    earliest = [0, 15, 0, 0]
    latest = [math.inf, 100, 18, 20]
    p = Problem(M, earliest=earliest, latest=latest)
    assert p.has_windows
    ev = evaluate(p, [1, 2, 3])
    # stop 1: arrive 10, window opens at 15 -> wait, serve at 15, leave 15.
    # stop 2: arrive 15 + 5 = 20, latest 18 -> 2 s late.
    # stop 3: arrive 20 + 7 = 27, latest 20 -> 7 s late. Back: 27 + 31 = 58.
    assert ev.arrival.tolist() == [10.0, 20.0, 27.0]
    assert ev.start_service.tolist() == [15.0, 20.0, 27.0]
    assert ev.lateness.tolist() == [0.0, 2.0, 7.0]
    assert ev.total_lateness == 9.0
    assert ev.late_stops == (2, 3)
    assert ev.travel_s == 53.0  # waiting is not travel
    assert ev.end_arrival == 58.0
    assert ev.valid
    assert not ev.feasible
    assert ev.cost() == (9.0, 53.0)


def test_arriving_exactly_at_the_latest_time_is_on_time() -> None:
    p = Problem(M, latest=[math.inf, 10, 15, 22])
    ev = evaluate(p, [1, 2, 3])  # arrivals 10, 15, 22
    assert ev.total_lateness == 0.0
    assert ev.late_stops == ()
    assert ev.feasible


def test_window_on_the_start_is_ignored() -> None:
    p = Problem(M, earliest=[50, 0, 0, 0], latest=[60, math.inf, math.inf, math.inf])
    assert not p.has_windows
    ev = evaluate(p, [1, 2, 3])
    assert ev.arrival.tolist() == [10.0, 15.0, 22.0]
    assert ev.feasible


# -- (e) service times -----------------------------------------------------------------


def test_service_times_shift_the_departures() -> None:
    # The start's service (999) is ignored.
    p = Problem(M, service_s=[999, 100, 50, 3])
    ev = evaluate(p, [1, 2, 3])
    # stop 1: arrive 10, leave 110; stop 2: arrive 115, leave 165; stop 3: arrive 172, leave 175; back 175 + 31.
    assert ev.arrival.tolist() == [10.0, 115.0, 172.0]
    assert ev.departure.tolist() == [110.0, 165.0, 175.0]
    assert ev.end_arrival == 206.0
    assert ev.travel_s == 53.0


def test_service_starts_after_waiting_for_the_window() -> None:
    p = Problem(M, service_s=[0, 100, 50, 3], earliest=[0, 0, 200, 0])
    ev = evaluate(p, [1, 2, 3])
    # stop 2: arrive 115, wait until 200, serve 50 -> leave 250; stop 3: arrive 257, leave 260; back 291.
    assert ev.arrival.tolist() == [10.0, 115.0, 257.0]
    assert ev.start_service.tolist() == [10.0, 200.0, 257.0]
    assert ev.departure.tolist() == [110.0, 250.0, 260.0]
    assert ev.end_arrival == 291.0
    assert ev.feasible


# -- (f) invalid routes ----------------------------------------------------------------


def _assert_invalid(ev, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert not ev.valid
    assert not ev.feasible
    assert ev.cost() == (math.inf, math.inf)
    assert any(fragment in msg for msg in ev.problems), ev.problems


def test_a_stop_visited_twice_is_invalid() -> None:
    ev = evaluate(Problem(M), [1, 2, 2, 3])
    _assert_invalid(ev, "stop 2 visited twice")


def test_a_missing_stop_is_invalid() -> None:
    ev = evaluate(Problem(M), [1, 3])
    _assert_invalid(ev, "stops not visited: [2]")


def test_the_empty_order_misses_every_stop() -> None:
    ev = evaluate(Problem(M), [])
    _assert_invalid(ev, "stops not visited: [1, 2, 3]")


def test_the_start_in_the_order_is_invalid() -> None:
    ev = evaluate(Problem(M), [0, 1, 2, 3])
    _assert_invalid(ev, "node 0 is not a stop")


def test_a_fixed_end_in_the_order_is_invalid() -> None:
    p = Problem(M, end="fixed", end_node=3)
    ev = evaluate(p, [1, 2, 3])
    _assert_invalid(ev, "node 3 is not a stop")


@pytest.mark.parametrize("bad", [4, 99, -1])
def test_an_out_of_range_node_is_invalid(bad: int) -> None:
    ev = evaluate(Problem(M), [1, bad, 2, 3])
    _assert_invalid(ev, f"node {bad} is not a stop")


# -- (g) legs with no path -------------------------------------------------------------


def test_a_leg_with_no_path_makes_the_route_invalid() -> None:
    m = M.copy()
    m[1, 2] = math.inf
    p = Problem(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN arithmetic (inf - inf) on the way
        ev = evaluate(p, [1, 2, 3])
    _assert_invalid(ev, "no path")
    assert math.isinf(ev.travel_s)
    assert math.isinf(ev.arrival[1]) and math.isinf(ev.end_arrival)
    assert ev.lateness.tolist() == [0.0, 0.0, 0.0]  # no windows: never late, even when never there
    assert not math.isnan(ev.total_lateness)
    # The other direction avoids 1->2: 0->3 = 30, 3->2 = 8, 2->1 = 6, 1->0 = 11.
    ok = evaluate(p, [3, 2, 1])
    assert ok.valid
    assert ok.travel_s == 55.0


def test_a_stop_with_a_window_behind_a_missing_leg_is_late_forever() -> None:
    m = M.copy()
    m[1, 2] = math.inf
    p = Problem(m, latest=[math.inf, math.inf, 100, math.inf])
    ev = evaluate(p, [1, 2, 3])
    assert not ev.valid
    assert ev.lateness[0] == 0.0
    assert math.isinf(ev.lateness[1])
    assert ev.late_stops == (2,)


def test_a_return_leg_with_no_path_makes_the_route_invalid() -> None:
    m = M.copy()
    m[3, 0] = math.inf
    ev = evaluate(Problem(m), [1, 2, 3])
    _assert_invalid(ev, "no path")
    # The same order is fine when the route is open.
    assert evaluate(Problem(m, end="open"), [1, 2, 3]).feasible


# -- trivial problems ------------------------------------------------------------------


def test_a_single_node_problem_has_no_stops() -> None:
    p = Problem(np.zeros((1, 1)))
    assert p.stops.tolist() == []
    ev = evaluate(p, [])
    assert ev.valid
    assert ev.travel_s == 0.0
    assert ev.end_arrival == 0.0
    assert ev.feasible


# -- Problem validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matrix": np.zeros((2, 3))}, "matrix must be square"),
        ({"matrix": np.zeros(4)}, "matrix must be square"),
        ({"matrix": np.zeros((0, 0))}, "matrix must have at least one node"),
        ({"matrix": [[0.0, math.nan], [1.0, 0.0]]}, "matrix must not contain NaN"),
        ({"matrix": [[0.0, -1.0], [1.0, 0.0]]}, "matrix entries must be >= 0"),
        ({"matrix": M, "earliest": [0, 0, 0]}, "earliest must have one value per node"),
        ({"matrix": M, "latest": [0, 0, math.nan, 0]}, "latest must not contain NaN"),
        ({"matrix": M, "service_s": [0, -1, 0, 0]}, "service_s must be finite"),
        ({"matrix": M, "service_s": [0, math.inf, 0, 0]}, "service_s must be finite"),
        ({"matrix": M, "earliest": [0, 0, 50, 0], "latest": [9, 9, 40, 9]}, "window of node 2 ends before it starts"),
        ({"matrix": M, "start": 4}, "start must be a node index in 0..3"),
        ({"matrix": M, "start": -1}, "start must be a node index"),
        ({"matrix": M, "end": "fixed"}, "end_node must be a node index"),
        ({"matrix": M, "end": "fixed", "end_node": 4}, "end_node must be a node index"),
        ({"matrix": M, "end": "fixed", "end_node": 0}, "end_node equals start"),
        ({"matrix": M, "end": "return", "end_node": 2}, "end_node is only allowed when end is 'fixed'"),
        ({"matrix": M, "end": "open", "end_node": 2}, "end_node is only allowed"),
        ({"matrix": M, "coords": np.zeros((3, 2))}, "coords must have shape (4, 2)"),
        ({"matrix": M, "coords": np.zeros((4, 3))}, "coords must have shape (4, 2)"),
    ],
)
def test_invalid_problems_are_rejected_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Problem(**kwargs)


def test_an_unknown_end_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="sideways"):
        Problem(M, end="sideways")


def test_valid_problem_fills_defaults_and_converts_types() -> None:
    p = Problem([[0, 1], [2, 0]], coords=[[0, 0], [1, 1]])
    assert p.matrix.dtype == np.float64
    assert p.earliest.tolist() == [0.0, 0.0]
    assert p.latest.tolist() == [math.inf, math.inf]
    assert p.service_s.tolist() == [0.0, 0.0]
    assert p.end is EndKind.RETURN
    assert p.coords is not None and p.coords.shape == (2, 2)
    assert p.n_nodes == 2
    assert p.stops.tolist() == [1]
    assert not p.has_windows
