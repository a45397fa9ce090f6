"""Small solve requests for the batch_worker tests: random asymmetric problems, n <= 20."""

from __future__ import annotations

import time

import numpy as np

from routing_core.messages import SolveRequest
from routing_core.problem import Problem


def small_problem(seed: int, n_stops: int = 8) -> Problem:
    """``n_stops`` stops and a start in a 1000 s square, asymmetric travel times, a round trip."""
    rng = np.random.default_rng(seed)
    n = n_stops + 1
    xy = rng.random((n, 2)) * 1000.0
    base = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    matrix = base * rng.uniform(0.9, 1.3, size=(n, n)) + rng.uniform(1.0, 20.0, size=(n, n))
    np.fill_diagonal(matrix, 0.0)
    return Problem(matrix, coords=xy)


def make_request(request_id: str, *, seed: int = 0, n_stops: int = 8, budget_ms: float = 5.0,
                 deadline_in_s: float = 30.0) -> SolveRequest:  # fmt: skip
    """A request whose deadline is ``deadline_in_s`` from now (negative: already past)."""
    return SolveRequest(request_id, small_problem(seed, n_stops), time_budget_ms=budget_ms,
                        deadline=time.time() + deadline_in_s, seed=seed)  # fmt: skip
