"""BatchSolver: N in N out, one model call per batch, per-request errors, fallback to the plain search."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from batch_worker.solver import BatchSolver
from gnn_model.backends import Backend, FeatureBatch, TorchBackend
from gnn_model.model import EdgeScorer, ModelConfig
from gnn_model.search import warm_up
from routing_core.messages import SolveReply, SolveRequest
from routing_core.problem import evaluate
from tests.solve_requests import make_request


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> Iterator[None]:
    warm_up()
    yield


class CountingBackend:
    """Wraps a backend and counts predict calls and the problems each one saw."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version
        self.calls: list[int] = []

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        self.calls.append(len(batch.edge_splits) - 1)
        return self.inner.predict(batch)


class BrokenBackend:
    name = "broken"
    version = "v0"

    def predict(self, batch: FeatureBatch) -> list[np.ndarray]:
        raise RuntimeError("no device")


@pytest.fixture(scope="module")
def torch_backend() -> Backend:
    import torch

    torch.manual_seed(0)
    return TorchBackend(EdgeScorer(ModelConfig(hidden=16, layers=2)).eval(), version="untrained-test", threads=1)


def assert_valid(request: SolveRequest, reply: SolveReply) -> None:
    assert reply.error is None, reply.error
    assert reply.request_id == request.request_id
    ev = evaluate(request.problem, reply.order)
    assert ev.valid, ev.problems


def batch(n: int, *, sizes: list[int] | None = None) -> list[SolveRequest]:
    sizes = sizes or [4 + (i * 5) % 16 for i in range(n)]  # 4..19 stops
    return [make_request(f"r{i}", seed=i, n_stops=s) for i, s in enumerate(sizes)]


def test_plain_search_without_a_backend() -> None:
    requests = batch(5)
    replies = BatchSolver(None, "w-plain").solve_batch(requests)
    assert len(replies) == 5
    for req, rep in zip(requests, replies, strict=True):
        assert_valid(req, rep)
        assert rep.guided is False and rep.backend == "none" and rep.model_version == ""
        assert rep.worker == "w-plain" and rep.batch_size == 5
        assert {"queue_wait", "inference", "search"} <= set(rep.timings_ms)
        assert rep.timings_ms["inference"] == 0.0


def test_one_predict_call_for_the_whole_batch(torch_backend: Backend) -> None:
    counting = CountingBackend(torch_backend)
    requests = batch(6, sizes=[5, 12, 2, 19, 8, 3])  # 2 and 3 stops: 3 and 4 nodes
    replies = BatchSolver(counting, "w-gnn").solve_batch(requests)
    # One call; the problem with fewer than 4 nodes (2 stops + start) is not in it.
    assert counting.calls == [5]
    inference = {r.timings_ms["inference"] for r in replies if r.guided}
    assert len(inference) == 1  # the same batched time for every guided request
    for req, rep in zip(requests, replies, strict=True):
        assert_valid(req, rep)
        assert rep.batch_size == 6 and rep.worker == "w-gnn"
        if req.problem.n_nodes < 4:
            assert (rep.guided, rep.backend, rep.model_version) == (False, "none", "")
        else:
            assert (rep.guided, rep.backend, rep.model_version) == (True, "torch", "untrained-test")


def test_a_failing_backend_falls_back_to_the_plain_search() -> None:
    solver = BatchSolver(BrokenBackend(), "w")
    requests = batch(3)
    replies = solver.solve_batch(requests)
    for req, rep in zip(requests, replies, strict=True):
        assert_valid(req, rep)
        # Marked as a fallback (the model should have guided it), with the failed model's version.
        assert rep.guided is False and rep.backend == "fallback:knn" and rep.model_version == "v0"
    assert solver.stats().backend_failures == 1 and solver.stats().fallbacks == 3


def test_a_problem_too_small_for_the_model_is_not_a_fallback() -> None:
    solver = BatchSolver(BrokenBackend(), "w")
    (reply,) = solver.solve_batch(batch(1, sizes=[2]))  # 3 nodes: the model never sees it
    assert reply.error is None and reply.backend == "none"
    assert solver.stats().backend_failures == 0 and solver.stats().fallbacks == 0


def test_expired_requests_get_a_deadline_error_and_the_others_are_solved() -> None:
    requests = batch(3)
    requests[1] = make_request("late", seed=1, deadline_in_s=-0.5)
    replies = BatchSolver(None, "w").solve_batch(requests)
    assert replies[1].request_id == "late"
    assert replies[1].error == "deadline" and replies[1].order == ()
    assert_valid(requests[0], replies[0])
    assert_valid(requests[2], replies[2])


def test_one_bad_problem_fails_alone(torch_backend: Backend) -> None:
    requests = batch(3)
    broken = requests[1].problem
    object.__setattr__(broken, "start", 99)  # corrupt past validation: the search will raise on it
    for backend in (None, torch_backend):
        replies = BatchSolver(backend, "w").solve_batch(requests)
        assert replies[1].request_id == "r1"
        assert replies[1].error is not None and replies[1].error.startswith("internal:")
        assert_valid(requests[0], replies[0])
        assert_valid(requests[2], replies[2])


def test_queue_wait_is_measured_from_enqueued_at() -> None:
    request = replace(make_request("r"), enqueued_at=time.time() - 0.25)
    (reply,) = BatchSolver(None, "w").solve_batch([request])
    assert reply.timings_ms["queue_wait"] >= 250.0


def test_swap_backend_takes_effect_on_the_next_batch(torch_backend: Backend) -> None:
    solver = BatchSolver(None, "w")
    (before,) = solver.solve_batch(batch(1))
    counting = CountingBackend(torch_backend)
    assert solver.swap_backend(counting) is None
    (after,) = solver.solve_batch(batch(1))
    assert before.guided is False and after.guided is True and counting.calls == [1]
    assert solver.stats().backend == "torch"


def test_an_empty_batch_gives_no_replies() -> None:
    assert BatchSolver(None, "w").solve_batch([]) == []


@pytest.mark.parametrize(
    ("budget", "size", "share"),
    [(50.0, 1, 100.0), (50.0, 2, 50.0), (50.0, 8, 12.5), (50.0, 32, 5.0), (3.0, 32, 3.0)],
)
def test_a_full_batch_shares_its_search_budget(budget: float, size: int, share: float) -> None:
    from batch_worker.solver import BatchSolver

    solver = BatchSolver(None, worker_id="t", search_threads=2)
    assert solver._share_ms(budget, size) == pytest.approx(share)
